"""BrEaST (TCIA): `case<NNN>.png` with one mask per structure, `case<NNN>_<suffix>.png`.
Suffix `tumor` is the breast lesion, numbered or not (`tumor2` would be a second lesion: readers
of the release show numbered suffixes such as `other1`, a numbered `tumor` is unchecked); any
other suffix is another finding.
One scan per patient, so the case is the group."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from us43d.converters.base import Item, Sample, find_folder, relative
from us43d.converters.readers import connected_components, read_binary_mask, read_image
from us43d.registry.schema import DatasetEntry

LESION = re.compile(r"tumou?r\d*")


def list_items(raw: Path, entry: DatasetEntry) -> Iterator[Item]:
    root = find_folder(raw, "BrEaST-Lesions_USG-images_and_masks")
    images: dict[str, Path] = {}
    masks: dict[str, list[Path]] = {}
    for path in sorted(root.glob("*.png")):
        case, _, suffix = path.stem.partition("_")
        if suffix:
            masks.setdefault(case, []).append(path)
        else:
            images[case] = path
    for case in sorted(images.keys() | masks.keys()):
        if case not in images:
            yield Item(case, tuple(relative(raw, m) for m in masks[case]), problem="mask has no matching image")
        elif case not in masks:
            yield Item(case, (relative(raw, images[case]),), problem="image has no mask file")
        else:
            yield Item(case, (relative(raw, images[case]), *(relative(raw, m) for m in masks[case])), group=case)


def read_item(raw: Path, item: Item, entry: DatasetEntry) -> Iterator[Sample]:
    lesion, other = entry.categories
    image = read_image(raw / item.files[0])
    instances = []
    for mask_file in item.files[1:]:
        category = lesion if LESION.fullmatch(Path(mask_file).stem.partition("_")[2].lower()) else other
        mask = read_binary_mask(raw / mask_file, image.pixels.shape[:2])
        instances.extend((category, part) for part in connected_components(mask) if part.any())
    yield Sample(item.key, image.pixels, item.source_file, instances=instances, group=item.group, lossy=image.lossy)
