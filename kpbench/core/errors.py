"""The one error type for user mistakes, and the warning type for protocol quirks."""

from __future__ import annotations


class KpbenchError(Exception):
    """A user mistake (bad input, missing file, bad option). The CLI prints the message and exits 2."""


class KpbenchWarning(UserWarning):
    """Something that changes the numbers silently in pycocotools, reported instead of hidden."""


def shown(value: object) -> str:
    """`repr(value)` for a message, except an integer too long to print (Python refuses to convert one of over
    4300 digits, and a message would crash on it): that is shown by its length, "an integer of 5001 digits"."""
    if type(value) is int and value.bit_length() > 200:  # about 60 digits: no id, count or size needs more
        magnitude = abs(value)
        digits = max(1, int((magnitude.bit_length() - 1) * 0.30102999566398120) - 1)  # log10(2): a lower bound
        while 10**digits <= magnitude:
            digits += 1
        return f"{'a negative' if value < 0 else 'an'} integer of {digits} digits"
    return repr(value)
