"""DDTI (re-processed copy in the TN3K/TG3K/DDTI thyroid archive):
`2_preprocessed_data/stage1/p_image/<n>.PNG` with `.../p_mask/<n>.PNG` (0/255)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from us43d.converters.base import Item, files_by_stem, find_folder, pair_files
from us43d.converters.pairs import read_binary_pair as read_item  # noqa: F401


def list_items(raw: Path, entry) -> Iterator[Item]:
    stage = find_folder(raw, "2_preprocessed_data/stage1")
    for key, files, problem in pair_files(
        raw, files_by_stem(stage / "p_image", (".png",)), files_by_stem(stage / "p_mask", (".png",))
    ):
        yield Item(key, files, problem=problem)
