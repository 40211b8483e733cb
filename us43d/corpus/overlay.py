"""An image of the corpus with its instances drawn on it: what a person checks a build by.

Every defect found on real files (masks eaten by cleaning, rings left open, outlines half a pixel
off, lesions refused) was found by looking at such overlays, so the corpus can draw its own.
Instances get a light tint and a solid outline in their category's colour; the pixels cleaning
removed (outside the field of view) are drawn in magenta, so a cut into anatomy shows at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils
from scipy import ndimage

from us43d.corpus.records import ImageRecord

# Distinct colours for categories, in registry order (they repeat after ten).
PALETTE = (
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
)
CLEANED = (255, 0, 255)
TINT = 0.3


def category_colour(categories: Sequence[str], name: str) -> tuple[int, int, int]:
    index = categories.index(name) if name in categories else len(categories)
    return PALETTE[index % len(PALETTE)]


def decode_rle(counts: str, height: int, width: int) -> np.ndarray:
    return mask_utils.decode({"size": [height, width], "counts": counts.encode()}).astype(bool)


def as_rgb(pixels: np.ndarray) -> np.ndarray:
    """8-bit RGB for display: grey repeated, 16-bit scaled by its own maximum."""
    if pixels.dtype == np.uint16:
        top = int(pixels.max()) or 1
        pixels = (pixels.astype(np.float32) * (255.0 / top)).astype(np.uint8)
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[:, :, None], 3, axis=2)
    return np.ascontiguousarray(pixels[:, :, :3].astype(np.uint8))


def draw_overlay(pixels: np.ndarray, record: ImageRecord, categories: Sequence[str], line: int = 1) -> np.ndarray:
    """`line` is the outline's width in pixels: wider for an overlay that will be shrunk."""
    canvas = as_rgb(pixels).astype(np.float32)
    for annotation in record.annotations:
        mask = decode_rle(annotation.rle_counts, record.height, record.width)
        colour = np.asarray(category_colour(categories, annotation.category), dtype=np.float32)
        canvas[mask] = canvas[mask] * (1 - TINT) + colour * TINT
        canvas[mask & ~ndimage.binary_erosion(mask, iterations=line)] = colour
    if record.cleaned_rle:
        canvas[decode_rle(record.cleaned_rle, record.height, record.width)] = CLEANED
    return canvas.astype(np.uint8)


def read_pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)


def write_overlay(out: Path, record: ImageRecord, categories: Sequence[str], target: Path, max_side: int | None = None) -> None:
    """The overlay of one corpus image as a PNG, shrunk to `max_side` pixels when given."""
    longest = max(record.width, record.height)
    line = max(1, round(longest / max_side)) if max_side else 1
    image = Image.fromarray(draw_overlay(read_pixels(out / "images" / record.file_name), record, categories, line))
    if max_side is not None and longest > max_side:
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    target.parent.mkdir(parents=True, exist_ok=True)
    image.save(target, format="PNG")
