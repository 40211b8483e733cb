"""Kaggle ultrasound nerve segmentation: `train/<subject>_<n>.tif` with `<subject>_<n>_mask.tif`.
Many masks are empty (no nerve visible): those images are dropped and counted by the build.
All images of a subject form one group."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from us43d.converters.base import Item, files_by_stem, find_folder, pair_files
from us43d.converters.pairs import read_binary_pair as read_item  # noqa: F401


def list_items(raw: Path, entry) -> Iterator[Item]:
    everything = files_by_stem(find_folder(raw, "train"), (".tif", ".tiff"))
    images = {k: p for k, p in everything.items() if not k.endswith("_mask")}
    masks = {k.removesuffix("_mask"): p for k, p in everything.items() if k.endswith("_mask")}
    for key, files, problem in pair_files(raw, images, masks):
        yield Item(key, files, group=key.split("_")[0], problem=problem)
