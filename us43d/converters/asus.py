"""ASUS: tracked spine sweeps as NumPy arrays, `q<NNN>_ultrasound.npy` (floats in [0, 1], shape
(frames, 128, 128, 1)) with `q<NNN>_segmentation.npy` (0/1). Frames are turned 180 degrees as
in the anchor script; frames without bone surface are dropped. Loaded without pickle. Other
arrays beside them (the exporter's `_indices.npy`, `_transform.npy`) are not read; any other
array is reported, as it might be a sweep under another name."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from us43d.converters.base import Item, Sample, pair_claimed_files, relative
from us43d.converters.volumes import frames_field_of_view
from us43d.errors import ConversionError
from us43d.registry.schema import DatasetEntry

IMAGE, MASK = "_ultrasound.npy", "_segmentation.npy"
EXPORTER_EXTRAS = ("_indices.npy", "_transform.npy")  # the authors' exporter writes them beside each sweep


def list_items(raw: Path, entry: DatasetEntry) -> Iterator[Item]:
    found: dict[str, dict[str, list[Path]]] = {IMAGE: {}, MASK: {}}
    for path in sorted(raw.rglob("*.npy")):
        suffix = next((s for s in (IMAGE, MASK) if path.name.endswith(s)), None)
        if suffix is not None:
            found[suffix].setdefault(path.name.removesuffix(suffix), []).append(path)
        elif not path.name.endswith(EXPORTER_EXTRAS):  # anything else might be a sweep under another name
            yield Item(path.stem, (relative(raw, path),), problem=f"an array named neither q<NNN>{IMAGE} nor q<NNN>{MASK}")
    for key, files, problem in pair_claimed_files(raw, found[IMAGE], found[MASK], "several sweeps or masks have this name"):
        yield Item(key, files, group=key, problem=problem)


def _load(path: Path) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ConversionError(f"cannot read array ({exc})", str(path)) from exc
    return array[..., 0] if array.ndim == 4 else array


def read_item(raw: Path, item: Item, entry: DatasetEntry) -> Iterator[Sample]:
    frames, masks = _load(raw / item.files[0]), _load(raw / item.files[1])
    if frames.shape != masks.shape or frames.ndim != 3:
        raise ConversionError(f"sweep {frames.shape} and mask {masks.shape} do not match", item.files[1])
    if not np.isfinite(frames).all():
        raise ConversionError("sweep holds NaN or infinite values", item.source_file)
    pixels = np.clip(np.round(frames.astype(np.float32) * 255), 0, 255).astype(np.uint8)
    field_of_view = frames_field_of_view(entry, pixels, 0)
    for index in range(len(frames)):
        mask = masks[index] == 1
        if not mask.any():
            continue
        yield Sample(
            key=f"{item.key}/{index:04d}",
            image=np.ascontiguousarray(pixels[index][::-1, ::-1]),
            source_file=item.source_file,
            label_map=np.ascontiguousarray(mask[::-1, ::-1]).astype(np.uint8),
            label_names={1: entry.categories[0]},
            group=item.group,
            frame=index,
            field_of_view=None if field_of_view is None else np.ascontiguousarray(field_of_view[::-1, ::-1]),
        )
