"""The scan's field of view: the region the probe actually imaged.

Annotations sometimes spill past the scanned region onto the blank frame around it (mostly in
3D and sequence data, where labels are drawn or interpolated across many slices). Those pixels
are not anatomy, and the build removes them. Nothing else may go: anechoic anatomy (a vessel
lumen, a heart cavity, a cyst) is as black as the frame and often reaches the image edge, so a
grey-level rule ("dark pixels connected to the border") eats real structures.

The field of view is therefore a shape, not a grey level. Sectors, curved arrays and linear
scans are convex, so it is estimated as the convex hull of where the data has signal (after an
opening that removes thin lines such as ECG traces, calipers and tick marks, and without specks
of less than `MIN_PART_SHARE` of the frame). Dark anatomy inside the hull is kept however dark.

A single frame is not enough to find the edge reliably: where dark tissue lies on the border
of a linear scan, the hull of one frame cuts into it (measured on real files, see the README's
cleaning section). A sequence is: the maximum over all frames of a video, or the whole volume
of a 3D scan, fills the scanned region. Hence sequences are estimated from all their frames
together (`sequence_field_of_view`, `VolumeFieldOfView`), and single images only where a
dataset's registry entry asks for it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

# Grey level up to which a pixel counts as "no signal" in lossy (JPEG, MJPEG) data, whose
# black frame carries compression noise; lossless data uses 0.
LOSSY_NO_SIGNAL = 8
# Parts of the signal smaller than this share of the frame (text, markers, noise) do not shape
# the field of view.
MIN_PART_SHARE = 0.001
# Opening by a 3x3 (3x3x3) element this many times removes lines thinner than 5 pixels.
OPENING_ITERATIONS = 2
_TOLERANCE = 1e-9


def no_signal_level(configured: int | None, lossy: bool) -> int:
    if configured is not None:
        return configured
    return LOSSY_NO_SIGNAL if lossy else 0


@dataclass(frozen=True)
class ConvexRegion:
    """A convex region as half-spaces `equations[:, :-1] @ index + equations[:, -1] <= 0`,
    over array index coordinates (row, column[, ...]) of pixel centres. Made as the hull of
    the centres of signal pixels, it holds every one of them and nothing beyond their outline."""

    equations: np.ndarray

    @property
    def ndim(self) -> int:
        return self.equations.shape[1] - 1

    def plane(self, axis: int, index: int) -> ConvexRegion:
        """The 2D region where the volume's slice `np.take(volume, index, axis)` meets this one."""
        keep = [a for a in range(self.ndim) if a != axis]
        offset = self.equations[:, axis] * index + self.equations[:, -1]
        return ConvexRegion(np.column_stack([self.equations[:, keep], offset]))

    def mask(self, shape: tuple[int, int]) -> np.ndarray:
        """Pixels of a 2D region, row by row: each half-plane bounds the columns of a row."""
        if self.ndim != 2:
            raise ValueError("only a 2D region can be drawn as a mask")
        rows = np.arange(shape[0], dtype=np.float64)
        low = np.full(shape[0], -np.inf)
        high = np.full(shape[0], np.inf)
        for a_row, a_col, offset in self.equations:
            rest = a_row * rows + offset  # a_col * col + rest <= 0
            if a_col > _TOLERANCE:
                high = np.minimum(high, -rest / a_col)
            elif a_col < -_TOLERANCE:
                low = np.maximum(low, -rest / a_col)
            else:
                high = np.where(rest > _TOLERANCE, -np.inf, high)
        cols = np.arange(shape[1], dtype=np.float64)
        return (cols[None, :] >= low[:, None] - _TOLERANCE) & (cols[None, :] <= high[:, None] + _TOLERANCE)


def _grey(pixels: np.ndarray, channels_last: bool) -> np.ndarray:
    return pixels.max(axis=-1) if channels_last else pixels


def _scan_parts(signal: np.ndarray) -> np.ndarray | None:
    """The signal without thin lines and specks; None when nothing substantial is left.

    The opening that removes lines also rounds the scan's corners off; the signal within a few
    pixels of what the opening kept is taken back, so no corner of the scan is lost.
    """
    element = np.ones((3,) * signal.ndim, dtype=bool)
    opened = ndimage.binary_opening(signal, structure=element, iterations=OPENING_ITERATIONS)
    labels, count = ndimage.label(opened, structure=element)
    if count == 0:
        return None
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    big = sizes >= MIN_PART_SHARE * signal.size
    if not big.any():
        return None
    return ndimage.binary_dilation(big[labels], structure=element, iterations=2 * OPENING_ITERATIONS, mask=signal)


