"""TG3K: `tg3k/thyroid-image/<n>.jpg` with `tg3k/thyroid-mask/<n>.jpg`; the masks are JPEG, so
they are thresholded at half range rather than compared with 255."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from us43d.converters.base import Item, files_by_stem, find_folder, pair_files
from us43d.converters.pairs import read_binary_pair as read_item  # noqa: F401


def list_items(raw: Path, entry) -> Iterator[Item]:
    root = find_folder(raw, "tg3k")
    images = files_by_stem(root / "thyroid-image", (".jpg", ".jpeg"))
    masks = files_by_stem(root / "thyroid-mask", (".jpg", ".jpeg"))
    for key, files, problem in pair_files(raw, images, masks):
        yield Item(key, files, problem=problem)
