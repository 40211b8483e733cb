"""Transverse musculoskeletal ultrasound: `Polito-Radboud-DeepLearningUS/{BB,GM,TA}/...`;
files under a `Masks` folder are masks (any non-zero pixel is muscle), paired by stem within
each muscle. One class for the three muscles."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from us43d.converters.base import Item, Sample, find_folder, one_class_sample, pair_files
from us43d.converters.readers import nonzero_mask, read_image
from us43d.registry.schema import DatasetEntry

MUSCLES = ("BB", "GM", "TA")


def list_items(raw: Path, entry: DatasetEntry) -> Iterator[Item]:
    root = find_folder(raw, "Polito-Radboud-DeepLearningUS")
    for muscle in MUSCLES:
        images: dict[str, Path] = {}
        masks: dict[str, Path] = {}
        for path in sorted((root / muscle).rglob("*.png")):
            is_mask = any("Masks" in p for p in path.relative_to(root / muscle).parts[:-1])
            (masks if is_mask else images)[path.stem] = path
        for key, files, problem in pair_files(raw, images, masks):
            yield Item(f"{muscle}/{key}", files, problem=problem)


def read_item(raw: Path, item: Item, entry: DatasetEntry) -> Iterator[Sample]:
    image = read_image(raw / item.files[0])
    yield one_class_sample(item, image, nonzero_mask(raw / item.files[1], image.pixels.shape[:2]), entry.categories[0])
