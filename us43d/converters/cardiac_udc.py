"""CardiacUDC: `cardiacUDC_dataset/<site folder>/<stem>_image.nii.gz` with `<stem>_label.nii.gz`
(1-6 as in the registry). Some label sets hold contours only, so every label is hole-filled;
frames whose labelled area is below 2.5 % of the frame are annotation slips and are dropped;
the stored clips are upside down and are turned 180 degrees."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from us43d.converters.base import Item, Sample, find_folder, pair_files
from us43d.converters.readers import filled_outline, read_volume
from us43d.converters.volumes import slice_samples
from us43d.registry.schema import DatasetEntry

MIN_LABELLED_SHARE = 0.025


def list_items(raw: Path, entry: DatasetEntry) -> Iterator[Item]:
    root = find_folder(raw, "cardiacUDC_dataset")
    for site in sorted(p for p in root.iterdir() if p.is_dir()):
        images = {p.name.removesuffix("_image.nii.gz"): p for p in sorted(site.glob("*_image.nii.gz"))}
        labels = {p.name.removesuffix("_label.nii.gz"): p for p in sorted(site.glob("*_label.nii.gz"))}
        for stem, files, problem in pair_files(raw, images, labels):
            patient = f"{site.name}/{stem.split('_')[0]}"
            yield Item(f"{site.name}/{stem}", files, group=patient, problem=problem)


def read_item(raw: Path, item: Item, entry: DatasetEntry) -> Iterator[Sample]:
    names = dict(enumerate(entry.categories, start=1))
    image, labels = read_volume(raw / item.files[0]), read_volume(raw / item.files[1])
    for sample in slice_samples(item, entry, image, labels, names, rotate_180=True):
        filled = np.zeros_like(sample.label_map)
        for value in np.unique(sample.label_map[sample.label_map > 0]):
            filled[filled_outline(sample.label_map == value) & (filled == 0)] = value
        if np.count_nonzero(filled) < MIN_LABELLED_SHARE * filled.size:
            continue
        sample.label_map = filled
        yield sample
