"""Label–background overlap cleaning.

Annotators draw outlines that spill over the edge of the ultrasound sector onto the black
frame around it. Those pixels are not anatomy. The background is the dark region *connected to
the image border*, so dark structures inside the field of view (an anechoic cyst, a vessel
lumen) are never touched, however black they are.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

# Grey level still counted as background in lossy (JPEG) images, whose black frame is noisy.
LOSSY_BACKGROUND_THRESHOLD = 8
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def background_mask(image: np.ndarray, threshold: int) -> np.ndarray:
    """Pixels at or below `threshold` that are connected to the image border through such pixels."""
    grey = image.max(axis=2) if image.ndim == 3 else image
    dark = grey <= threshold
    if not dark.any():
        return dark
    border = np.zeros_like(dark)
    border[0, :] = border[-1, :] = border[:, 0] = border[:, -1] = True
    seeds = dark & border
    if not seeds.any():
        return np.zeros_like(dark)
    # Flood fill from the dark border pixels; binary_propagation keeps it in C.
    return ndimage.binary_propagation(seeds, structure=_EIGHT_CONNECTED, mask=dark)


def background_threshold(configured: int | None, lossy: bool) -> int:
    if configured is not None:
        return configured
    return LOSSY_BACKGROUND_THRESHOLD if lossy else 0
