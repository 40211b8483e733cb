"""BUS-UC: `{Benign,Malignant}/{images,masks}/<id>.png` (the pooled `All/` copy is skipped).
Some masks are stored at another size than their image and are resized to it."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path

from us43d.converters.base import Item, files_by_stem, find_folder, pair_files
from us43d.converters.pairs import read_binary_pair

CATEGORIES = {"Benign": "breast lesion benign", "Malignant": "breast lesion malignant"}
read_item = partial(read_binary_pair, allow_resize=True)


def list_items(raw: Path, entry) -> Iterator[Item]:
    for folder_name, category in CATEGORIES.items():
        folder = find_folder(raw, folder_name)
        images = files_by_stem(folder / "images", (".png",))
        masks = files_by_stem(folder / "masks", (".png",))
        for key, files, problem in pair_files(raw, images, masks):
            yield Item(f"{folder_name}/{key}", files, problem=problem, meta={"category": category})
