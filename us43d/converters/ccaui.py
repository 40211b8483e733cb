"""Common carotid artery: `US images/<series>_slice_<n>.png` with the same name under
`Expert mask images/`. Frames of one cine series are near-duplicates, so the series is the group."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from us43d.converters.base import Item, files_by_stem, find_folder, pair_files
from us43d.converters.pairs import read_binary_pair as read_item  # noqa: F401


def list_items(raw: Path, entry) -> Iterator[Item]:
    images = files_by_stem(find_folder(raw, "US images"), (".png",))
    masks = files_by_stem(find_folder(raw, "Expert mask images"), (".png",))
    for key, files, problem in pair_files(raw, images, masks):
        yield Item(key, files, group=key.split("_slice_")[0], problem=problem)
