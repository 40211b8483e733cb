"""Per-item work run in the build's worker processes: decode, clean, find instances, write PNG."""

from __future__ import annotations

import hashlib
import io
import os
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

from us43d.converters.base import Converter, Item, Sample, load_converter, reported_path
from us43d.corpus.field_of_view import image_field_of_view
from us43d.corpus.instances import extract_instances
from us43d.corpus.output import OutputWriteError, write_failure
from us43d.corpus.records import AnnotationRecord, ImageRecord, ItemError, ItemResult
from us43d.errors import ConversionError
from us43d.registry.schema import DatasetEntry

# zlib level 1: several times faster than Pillow's default 6 for a few percent more bytes on
# speckled ultrasound, and the build is dominated by PNG encoding (see benchmarks).
PNG_COMPRESS_LEVEL = 1
_UNSAFE = re.compile(r"[^A-Za-z0-9._/-]")


@dataclass(frozen=True)
class Task:
    entry: DatasetEntry
    raw: Path
    images_dir: Path  # the dataset's staging folder under OUT/images
    image_prefix: str  # what file names are relative to OUT/images start with (the dataset id)


@cache
def _converter(name: str) -> Converter:
    return load_converter(name)


def safe_key(key: str) -> str:
    parts = [_UNSAFE.sub("_", part) for part in key.split("/") if part not in ("", ".", "..")]
    if not parts:
        raise ValueError(f"empty sample key {key!r}")
    return "/".join(parts)


def encode_png(pixels: np.ndarray) -> bytes:
    """The PNG bytes of an image. A failure here is the item's (an array PNG cannot hold)."""
    if pixels.dtype == np.uint16 and pixels.ndim == 3:
        raise ConversionError("16-bit colour images are not supported")
    image = Image.fromarray(pixels)  # uint8 -> L or RGB, uint16 -> I;16: values unchanged
    buffer = io.BytesIO()
    try:
        image.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    except OSError as exc:  # Pillow's "cannot write mode X as PNG"
        raise ConversionError(f"cannot encode as PNG: {exc}") from exc
    return buffer.getvalue()


def write_png(pixels: np.ndarray, path: Path) -> tuple[int, str]:
    """Write atomically (a reader never sees a half-written file under the final name); return
    the file's size and sha256, which the build records.

    An OSError here is a fault of the output (a full disk), raised as is: the caller stops the
    build on it rather than counting it against the item."""
    data = encode_png(pixels)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise
    return len(data), hashlib.sha256(data).hexdigest()


def _record(task: Task, item: Item, sample: Sample, result: ItemResult, written: list[Path]) -> None:
    entry = task.entry
    image = sample.image
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise ConversionError(f"image has shape {image.shape}, expected (H, W) or (H, W, 3)", sample.source_file)
    field_of_view = None
    if entry.cleans_background:
        field_of_view = sample.field_of_view
        if field_of_view is None:
            field_of_view = image_field_of_view(image, sample.lossy, entry.cleaning.background_threshold)
        elif field_of_view.shape != image.shape[:2]:
            raise ConversionError(f"field of view {field_of_view.shape} does not match the image {image.shape[:2]}")
    stats = extract_instances(sample.label_map, sample.label_names, sample.instances, field_of_view, entry.min_area)
    for inst in stats.instances:
        if inst.category not in entry.categories:
            raise ConversionError(f"category '{inst.category}' is not in the registry entry", sample.source_file)
    label = sample.label if sample.label is not None else item.label
    if label is not None and label not in entry.classes:
        known = f"one of {list(entry.classes)}" if entry.classes else "the entry names no classes"
        raise ConversionError(f"image-level class {label!r} is not in the registry entry ({known})", sample.source_file)
    result.samples += 1
    result.cleaned_pixels += stats.cleaned_pixels
    result.cleaned_instances += stats.cleaned_instances
    result.small_instances += stats.small_dropped
    if not stats.instances:
        result.dropped_empty += 1
        return
    key = safe_key(sample.key)
    path = task.images_dir / f"{key}.png"
    try:
        size, digest = write_png(image, path)
    except OSError as exc:
        raise write_failure(path, exc) from exc
    written.append(path)
    h, w = image.shape[:2]
    result.records.append(
        ImageRecord(
            dataset=entry.id,
            key=key,
            file_name=f"{task.image_prefix}/{key}.png",
            width=int(w),
            height=int(h),
            source_file=sample.source_file,
            frame=sample.frame,
            group=sample.group if sample.group is not None else (item.group if item.group is not None else key),
            official_split=sample.split if sample.split is not None else item.split,
            annotations=tuple(AnnotationRecord(i.category, i.rle_counts, i.bbox, i.area) for i in stats.instances),
            size=size,
            sha256=digest,
            cleaned_rle=stats.cleaned_rle,
            label=label,
        )
    )


def process_item(task: Task, item: Item) -> ItemResult:
    """Convert one item. A failure anywhere discards the whole item (all its frames) and is
    reported with the file that caused it; it never leaves a partial item behind. A failure to
    write our own output is no item's fault: it stops the build."""
    result = ItemResult()
    written: list[Path] = []
    try:
        if item.problem:
            raise ConversionError(item.problem, str(task.raw / item.source_file))
        converter = _converter(task.entry.converter)
        for sample in converter.read_item(task.raw, item, task.entry):
            _record(task, item, sample, result, written)
    except OutputWriteError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of one item is reported, never fatal here
        for path in written:
            path.unlink(missing_ok=True)
        reason = exc.reason if isinstance(exc, ConversionError) else f"{type(exc).__name__}: {exc}"
        return ItemResult(
            errors=[
                ItemError(task.entry.id, reported_path(task.raw, getattr(exc, "source_file", None) or item.source_file), reason)
            ]
        )
    return result
