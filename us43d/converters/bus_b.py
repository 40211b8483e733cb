"""BUS Dataset B: `BUS/original/<nnnnnn>.png` with `BUS/GT/<nnnnnn>.png`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from us43d.converters.base import Item, files_by_stem, find_folder, pair_files
from us43d.converters.pairs import read_binary_pair as read_item  # noqa: F401


def list_items(raw: Path, entry) -> Iterator[Item]:
    root = find_folder(raw, "BUS")
    for key, files, problem in pair_files(
        raw, files_by_stem(root / "original", (".png",)), files_by_stem(root / "GT", (".png",))
    ):
        yield Item(key, files, problem=problem)
