"""MMOTU-2D (OTU_2d): `images/<n>.JPG`, `annotations/<n>.PNG`, and the class lists.

Every image has one tumour class, given by `train_cls.txt` / `val_cls.txt` ("<n>.JPG <class>",
class 0-7), which is both the category of its instances and its image-level class; the mask only
gives the shape (any non-zero pixel). Images of `val_cls.txt` are the official test set. An image
in neither list, or in both, is reported rather than given the class of its neighbour.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from us43d.converters.base import (
    TEST,
    Item,
    Sample,
    locate_root,
    one_class_sample,
    pair_files,
)
from us43d.converters.readers import nonzero_mask, read_image
from us43d.errors import ConversionError
from us43d.registry.schema import DatasetEntry

LISTS = {"train_cls.txt": None, "val_cls.txt": TEST}


def _read_list(path: Path) -> dict[str, int]:
    if not path.is_file():
        raise ConversionError("file is missing", str(path))
    classes: dict[str, int] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            raise ConversionError(f"line {number} is not '<image> <class>': {line!r}", str(path))
        classes[Path(parts[0]).stem] = int(parts[1])
    return classes


def list_items(raw: Path, entry: DatasetEntry) -> Iterator[Item]:
    root = locate_root(raw, "train_cls.txt")
    listed = {name: _read_list(root / name) for name in LISTS}
    images = {p.stem: p for p in (root / "images").iterdir() if p.suffix.lower() == ".jpg"}
    masks = {p.stem: p for p in (root / "annotations").iterdir() if p.suffix.lower() == ".png" and not p.stem.endswith("_binary")}
    for key, files, problem in pair_files(raw, images, masks):
        where = [name for name, classes in listed.items() if key in classes]
        if not problem and len(where) != 1:
            problem = (
                "listed in both train_cls.txt and val_cls.txt" if where else "listed in neither train_cls.txt nor val_cls.txt"
            )
        if problem:
            yield Item(key, files, problem=problem)
            continue
        index = listed[where[0]][key]
        if index >= len(entry.categories):
            yield Item(key, files, problem=f"{where[0]}: class {index} is outside 0..{len(entry.categories) - 1}")
            continue
        category = entry.categories[index]
        yield Item(key, files, split=LISTS[where[0]], meta={"category": category}, label=category)


def read_item(raw: Path, item: Item, entry: DatasetEntry) -> Iterator[Sample]:
    image = read_image(raw / item.files[0])
    mask = nonzero_mask(raw / item.files[1], image.pixels.shape[:2])
    yield one_class_sample(item, image, mask, item.meta["category"])
