"""UBPD: `<patient>_<frame>.jpg` images with LabelMe `<patient>_<frame>.json` files whose polygon
labels are pinyin names; each polygon is one instance, matched to a category by name and drawn
as LabelMe draws it. Neighbouring frames of one scan share the patient prefix, the group. Files
are paired by stem: a JSON's own `imagePath` sometimes names another frame, and 32 of the 955
real JSONs are GBK-encoded (`imagePath` "2-1-标定.tif")."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from us43d.converters.base import Item, Sample, pair_files
from us43d.converters.readers import polygons_to_mask, read_image
from us43d.errors import ConversionError
from us43d.registry.schema import DatasetEntry

LABELS = {"dongmai": "artery", "jingmai": "vein", "jirouzuzhi": "muscle", "shenjing": "nerve", "zhifang": "fat", "jizhu": "spine"}
ENCODINGS = ("utf-8", "gb18030")


def list_items(raw: Path, entry: DatasetEntry) -> Iterator[Item]:
    images = {p.stem: p for p in sorted(raw.rglob("*.jpg"))}
    shapes = {p.stem: p for p in sorted(raw.rglob("*.json"))}
    for key, files, problem in pair_files(raw, images, shapes):
        yield Item(key, files, group=key.split("_")[0], problem=problem)


def _shapes(path: Path) -> list:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConversionError(f"cannot read ({exc})", str(path)) from exc
    for encoding in ENCODINGS:
        try:
            return json.loads(data.decode(encoding))["shapes"]
        except UnicodeDecodeError:
            continue
        except (ValueError, KeyError, TypeError) as exc:
            raise ConversionError(f"not a LabelMe file ({exc})", str(path)) from exc
    raise ConversionError(f"text is neither {' nor '.join(ENCODINGS)}", str(path))


def read_item(raw: Path, item: Item, entry: DatasetEntry) -> Iterator[Sample]:
    image = read_image(raw / item.files[0])
    height, width = image.pixels.shape[:2]
    instances = []
    for shape in _shapes(raw / item.files[1]):
        name = str(shape.get("label", "")).strip().lower()
        if name not in LABELS:
            raise ConversionError(f"unknown label '{name}'", item.files[1])
        try:
            flat = [float(v) for point in shape["points"] for v in point[:2]]
        except (KeyError, TypeError, ValueError) as exc:
            raise ConversionError(f"polygon of '{name}' has no valid points ({exc})", item.files[1]) from exc
        instances.append((LABELS[name], polygons_to_mask([flat], height, width, item.files[1], "labelme")))
    yield Sample(item.key, image.pixels, item.source_file, instances=instances, lossy=image.lossy)
