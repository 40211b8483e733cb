"""MMOTU OTU_3d (contrast-enhanced frames, 2D despite the name): `OTU_3d/images/<n>.JPG` with
`OTU_3d/annotations/<n>.PNG`; any non-zero pixel of the colour-coded mask is the lesion."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from us43d.converters.base import Item, Sample, files_by_stem, find_folder, one_class_sample, pair_files
from us43d.converters.readers import nonzero_mask, read_image
from us43d.registry.schema import DatasetEntry


def list_items(raw: Path, entry: DatasetEntry) -> Iterator[Item]:
    root = find_folder(raw, "OTU_3d")
    images = files_by_stem(root / "images", (".jpg",))
    masks = {k: p for k, p in files_by_stem(root / "annotations", (".png",)).items() if not k.endswith("_binary")}
    for key, files, problem in pair_files(raw, images, masks):
        yield Item(key, files, problem=problem)


def read_item(raw: Path, item: Item, entry: DatasetEntry) -> Iterator[Sample]:
    image = read_image(raw / item.files[0])
    yield one_class_sample(item, image, nonzero_mask(raw / item.files[1], image.pixels.shape[:2]), entry.categories[0])
