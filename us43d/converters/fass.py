"""FASS: `IMAGES/P<patient>_IMG<n>.png` with `ARRAY_FORMAT/<same>.npy`, a pickled dictionary whose
key `structures` maps artery, liver, stomach and vein to binary arrays (they may overlap). Images
of one patient (`P<patient>`) form a group.

The release offers no other format than these pickles, so they are read by the shared
`read_object_npy`, whose unpickler builds NumPy arrays and plain Python values only: a hostile
file is refused, never run.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from us43d.converters.base import Item, Sample, files_by_stem, find_folder, pair_files
from us43d.converters.readers import connected_components, read_image, read_object_npy
from us43d.errors import ConversionError
from us43d.registry.schema import DatasetEntry


def list_items(raw: Path, entry: DatasetEntry) -> Iterator[Item]:
    images = files_by_stem(find_folder(raw, "IMAGES"), (".png",))
    arrays = files_by_stem(find_folder(raw, "ARRAY_FORMAT"), (".npy",))
    for key, files, problem in pair_files(raw, images, arrays):
        yield Item(key, files, group=key.split("_")[0], problem=problem)


def read_item(raw: Path, item: Item, entry: DatasetEntry) -> Iterator[Sample]:
    image = read_image(raw / item.files[0])
    content = read_object_npy(raw / item.files[1])
    structures = content.get("structures") if isinstance(content, dict) else None
    if not isinstance(structures, dict):
        raise ConversionError("not a FASS structure array (no 'structures' dictionary)", item.files[1])
    instances = []
    for name, mask in sorted(structures.items()):
        if name not in entry.categories:
            raise ConversionError(f"unknown structure '{name}'", item.files[1])
        mask = np.asarray(mask) > 0
        if mask.shape != image.pixels.shape[:2]:
            raise ConversionError(f"structure '{name}' is {mask.shape}, image {image.pixels.shape[:2]}", item.files[1])
        instances.extend((name, part) for part in connected_components(mask) if part.any())
    yield Sample(item.key, image.pixels, item.source_file, instances=instances, lossy=image.lossy)
