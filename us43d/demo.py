"""`us43d demo`: the whole data path on synthetic data, with no network.

It writes a small ultrasound-like dataset in BUS-BRA's exact raw layout (Images/, Masks/,
5-fold-cv.csv, bus_data.csv), so the real converter, build, validation and statistics run on
it unchanged. Images imitate B-mode: a fan-shaped field of view on a black frame, speckle,
and hypoechoic lesions; some masks spill over the edge of the fan, as careless outlines do,
so cleaning has something to remove. The pathology is visible, so a classifier can learn it:
benign lesions brighten the tissue behind them (posterior enhancement, as cysts do), malignant
ones darken it (posterior shadowing).
"""

from __future__ import annotations

import csv
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from us43d.errors import Us43dError

MARKER = ".us43d-demo"  # in a folder the demo made: only there does it replace what it wrote before
OWN_OUTPUTS = ("raw/BUS-BRA", "corpus", "run")


@dataclass(frozen=True)
class SyntheticCase:
    image_id: str
    case: str
    pathology: str
    fold: int


def fan_mask(height: int, width: int, apex_row: float = -0.15, half_angle: float = 0.62) -> np.ndarray:
    """The sector an ultrasound probe images: a circular fan opening downwards."""
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    apex_r, apex_c = apex_row * height, width / 2
    radius = np.hypot(rows - apex_r, cols - apex_c)
    angle = np.arctan2(cols - apex_c, rows - apex_r)
    return (np.abs(angle) <= half_angle) & (radius >= 0.2 * height) & (radius <= 1.12 * height)


def synthetic_ultrasound(
    rng: np.random.Generator, height: int, width: int, lesion_inside: bool = True, malignant: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """One grey image and its lesion mask (0/255). The pathology changes no random draw, so the
    same seed gives the same shapes and speckle either way."""
    fan = fan_mask(height, width)
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    tissue = 90 + 40 * np.sin(rows / rng.uniform(9, 20)) * np.cos(cols / rng.uniform(15, 30))
    cy, cx = rng.uniform(0.4, 0.7) * height, rng.uniform(0.35, 0.65) * width
    ry, rx = rng.uniform(0.08, 0.16) * height, rng.uniform(0.1, 0.2) * width
    if not lesion_inside:  # an outline that spills over the fan's edge onto the black frame
        cx = width * 0.5 + np.sign(rng.uniform(-1, 1)) * width * 0.42
        cy = height * 0.75
    theta = rng.uniform(0, np.pi)
    dy, dx = rows - cy, cols - cx
    u = (dx * np.cos(theta) + dy * np.sin(theta)) / rx
    v = (-dx * np.sin(theta) + dy * np.cos(theta)) / ry
    inside = u**2 + v**2 <= 1.0
    tissue = np.where(inside, 25.0, tissue)
    if malignant:  # posterior acoustic shadowing: a dark band below the lesion
        half_width = np.hypot(rx * np.cos(theta), ry * np.sin(theta))  # the lesion's horizontal half-extent
        behind = (np.abs(dx) <= half_width) & (rows > cy) & (u**2 + v**2 > 1.0)
        tissue = np.where(behind, tissue * 0.25, tissue)
    else:  # posterior enhancement: a bright rim below the lesion
        tissue = np.where((u**2 + v**2 > 1.0) & (u**2 + v**2 <= 1.25) & (rows > cy), tissue + 60, tissue)
    speckle = rng.rayleigh(scale=0.55, size=(height, width)).astype(np.float32)
    image = np.clip(tissue * speckle * 1.3, 1, 255)
    image = np.where(fan, image, 0).astype(np.uint8)
    mask = np.where(inside, 255, 0).astype(np.uint8)
    return image, mask


def make_bus_bra_like(root: Path, patients: int = 16, seed: int = 0, size: tuple[int, int] = (160, 208)) -> list[SyntheticCase]:
    """Write BUSBRA/{Images,Masks,5-fold-cv.csv,bus_data.csv} under `root`."""
    rng = np.random.default_rng(seed)
    base = root / "BUSBRA"
    (base / "Images").mkdir(parents=True, exist_ok=True)
    (base / "Masks").mkdir(parents=True, exist_ok=True)
    cases: list[SyntheticCase] = []
    for patient in range(1, patients + 1):
        pathology = "malignant" if rng.random() < 0.35 else "benign"
        fold = 1 + (patient - 1) % 5
        for view in ("l", "r")[: 1 + int(rng.random() < 0.6)]:
            image_id = f"bus_{patient:04d}-{view}"
            image, mask = synthetic_ultrasound(rng, *size, lesion_inside=rng.random() > 0.2, malignant=pathology == "malignant")
            Image.fromarray(image).save(base / "Images" / f"{image_id}.png")
            Image.fromarray(mask).save(base / "Masks" / f"mask_{image_id.removeprefix('bus_')}.png")
            cases.append(SyntheticCase(image_id, str(patient), pathology, fold))
    with open(base / "5-fold-cv.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["ID", "Pathology", "kFold"])
        writer.writerows((c.image_id, c.pathology, c.fold) for c in cases)
    with open(base / "bus_data.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["ID", "Case", "Pathology"])
        writer.writerows((c.image_id, c.case, c.pathology) for c in cases)
    return cases


def claim_folder(directory: Path) -> None:
    """Make `directory` the demo's own, or refuse it.

    The demo writes raw/BUS-BRA, corpus and run, and a rerun replaces them, so it works only in
    a new or empty folder, or in one it marked as its own on an earlier run. Anything else may
    hold a user's real raw data or corpus."""
    marker = directory / MARKER
    if directory.exists() and not directory.is_dir():
        raise Us43dError(f"--dir {directory} is a file: give a new or empty folder")
    if directory.is_dir() and any(directory.iterdir()) and not marker.is_file():
        raise Us43dError(
            f"--dir {directory} is not empty and was not made by `us43d demo`; the demo writes "
            f"{', '.join(OWN_OUTPUTS)} there, so give a new or empty folder"
        )
    directory.mkdir(parents=True, exist_ok=True)
    marker.write_text("Made by `us43d demo`; a rerun with --dir here replaces " + ", ".join(OWN_OUTPUTS) + ".\n")
    for name in OWN_OUTPUTS:
        _remove_own(directory, name)


def _remove_own(directory: Path, name: str) -> None:
    """Remove an earlier run's output, never through a link that leads out of the folder."""
    path = directory / name
    steps = [directory / Path(*Path(name).parts[: i + 1]) for i in range(len(Path(name).parts))]
    if any(step.is_symlink() for step in steps):
        raise Us43dError(f"{path} is or passes through a link: the demo replaces only what it wrote itself; remove it")
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
