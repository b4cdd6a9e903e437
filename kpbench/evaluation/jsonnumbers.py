"""JSON lists of numbers straight into one float64 array, with exactly the values Python's json module gives.

A results file at val2017 scale holds 2.5 M keypoint numbers. Decoded the usual way (json, orjson, msgspec), each
becomes a Python float in a Python list before numpy copies it out, and that costs more than the evaluation.
Here the lists arrive as their JSON text (msgspec's `Raw`, which msgspec has already checked to be valid JSON).

Where kpbench was installed with a C compiler at hand, `_numbers.c` reads them, one pass over the bytes: a
decimal of at most 19 significant digits, at most 2**53, with a power of ten within +-22 is one IEEE
multiplication or division of two exact doubles (Clinger's fast path, below), and any other token goes to
PyOS_string_to_double, Python's own float(). It reads ~10 ns a number, 3x the numpy reader. Elsewhere (no
compiler: the extension is optional) the numpy reader below parses them together, eight characters at a time,
with integer arithmetic on numpy arrays:

1. The texts are joined, whitespace dropped and brackets made commas in one `bytes.translate`; a byte that cannot
   occur in a list of JSON numbers (a quote, a letter other than e/E, a brace) rejects the input. The commas then
   show every token, and N lists of `width` numbers leave one pattern only: `width` non-empty tokens, then an
   empty one between two lists. Anything else (another length, a nested or empty list, a bare number) rejects.
2. Each token (sign, digits, at most one '.', no exponent, at most 19 characters after the sign) is read from its
   last character backwards in 64-bit words. In a word, the byte of the '.' is found with the zero-byte test on
   `word ^ 0x2E2E...` (exact here: a false positive needs the byte '/', which step 1 excludes) and cleared; the
   eight digit bytes become their value with three multiplications (the SWAR method of Lemire, "Number parsing
   at a gigabyte per second", Software: Practice and Experience 51(8), 2021). With the '.' read as a digit 0,
   the token is H = I * 10**(f+1) + F for the integer part I, the f digits F after the '.', so the decimal
   mantissa is m = H - 9 * I * 10**f, exactly, in uint64.
3. The value is m / 10**f rounded once: exactly IEEE division when m < 2**53 (both operands are exact doubles, so
   the one rounding of the division is the correct rounding of the decimal: Clinger, "How to read floating point
   numbers accurately", PLDI 1990); otherwise in x87 extended precision (m and 10**f exact in its 64-bit
   mantissa), whose result rounded to double is the correct one unless it lies exactly halfway between two
   doubles (then the token is read by Python instead). A '-' negates a decimal (-0.0 stays -0.0) and subtracts an
   integer from 0, since json reads "-0" as the int 0.
4. Tokens outside that form (an exponent, longer mantissas, a halfway case, a machine without x87 extended
   precision) are read by Python as json reads them: float(token), or float(int(token)) for an integer, so every
   value is float()'s own, bit for bit. A value out of float range rejects the input (the caller's full checks
   then word it).

Where every token of a pass has at most 8 characters after its sign (rounded coordinates, integer flags: the
common case), steps 2 and 3 take a shorter form (`_one_word`): the '.' is removed from the word instead of read as
a 0, so the digits are the mantissa itself (times 10), and the value is one division, with a third of the passes.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from kpbench.core.threads import parallel_map, shares

try:  # the same reader in C (`_numbers.c`), built at install where a C compiler is found
    from kpbench.evaluation._numbers import EXTENDED_PATH as _EXTENDED_PATH
    from kpbench.evaluation._numbers import number_lists_into as _compiled
except ImportError:
    _compiled, _EXTENDED_PATH = None, 0

__all__ = ["COMPILED", "COMPILED_LONG_NUMBERS", "number_lists", "number_lists_numpy"]

COMPILED = _compiled is not None  # whether `number_lists` reads through the compiled reader
# Whether it also reads 17-digit decimals (float32 reprs) itself (x87 extended precision); elsewhere those take
# Python's float(), slower than msgspec's own floats.
COMPILED_LONG_NUMBERS = COMPILED and bool(_EXTENDED_PATH)
_MIN_SHARE = 4096  # lists per thread at least (below, one thread: starting another costs more than it saves)

# Bytes of a flat list of JSON numbers: kept; brackets become commas; whitespace is deleted; every other byte
# becomes 0, which no valid input then holds.
_KEPT = b"0123456789.-+eE,"
_TABLE = bytes(b if b in _KEPT else (44 if b in b"[]" else 0) for b in range(256))
_WHITESPACE = b" \t\n\r"
_PAD = 24  # commas before the text, so that a token's three words never start before the buffer
_PADDING = b"," * _PAD
_BLOCK = 4096  # lists per pass: buffers stay small enough to be reused (large ones cost fresh pages every time)
_CHUNK = 1 << 15  # tokens per pass: keeps the temporaries of the word arithmetic in the CPU's cache

_U64 = np.uint64
_DOT_BYTES = _U64(0x2E2E2E2E2E2E2E2E)
_LOW_BITS = _U64(0x0101010101010101)
_HIGH_BITS = _U64(0x8080808080808080)
_BYTE_INDEX = _U64(0x0706050403020100)  # times 256**k, its top byte is 7 - k
# KEEP[j]: the top j bytes of a word (a token's last j characters)
_KEEP = np.array([((1 << 64) - (1 << (8 * (8 - j)))) % (1 << 64) for j in range(9)], dtype=np.uint64)
_POW10 = np.array([10**i for i in range(20)], dtype=np.uint64)
# Per f, the digits after the '.' (_NO_DOT: an integer): 10**f and 10**(f + 1) as doubles (exact up to 10**22;
# 10**23 only serves tokens left to Python, and 10**(f + 1) beyond 10**22 only where the integer part is 0) and
# 10**f in x87 extended precision (exact up to 10**27).
_NO_DOT = 24
_SCALE = np.array([10.0**i for i in range(24)] + [1.0])
_DIVISOR = np.array([10.0 ** (i + 1) for i in range(24)] + [np.inf])
_SCALE_EXTENDED = np.cumprod(np.full(24, 10, dtype=np.longdouble)) / np.longdouble(10)
_EXACT = _U64(1 << 53)
# The one-word path (every token at most 8 characters after its sign): digit values in nibbles, the '.' found as
# the one byte whose value there has bits 3 and 2 set (14; digits are at most 9), and removed.
_NIBBLES = _U64(0x0F0F0F0F0F0F0F0F)
_KEEP_NIBBLES = _KEEP & _NIBBLES
_BITS_3_AND_2 = _U64(0x0404040404040404)
# Per f (characters after the '.' counted from the token's end, 0 for an integer; any top byte indexes it): the
# divisor of the digits read with the '.' removed and a 0 after the last digit (an integer's: 1).
_ONE_WORD_DIVISOR = np.array([1.0] + [10.0 ** (f + 1) for f in range(1, 8)] + [1.0] * 248)
# x87 extended precision: a 64-bit mantissa, stored (x86-64) in 16 bytes whose first 8 hold it.
_EXTENDED = np.finfo(np.longdouble).nmant == 63 and np.dtype(np.longdouble).itemsize == 16


def number_lists(texts: Sequence[bytes | memoryview], width: int) -> np.ndarray | None:
    """(N, width) float64 of N JSON texts that are each a list of `width` finite numbers, the values json.loads
    gives them (as floats; integers converted as float(int) does), or None when one is not such a list (other
    values, other lengths, nesting, a number out of float range). Each text must be valid JSON (msgspec's Raw).
    Read by the compiled reader where it was built (`COMPILED`), else by numpy word arithmetic: the same values
    and verdicts (tested on both)."""
    if _compiled is None:
        return number_lists_numpy(texts, width)
    n = len(texts)
    if n == 0:
        return np.zeros((0, width))
    if width <= 0:
        return None
    out = np.empty((n, width))
    # The C reader parses without the GIL: a few threads take a share of the lists each.
    done = parallel_map(lambda part: _compiled(texts[part], width, out[part]), shares(n, _MIN_SHARE))
    return out if all(done) else None


def number_lists_numpy(texts: Sequence[bytes | memoryview], width: int) -> np.ndarray | None:
    """`number_lists` by numpy word arithmetic alone (the module docstring)."""
    n = len(texts)
    if n == 0:
        return np.zeros((0, width))
    if width <= 0:
        return None
    out = np.empty((n, width))
    for lo in range(0, n, _BLOCK):
        if not _block(texts[lo:lo + _BLOCK], width, out[lo:lo + _BLOCK].reshape(-1)):
            return None
    return out


def _block(texts: Sequence[bytes | memoryview], width: int, out: np.ndarray) -> bool:
    """Some of the lists into `out` (flat); False when one is not a list of `width` finite numbers."""
    n = len(texts)
    joined = b"".join(itertools.chain((_PADDING,), texts))
    lengths = np.fromiter(map(len, texts), dtype=np.int64, count=n)
    first = _PAD + np.cumsum(lengths) - lengths
    if (np.frombuffer(joined, dtype=np.uint8)[first] != 91).any():  # each text a list (JSON: no leading spaces)
        return False
    text = joined.translate(_TABLE, _WHITESPACE)
    if text.find(0) >= 0:
        return False
    chars = np.frombuffer(text, dtype=np.uint8)
    commas = np.flatnonzero(chars == 44)[_PAD - 1:]  # the last padding comma, then one per token boundary
    if len(commas) != 1 + n * (width + 1):
        return False
    # Per list: the empty token between the previous ']' (or the padding) and its '[', then `width` tokens.
    gaps = (np.diff(commas) - 1).reshape(n, width + 1)
    if gaps[:, 0].any() or not gaps[:, 1:].all():
        return False
    starts = commas[:-1].reshape(n, width + 1)[:, 1:].reshape(-1) + 1
    ends = commas[1:].reshape(n, width + 1)[:, 1:].reshape(-1)
    return _tokens(text, chars, starts, ends, out)


def _tokens(text: bytes, chars: np.ndarray, starts: np.ndarray, ends: np.ndarray, out: np.ndarray) -> bool:
    """The values of the JSON numbers text[starts[i]:ends[i]] (valid JSON numbers) into `out`; False when one is
    out of float range."""
    count = len(starts)
    slow = np.zeros(count, dtype=bool)
    # Tokens with an exponent are Python's (rare: json.dumps writes one below 1e-4 or from 1e16).
    if text.find(b"e") >= 0 or text.find(b"E") >= 0:
        marks = np.flatnonzero((chars | 32) == 101)
        slow[np.searchsorted(ends, marks, side="right")] = True
    # Words: words[i] holds text[i:i + 8], little-endian (its first character in its lowest byte).
    words = np.ndarray(shape=(len(chars) - 7,), dtype="<u8", buffer=text, strides=(1,))
    for lo in range(0, count, _CHUNK):
        hi = min(lo + _CHUNK, count)
        _chunk(chars, words, starts[lo:hi], ends[lo:hi], out[lo:hi], slow[lo:hi])
    at = np.flatnonzero(slow)
    values = []
    for start, end in zip(starts[at].tolist(), ends[at].tolist()):
        token = text[start:end]
        try:  # json: an int without '.' or exponent, else a float
            values.append(float(token) if token.strip(b"-0123456789") else float(int(token)))
        except OverflowError:  # an integer beyond float's range: json gives an int that numpy cannot convert
            return False
    out[at] = values
    # Every value read here is finite (at most 19 digits over a power of ten): only Python's can be out of range.
    return bool(np.isfinite(out[at]).all())


def _chunk(
    chars: np.ndarray, words: np.ndarray, starts: np.ndarray, ends: np.ndarray, out: np.ndarray, slow: np.ndarray,
) -> None:
    """Steps 2 and 3 of the module docstring for some tokens: their values into `out`, and `slow` set for those
    left to Python."""
    negative = chars[starts] == 45
    body = ends - starts - negative  # characters after the sign
    longest = int(body.max())
    if longest <= 8:
        _one_word(words, ends, body, negative, out)
        return
    if longest > 24:
        slow |= body > 24
    words_needed = (min(longest, 24) + 7) // 8
    digits = after_dot = None  # H: the token's digits, its '.' read as a 0; f, the digits after the '.'
    for w in range(words_needed):
        keep = _KEEP[body if longest <= 8 else np.clip(body - 8 * w, 0, 8)]
        word = words[ends - 8 * (w + 1)] & keep
        x = word ^ _DOT_BYTES
        dot = ((x - _LOW_BITS) & ~x & _HIGH_BITS) >> _U64(7)  # 0x01 at the '.' byte, if any
        found = dot != 0
        position = ((dot * _BYTE_INDEX) >> _U64(56)).view(np.int64) + 8 * w  # counted from the token's end
        after_dot = np.where(found, position, _NO_DOT if after_dot is None else after_dot)
        word -= dot * _U64(0x2E)
        v = ((word & _U64(0x0F0F0F0F0F0F0F0F)) * _U64(2561)) >> _U64(8)
        v = ((v & _U64(0x00FF00FF00FF00FF)) * _U64(6553601)) >> _U64(16)
        v = ((v & _U64(0x0000FFFF0000FFFF)) * _U64(42949672960001)) >> _U64(32)
        if w == 2:
            slow |= v >= _U64(1800)  # H could pass 2**64: more than 19 significant digits
            slow |= after_dot == 23  # 10**23 is no double
        digits = v if digits is None else digits + v * _POW10[8 * w]
    # H = I * 10**(f + 1) + F, and the mantissa is I * 10**f + F. Below 2**53 every step is exact in doubles
    # (the quotient H / 10**(f + 1) lies within [I, I + 0.1), so its floor is I; where 10**(f + 1) passes
    # 2**53, I is 0); an integer's "f" (_NO_DOT) divides by infinity and by 1.
    h = digits.astype(np.float64)
    scale = _SCALE[after_dot]
    value = (h - 9.0 * np.floor(h / _DIVISOR[after_dot]) * scale) / scale
    at = np.flatnonzero((digits >= _EXACT) & ~slow) if digits.max() >= _EXACT else ()
    if len(at):
        h, f = digits[at], after_dot[at]
        decimal = f < _NO_DOT
        # Where f > 18, 10**(f + 1) passes 2**64 > H: the integer part is 0 and the mantissa is H.
        split = np.where(decimal & (f <= 18), f, 0)
        mantissa = np.where(split > 0, h - _U64(9) * (h // _POW10[split + 1]) * _POW10[split], h)
        if _EXTENDED:
            quotient = mantissa.astype(np.longdouble) / _SCALE_EXTENDED[np.where(decimal, f, 0)]
            value[at] = quotient.astype(np.float64)
            # Halfway between two doubles: the 11 bits below a double's 53 are 100 0000 0000.
            low = quotient.view(np.uint64).reshape(len(quotient), -1)[:, 0] & _U64(0x7FF)
            slow[at[low == 0x400]] = True
        else:
            slow[at] = True
    np.negative(value, out=value, where=negative)
    integer_negative = negative & (after_dot == _NO_DOT)
    if integer_negative.any():  # json reads "-0" as the int 0: +0.0
        value[integer_negative] += 0.0
    out[:] = value


def _one_word(words: np.ndarray, ends: np.ndarray, body: np.ndarray, negative: np.ndarray, out: np.ndarray) -> None:
    """`_chunk` where every token has at most 8 characters after its sign (at most 8 digits: every step exact,
    and no H = I * 10**(f + 1) + F to undo). In the token's word (its last character in the top byte), with the
    '.' at byte k: the bytes above k move down one byte onto it, so the digits read as one integer followed by a
    0, D = 10 * m for the decimal mantissa m, and the value m / 10**f is D / 10**(f + 1), one rounding of two
    exact doubles (Clinger). An integer's word (no '.') is read as it is and divided by 1. Tokens with an exponent
    (left to Python by the caller) give values that are overwritten."""
    word = words[ends - 8] & _KEEP_NIBBLES[body]
    dot = ((word >> _U64(1)) & word & _BITS_3_AND_2) >> _U64(2)  # 0x01 at the '.' byte, if any
    below = word & (dot - _U64(1))  # the bytes before the '.' (all of an integer's: dot - 1 wraps to all ones)
    word >>= _U64(8)
    word &= np.negative(dot)  # the bytes after the '.', one byte down (nothing for an integer: -0 is 0)
    word |= below
    v = (word * _U64(2561)) >> _U64(8)
    v = ((v & _U64(0x00FF00FF00FF00FF)) * _U64(6553601)) >> _U64(16)
    v = ((v & _U64(0x0000FFFF0000FFFF)) * _U64(42949672960001)) >> _U64(32)
    after_dot = (dot * _BYTE_INDEX) >> _U64(56)  # characters after the '.' (the '.' is never a token's last)
    np.divide(v, _ONE_WORD_DIVISOR[after_dot], out=out)
    if negative.any():
        np.negative(out, out=out, where=negative)
        integer_negative = negative & (after_dot == 0)
        if integer_negative.any():  # json reads "-0" as the int 0: +0.0
            out[integer_negative] += 0.0
