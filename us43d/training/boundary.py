"""Clicks on a structure's boundary, as SAMUSA's simulated user places them (Podvin et al.).

In ultrasound the inside of a structure often looks like its surroundings and the edge is
what an annotator actually sees, so SAMUSA prompts with points *on* the ground-truth boundary:
the first at random, the second the boundary point furthest from it, and each later one where
the ground-truth boundary is furthest from the boundary of the current prediction.

Masks are H x W bool arrays; points are float (x, y) pixel indices of the mask (column, row),
the frame `segment_anything`'s prompt encoder expects (it adds its own +0.5 to reach the pixel
centre). Everything here is deterministic given the arrays (and the generator for the first
point), so training and interactive evaluation see the same clicks for the same masks.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

# 4-connectivity: a pixel is on the boundary when one of its 4 neighbours is background, so the
# contour is one pixel wide and has no diagonal gaps.
_CROSS = ndimage.generate_binary_structure(2, 1)
# below this many (candidate, predicted-boundary) pixel pairs, distances are taken pair by pair,
# which beats the distance transform's fixed cost on small masks
BRUTE_FORCE_PAIRS = 1 << 16


def boundary_mask(mask: np.ndarray) -> np.ndarray:
    """Mask pixels with at least one 4-neighbour outside the mask; outside the array counts
    as background, so a mask that touches the image edge has its boundary there too."""
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"a mask is H x W, got shape {mask.shape}")
    return mask & ~ndimage.binary_erosion(mask, structure=_CROSS, border_value=0)


def boundary_pixels(mask: np.ndarray) -> np.ndarray:
    """(N, 2) float (x, y) of the mask's inner contour, in row-major order (top row first,
    left to right); (0, 2) for an empty mask."""
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"a mask is H x W, got shape {mask.shape}")
    filled_rows, filled_cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if len(filled_rows) == 0:
        return np.zeros((0, 2))
    # only the mask's box is searched (a structure is small against a 1024 x 1024 frame)
    top, left = filled_rows[0], filled_cols[0]
    rows, cols = np.nonzero(boundary_mask(mask[top : filled_rows[-1] + 1, left : filled_cols[-1] + 1]))
    return np.stack([cols + left, rows + top], axis=1).astype(np.float64)


def first_boundary_points(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(2, 2): a random boundary point, then the boundary point furthest from it (Euclidean;
    on ties the first in row-major order). A one-pixel boundary gives that pixel twice; an
    empty mask is refused, as it has no boundary to click on."""
    pixels = boundary_pixels(mask)
    if len(pixels) == 0:
        raise ValueError("an empty mask has no boundary to place points on")
    first = pixels[rng.integers(len(pixels))]
    second = pixels[np.argmax(((pixels - first) ** 2).sum(axis=1))]
    return np.stack([first, second])


def next_boundary_point(mask: np.ndarray, predicted: np.ndarray, chosen: np.ndarray) -> np.ndarray | None:
    """(2,) the ground-truth boundary point furthest from the predicted mask's boundary, or None.

    Points already in `chosen` ((K, 2) x, y; rounded to their pixel) are not offered again.
    Distances are Euclidean, to the nearest pixel of the predicted boundary; ties go to the
    first point in row-major order. When the prediction is empty (no boundary to measure
    from) the point is the boundary point furthest from the chosen points instead, i.e. the
    clicks spread out around the structure. None when there is nothing sensible to offer: the
    ground truth has no boundary, every boundary point is already chosen, or the prediction is
    empty and no point has been chosen yet (start with `first_boundary_points` then).
    """
    mask = np.asarray(mask, dtype=bool)
    predicted = np.asarray(predicted, dtype=bool)
    if predicted.shape != mask.shape:
        raise ValueError(f"the prediction is {predicted.shape}, the mask {mask.shape}: they must be the same size")
    chosen = np.asarray(chosen, dtype=np.float64).reshape(-1, 2)
    candidates = boundary_mask(mask)
    taken = np.rint(chosen).astype(np.int64)
    inside = (taken[:, 0] >= 0) & (taken[:, 0] < mask.shape[1]) & (taken[:, 1] >= 0) & (taken[:, 1] < mask.shape[0])
    candidates[taken[inside, 1], taken[inside, 0]] = False
    rows, cols = np.nonzero(candidates)
    if len(rows) == 0:
        return None
    edge_rows, edge_cols = np.nonzero(boundary_mask(predicted))
    if len(edge_rows):
        distance = _distance_to_nearest(rows, cols, edge_rows, edge_cols, predicted.shape)
    elif len(chosen):
        points = np.stack([cols, rows], axis=1).astype(np.float64)
        distance = (((points[:, None, :] - chosen[None, :, :]) ** 2).sum(axis=2)).min(axis=1)
    else:
        return None
    best = int(np.argmax(distance))
    return np.array([cols[best], rows[best]], dtype=np.float64)


def _distance_to_nearest(
    rows: np.ndarray, cols: np.ndarray, edge_rows: np.ndarray, edge_cols: np.ndarray, shape: tuple[int, ...]
) -> np.ndarray:
    """Euclidean distance from each (row, col) to the nearest edge pixel. Few pairs (the small
    low-res masks of the clicks grown in training) are compared one by one, which beats the
    distance transform's fixed cost; both give the square root of the same exact integer, so
    the ranking and its ties do not depend on the path (tested)."""
    if len(rows) * len(edge_rows) <= BRUTE_FORCE_PAIRS:
        squared = (rows[:, None] - edge_rows[None]) ** 2 + (cols[:, None] - edge_cols[None]) ** 2
        return np.sqrt(squared.min(axis=1).astype(np.float64))
    background = np.ones(shape, dtype=bool)
    background[edge_rows, edge_cols] = False
    return ndimage.distance_transform_edt(background)[rows, cols]


__all__ = ["boundary_mask", "boundary_pixels", "first_boundary_points", "next_boundary_point"]
