"""GIST514-DB: `usd514_jpeg_roi/images/*.jpg` with COCO-style polygon annotations.

Split 0 of the authors' cross-validation files is used: `train_anno_crop_split_0.json` is the
training pool, `val_anno_crop_split_0.json` the official test set. Every polygon is one
instance. Source categories are matched by name, not by trusting their ids, and without regard
to case: the authors' own code asks for `lmym` and `GIST`, third-party converters write `gist`.

The image-level class (leiomyoma or GIST) is the category of the image's tumour: the release has
no other per-image label. An image whose annotations name both has no single class and gets
none (its instances keep their categories); one without annotations gets none either.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from us43d.converters.base import TEST, Item, Sample, locate_root, relative
from us43d.converters.readers import polygons_to_mask, read_image
from us43d.errors import ConversionError
from us43d.registry.schema import DatasetEntry

ANNOTATIONS = {"train_anno_crop_split_0.json": None, "val_anno_crop_split_0.json": TEST}
SOURCE_NAMES = {"lmym": "leiomyoma", "gist": "gastrointestinal stromal tumour"}
DEFAULT_SOURCE_IDS = {1: "lmym", 2: "gist"}


def _load(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConversionError("file is missing", str(path))
    try:
        data = json.loads(path.read_text())
        data["images"], data["annotations"]  # noqa: B018 - presence check
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ConversionError(f"not a COCO annotation file ({exc})", str(path)) from exc
    return data


def list_items(raw: Path, entry: DatasetEntry) -> Iterator[Item]:
    root = locate_root(raw, "usd514_jpeg_roi") / "usd514_jpeg_roi"
    for name, split in ANNOTATIONS.items():
        json_path = root / "annotations" / name
        data = _load(json_path)
        source_ids = {c["id"]: c["name"] for c in data.get("categories", [])} or DEFAULT_SOURCE_IDS
        by_image: dict[Any, list[dict[str, Any]]] = defaultdict(list)
        for ann in data["annotations"]:
            by_image[ann["image_id"]].append(ann)
        for image in data["images"]:
            file_name = image["file_name"]
            image_path = root / "images" / file_name
            files = (relative(raw, image_path), relative(raw, json_path))
            key = Path(file_name).stem
            if not image_path.is_file():
                yield Item(key, files, problem=f"listed in {name} but the image file is missing")
                continue
            shapes = []
            for ann in by_image.get(image["id"], []):
                source = str(source_ids.get(ann["category_id"])).lower()
                if source not in SOURCE_NAMES:
                    shapes = None
                    break
                shapes.append((SOURCE_NAMES[source], ann["segmentation"]))
            if shapes is None:
                yield Item(key, files, problem=f"{name}: unknown category in the annotations of {file_name}")
                continue
            classes = {category for category, _ in shapes}
            label = classes.pop() if len(classes) == 1 else None
            yield Item(key, files, split=split, meta={"shapes": shapes}, label=label)


def read_item(raw: Path, item: Item, entry: DatasetEntry) -> Iterator[Sample]:
    image = read_image(raw / item.files[0])
    height, width = image.pixels.shape[:2]
    instances = []
    for category, segmentation in item.meta["shapes"]:
        if not isinstance(segmentation, list):
            raise ConversionError("expected polygon segmentation", item.files[1])
        for polygon in segmentation:
            instances.append((category, polygons_to_mask([polygon], height, width, item.files[1])))
    yield Sample(key=item.key, image=image.pixels, source_file=item.source_file, instances=instances, lossy=image.lossy)
