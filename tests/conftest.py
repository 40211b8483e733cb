"""Shared test helpers: fake raw trees are written with these, never copied from real data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from us43d.demo import synthetic_ultrasound

SHARED = Path(__file__).resolve().parents[2] / "shared"
SAMPLES = SHARED / "samples"


def write_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def write_jpeg(path: Path, array: np.ndarray, quality: int = 90) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, quality=quality)
    return path


def ellipse(shape: tuple[int, int], centre: tuple[float, float], radii: tuple[float, float]) -> np.ndarray:
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]]
    return ((rows - centre[0]) / radii[0]) ** 2 + ((cols - centre[1]) / radii[1]) ** 2 <= 1.0


def speckle_image(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """A grey ultrasound-like image whose field of view covers the whole frame (no black border)."""
    return np.clip(rng.rayleigh(60, size=shape), 1, 255).astype(np.uint8)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def us_image(rng: np.random.Generator):
    return lambda h=96, w=128: synthetic_ultrasound(rng, h, w)
