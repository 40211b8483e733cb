"""UBPD: `<id>.jpg` images with LabelMe `<id>.json` files whose polygon labels are pinyin
names; each polygon is one instance, matched to a category by name."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from us43d.converters.base import Item, Sample, pair_files
from us43d.converters.readers import polygons_to_mask, read_image
from us43d.errors import ConversionError
from us43d.registry.schema import DatasetEntry

LABELS = {"dongmai": "artery", "jingmai": "vein", "jirouzuzhi": "muscle", "shenjing": "nerve", "zhifang": "fat", "jizhu": "spine"}


def list_items(raw: Path, entry: DatasetEntry) -> Iterator[Item]:
    images = {p.stem: p for p in sorted(raw.rglob("*.jpg"))}
    shapes = {p.stem: p for p in sorted(raw.rglob("*.json"))}
    for key, files, problem in pair_files(raw, images, shapes):
        yield Item(key, files, problem=problem)


def read_item(raw: Path, item: Item, entry: DatasetEntry) -> Iterator[Sample]:
    image = read_image(raw / item.files[0])
    height, width = image.pixels.shape[:2]
    try:  # the files may carry non-UTF-8 text in fields we do not use
        shapes = json.loads((raw / item.files[1]).read_bytes().decode("utf-8", errors="ignore"))["shapes"]
    except (OSError, ValueError, KeyError) as exc:
        raise ConversionError(f"not a LabelMe file ({exc})", item.files[1]) from exc
    instances = []
    for shape in shapes:
        name = str(shape.get("label", "")).strip().lower()
        if name not in LABELS:
            raise ConversionError(f"unknown label '{name}'", item.files[1])
        flat = [float(v) for point in shape["points"] for v in point[:2]]
        instances.append((LABELS[name], polygons_to_mask([flat], height, width, item.files[1])))
    yield Sample(item.key, image.pixels, item.source_file, instances=instances, lossy=image.lossy)
