"""AbdomenUS: real images `abdominal_US/RUS/images/{train,test}/<name>.jpg` with colour masks
`abdominal_US/RUS/annotations/{train,test}/<name>.png`, one colour per organ. The CT-simulated
part (AUS) is not read, as in US-43d."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from us43d.converters.base import Item, Sample, files_by_stem, find_folder, label_map_sample, pair_files
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


def list_items(raw: Path, entry: DatasetEntry) -> Iterator[Item]:
    real = find_folder(raw, "RUS")
    for part in ("train", "test"):
        images = files_by_stem(real / "images" / part, (".jpg", ".jpeg", ".png"), required=False)
        masks = files_by_stem(real / "annotations" / part, (".png",), required=False)
        for key, files, problem in pair_files(raw, images, masks):
            yield Item(f"{part}/{key}", files, problem=problem)


def read_item(raw: Path, item: Item, entry: DatasetEntry) -> Iterator[Sample]:
    image = read_image(raw / item.files[0])
    labels = read_colour_mask(raw / item.files[1], image.pixels.shape[:2], COLOURS, max_unmatched_share=0.02)
    yield label_map_sample(item, image, labels, entry)
