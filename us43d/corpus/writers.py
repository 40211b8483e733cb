"""COCO JSON and Parquet writers.

Outputs are byte-identical for identical inputs: rows sorted by dataset and key, ids derived
from keys, JSON keys in a fixed order. Every file goes through a StagedFiles set: written to a
temporary name first and renamed into place only when all are written. `us43d validate` derives
the expected content with the same functions (image_json, annotations_json, parquet_columns) and
compares it with what is on disk.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from us43d.corpus.output import StagedFiles
from us43d.corpus.records import SPLITS, ImageRecord
from us43d.errors import CorpusError

AGNOSTIC_CATEGORY = {"id": 1, "name": "object", "supercategory": "object"}


@dataclass(frozen=True)
class DatasetInfo:
    """What the writers need of a registry entry (kept in the build state, so a corpus can be
    re-merged without the registry that built it)."""

    id: str
    organ: str
    categories: tuple[str, ...]
    classes: tuple[str, ...] = ()  # image-level classes, which every image's `label` is one of (or null)

    def category_id(self, name: str) -> int:
        return self.categories.index(name) + 1


@dataclass(frozen=True)
class SplitRecord:
    record: ImageRecord
    split: str


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """`path` holds either its old content or all of `data`; a failed write leaves no temporary file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def _committed() -> Iterator[StagedFiles]:
    files = StagedFiles()
    try:
        yield files
        files.commit()
    finally:
        files.discard()


def dump_json(data: Any) -> bytes:
    return (json.dumps(data, separators=(",", ":"), ensure_ascii=False) + "\n").encode()


def image_json(record: ImageRecord) -> dict[str, Any]:
    return {
        "id": record.image_id,
        "file_name": record.file_name,
        "width": record.width,
        "height": record.height,
        "dataset": record.dataset,
        "source_file": record.source_file,
        "frame": record.frame,
        "group": record.group,
        "label": record.label,
    }


def annotations_json(record: ImageRecord, category_id: Any) -> list[dict[str, Any]]:
    return [
        {
            "id": record.annotation_id(index),
            "image_id": record.image_id,
            "category_id": category_id(ann.category),
            "segmentation": {"size": [record.height, record.width], "counts": ann.rle_counts},
            "area": ann.area,
            "bbox": list(ann.bbox),
            "iscrowd": 0,
        }
        for index, ann in enumerate(record.annotations)
    ]


def coco_document(
    records: Sequence[ImageRecord], categories: list[dict[str, Any]], category_id: Any, description: str
) -> dict[str, Any]:
    images, annotations = [], []
    for record in records:
        images.append(image_json(record))
        annotations.extend(annotations_json(record, category_id))
    return {
        "info": {"description": description},
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }


def check_unique_ids(rows: Sequence[SplitRecord]) -> None:
    image_ids: dict[int, str] = {}
    for row in rows:
        r = row.record
        other = image_ids.setdefault(r.image_id, f"{r.dataset}/{r.key}")
        if other != f"{r.dataset}/{r.key}":
            raise CorpusError(f"image id collision between {other} and {r.dataset}/{r.key}; rename one key")


def dataset_categories(info: DatasetInfo) -> list[dict[str, Any]]:
    """A dataset's COCO categories: ids in the registry's order, the organ as supercategory."""
    return [{"id": i + 1, "name": n, "supercategory": info.organ} for i, n in enumerate(info.categories)]


def write_coco(
    out: Path, datasets: Mapping[str, DatasetInfo], rows: Sequence[SplitRecord], files: StagedFiles | None = None
) -> None:
    """Per-dataset files with the dataset's categories, and merged class-agnostic files. A split
    without images has no file, nor has a dataset the corpus no longer holds. Written into
    `files` (committed by the caller), or, without it, in place at once."""
    if files is None:
        with _committed() as files:
            return write_coco(out, datasets, rows, files)
    coco_dir = out / "coco"
    buckets: dict[tuple[str, str], list[ImageRecord]] = defaultdict(list)
    for row in rows:
        buckets[row.record.dataset, row.split].append(row.record)
    for dataset_id, info in datasets.items():
        for split in SPLITS:
            chosen = buckets.get((dataset_id, split), [])
            path = coco_dir / dataset_id / f"{split}.json"
            if not chosen:
                files.remove(path)
                continue
            doc = coco_document(chosen, dataset_categories(info), info.category_id, f"US-43d {dataset_id} {split}")
            files.write(path, dump_json(doc))
    for folder in sorted(coco_dir.iterdir()) if coco_dir.is_dir() else []:
        if folder.is_dir() and not folder.is_symlink() and folder.name not in datasets:
            for split in SPLITS:
                files.remove(folder / f"{split}.json")
    for split in SPLITS:
        chosen = [r.record for r in rows if r.split == split]
        path = coco_dir / f"{split}.json"
        if not chosen:
            files.remove(path)
            continue
        doc = coco_document(chosen, [AGNOSTIC_CATEGORY], lambda _name: 1, f"US-43d {split}, class-agnostic")
        files.write(path, dump_json(doc))


