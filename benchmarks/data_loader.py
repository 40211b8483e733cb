"""Training data loader throughput: decode, flip, resize to 1024, normalise, pad, masks and
low-res targets, prompt sampling — images per second on one core (one process), reading the
built corpus's PNG folder and the same corpus exported as webdataset shards.

    python benchmarks/data_loader.py [--images 60] [--image-size 1024]

Goal: at least 40 images/s per core.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from build_throughput import make_raw  # noqa: E402

from us43d.corpus.build import BuildOptions, build_corpus  # noqa: E402
from us43d.corpus.export import corpus_datasets, export_webdataset  # noqa: E402
from us43d.registry import Registry  # noqa: E402
from us43d.training.data import TrainDataset, load_selection  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--image-size", type=int, default=1024)
    parser.add_argument("--height", type=int, default=600)
    parser.add_argument("--width", type=int, default=800)
    args = parser.parse_args()
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="us43d-loader-"))
    try:
        make_raw(work / "raw", args.images, (args.height, args.width))
        build_corpus(Registry.load(), work / "raw", work / "out", ["BUS-B"], BuildOptions(workers=1, progress=False))
        export_webdataset(work / "out", work / "shards", corpus_datasets(work / "out"), Registry.load())
        for name, corpus in (("corpus folder", work / "out"), ("webdataset shards", work / "shards")):
            selection = load_selection(corpus, "train")
            dataset = TrainDataset(selection.images, selection.entries, args.image_size, args.image_size // 4)
            dataset[(0, 0)]  # warm up
            started = time.perf_counter()
            for i in range(len(dataset)):
                dataset[(i, i)]
            seconds = time.perf_counter() - started
            print(f"{name}: {len(dataset)} images {args.width}x{args.height} -> {args.image_size}, one process, one thread")
            print(f"  {len(dataset) / seconds:.1f} images/s per core (goal >= 40)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
