"""From a sample's annotation to COCO instances: cleaning, components, minimum area, RLE."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from pycocotools import mask as mask_utils

from us43d.converters.readers import connected_components, present_values
from us43d.errors import ConversionError


@dataclass(frozen=True)
class Instance:
    category: str
    rle_counts: str  # COCO compressed RLE
    bbox: tuple[int, int, int, int]  # x, y, width, height (tight, integer pixels)
    area: int


@dataclass(frozen=True)
class InstanceStats:
    instances: list[Instance]
    cleaned_pixels: int  # annotation pixels removed because they lay outside the field of view
    cleaned_instances: int  # instances that lost pixels to that cleaning
    small_dropped: int  # instances removed for being below the minimum area (after cleaning)
    cleaned_rle: str | None = None  # COCO RLE of every pixel cleaning removed, None when none


def encode(mask: np.ndarray, category: str) -> Instance:
    fortran = np.asfortranarray(mask.astype(np.uint8, copy=False))
    rle = mask_utils.encode(fortran)
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    bbox = (int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1))
    return Instance(category, rle["counts"].decode("ascii"), bbox, int(np.count_nonzero(mask)))


def extract_instances(
    label_map: np.ndarray | None,
    label_names: Mapping[int, str],
    given: list[tuple[str, np.ndarray]] | None,
    field_of_view: np.ndarray | None,
    min_area: int,
) -> InstanceStats:
    """Every connected component of every label (or each given mask) becomes one instance.

    Instances are found first and cleaned afterwards, one by one: removing the pixels outside
    the field of view can shrink an annotated structure but never splits it into several
    instances. An instance left smaller than `min_area` (say, one that lay almost wholly on
    the frame) is dropped.
    """
    candidates: list[tuple[str, np.ndarray]] = []
    if label_map is not None:
        values = present_values(label_map[label_map != 0]).tolist()
        unnamed = [v for v in values if v not in label_names]
        if unnamed:
            raise ConversionError(f"label value {unnamed[0]} has no category name")
        for value in values:
            candidates.extend((label_names[value], part) for part in connected_components(label_map == value))
    else:
        candidates = [(category, mask) for category, mask in given or [] if mask.any()]
    cleaned = touched = small = 0
    kept: list[Instance] = []
    removed: np.ndarray | None = None
    for category, mask in candidates:
        if field_of_view is not None:
            outside = mask & ~field_of_view
            count = int(np.count_nonzero(outside))
            if count:
                cleaned += count
                touched += 1
                mask = mask & field_of_view
                removed = outside if removed is None else removed | outside
        if np.count_nonzero(mask) < max(min_area, 1):
            small += 1
            continue
        kept.append(encode(mask, category))
    return InstanceStats(kept, cleaned, touched, small, None if removed is None else encode(removed, "").rle_counts)
