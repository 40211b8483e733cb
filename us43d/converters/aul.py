"""AUL: `<Class>/image/<n>.jpg` with polygon files `<Class>/segmentation/{liver,mass,outline}/<n>.json`
(a plain list of [x, y] vertices on pixel centres), for the classes Benign, Malignant and
Normal. Each polygon is one instance; pathology is not a category. `outline` traces the scan
sector (the field of view), so its category is named for that."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from us43d.converters.base import Item, Sample, files_by_stem, find_folder, relative
from us43d.converters.readers import polygons_to_mask, read_image
from us43d.errors import ConversionError
from us43d.registry.schema import DatasetEntry

CLASSES = ("Benign", "Malignant", "Normal")
STRUCTURES = {"liver": "liver", "mass": "liver mass", "outline": "scan sector"}  # outline: the scan sector, not the liver


def list_items(raw: Path, entry: DatasetEntry) -> Iterator[Item]:
    for pathology in CLASSES:
        root = find_folder(raw, f"{pathology}/image").parent
        images = files_by_stem(root / "image", (".jpg", ".jpeg", ".png"))
        shapes = {s: files_by_stem(root / "segmentation" / s, (".json",), required=False) for s in STRUCTURES}
        for stem, image in images.items():
            polygons = [shapes[s][stem] for s in STRUCTURES if stem in shapes[s]]
            key = f"{pathology}/{stem}"
            if not polygons:
                yield Item(key, (relative(raw, image),), problem="image has no polygon file")
                continue
            yield Item(key, (relative(raw, image), *(relative(raw, p) for p in polygons)))
        orphans = sorted({stem for s in STRUCTURES for stem in shapes[s]} - images.keys())
        for stem in orphans:
            first = next(shapes[s][stem] for s in STRUCTURES if stem in shapes[s])
            yield Item(f"{pathology}/{stem}", (relative(raw, first),), problem="polygon has no matching image")


def read_item(raw: Path, item: Item, entry: DatasetEntry) -> Iterator[Sample]:
    image = read_image(raw / item.files[0])
    height, width = image.pixels.shape[:2]
    instances = []
    for polygon_file in item.files[1:]:
        try:
            points = json.loads((raw / polygon_file).read_text())
            flat = [float(v) for point in points for v in point[:2]]
        except (OSError, ValueError, TypeError) as exc:
            raise ConversionError(f"not a polygon file ({exc})", polygon_file) from exc
        category = STRUCTURES[Path(polygon_file).parent.name]
        instances.append((category, polygons_to_mask([flat], height, width, polygon_file, "centres")))
    yield Sample(item.key, image.pixels, item.source_file, instances=instances, lossy=image.lossy)
