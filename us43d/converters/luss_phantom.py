"""LUSS phantom: every PNG under a folder whose path contains `masks` is a label map (1 rib,
2 pleural line, 3 A-line, 4 B-line, 5 B-line confluence); other PNGs are images; same names."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from us43d.converters.base import Item, Sample, label_map_sample, pair_files
from us43d.converters.readers import read_image, read_label_map
from us43d.registry.schema import DatasetEntry


def list_items(raw: Path, entry: DatasetEntry) -> Iterator[Item]:
    images: dict[str, Path] = {}
    masks: dict[str, Path] = {}
    for path in sorted(raw.rglob("*.png")):
        is_mask = "masks" in path.relative_to(raw).parent.as_posix()
        (masks if is_mask else images)[path.stem] = path
    for key, files, problem in pair_files(raw, images, masks):
        yield Item(key, files, problem=problem)


def read_item(raw: Path, item: Item, entry: DatasetEntry) -> Iterator[Sample]:
    image = read_image(raw / item.files[0])
    allowed = list(range(1, len(entry.categories) + 1))
    labels = read_label_map(raw / item.files[1], image.pixels.shape[:2], allowed=allowed)
    yield label_map_sample(item, image, labels, entry)
