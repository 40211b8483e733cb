"""SegThy: `US_volunteer_dataset/ground_truth_data/US/<id>_US.nii` with the label
`.../US_thyroid_label/<id>.nii`; ids start with the volunteer number, the group.

Value 1 is the thyroid. Readers of the release describe the US labels as covering the neck,
with 2/4 the left/right carotid artery and 3/5 the left/right jugular vein (the MRI labels'
documented scheme); others find thyroid only. Both read here: vessel values become their
category, either side (the authors' script keeps 2 and 3 and drops 4 and 5), and any other
value is refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from us43d.converters.base import Item, Sample, find_folder, pair_files
from us43d.converters.volumes import read_volume_pair
from us43d.registry.schema import DatasetEntry


def list_items(raw: Path, entry: DatasetEntry) -> Iterator[Item]:
    root = find_folder(raw, "ground_truth_data")
    images = {p.name.removesuffix(".nii").removesuffix("_US"): p for p in sorted((root / "US").glob("*.nii"))}
    labels = {p.name.removesuffix(".nii"): p for p in sorted((root / "US_thyroid_label").glob("*.nii"))}
    for key, files, problem in pair_files(raw, images, labels):
        yield Item(key, files, group=key.split("_")[0], problem=problem)


def read_item(raw: Path, item: Item, entry: DatasetEntry) -> Iterator[Sample]:
    thyroid, carotid, jugular = entry.categories
    yield from read_volume_pair(raw, item, entry, {1: thyroid, 2: carotid, 3: jugular, 4: carotid, 5: jugular})
