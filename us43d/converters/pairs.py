"""The reading half shared by every "one image, one binary mask" dataset."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from us43d.converters.base import Item, Sample, one_class_sample
from us43d.converters.readers import read_binary_mask, read_image
from us43d.registry.schema import DatasetEntry


def read_binary_pair(raw: Path, item: Item, entry: DatasetEntry, allow_resize: bool = False) -> Iterator[Sample]:
    """files = (image, mask); the category is `meta["category"]`, else the dataset's only one."""
    image = read_image(raw / item.files[0])
    mask = read_binary_mask(raw / item.files[1], image.pixels.shape[:2], allow_resize=allow_resize)
    yield one_class_sample(item, image, mask, item.meta.get("category", entry.categories[0]))
