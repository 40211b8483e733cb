"""SegThy: `US_volunteer_dataset/ground_truth_data/US/<id>_US.nii` with the thyroid label
`.../US_thyroid_label/<id>.nii`; ids start with the volunteer number, the group."""

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
    # the released US labels are thyroid only (value 1); vessel values would be refused, not guessed
    yield from read_volume_pair(raw, item, entry, {1: entry.categories[0]})
