"""S1: `Data/{TrainingDataSet,TestingDataSet}/...`; files under a `Labels` folder are masks
(a second `General` label set is not used), the rest images, paired by stem. Mask value 127 is
a benign tumour, 255 a malignant one. The testing part is the official test set."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from us43d.converters.base import TEST, Item, Sample, find_folder, label_map_sample, pair_files
from us43d.converters.readers import read_image, read_label_map
from us43d.registry.schema import DatasetEntry

PARTS = {"TrainingDataSet": None, "TestingDataSet": TEST}
VALUES = {127: 1, 255: 2}


def list_items(raw: Path, entry: DatasetEntry) -> Iterator[Item]:
    for part, split in PARTS.items():
        folder = find_folder(raw, f"Data/{part}")
        images: dict[str, Path] = {}
        masks: dict[str, Path] = {}
        for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg")):
            parts = path.relative_to(folder).parts
            if any("General" in p for p in parts):
                continue
            (masks if any("Labels" in p for p in parts[:-1]) else images)[path.stem] = path
        for key, files, problem in pair_files(raw, images, masks):
            yield Item(f"{part}/{key}", files, split=split, problem=problem)


def read_item(raw: Path, item: Item, entry: DatasetEntry) -> Iterator[Sample]:
    image = read_image(raw / item.files[0])
    values = read_label_map(raw / item.files[1], image.pixels.shape[:2], allowed=list(VALUES))
    labels = sum((values == v) * label for v, label in VALUES.items())
    yield label_map_sample(item, image, labels, entry)
