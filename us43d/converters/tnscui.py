"""TN-SCUI 2020 training release: `TNSCUI2020_train/image/<nnnnn>.png` with
`TNSCUI2020_train/mask/<nnnnn>.png` (0/255)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from us43d.converters.base import Item, files_by_stem, find_folder, pair_files
from us43d.converters.pairs import read_binary_pair as read_item  # noqa: F401


def list_items(raw: Path, entry) -> Iterator[Item]:
    root = find_folder(raw, "TNSCUI2020_train")
    for key, files, problem in pair_files(raw, files_by_stem(root / "image", (".png",)), files_by_stem(root / "mask", (".png",))):
        yield Item(key, files, problem=problem)
