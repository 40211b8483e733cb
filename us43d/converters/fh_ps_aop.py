"""FH-PS-AOP: `image_mha/<name>.mha` (three colour planes along the first array axis; the first
is the grey image) with `label_mha/<name>.mha` (1 pubic symphysis, 2 fetal head)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from us43d.converters.base import Item, Sample, find_folder, pair_files
from us43d.converters.readers import label_map, read_volume, to_storable
from us43d.registry.schema import DatasetEntry


def list_items(raw: Path, entry: DatasetEntry) -> Iterator[Item]:
    images = {p.stem: p for p in sorted(find_folder(raw, "image_mha").glob("*.mha"))}
    labels = {p.stem: p for p in sorted(find_folder(raw, "label_mha").glob("*.mha"))}
    for key, files, problem in pair_files(raw, images, labels):
        yield Item(key, files, problem=problem)


def _plane(array: np.ndarray) -> np.ndarray:
    """(i, j[, planes]) voxel order back to a (rows, cols) image, first plane only."""
    return (array[..., 0] if array.ndim == 3 else array).T


def read_item(raw: Path, item: Item, entry: DatasetEntry) -> Iterator[Sample]:
    image = np.ascontiguousarray(to_storable(_plane(read_volume(raw / item.files[0]).array)))
    names = dict(enumerate(entry.categories, start=1))
    labels = label_map(_plane(read_volume(raw / item.files[1]).array), image.shape, list(names), item.files[1])
    yield Sample(item.key, image, item.source_file, label_map=labels, label_names=names)
