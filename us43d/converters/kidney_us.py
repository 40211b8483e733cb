"""Open kidney ultrasound: images `<n>_IM-...-anon.png` (from the registration-only zip) and the
capsule masks `labels/reviewed_masks_1/capsule/<same name>.png` (0/1) from the repository.
Images whose capsule mask is empty are dropped by the build. Group: the number before the
first underscore (a few numbers occur twice)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from us43d.converters.base import Item, Sample, files_by_stem, find_folder, one_class_sample, pair_files
from us43d.converters.readers import read_image, read_label_map
from us43d.registry.schema import DatasetEntry


def list_items(raw: Path, entry: DatasetEntry) -> Iterator[Item]:
    masks = files_by_stem(find_folder(raw, "reviewed_masks_1/capsule"), (".png",))
    image_folder = next((p.parent for p in sorted(raw.rglob("*_anon.png")) if "labels" not in p.relative_to(raw).parts), None)
    images = files_by_stem(image_folder, (".png",)) if image_folder else {}
    for key, files, problem in pair_files(raw, images, masks):
        yield Item(key, files, group=key.split("_")[0], problem=problem)


def read_item(raw: Path, item: Item, entry: DatasetEntry) -> Iterator[Sample]:
    image = read_image(raw / item.files[0])
    capsule = read_label_map(raw / item.files[1], image.pixels.shape[:2], allowed=[1])
    yield one_class_sample(item, image, capsule == 1, entry.categories[0])
