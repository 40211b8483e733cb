"""TN3K: `tn3k/{trainval,test}-image/<nnnn>.jpg` with `{trainval,test}-mask/<nnnn>.jpg` (JPEG
masks, thresholded at half range). The test folders are the official test set; both parts
number from 0000, so the part is in the key."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from us43d.converters.base import TEST, Item, files_by_stem, find_folder, pair_files
from us43d.converters.pairs import read_binary_pair as read_item  # noqa: F401

PARTS = {"trainval": None, "test": TEST}


def list_items(raw: Path, entry) -> Iterator[Item]:
    root = find_folder(raw, "trainval-image").parent
    for part, split in PARTS.items():
        images = files_by_stem(root / f"{part}-image", (".jpg", ".jpeg"))
        masks = files_by_stem(root / f"{part}-mask", (".jpg", ".jpeg"))
        for key, files, problem in pair_files(raw, images, masks):
            yield Item(f"{part}/{key}", files, split=split, problem=problem)
