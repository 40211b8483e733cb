"""`us43d show` on a large dataset: the report must take seconds and not grow with the corpus.

    python benchmarks/show.py [--images 10000] [--workers 2]

Builds a synthetic BUS-B-like dataset of small images (the build is not what is measured), then
times the report of it and measures the report's own peak memory in a fresh process. The report
decodes only the images it draws. Goal: a few seconds for 10,000 images.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from build_throughput import make_raw  # noqa: E402

from us43d.corpus.build import BuildOptions, build_corpus  # noqa: E402
from us43d.registry import Registry  # noqa: E402

REPORT = """
import resource, sys, time
from pathlib import Path
from us43d.corpus.report import write_report
started = time.perf_counter()
write_report(Path(sys.argv[1]), Path(sys.argv[2]))
# VmHWM, not ru_maxrss: a child's ru_maxrss starts from its parent's resident size at fork
peak = next((int(line.split()[1]) / 2**20 for line in open("/proc/self/status") if line.startswith("VmHWM:")), None)
print(time.perf_counter() - started, peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="us43d-show-"))
    try:
        make_raw(work / "raw", args.images, (96, 128))
        started = time.perf_counter()
        build_corpus(Registry.load(), work / "raw", work / "out", ["BUS-B"], BuildOptions(workers=args.workers, progress=False))
        print(f"built {args.images} images in {time.perf_counter() - started:.1f} s (not the measure)")
        run = subprocess.run(
            [sys.executable, "-c", REPORT, str(work / "out"), str(work / "report")], capture_output=True, text=True
        )
        if run.returncode != 0:
            raise SystemExit(run.stderr)
        seconds, peak = (float(v) for v in run.stdout.split())
        pages = sum(1 for _ in (work / "report").rglob("*.png"))
        print(f"report of {args.images} images: {seconds:.2f} s, peak memory {peak:.2f} GiB, {pages} thumbnails")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
