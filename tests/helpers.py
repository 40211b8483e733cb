"""Shared test helpers: fake raw trees are written with these, never copied from real data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

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


def build(raw: Path, out: Path, ids: list[str] | None = None, strict: bool = False, workers: int = 1, **kw):
    from us43d.corpus.build import BuildOptions, build_corpus
    from us43d.registry import Registry

    return build_corpus(
        Registry.load(kw.pop("registry_dirs", [])),
        raw,
        out,
        ids,
        BuildOptions(workers=workers, strict=strict, progress=False, **kw),
    )


def load_json(path: Path):
    import json

    return json.loads(path.read_text())


def decode(annotation: dict) -> np.ndarray:
    from pycocotools import mask as mask_utils

    rle = {"size": annotation["segmentation"]["size"], "counts": annotation["segmentation"]["counts"].encode()}
    return mask_utils.decode(rle).astype(bool)


def anti_aliased_upscale(mask: np.ndarray, factor: int = 4) -> np.ndarray:
    """A mask stored `factor` times larger with an anti-aliased grey rim, as STU-Hospital's are.

    Downscaled as coverage and thresholded at one half it gives back `mask` exactly.
    """
    from scipy import ndimage

    big = np.kron(mask.astype(np.uint8), np.ones((factor, factor), np.uint8)).astype(bool)
    rim = big & ~ndimage.binary_erosion(big)
    values = np.where(big, 255, 0).astype(np.uint8)
    values[rim] = 180
    return values


def make_stu_hospital(
    root: Path, n: int = 5, seed: int = 0, wrapper: str | None = "STU-Hospital-master"
) -> dict[int, np.ndarray]:
    """Fake STU-Hospital tree: Hospital/Test_Image_<n>.png (128x128) + mask_<n>.png (512x512)."""
    rng = np.random.default_rng(seed)
    folder = (root / wrapper if wrapper else root) / "Hospital"
    truth = {}
    for number in range(1, n + 1):
        mask = ellipse((128, 128), (rng.uniform(40, 90), rng.uniform(40, 90)), (rng.uniform(10, 25), rng.uniform(10, 25)))
        write_png(folder / f"Test_Image_{number}.png", speckle_image(rng, (128, 128)))
        write_png(folder / f"mask_{number}.png", anti_aliased_upscale(mask))
        truth[number] = mask
    return truth


def write_pair(
    rng: np.random.Generator,
    image_path: Path,
    mask_path: Path | None,
    shape: tuple[int, int] = (60, 80),
    foreground: int = 255,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """A speckle image and an elliptic lesion mask in the formats their suffixes name."""
    if mask is None:
        mask = ellipse(
            shape, (rng.uniform(0.35, 0.65) * shape[0], rng.uniform(0.35, 0.65) * shape[1]), (shape[0] / 6, shape[1] / 6)
        )
    for path, array in ((image_path, speckle_image(rng, shape)), (mask_path, np.where(mask, foreground, 0).astype(np.uint8))):
        if path is None:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(path, **({"quality": 95} if path.suffix.lower() in (".jpg", ".jpeg") else {}))
    return mask


def built_instances(raw: Path, out: Path, dataset_id: str, **kw):
    """Build one dataset; return (result, {source_file: [(category, split, group, mask)]})."""
    result = build(raw, out, [dataset_id], **kw)
    found: dict[str, list] = {}
    for split in ("train", "val", "test"):
        path = out / "coco" / dataset_id / f"{split}.json"
        if not path.exists():
            continue
        doc = load_json(path)
        names = {c["id"]: c["name"] for c in doc["categories"]}
        images = {i["id"]: i for i in doc["images"]}
        for a in doc["annotations"]:
            image = images[a["image_id"]]
            found.setdefault(image["source_file"], []).append((names[a["category_id"]], split, image["group"], decode(a)))
    return result, found


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def write_video(path: Path, frames: list[np.ndarray], codec: str = "mpeg4") -> None:
    """An RGB video (AVI or MP4 by suffix) with PyAV."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=25)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for array in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def jpeg_truth(path: Path) -> np.ndarray:
    """What a lossy mask file holds once decoded and thresholded at half range."""
    with Image.open(path) as image:
        return np.asarray(image.convert("L")) > 127


def private_entry(dataset_id: str = "MyPrivate", **changes: object) -> dict:
    """A minimal valid registry entry of one's own, as a dict; `changes` override fields."""
    entry = {
        "id": dataset_id,
        "name": "A private set",
        "description": "For tests.",
        "organ": "breast",
        "application": "breast lesion",
        "modality": "image",
        "categories": ["lesion"],
        "licence": "unknown",
        "access": "manual",
        "converter": "stu_hospital",
        "test_split": {"kind": "none"},
    }
    entry.update(changes)
    return entry


def write_entries(folder: Path, *entries: dict) -> Path:
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    for entry in entries:
        (folder / f"{entry['id']}.yaml").write_text(yaml.safe_dump(entry))
    return folder


def beyond_coverage(problems: list[dict]) -> list[dict]:
    """Dataset problems other than "far fewer images than the registry expects", which every
    small fake tree of a large release rightly raises."""
    return [p for p in problems if "where the registry expects" not in p["reason"]]
