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


def background_mask(image: np.ndarray, threshold: int, near: np.ndarray | None = None) -> np.ndarray:
    """Pixels at or below `threshold` that are connected to the image border through such pixels.

    With `near` (the annotation's foreground), the usual case of an annotation that touches no
    dark pixel at all returns at once: there is nothing to clean, so no labelling is needed.
    """
    grey = image.max(axis=2) if image.ndim == 3 else image
    dark = grey <= threshold
    if near is not None and not (dark & near).any():
        return np.zeros_like(dark)
    if not dark.any():
        return dark
    # One labelling pass, then keep the dark regions that reach the border: much faster than
    # flood filling by repeated dilation.
    labels, count = ndimage.label(dark, structure=_EIGHT_CONNECTED)
    on_border = np.zeros(count + 1, dtype=bool)
    on_border[labels[0]] = on_border[labels[-1]] = on_border[labels[:, 0]] = on_border[labels[:, -1]] = True
    on_border[0] = False
    return on_border[labels]


def background_threshold(configured: int | None, lossy: bool) -> int:
    if configured is not None:
        return configured
    return LOSSY_BACKGROUND_THRESHOLD if lossy else 0
