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
    cleaned_pixels: int  # foreground pixels removed because they lay on the background
    small_dropped: int  # instances removed for being below the minimum area


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
    background: np.ndarray | None,
    min_area: int,
) -> InstanceStats:
    """Every connected component of every label (or each given mask) becomes one instance.

    Background pixels are removed first, so a component that only touched the black frame
    does not survive as a sliver; then instances smaller than `min_area` are dropped.
    """
    cleaned = 0
    candidates: list[tuple[str, np.ndarray]] = []
    if label_map is not None:
        # the values present before cleaning: cleaning can only remove some, and a value with
        # no pixels left simply has no components
        values = present_values(label_map[label_map != 0]).tolist()
        unnamed = [v for v in values if v not in label_names]
        if unnamed:
            raise ConversionError(f"label value {unnamed[0]} has no category name")
        if background is not None:
            on_background = background & (label_map != 0)
            cleaned += int(np.count_nonzero(on_background))
            if cleaned:
                label_map = np.where(on_background, 0, label_map)
        for value in values:
            candidates.extend((label_names[value], part) for part in connected_components(label_map == value))
    else:
        for category, mask in given or []:
            if background is not None:
                removed = mask & background
                n = int(np.count_nonzero(removed))
                if n:
                    cleaned += n
                    mask = mask & ~background
            if mask.any():
                candidates.append((category, mask))
    kept: list[Instance] = []
    small = 0
    for category, mask in candidates:
        area = int(np.count_nonzero(mask))
        if area < max(min_area, 1):
            small += 1
            continue
        kept.append(encode(mask, category))
    return InstanceStats(kept, cleaned, small)
