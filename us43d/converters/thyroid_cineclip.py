"""Stanford thyroid cine clips: one `dataset.hdf5` with `image` and `mask` (frames x H x W),
`annot_id` (the clip, one per nodule) and `frame_num`. One item per clip; frames with a
non-empty mask are kept, masks binarised and hole-filled. Needs h5py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from us43d.converters.base import Item, Sample, relative
from us43d.converters.readers import filled_outline
from us43d.converters.volumes import frames_field_of_view
from us43d.errors import ConversionError
from us43d.registry.schema import DatasetEntry


def _open(path: Path):
    try:
        import h5py
    except ModuleNotFoundError as exc:
        raise ConversionError("reading HDF5 needs h5py: pip install h5py", str(path)) from exc
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise ConversionError(f"cannot open HDF5 file ({exc})", str(path)) from exc


def _clip_ids(values: object, path: Path) -> np.ndarray:
    """annot_id as text: bytes (fixed or variable length) decoded, surrounding spaces dropped
    (readers of the release strip them; a padded id would otherwise carry its spaces into the
    clip's key and group)."""
    try:
        return np.array([(v.decode() if isinstance(v, bytes) else str(v)).strip() for v in np.asarray(values).tolist()])
    except UnicodeDecodeError as exc:
        raise ConversionError(f"annot_id holds bytes that are not text ({exc})", str(path)) from exc


def list_items(raw: Path, entry: DatasetEntry) -> Iterator[Item]:
    files = sorted(raw.rglob("dataset.hdf5"))
    if not files:
        raise ConversionError("expected dataset.hdf5 in the raw folder", str(raw))
    with _open(files[0]) as handle:
        ids = _clip_ids(handle["annot_id"], files[0])
    for clip in sorted(set(ids.tolist())):
        rows = np.flatnonzero(ids == clip).tolist()
        yield Item(clip, (relative(raw, files[0]),), group=clip, meta={"rows": rows})


def read_item(raw: Path, item: Item, entry: DatasetEntry) -> Iterator[Sample]:
    with _open(raw / item.files[0]) as handle:
        rows = item.meta["rows"]
        images, masks = handle["image"][rows], handle["mask"][rows]
        frames = np.asarray(handle["frame_num"][rows]).astype(int) if "frame_num" in handle else np.arange(len(rows))
    field_of_view = frames_field_of_view(entry, np.asarray(images), 0)
    for image, mask, frame in zip(images, masks, frames):
        region = filled_outline(np.asarray(mask) > 0)
        if not region.any():
            continue
        yield Sample(
            f"{item.key}/{int(frame):05d}",
            np.asarray(image),
            item.source_file,
            label_map=region.astype(np.uint8),
            label_names={1: entry.categories[0]},
            group=item.group,
            frame=int(frame),
            field_of_view=field_of_view,
        )
