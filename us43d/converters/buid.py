"""BUID: `Benign/<n> Benign Image.bmp` with `Benign/<n> Benign Mask.tif`, and the same for
Malignant. Pathology is not a category (one lesion class)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from us43d.converters.base import Item, find_folder, pair_files
from us43d.converters.pairs import read_binary_pair as read_item  # noqa: F401
from us43d.registry.schema import DatasetEntry


def list_items(raw: Path, entry: DatasetEntry) -> Iterator[Item]:
    for pathology in ("Benign", "Malignant"):
        folder = find_folder(raw, pathology)
        images = {p.name.removesuffix(" Image.bmp"): p for p in folder.glob("* Image.bmp")}
        masks = {p.name.removesuffix(" Mask.tif"): p for p in folder.glob("* Mask.tif")}
        for key, files, problem in pair_files(raw, images, masks):
            yield Item(key.replace(" ", "_"), files, problem=problem)
