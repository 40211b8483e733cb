"""Output paths checked against the command's inputs, so no command writes over what it reads."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from us43d.errors import Us43dError


def same_file(a: Path, b: Path) -> bool:
    """True when writing `a` would replace `b`: the same path once resolved, or a link to it."""
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def refuse_overwriting(output: Path, inputs: Mapping[str, Path | None], flag: str) -> None:
    """Raise when `output` is one of `inputs` ({"the input image": path, ...}), by any path."""
    for name, source in inputs.items():
        if source is not None and same_file(output, source):
            raise Us43dError(f"{flag} {output} would overwrite {name} ({source}): choose another output path")
