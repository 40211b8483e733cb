"""BUS-UCLM: `BUS-UCLM/images/<PATI>_<nnn>.png` with colour masks in `BUS-UCLM/masks/`:
pure green is a benign lesion, pure red a malignant one, black the rest. Normal images have
no lesion and are dropped by the build. The four letters before the underscore are the patient.
The masks of HESN_000-012 were drawn on the image stretched to 856x606 (the images are smaller):
they are brought back to the image's size."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from us43d.converters.base import Item, Sample, files_by_stem, find_folder, label_map_sample, pair_files
from us43d.converters.readers import read_colour_mask, read_image
from us43d.registry.schema import DatasetEntry

COLOURS = {(0, 255, 0): 1, (255, 0, 0): 2}


def list_items(raw: Path, entry: DatasetEntry) -> Iterator[Item]:
    root = find_folder(raw, "BUS-UCLM/images").parent
    images, masks = files_by_stem(root / "images", (".png",)), files_by_stem(root / "masks", (".png",))
    for key, files, problem in pair_files(raw, images, masks):
        yield Item(key, files, group=key.split("_")[0], problem=problem)


def read_item(raw: Path, item: Item, entry: DatasetEntry) -> Iterator[Sample]:
    image = read_image(raw / item.files[0])
    labels = read_colour_mask(raw / item.files[1], image.pixels.shape[:2], COLOURS, stretched=True)
    yield label_map_sample(item, image, labels, entry)
