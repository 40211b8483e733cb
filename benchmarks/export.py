"""`us43d export` at corpus scale: time and peak memory, which must not grow with the corpus.

    python benchmarks/export.py [--images 28000 280000]

Writes the synthetic corpus of benchmarks/scale.py (43 datasets, tiny 32 x 32 PNGs, so bytes
do not dominate) with its COCO files, then exports it as Hugging Face Parquet and as WebDataset
shards, each size and format in its own process so its peak memory (RSS) is its own.
Goal: streaming, i.e. the same peak memory for 10x the images; time linear.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from scale import synthetic  # noqa: E402

from us43d.corpus.split import assign_splits  # noqa: E402
from us43d.corpus.writers import SplitRecord, write_coco  # noqa: E402

EXPORT = """
import resource, sys, time
from pathlib import Path
from us43d.corpus import export
from us43d.registry import Registry
out, target, form = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
registry = Registry.load()
started = time.perf_counter()
writer = export.export_hf if form == "hf" else export.export_webdataset
writer(out, target, export.corpus_datasets(out), registry)
# VmHWM, not ru_maxrss: a child's ru_maxrss starts from its parent's resident size at fork
peak = next((int(line.split()[1]) / 2**20 for line in open("/proc/self/status") if line.startswith("VmHWM:")), None)
print(time.perf_counter() - started, peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
"""


def make_corpus(out: Path, images: int) -> None:
    infos, records = synthetic(images, int(images * 300_000 / 280_000))
    rows = []
    for dataset_records in records.values():
        splits = assign_splits(dataset_records)
        rows.extend(SplitRecord(r, splits[r.key]) for r in dataset_records)
    write_coco(out, infos, rows)
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32), dtype=np.uint8)).save(buffer, format="PNG")
    first: dict[str, Path] = {}
    for row in rows:  # one PNG per dataset, hard-linked under every name: the export reads each one
        path = out / "images" / row.record.file_name
        path.parent.mkdir(parents=True, exist_ok=True)
        if row.record.dataset not in first:
            path.write_bytes(buffer.getvalue())
            first[row.record.dataset] = path
        else:
            os.link(first[row.record.dataset], path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, nargs="*", default=[28_000, 280_000])
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="us43d-export-"))
    try:
        for images in args.images:
            out = work / f"corpus-{images}"
            make_corpus(out, images)
            for form in ("hf", "webdataset"):
                target = work / f"{form}-{images}"
                run = subprocess.run([sys.executable, "-c", EXPORT, str(out), str(target), form], capture_output=True, text=True)
                if run.returncode != 0:
                    raise SystemExit(run.stderr)
                seconds, peak = (float(v) for v in run.stdout.split())
                size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file()) / 2**20
                print(
                    f"{form:>10} {images:>8,} images: {seconds:6.1f} s ({images / seconds:,.0f} images/s), "
                    f"peak RSS {peak:.2f} GiB, {size:,.0f} MiB written"
                )
                shutil.rmtree(target)
            shutil.rmtree(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
