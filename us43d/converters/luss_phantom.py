"""LUSS phantom: every PNG under a folder whose path contains `masks` is a label map (1 rib,
2 pleural line, 3 A-line, 4 B-line, 5 B-line confluence); other PNGs are images; same names.

An image pairs with the mask of the same name in the same place of the tree, the `images` and
`*masks*` folders aside, so `train/images/x.png` and `test/images/x.png` (a split that readers
of the release describe) stay two items; two files that still share a key are reported."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from us43d.converters.base import Item, Sample, label_map_sample, pair_files, relative
from us43d.converters.readers import read_image, read_label_map
from us43d.registry.schema import DatasetEntry


def list_items(raw: Path, entry: DatasetEntry) -> Iterator[Item]:
    found: dict[bool, dict[str, list[Path]]] = {True: defaultdict(list), False: defaultdict(list)}
    for path in sorted(raw.rglob("*.png")):
        folders = path.relative_to(raw).parent.parts
        is_mask = "masks" in "/".join(folders)
        key = "/".join([*(f for f in folders if f != "images" and "masks" not in f), path.stem])
        found[is_mask][key].append(path)
    for kind in found.values():
        for key, paths in kind.items():
            if len(paths) > 1:
                yield Item(key, tuple(relative(raw, p) for p in paths), problem="several files have this name here")
    images = {key: paths[0] for key, paths in found[False].items() if len(paths) == 1}
    masks = {key: paths[0] for key, paths in found[True].items() if len(paths) == 1}
    for key, files, problem in pair_files(raw, images, masks):
        yield Item(key, files, problem=problem)


def read_item(raw: Path, item: Item, entry: DatasetEntry) -> Iterator[Sample]:
    image = read_image(raw / item.files[0])
    allowed = list(range(1, len(entry.categories) + 1))
    labels = read_label_map(raw / item.files[1], image.pixels.shape[:2], allowed=allowed)
    yield label_map_sample(item, image, labels, entry)
