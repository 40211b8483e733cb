"""ACOUSLIC-AI: blind-sweep stacks `images/stacked_fetal_ultrasound/<uuid>.mha` with
`masks/stacked_fetal_abdomen/<uuid>.mha` (1 optimal, 2 sub-optimal abdominal plane, both kept
as one category). Sweeps of one participant (`subject_id` in the circumference CSV) form a
group. Only annotated frames are kept."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

from us43d.converters.base import Item, Sample, find_folder, pair_files
from us43d.converters.volumes import read_volume_pair
from us43d.registry.schema import DatasetEntry


def _subjects(raw: Path) -> dict[str, str]:
    tables = sorted(raw.rglob("fetal_abdominal_circumferences_per_sweep.csv"))
    if not tables:
        return {}
    with tables[0].open(newline="") as handle:
        return {row["uuid"]: row["subject_id"] for row in csv.DictReader(handle) if row.get("uuid")}


def list_items(raw: Path, entry: DatasetEntry) -> Iterator[Item]:
    images = {p.stem: p for p in sorted(find_folder(raw, "images/stacked_fetal_ultrasound").glob("*.mha"))}
    masks = {p.stem: p for p in sorted(find_folder(raw, "masks/stacked_fetal_abdomen").glob("*.mha"))}
    subjects = _subjects(raw)
    for key, files, problem in pair_files(raw, images, masks):
        yield Item(key, files, group=subjects.get(key, key), problem=problem)


def read_item(raw: Path, item: Item, entry: DatasetEntry) -> Iterator[Sample]:
    plane = entry.categories[0]
    yield from read_volume_pair(raw, item, entry, {1: plane, 2: plane})
