"""Build throughput on 2D data against the codec floor.

    python benchmarks/build_throughput.py [--images 200] [--workers 2]

The floor is what no build can avoid: decoding each source image and mask and encoding the
output PNG with Pillow (same settings as the build), spread over the same number of processes
started the same way (the build's own process pool, cold).
The build does that plus mask checks, cleaning, components, RLE and the COCO/Parquet writing.
Goal: build time at most 1.2x the floor.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from us43d.corpus.build import BuildOptions, _executor, build_corpus
from us43d.corpus.process import PNG_COMPRESS_LEVEL
from us43d.demo import synthetic_ultrasound
from us43d.registry import Registry


def make_raw(raw: Path, count: int, size: tuple[int, int]) -> list[tuple[Path, Path]]:
    rng = np.random.default_rng(0)
    root = raw / "BUS-B" / "BUS"
    (root / "original").mkdir(parents=True)
    (root / "GT").mkdir(parents=True)
    pairs = []
    for n in range(1, count + 1):
        image, mask = synthetic_ultrasound(rng, *size)
        Image.fromarray(image).save(root / "original" / f"{n:06d}.png")
        Image.fromarray(mask).save(root / "GT" / f"{n:06d}.png")
        pairs.append((root / "original" / f"{n:06d}.png", root / "GT" / f"{n:06d}.png"))
    return pairs


def floor_one(pair: tuple[Path, Path]) -> int:
    image_path, mask_path = pair
    with Image.open(image_path) as image, Image.open(mask_path) as mask:
        pixels, _ = np.asarray(image), np.asarray(mask)
    out = image_path.with_suffix(".floor.png")
    Image.fromarray(pixels).save(out, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    out.unlink()
    return pixels.size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--height", type=int, default=600)
    parser.add_argument("--width", type=int, default=800)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="us43d-bench-"))
    try:
        pairs = make_raw(work / "raw", args.images, (args.height, args.width))
        # the floor pays the same process start-up as the build (same pool, started cold)
        started = time.perf_counter()
        pool = _executor(args.workers) or ProcessPoolExecutor(1)
        with pool:
            list(pool.map(floor_one, pairs, chunksize=8))
        floor = time.perf_counter() - started
        registry = Registry.load()
        started = time.perf_counter()
        build_corpus(registry, work / "raw", work / "out", ["BUS-B"], BuildOptions(workers=args.workers, progress=False))
        total = time.perf_counter() - started
        print(f"{args.images} images {args.width}x{args.height}, {args.workers} processes")
        print(f"  codec floor  {floor:6.2f} s  ({args.images / floor:6.1f} images/s)")
        print(f"  us43d build  {total:6.2f} s  ({args.images / total:6.1f} images/s)")
        print(f"  ratio build/floor x{total / floor:.2f} (goal <= 1.2)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
