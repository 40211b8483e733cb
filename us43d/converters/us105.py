"""105US: a folder of images (`<id>.png`) and a folder of masks whose path contains `Masks`
(`<id> G man.png`); paired on the number before the first space or dot."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from us43d.converters.base import Item, pair_files
from us43d.converters.pairs import read_binary_pair as read_item  # noqa: F401

_NUMBER = re.compile(r"^(\d+)")


def list_items(raw: Path, entry) -> Iterator[Item]:
    images: dict[str, Path] = {}
    masks: dict[str, Path] = {}
    for path in sorted(raw.rglob("*.png")):
        match = _NUMBER.match(path.name)
        if match:
            target = masks if "Masks" in path.relative_to(raw).as_posix() else images
            target[str(int(match.group(1)))] = path
    for key, files, problem in pair_files(raw, images, masks):
        yield Item(f"{int(key):03d}", files, problem=problem)
