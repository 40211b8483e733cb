"""EchoCP: contrast echocardiography clips `<case>_image.nii.gz` with `<case>_label.nii.gz`;
every non-zero label is the chamber class; clips are turned 180 degrees as the anchor script
does; the case (stem without its last token) is the group."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from us43d.converters.base import Item, Sample, pair_files
from us43d.converters.readers import Volume, read_volume
from us43d.converters.volumes import slice_samples
from us43d.registry.schema import DatasetEntry


def list_items(raw: Path, entry: DatasetEntry) -> Iterator[Item]:
    files = sorted(raw.rglob("*.nii.gz"))
    images = {p.name.removesuffix(".nii.gz").rsplit("_", 1)[0]: p for p in files if "label" not in p.name}
    labels = {p.name.removesuffix(".nii.gz").rsplit("_", 1)[0]: p for p in files if "label" in p.name}
    for key, pair, problem in pair_files(raw, images, labels):
        yield Item(key, pair, group=key, problem=problem)


def read_item(raw: Path, item: Item, entry: DatasetEntry) -> Iterator[Sample]:
    labels = read_volume(raw / item.files[1])
    binary = Volume((labels.array > 0).astype("uint8"), labels.axcodes)
    yield from slice_samples(item, entry, read_volume(raw / item.files[0]), binary, {1: entry.categories[0]}, rotate_180=True)
