"""FALLMUD: `FALLMUD/{NeilCronin,RyanCunningham}/images/<stem>.*` with
`aponeurosis_masks/<stem>.*` and `fascicle_masks/<stem>.*` (any extension; aponeurosis masks
are JPEG in one part). A mask stored transposed relative to its image is turned 90 degrees
clockwise, as the anchor script does for one contributor's masks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from us43d.converters.base import Item, Sample, files_by_stem, find_folder, relative
from us43d.converters.readers import binary_mask, connected_components, read_image, read_mask_values
from us43d.registry.schema import DatasetEntry

PARTS = ("NeilCronin", "RyanCunningham")
SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")
MASKS = {"aponeurosis_masks": "aponeurosis", "fascicle_masks": "fascicle"}


def list_items(raw: Path, entry: DatasetEntry) -> Iterator[Item]:
    root = find_folder(raw, "FALLMUD")
    for part in PARTS:
        if not (root / part).is_dir():
            continue
        images = files_by_stem(root / part / "images", SUFFIXES, required=False)
        masks = {folder: files_by_stem(root / part / folder, SUFFIXES, required=False) for folder in MASKS}
        for stem in sorted(images.keys() | set().union(*masks.values())):
            key = f"{part}/{stem}"
            missing = [f for f in MASKS if stem not in masks[f]]
            if stem not in images:
                paths = [masks[f][stem] for f in MASKS if stem in masks[f]]
                yield Item(key, tuple(relative(raw, p) for p in paths), problem="mask has no matching image")
            elif missing:
                yield Item(key, (relative(raw, images[stem]),), problem=f"image has no {' or '.join(missing)}")
            else:
                yield Item(key, (relative(raw, images[stem]), *(relative(raw, masks[f][stem]) for f in MASKS)))


def read_item(raw: Path, item: Item, entry: DatasetEntry) -> Iterator[Sample]:
    image = read_image(raw / item.files[0])
    shape = image.pixels.shape[:2]
    instances = []
    for mask_file, category in zip(item.files[1:], MASKS.values()):
        values = read_mask_values(raw / mask_file)
        if values.shape == shape[::-1] and shape[0] != shape[1]:
            values = np.rot90(values, k=-1)
        mask = binary_mask(np.ascontiguousarray(values), shape, raw / mask_file)
        instances.extend((category, part) for part in connected_components(mask) if part.any())
    yield Sample(item.key, image.pixels, item.source_file, instances=instances, lossy=image.lossy)
