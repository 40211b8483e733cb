"""mu-RegPro: `{train,val}/us_images/<case>.nii.gz` with `{train,val}/us_labels/<case>.nii.gz`
(either part may be absent),
a 4D label of one binary channel per structure (gland and landmarks, overlapping). Every
channel's components become instances of the one class-agnostic category; MR files are not
read. Slices with no label are dropped; the case is the group."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from us43d.converters.base import Item, Sample, find_optional_folder, pair_files
from us43d.converters.readers import connected_components, iter_slices, read_volume, to_storable
from us43d.converters.volumes import slice_fields_of_view
from us43d.errors import ConversionError
from us43d.registry.schema import DatasetEntry

PARTS = ("train", "val")


def list_items(raw: Path, entry: DatasetEntry) -> Iterator[Item]:
    # the challenge's own code says users may split the data into train/ and val/ themselves:
    # a release with train/ only (or a user's val/ alone) is read as it is
    found = {part: find_optional_folder(raw, f"{part}/us_images") for part in PARTS}
    roots = {part: folder.parent for part, folder in found.items() if folder is not None}
    if not roots:
        raise ConversionError("expected train/us_images or val/us_images in the raw folder", source_file=str(raw))
    for part, root in roots.items():
        images = {p.name.removesuffix(".nii.gz"): p for p in sorted((root / "us_images").glob("*.nii.gz"))}
        labels = {p.name.removesuffix(".nii.gz"): p for p in sorted((root / "us_labels").glob("*.nii.gz"))}
        for key, files, problem in pair_files(raw, images, labels):
            yield Item(f"{part}/{key}", files, group=key, problem=problem)


def read_item(raw: Path, item: Item, entry: DatasetEntry) -> Iterator[Sample]:
    image, labels = read_volume(raw / item.files[0]), read_volume(raw / item.files[1])
    channels = labels.array if labels.array.ndim == 4 else labels.array[..., None]
    if channels.shape[:3] != image.array.shape:
        raise ConversionError(f"label {channels.shape} does not match image {image.array.shape}", item.files[1])
    axis = image.axis_of(entry.slicing_axis or "sagittal")
    pixels = to_storable(image.array)
    field_of_view = slice_fields_of_view(entry, pixels, axis, entry.slicing_axis or "sagittal")
    for (index, planes), (_, frame) in zip(iter_slices(channels > 0, axis), iter_slices(pixels, axis)):
        if not planes.any():  # planes: (a, b, channels)
            continue
        fov = field_of_view(index)
        instances = [
            (entry.categories[0], part)
            for c in range(planes.shape[-1])
            for part in connected_components(planes[..., c].T)
            if part.any()
        ]
        yield Sample(
            f"{item.key}/{index:04d}",
            np.ascontiguousarray(frame.T),
            item.source_file,
            instances=instances,
            group=item.group,
            frame=index,
            field_of_view=None if fov is None else np.ascontiguousarray(fov.T),
        )
