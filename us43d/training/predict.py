"""`us43d predict`: one prompt on one image, written as a mask PNG and an overlay PNG."""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from PIL import Image

from us43d.corpus.writers import atomic_write_bytes
from us43d.errors import Us43dError, os_error_text
from us43d.training.data import read_rgb
from us43d.training.evaluate import Predictor
from us43d.training.outputs import refuse_overwriting


def predict_image(
    predictor: Predictor, image: Path, point: tuple[float, float] | None, box: tuple[float, float, float, float] | None
) -> tuple[np.ndarray, float, np.ndarray]:
    """(mask, predicted IoU, RGB image) for one point or one box in original pixel coordinates."""
    rgb = read_rgb(image, what="image")
    embedding, resized = predictor.embed(rgb)
    points = np.array([point], dtype=np.float64) if point is not None else np.zeros((0, 2))
    boxes = np.array([box], dtype=np.float64) if box is not None else np.zeros((0, 4))
    masks, scores = predictor.masks(embedding, resized, rgb.shape[:2], points, boxes, use_box=box is not None)
    return masks[0], float(scores[0]), rgb


def overlay(rgb: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int] = (255, 64, 64), alpha: float = 0.45) -> np.ndarray:
    out = rgb.astype(np.float32).copy()
    out[mask] = (1 - alpha) * out[mask] + alpha * np.asarray(colour, dtype=np.float32)
    return out.round().astype(np.uint8)


def prediction_paths(image: Path, out: Path, inputs: Mapping[str, Path | None]) -> tuple[Path, Path]:
    """(mask, overlay) for `--out`: a .png file, or an existing folder, which gets
    `<image stem>.mask.png`; the overlay goes beside the mask as `<mask stem>.overlay.png`.
    Neither may be one of `inputs`: the prediction never replaces what it was made from."""
    mask = out / f"{image.stem}.mask.png" if out.is_dir() else out
    if mask.suffix.lower() != ".png":
        raise Us43dError(f"--out {out} must be a .png file or an existing folder (masks are written as PNG)")
    overlay_path = mask.with_name(f"{mask.stem}.overlay.png")
    for path in (mask, overlay_path):
        refuse_overwriting(path, inputs, "--out")
    return mask, overlay_path


def write_prediction(mask: np.ndarray, rgb: np.ndarray, mask_path: Path, overlay_path: Path) -> None:
    """The mask (0/255) and the overlay, each written whole or not at all."""
    for path, pixels in ((mask_path, (mask * 255).astype(np.uint8)), (overlay_path, overlay(rgb, mask))):
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        try:
            atomic_write_bytes(path, buffer.getvalue())
        except OSError as exc:
            raise Us43dError(f"cannot write {path}: {os_error_text(exc)}") from None
