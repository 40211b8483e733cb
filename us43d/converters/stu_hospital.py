"""STU-Hospital: `Hospital/Test_Image_<n>.png` with `Hospital/mask_<n>.png`.

The masks are about four times larger than their 128 x 128 images and anti-aliased, so they
are resized as coverage to the image and thresholded at one half, never compared with 255.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from us43d.converters.base import (
    Item,
    Sample,
    locate_root,
    one_class_sample,
    pair_files,
)
from us43d.converters.readers import read_binary_mask, read_image
from us43d.registry.schema import DatasetEntry

_NUMBER = re.compile(r"_(\d+)\.png$", re.IGNORECASE)


def list_items(raw: Path, entry: DatasetEntry) -> Iterator[Item]:
    folder = locate_root(raw, "Hospital") / "Hospital"
    images, masks = {}, {}
    for path in folder.iterdir():
        match = _NUMBER.search(path.name)
        if match:
            (masks if "mask" in path.name.lower() else images)[match.group(1)] = path
    for key, files, problem in pair_files(raw, images, masks):
        yield Item(f"Test_Image_{key}", files, problem=problem)


def read_item(raw: Path, item: Item, entry: DatasetEntry) -> Iterator[Sample]:
    image = read_image(raw / item.files[0])
    mask = read_binary_mask(raw / item.files[1], image.pixels.shape[:2], allow_resize=True)
    yield one_class_sample(item, image, mask, entry.categories[0])