IMAGE_SCHEMA = pa.schema(
    [
        ("image_id", pa.int64()),
        ("dataset", pa.string()),
        ("organ", pa.string()),
        ("split", pa.string()),
        ("file_name", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("source_file", pa.string()),
        ("frame", pa.int32()),
        ("group", pa.string()),
        ("n_instances", pa.int32()),
        ("label", pa.string()),
    ]
)
ANNOTATION_SCHEMA = pa.schema(
    [
        ("annotation_id", pa.int64()),
        ("image_id", pa.int64()),
        ("dataset", pa.string()),
        ("split", pa.string()),
        ("category", pa.string()),
        ("category_id", pa.int32()),
        ("bbox_x", pa.int32()),
        ("bbox_y", pa.int32()),
        ("bbox_w", pa.int32()),
        ("bbox_h", pa.int32()),
        ("area", pa.int64()),
        ("rle_counts", pa.string()),
        ("height", pa.int32()),
        ("width", pa.int32()),
    ]
)


def _table_bytes(columns: dict[str, list[Any]], schema: pa.Schema) -> bytes:
    table = pa.Table.from_pydict(columns, schema=schema)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd", write_statistics=True)
    return sink.getvalue().to_pybytes()


def parquet_columns(
    datasets: Mapping[str, DatasetInfo], rows: Sequence[SplitRecord]
) -> tuple[dict[str, list[Any]], dict[str, list[Any]]]:
    """The columns of images.parquet and annotations.parquet, row by row in `rows` order."""
    images: dict[str, list[Any]] = {name: [] for name in IMAGE_SCHEMA.names}
    anns: dict[str, list[Any]] = {name: [] for name in ANNOTATION_SCHEMA.names}
    for row in rows:
        r, info = row.record, datasets[row.record.dataset]
        for name, value in (
            ("image_id", r.image_id),
            ("dataset", r.dataset),
            ("organ", info.organ),
            ("split", row.split),
            ("file_name", r.file_name),
            ("width", r.width),
            ("height", r.height),
            ("source_file", r.source_file),
            ("frame", r.frame),
            ("group", r.group),
            ("n_instances", len(r.annotations)),
            ("label", r.label),
        ):
            images[name].append(value)
        for index, a in enumerate(r.annotations):
            for name, value in (
                ("annotation_id", r.annotation_id(index)),
                ("image_id", r.image_id),
                ("dataset", r.dataset),
                ("split", row.split),
                ("category", a.category),
                ("category_id", info.category_id(a.category)),
                ("bbox_x", a.bbox[0]),
                ("bbox_y", a.bbox[1]),
                ("bbox_w", a.bbox[2]),
                ("bbox_h", a.bbox[3]),
                ("area", a.area),
                ("rle_counts", a.rle_counts),
                ("height", r.height),
                ("width", r.width),
            ):
                anns[name].append(value)
    return images, anns


def write_parquet(
    out: Path, datasets: Mapping[str, DatasetInfo], rows: Sequence[SplitRecord], files: StagedFiles | None = None
) -> None:
    if files is None:
        with _committed() as files:
            return write_parquet(out, datasets, rows, files)
    images, anns = parquet_columns(datasets, rows)
    files.write(out / "parquet" / "images.parquet", _table_bytes(images, IMAGE_SCHEMA))
    files.write(out / "parquet" / "annotations.parquet", _table_bytes(anns, ANNOTATION_SCHEMA))
