"""Index, split and write stages at corpus scale, on synthetic records (tiny images, so pixels
do not dominate).

    python benchmarks/scale.py                      # 28,000 and 280,000 images
    python benchmarks/scale.py --images 4000 16000 --datasets 1 --instances-per-image 1

Each size runs in its own process so its peak memory (RSS) is its own. Goal: 280,000 images
and 300,000 instances in at most 60 s and 4 GB, and time linear in the size.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from us43d.corpus.records import AnnotationRecord, ImageRecord
from us43d.corpus.split import assign_splits
from us43d.corpus.writers import DatasetInfo, SplitRecord, check_unique_ids, write_coco, write_parquet


def synthetic(images: int, instances: int, datasets: int = 43) -> tuple[dict[str, DatasetInfo], dict[str, list[ImageRecord]]]:
    rng = np.random.default_rng(0)
    mask = np.zeros((32, 32), np.uint8, order="F")
    mask[8:20, 10:22] = 1
    counts = mask_utils.encode(mask)["counts"].decode()
    extra = instances - images
    infos, records = {}, {}
    per_dataset = np.full(datasets, images // datasets)
    per_dataset[: images % datasets] += 1
    for d, count in enumerate(per_dataset):
        dataset = f"DS{d:02d}"
        infos[dataset] = DatasetInfo(dataset, "organ", ("a", "b"))
        rows = []
        for i in range(count):
            n = 1 + (1 if extra > 0 and rng.random() < extra / images else 0)
            annotations = tuple(AnnotationRecord("a" if k == 0 else "b", counts, (10, 8, 12, 12), 144) for k in range(n))
            key = f"img_{i:07d}"
            rows.append(
                ImageRecord(
                    dataset,
                    key,
                    f"{dataset}/{key}.png",
                    32,
                    32,
                    f"raw/{key}.png",
                    None,
                    f"p{i // 4}",
                    "test" if i % 10 == 0 else None,
                    annotations,
                )
            )
        records[dataset] = rows
    return infos, records


def run(images: int, instances: int, datasets: int) -> dict[str, float]:
    infos, built = synthetic(images, instances, datasets)
    out = Path(tempfile.mkdtemp(prefix="us43d-scale-"))
    try:
        # the index: what the build keeps per dataset (its state file), read back as records
        states = {d: json.dumps({"records": [r.to_json() for r in rs]}) for d, rs in built.items()}
        del built
        started = time.perf_counter()
        records = {d: [ImageRecord.from_json(r) for r in json.loads(text)["records"]] for d, text in states.items()}
        index_s = time.perf_counter() - started
        started = time.perf_counter()
        rows = []
        for dataset_records in records.values():
            splits = assign_splits(dataset_records)
            rows.extend(SplitRecord(r, splits[r.key]) for r in dataset_records)
        split_s = time.perf_counter() - started
        check_unique_ids(rows)
        write_coco(out, infos, rows)
        coco_s = time.perf_counter() - started - split_s
        write_parquet(out, infos, rows)
        total = time.perf_counter() - started + index_s
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return {
        "images": images,
        "instances": sum(len(r.annotations) for v in records.values() for r in v),
        "index_s": index_s,
        "split_s": split_s,
        "coco_s": coco_s,
        "parquet_s": total - index_s - split_s - coco_s,
        "total_s": total,
        "peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, nargs="*", default=[28_000, 280_000])
    parser.add_argument("--instances-per-image", type=float, default=300_000 / 280_000)
    parser.add_argument("--datasets", type=int, default=43, help="how many datasets the images are spread over")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run(args.one, int(args.one * args.instances_per_image), args.datasets)))
        return
    results = []
    for images in args.images:
        output = subprocess.run(
            [
                sys.executable,
                __file__,
                "--one",
                str(images),
                "--instances-per-image",
                str(args.instances_per_image),
                "--datasets",
                str(args.datasets),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        results.append(json.loads(output.stdout.strip().splitlines()[-1]))
    print(f"index + split + write (COCO per dataset and merged, Parquet), {args.datasets} dataset(s)")
    for r in results:
        print(
            f"  {r['images']:>8,} images {r['instances']:>8,} instances: index {r['index_s']:5.1f} s, split {r['split_s']:5.1f} s, COCO {r['coco_s']:5.1f} s, "
            f"Parquet {r['parquet_s']:5.1f} s, total {r['total_s']:5.1f} s, peak RSS {r['peak_gib']:.2f} GiB"
        )
    if len(results) > 1:
        a, b = results[0], results[-1]
        print(
            f"  {b['images'] / a['images']:.0f}x the images took {b['total_s'] / a['total_s']:.1f}x the time (goal: linear, <= 60 s, <= 4 GB)"
        )


if __name__ == "__main__":
    main()
