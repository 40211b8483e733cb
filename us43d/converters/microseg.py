"""MicroSeg: `Micro_Ultrasound_Prostate_Segmentation_Dataset/{train,test}/micro_ultrasound_scans/
microUS_<part>_<NN>.nii.gz` with `expert_annotations/expert_annotation_<part>_<NN>.nii.gz`.
The release's test folder is the official test set; case numbers repeat between the parts,
so the group is part plus number. Slices with an empty label are dropped."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from us43d.converters.base import TEST, Item, Sample, find_folder, pair_files
from us43d.converters.volumes import read_volume_pair
from us43d.registry.schema import DatasetEntry

PARTS = {"train": None, "test": TEST}


def volume_items(raw: Path) -> Iterator[Item]:
    root = find_folder(raw, "Micro_Ultrasound_Prostate_Segmentation_Dataset")
    for part, split in PARTS.items():
        scans = {
            p.name.removesuffix(".nii.gz").rsplit("_", 1)[-1]: p
            for p in (root / part / "micro_ultrasound_scans").glob("*.nii.gz")
        }
        labels = {
            p.name.removesuffix(".nii.gz").rsplit("_", 1)[-1]: p for p in (root / part / "expert_annotations").glob("*.nii.gz")
        }
        for number, files, problem in pair_files(raw, scans, labels):
            yield Item(f"{part}_{number}", files, group=f"{part}_{number}", split=split, problem=problem)


def list_items(raw: Path, entry: DatasetEntry) -> Iterator[Item]:
    return volume_items(raw)


def read_item(raw: Path, item: Item, entry: DatasetEntry) -> Iterator[Sample]:
    yield from read_volume_pair(raw, item, entry, {1: entry.categories[0]})
