"""HC18: `training_set/<NNN>_<k>HC.png` with `<stem>_Annotation.png`, an outline of the fitted
head ellipse that is filled to give the head region; the four outlines of the release that run
out of the image (186_HC, 346_HC, 628_2HC, 787_HC) are closed along the border first. Images of
one examination share <NNN>. The test set has no annotations and is not read."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from us43d.converters.base import Item, Sample, files_by_stem, find_folder, one_class_sample, pair_files
from us43d.converters.readers import filled_outline, read_binary_mask, read_image
from us43d.registry.schema import DatasetEntry


def list_items(raw: Path, entry: DatasetEntry) -> Iterator[Item]:
    folder = find_folder(raw, "training_set")
    everything = files_by_stem(folder, (".png",))
    images = {k: p for k, p in everything.items() if not k.endswith("_Annotation")}
    outlines = {k.removesuffix("_Annotation"): p for k, p in everything.items() if k.endswith("_Annotation")}
    for key, files, problem in pair_files(raw, images, outlines):
        yield Item(key, files, group=key.split("_")[0], problem=problem)


def read_item(raw: Path, item: Item, entry: DatasetEntry) -> Iterator[Sample]:
    image = read_image(raw / item.files[0])
    outline = read_binary_mask(raw / item.files[1], image.pixels.shape[:2])
    yield one_class_sample(item, image, filled_outline(outline, close_at_border=True), entry.categories[0])
