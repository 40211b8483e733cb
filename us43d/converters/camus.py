"""CAMUS: `database_nifti/patient<NNNN>/patient<NNNN>_{2CH,4CH}_half_sequence.nii.gz` with
`..._half_sequence_gt.nii.gz` (1 LV cavity, 2 myocardium, 3 left atrium; every frame annotated).
Patients of `database_split/subgroup_testing.txt` (a separate download) are the official test set;
without that list the build says so as a problem of the dataset instead of inventing a split."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from us43d.converters.base import TEST, DatasetProblem, Item, Sample, find_folder, relative
from us43d.converters.volumes import read_volume_pair
from us43d.registry.schema import DatasetEntry

TEST_LIST = "subgroup_testing.txt"


def _test_patients(raw: Path) -> set[str] | None:
    lists = sorted(raw.rglob(TEST_LIST))
    return {line.strip() for line in lists[0].read_text().split() if line.strip()} if lists else None


def list_items(raw: Path, entry: DatasetEntry) -> Iterator[Item | DatasetProblem]:
    root = find_folder(raw, "database_nifti")
    test = _test_patients(raw)
    if test is None:
        yield DatasetProblem(
            f"database_split/{TEST_LIST}",
            "the official test list is missing (it comes in a separate download, see `us43d info CAMUS`): "
            "the test patients are mixed into train and val",
        )
    folders = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("patient"))
    absent = sorted((test or set()) - {p.name for p in folders})
    if absent:
        yield DatasetProblem(f"database_split/{TEST_LIST}", f"{len(absent)} test patients have no folder, e.g. {absent[:3]}")
    for folder in folders:
        for view in ("2CH", "4CH"):
            image = folder / f"{folder.name}_{view}_half_sequence.nii.gz"
            label = folder / f"{folder.name}_{view}_half_sequence_gt.nii.gz"
            key = f"{folder.name}_{view}"
            split = TEST if test and folder.name in test else None
            if not image.is_file() or not label.is_file():
                present = image if image.is_file() else label
                if present.is_file():
                    yield Item(key, (relative(raw, present),), problem="half sequence without its ground truth (or the reverse)")
                continue
            yield Item(key, (relative(raw, image), relative(raw, label)), group=folder.name, split=split)


def read_item(raw: Path, item: Item, entry: DatasetEntry) -> Iterator[Sample]:
    yield from read_volume_pair(raw, item, entry, dict(enumerate(entry.categories, start=1)))
