"""BUSI: `Dataset_BUSI_with_GT/{benign,malignant}/<name>.png` with `<name>_mask.png` and, for
multifocal images, `<name>_mask_1.png`, `<name>_mask_2.png`. Every mask file's components are
instances. The normal folder holds no lesion and is not read."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from us43d.converters.base import Item, Sample, find_folder, relative
from us43d.converters.readers import connected_components, read_binary_mask, read_image
from us43d.registry.schema import DatasetEntry

_MASK = re.compile(r"^(?P<image>.+)_mask(_\d+)?$")


def list_items(raw: Path, entry: DatasetEntry) -> Iterator[Item]:
    root = find_folder(raw, "Dataset_BUSI_with_GT")
    for pathology in ("benign", "malignant"):
        images, masks = {}, {}
        for path in sorted((root / pathology).glob("*.png")):
            match = _MASK.match(path.stem)
            if match:
                masks.setdefault(match.group("image"), []).append(path)
            else:
                images[path.stem] = path
        for name in sorted(images.keys() | masks.keys()):
            key = name.replace(" ", "_").replace("(", "").replace(")", "")
            if name not in images:
                yield Item(key, tuple(relative(raw, m) for m in masks[name]), problem="mask has no matching image")
            elif name not in masks:
                yield Item(key, (relative(raw, images[name]),), problem="image has no matching mask")
            else:
                yield Item(key, (relative(raw, images[name]), *(relative(raw, m) for m in masks[name])))


def read_item(raw: Path, item: Item, entry: DatasetEntry) -> Iterator[Sample]:
    image = read_image(raw / item.files[0])
    shape = image.pixels.shape[:2]
    instances = [
        (entry.categories[0], part)
        for mask_file in item.files[1:]
        for part in connected_components(read_binary_mask(raw / mask_file, shape))
        if part.any()
    ]
    yield Sample(item.key, image.pixels, item.source_file, instances=instances, lossy=image.lossy)
