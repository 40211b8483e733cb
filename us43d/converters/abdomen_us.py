"""AbdomenUS: real images `abdominal_US/RUS/images/{train,test}/<name>.jpg` (1-channel JPEG) with
colour masks `abdominal_US/RUS/annotations/{train,test}/<name>.png` (RGBA), one colour per organ.
The release annotates only some images (61 of 617): the others are counted as unannotated, not
reported. Pixels take the nearest legend colour: edges are anti-aliased, a2's background is
(10, 0, 10) and g25's kidney is drawn in (253, 253, 0). The CT-simulated part (AUS) is not read,
as in US-43d."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from us43d.converters.base import Item, Sample, files_by_stem, find_folder, label_map_sample, pair_files, paired_item
from us43d.converters.readers import read_colour_mask, read_image
from us43d.registry.schema import DatasetEntry

# (R, G, B) -> position in the registry's categories (liver, kidney, pancreas, vessels,
# adrenals, gallbladder, bones, spleen), from the dataset's legend.
COLOURS = {
    (100, 0, 100): 1,
    (255, 255, 0): 2,
    (0, 0, 255): 3,
    (255, 0, 0): 4,
    (0, 255, 255): 5,
    (0, 255, 0): 6,
    (255, 255, 255): 7,
    (255, 0, 255): 8,
}


# Largest channel difference still read as a legend colour: the legend colours are at least 100
# apart, anti-aliasing and tints stay within a few tens of them.
LEGEND_TOLERANCE = 60


def list_items(raw: Path, entry: DatasetEntry) -> Iterator[Item]:
    real = find_folder(raw, "RUS")
    for part in ("train", "test"):
        images = files_by_stem(real / "images" / part, (".jpg", ".jpeg", ".png"), required=False)
        masks = files_by_stem(real / "annotations" / part, (".png",), required=False)
        for key, files, problem in pair_files(raw, images, masks, partly_annotated=True):
            yield paired_item(f"{part}/{key}", files, problem)


def read_item(raw: Path, item: Item, entry: DatasetEntry) -> Iterator[Sample]:
    image = read_image(raw / item.files[0])
    labels = read_colour_mask(raw / item.files[1], image.pixels.shape[:2], COLOURS, tolerance=LEGEND_TOLERANCE)
    yield label_map_sample(item, image, labels, entry)
