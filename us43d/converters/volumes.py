"""Turning an image volume (or video stack) and its label volume into 2D samples.

Slices are taken along the axis the registry names (`slicing_axis`: sagittal, coronal, axial,
or frames for 2D+t stacks); only slices whose label is non-empty are kept; every slice of one
volume carries the volume's group, so a volume never straddles two splits. A 2D slice is
transposed so that its later remaining axis runs down the rows (for a (x, y) frame: rows = y).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import numpy as np

from us43d.converters.base import Item, Sample
from us43d.converters.readers import Volume, iter_slices, read_video_frames, read_volume, to_storable
from us43d.corpus.field_of_view import SignalEnvelope, VolumeFieldOfView, sequence_field_of_view
from us43d.errors import ConversionError
from us43d.registry.schema import DatasetEntry


def frames_field_of_view(entry: DatasetEntry, frames: np.ndarray, frame_axis: int, lossy: bool = False) -> np.ndarray | None:
    """The field of view shared by all frames of a 2D+t stack (in the layout of one frame), or
    None for a dataset that does not clean."""
    if not entry.cleans_background:
        return None
    return sequence_field_of_view(frames, frame_axis, lossy, entry.cleaning.background_threshold)


def slice_fields_of_view(entry: DatasetEntry, pixels: np.ndarray, axis: int, view: str) -> Callable[[int], np.ndarray | None]:
    """The field of view of slice `index` (in the layout of `np.take(pixels, index, axis)`),
    estimated once from the whole sequence: the maximum over all frames of a 2D+t stack, the 3D
    hull of a volume. Nothing is estimated for a dataset that does not clean."""
    if not entry.cleans_background or view == "frames":
        shared = frames_field_of_view(entry, pixels, axis)
        return lambda index: shared
    volume = VolumeFieldOfView.estimate(pixels, level=entry.cleaning.background_threshold)
    shape = tuple(n for a, n in enumerate(pixels.shape) if a != axis)
    return lambda index: volume.plane(axis, index, shape)  # type: ignore[arg-type]


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
    field_of_view = slice_fields_of_view(entry, pixels, axis, view)

    def orient(plane: np.ndarray) -> np.ndarray:
        plane = plane.T
        return np.ascontiguousarray(plane[::-1, ::-1] if rotate_180 else plane)

    for (index, label), (_, frame) in zip(iter_slices(values, axis), iter_slices(pixels, axis)):
        if not keep_empty and not label.any():
            continue
        fov = field_of_view(index)
        yield Sample(
            key=f"{item.key}/{index:04d}",
            image=orient(frame),
            source_file=item.source_file,
            label_map=orient(label).astype(np.int32),
            label_names=label_names,
            group=item.group,
            split=item.split,
            frame=index,
            field_of_view=None if fov is None else orient(fov),
        )


def read_volume_pair(
    raw: Path, item: Item, entry: DatasetEntry, label_names: Mapping[int, str], **options: bool
) -> Iterator[Sample]:
    """files = (image volume, label volume)."""
    yield from slice_samples(
        item, entry, read_volume(raw / item.files[0]), read_volume(raw / item.files[1]), label_names, **options
    )


def video_frames(path: Path, wanted: set[int], entry: DatasetEntry) -> tuple[dict[int, np.ndarray], np.ndarray | None]:
    """The wanted frames of a video file (all of them lossy) and, for a dataset that cleans, the
    field of view of the whole video: then every frame is decoded, not only up to the last wanted."""
    if not entry.cleans_background:
        return dict(read_video_frames(path, wanted)), None
    envelope = SignalEnvelope()
    frames = {}
    for index, frame in read_video_frames(path):
        envelope.add(frame)
        if index in wanted:
            frames[index] = frame
    return frames, envelope.field_of_view(lossy=True, level=entry.cleaning.background_threshold)
