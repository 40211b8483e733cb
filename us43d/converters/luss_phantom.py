"""LUSS phantom: every PNG under a folder whose path contains `masks` is a label map (1 rib,
2 pleural line, 3 A-line, 4 B-line, 5 B-line confluence); other PNGs are images; same names.

An image pairs with the mask of the same name in the same place of the tree, image and mask
folders aside (`train/images/x.png` with `train/masks/x.png`), so the same name in `train/` and
`test/` (a split that readers of the release describe) gives two items. Folders that hold every
PNG (the archive's own) are not part of the key. Files that still share a key are reported
together, not paired by chance."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from us43d.converters.base import Item, Sample, label_map_sample, pair_claimed_files
from us43d.converters.readers import read_image, read_label_map
from us43d.registry.schema import DatasetEntry

IMAGE_FOLDERS = {"images", "image", "imgs", "img"}


def _is_mask(folders: tuple[str, ...]) -> bool:
    return any("masks" in folder.lower() for folder in folders)


def _shared_length(places: list[tuple[str, ...]]) -> int:
    """How many leading folders all the files share."""
    if not places:
        return 0
    length = min(len(place) for place in places)
    for place in places[1:]:
        length = next((i for i in range(length) if place[i] != places[0][i]), length)
    return length


def list_items(raw: Path, entry: DatasetEntry) -> Iterator[Item]:
    paths = sorted(raw.rglob("*.png"))
    folders = {path: path.relative_to(raw).parent.parts for path in paths}
    shared = _shared_length(list(folders.values()))
    images: dict[str, list[Path]] = defaultdict(list)
    masks: dict[str, list[Path]] = defaultdict(list)
    for path in paths:
        place = [f for f in folders[path][shared:] if f.lower() not in IMAGE_FOLDERS and "masks" not in f.lower()]
        (masks if _is_mask(folders[path]) else images)["/".join([*place, path.stem])].append(path)
    clash = "several images or masks have this name in this place of the tree"
    for key, files, problem in pair_claimed_files(raw, images, masks, clash):
        yield Item(key, files, problem=problem)


def read_item(raw: Path, item: Item, entry: DatasetEntry) -> Iterator[Sample]:
    image = read_image(raw / item.files[0])
    allowed = list(range(1, len(entry.categories) + 1))
    labels = read_label_map(raw / item.files[1], image.pixels.shape[:2], allowed=allowed)
    yield label_map_sample(item, image, labels, entry)