def _row_extremes(parts: np.ndarray) -> np.ndarray:
    """(row, first column, last column) of every row holding signal: all a hull needs of a 2D mask."""
    rows = np.flatnonzero(parts.any(axis=1))
    first = parts[rows].argmax(axis=1)
    last = parts.shape[1] - 1 - parts[rows, ::-1].argmax(axis=1)
    return np.column_stack([rows, first, last])


def _hull(points: np.ndarray) -> ConvexRegion | None:
    from scipy.spatial import ConvexHull, QhullError

    try:
        hull = ConvexHull(points)
    except (QhullError, ValueError):  # too few or degenerate points: no shape to speak of
        return None
    return ConvexRegion(hull.equations)


def _hull_vertices_2d(parts: np.ndarray) -> np.ndarray:
    extremes = _row_extremes(parts)
    region_points = np.unique(np.concatenate([extremes[:, [0, 1]], extremes[:, [0, 2]]]).astype(np.float64), axis=0)
    from scipy.spatial import ConvexHull, QhullError

    try:
        return region_points[ConvexHull(region_points).vertices]
    except (QhullError, ValueError):
        return region_points


def field_of_view_from_signal(signal: np.ndarray) -> np.ndarray | None:
    """The convex hull of the substantial part of a 2D signal mask, as a mask; None when the
    signal gives no shape (then nothing can be said to lie outside it)."""
    parts = _scan_parts(signal)
    if parts is None:
        return None
    region = _hull(_hull_vertices_2d(parts))
    return None if region is None else region.mask(signal.shape)


def image_field_of_view(pixels: np.ndarray, lossy: bool, level: int | None = None) -> np.ndarray | None:
    """Field of view of one frame ((H, W) or (H, W, 3)): reliable only where the scan has signal
    up to its edges (see the module's note)."""
    grey = _grey(pixels, pixels.ndim == 3)
    return field_of_view_from_signal(grey > no_signal_level(level, lossy))


def sequence_field_of_view(frames: np.ndarray, frame_axis: int, lossy: bool, level: int | None = None) -> np.ndarray | None:
    """Field of view shared by all frames of a video or 2D+t stack, in the layout of one frame
    (`np.take(frames, i, frame_axis)`), from the maximum of every pixel over time."""
    return field_of_view_from_signal(np.max(frames, axis=frame_axis) > no_signal_level(level, lossy))


class SignalEnvelope:
    """The running maximum of frames read one by one (a video decoded as a stream)."""

    def __init__(self) -> None:
        self.maximum: np.ndarray | None = None

    def add(self, frame: np.ndarray) -> None:
        grey = _grey(frame, frame.ndim == 3)
        self.maximum = grey.copy() if self.maximum is None else np.maximum(self.maximum, grey, out=self.maximum)

    def field_of_view(self, lossy: bool, level: int | None = None) -> np.ndarray | None:
        if self.maximum is None:
            return None
        return field_of_view_from_signal(self.maximum > no_signal_level(level, lossy))


@dataclass(frozen=True)
class VolumeFieldOfView:
    """The convex hull of a 3D scan's signal; each slice's field of view is where it meets it."""

    region: ConvexRegion | None

    @classmethod
    def estimate(cls, volume: np.ndarray, lossy: bool = False, level: int | None = None) -> VolumeFieldOfView:
        parts = _scan_parts(volume > no_signal_level(level, lossy))
        if parts is None:
            return cls(None)
        # The 3D hull's vertices are among the 2D hull vertices of the slices along any axis.
        points = []
        for index in np.flatnonzero(parts.any(axis=(1, 2))):
            vertices = _hull_vertices_2d(parts[index])
            points.append(np.column_stack([np.full(len(vertices), float(index)), vertices]))
        return cls(_hull(np.concatenate(points)))

    def plane(self, axis: int, index: int, shape: tuple[int, int]) -> np.ndarray | None:
        """Field of view of `np.take(volume, index, axis)` (of the given 2D shape)."""
        if self.region is None:
            return None
        return self.region.plane(axis, index).mask(shape)
