"""BUID: `Benign/<n> Benign Image.bmp` with `Benign/<n> Benign Mask.tif`, and the same for
Malignant (`<n> Benign Lesion.bmp`, a drawing of the lesion on the image, is not read). Pathology
is not a category (one lesion class); a .tif under any other name is reported."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from us43d.converters.base import Item, find_folder, pair_files, relative
from us43d.converters.pairs import read_binary_pair as read_item  # noqa: F401
from us43d.registry.schema import DatasetEntry


def list_items(raw: Path, entry: DatasetEntry) -> Iterator[Item]:
    for pathology in ("Benign", "Malignant"):
        folder = find_folder(raw, pathology)
        images = {p.name.removesuffix(" Image.bmp"): p for p in folder.glob("* Image.bmp")}
        masks = {p.name.removesuffix(" Mask.tif"): p for p in folder.glob("* Mask.tif")}
        for key, files, problem in pair_files(raw, images, masks):
            yield Item(key.replace(" ", "_"), files, problem=problem)
        # a mask under another name (a second lesion's?) would be lost unseen: report it
        strays = [p for p in folder.iterdir() if p.suffix.lower() in (".tif", ".tiff") and not p.name.endswith(" Mask.tif")]
        for other in sorted(strays):
            key = f"{other.name.replace(' ', '_')}/unmatched"  # never a pair's key
            yield Item(key, (relative(raw, other),), problem="a mask not named '<n> <Class> Mask.tif'")
