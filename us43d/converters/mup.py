"""MUP: the same Zenodo release as MicroSeg (`microUS_<part>_<NN>.nii.gz` with the expert
annotation), listed and sliced the same way; the registry entry names the slicing axis.
Combining MUP and MicroSeg counts these scans twice."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from us43d.converters.base import Item, Sample
from us43d.converters.microseg import volume_items
from us43d.converters.volumes import read_volume_pair
from us43d.registry.schema import DatasetEntry


def list_items(raw: Path, entry: DatasetEntry) -> Iterator[Item]:
    return volume_items(raw)


def read_item(raw: Path, item: Item, entry: DatasetEntry) -> Iterator[Sample]:
    yield from read_volume_pair(raw, item, entry, {1: entry.categories[0]})
