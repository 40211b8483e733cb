"""`us43d predict`: one prompt on one image, written as a mask PNG and an overlay PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from us43d.training.data import read_rgb
from us43d.training.evaluate import Predictor


def predict_image(
    predictor: Predictor, image: Path, point: tuple[float, float] | None, box: tuple[float, float, float, float] | None
) -> tuple[np.ndarray, float, np.ndarray]:
    """(mask, predicted IoU, RGB image) for one point or one box in original pixel coordinates."""
    rgb = read_rgb(image)
    embedding, resized = predictor.embed(rgb)
    points = np.array([point], dtype=np.float64) if point is not None else np.zeros((0, 2))
    boxes = np.array([box], dtype=np.float64) if box is not None else np.zeros((0, 4))
    masks, scores = predictor.masks(embedding, resized, rgb.shape[:2], points, boxes, use_box=box is not None)
    return masks[0], float(scores[0]), rgb


def overlay(rgb: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int] = (255, 64, 64), alpha: float = 0.45) -> np.ndarray:
    out = rgb.astype(np.float32).copy()
    out[mask] = (1 - alpha) * out[mask] + alpha * np.asarray(colour, dtype=np.float32)
    return out.round().astype(np.uint8)


def write_prediction(mask: np.ndarray, rgb: np.ndarray, out: Path) -> Path:
    """The mask (0/255) at `out`, the overlay beside it as `<stem>.overlay.png`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((mask * 255).astype(np.uint8)).save(out)
    overlay_path = out.with_name(f"{out.stem}.overlay.png")
    Image.fromarray(overlay(rgb, mask)).save(overlay_path)
    return overlay_path
