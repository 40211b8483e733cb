"""Turning an image volume (or video stack) and its label volume into 2D samples.

Slices are taken along the axis the registry names (`slicing_axis`: sagittal, coronal, axial,
or frames for 2D+t stacks); only slices whose label is non-empty are kept; every slice of one
volume carries the volume's group, so a volume never straddles two splits. A 2D slice is
transposed so that its later remaining axis runs down the rows (for a (x, y) frame: rows = y).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from us43d.converters.base import Item, Sample
from us43d.converters.readers import Volume, iter_slices, read_volume, to_storable
from us43d.errors import ConversionError
from us43d.registry.schema import DatasetEntry


def slice_samples(
    item: Item,
    entry: DatasetEntry,
    image: Volume,
    labels: Volume,
    label_names: Mapping[int, str],
    rotate_180: bool = False,
    keep_empty: bool = False,
) -> Iterator[Sample]:
    if image.array.shape != labels.array.shape:
        raise ConversionError(f"label volume {labels.array.shape} does not match image volume {image.array.shape}", item.files[1])
    view = entry.slicing_axis or "axial"
    axis = image.axis_of(view)
    pixels = to_storable(image.array)
    values = labels.array
    if not np.issubdtype(values.dtype, np.integer):
        if not np.array_equal(values, np.round(values)):
            raise ConversionError("label volume holds non-integer values", item.files[1])
        values = values.astype(np.int32)
    unexpected = sorted(set(np.unique(values).tolist()) - {0, *label_names})
    if unexpected:
        raise ConversionError(f"label volume holds unexpected values {unexpected[:10]}", item.files[1])
    for (index, label), (_, frame) in zip(iter_slices(values, axis), iter_slices(pixels, axis)):
        label, frame = label.T, frame.T
        if not keep_empty and not label.any():
            continue
        if rotate_180:
            frame, label = frame[::-1, ::-1], label[::-1, ::-1]
        yield Sample(
            key=f"{item.key}/{index:04d}",
            image=np.ascontiguousarray(frame),
            source_file=item.source_file,
            label_map=np.ascontiguousarray(label).astype(np.int32),
            label_names=label_names,
            group=item.group,
            split=item.split,
            frame=index,
        )


def read_volume_pair(
    raw: Path, item: Item, entry: DatasetEntry, label_names: Mapping[int, str], **options: bool
) -> Iterator[Sample]:
    """files = (image volume, label volume)."""
    yield from slice_samples(
        item, entry, read_volume(raw / item.files[0]), read_volume(raw / item.files[1]), label_names, **options
    )
