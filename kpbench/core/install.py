"""How to add one of kpbench's optional extras (torch, yolo, fast, ...) to this install, worded for how kpbench was
installed.

`pip install 'kpbench[torch]'` works only where an index serves kpbench itself, which the usual install, a source
checkout, does not have. So the hint depends on the install (PEP 610's direct_url.json, which pip writes):

- kpbench imported from a source checkout (an editable install, or the tree on PYTHONPATH; a checkout is the folder
  above the package holding kpbench's pyproject.toml): `pip install -e '/path/to/checkout[torch]'` (the checkout's
  own path, so that it works from any folder; in the checkout that is `pip install -e ".[torch]"`);
- any other install (a wheel, or one whose origin pip did not record): the extra's own requirements, which install
  from any index that has them, and the source-checkout form beside them, since which one applies cannot be told.

Reading the metadata is cheap (no import of the packages), and only done when a hint is shown.
"""

from __future__ import annotations

import json
import re
import shlex
from importlib import metadata
from pathlib import Path
from urllib.parse import unquote, urlparse

DISTRIBUTION = "kpbench"
SOURCE_FORM = 'pip install -e ".[{extra}]" in a kpbench source checkout'


def _distribution() -> metadata.Distribution | None:
    try:
        return metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:  # run from a source tree on PYTHONPATH, not installed
        return None


def source_checkout() -> Path | None:
    """The source checkout this kpbench is imported from, or None (installed as a wheel into site-packages)."""
    import kpbench

    root = Path(kpbench.__file__).resolve().parents[1]
    try:
        pyproject = (root / "pyproject.toml").read_text(encoding="utf-8")
    except OSError:
        return None
    return root if re.search(rf'^name\s*=\s*"{DISTRIBUTION}"', pyproject, re.MULTILINE) else None


def editable_checkout(dist: metadata.Distribution | None = None) -> Path | None:
    """The source checkout pip recorded for an editable install (`pip install -e`), or None."""
    dist = dist or _distribution()
    text = dist.read_text("direct_url.json") if dist is not None else None
    try:
        direct = json.loads(text) if text else None
    except ValueError:
        return None
    if not isinstance(direct, dict) or not (direct.get("dir_info") or {}).get("editable"):
        return None
    url = urlparse(str(direct.get("url", "")))
    return Path(unquote(url.path)) if url.scheme == "file" else None


def extra_requirements(extra: str, dist: metadata.Distribution | None = None) -> list[str]:
    """The requirements an extra adds (its `kpbench[other]` entries expanded), as written in the metadata."""
    dist = dist or _distribution()
    if dist is None:
        return []
    found: list[str] = []
    todo, seen = [extra], set()
    while todo:
        name = todo.pop(0)
        if name in seen:
            continue
        seen.add(name)
        for requirement in dist.requires or []:
            spec, _, marker = requirement.partition(";")
            if not re.search(rf"extra\s*==\s*['\"]{re.escape(name)}['\"]", marker):
                continue
            nested = re.fullmatch(rf"\s*{DISTRIBUTION}\s*\[([^\]]+)\]\s*", spec)
            if nested:
                todo += [e.strip() for e in nested.group(1).split(",")]
            elif spec.strip() not in found:
                found.append(spec.strip())
    return found


def install_hint(extra: str, dist: metadata.Distribution | None = None) -> str:
    """The command that adds `extra` to this install (module docstring); `dist` stands in for kpbench's installed
    metadata (tests)."""
    dist = dist or _distribution()
    checkout = source_checkout() or editable_checkout(dist)
    if checkout is not None:
        return f"pip install -e {shlex.quote(f'{checkout}[{extra}]')}"
    requirements = extra_requirements(extra, dist)
    source = SOURCE_FORM.format(extra=extra)
    if not requirements:
        return f"pip install 'kpbench[{extra}]', or {source}"
    packages = " ".join(shlex.quote(r.replace(" ", "")) for r in requirements)
    return f"pip install {packages} (kpbench's {extra} extra; or {source})"
