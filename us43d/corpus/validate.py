"""`us43d validate`: check every promise a built corpus makes, from its files alone."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from PIL import Image
from pycocotools import mask as mask_utils

from us43d.corpus.records import SPLITS
from us43d.errors import CorpusError

MAX_PROBLEMS_PER_CHECK = 20


@dataclass
class ValidationReport:
    checked_images: int = 0
    checked_annotations: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _load(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CorpusError(f"cannot read {path}: {exc}") from exc


def _coco_files(out: Path) -> Iterator[tuple[str | None, str, Path]]:
    for split in SPLITS:
        path = out / "coco" / f"{split}.json"
        if path.is_file():
            yield None, split, path
    for folder in sorted(p for p in (out / "coco").iterdir() if p.is_dir()):
        for split in SPLITS:
            path = folder / f"{split}.json"
            if path.is_file():
                yield folder.name, split, path


def _check_document(doc: dict[str, Any], name: str, out: Path, check_pixels: bool, report: ValidationReport) -> None:
    problems: list[str] = []
    images = {}
    for image in doc["images"]:
        if image["id"] in images:
            problems.append(f"{name}: image id {image['id']} appears twice")
        images[image["id"]] = image
        for key in ("dataset", "source_file", "frame", "group"):
            if key not in image:
                problems.append(f"{name}: image {image['id']} lacks '{key}'")
        if check_pixels:
            path = out / "images" / image["file_name"]
            if not path.is_file():
                problems.append(f"{name}: {image['file_name']} is missing")
            else:
                with Image.open(path) as im:
                    if im.size != (image["width"], image["height"]):
                        problems.append(
                            f"{name}: {image['file_name']} is {im.size[0]}x{im.size[1]}, "
                            f"COCO says {image['width']}x{image['height']}"
                        )
    categories = {c["id"] for c in doc["categories"]}
    seen_ann: set[int] = set()
    for ann in doc["annotations"]:
        where = f"{name}: annotation {ann['id']}"
        if ann["id"] in seen_ann:
            problems.append(f"{where} id appears twice")
        seen_ann.add(ann["id"])
        image = images.get(ann["image_id"])
        if image is None:
            problems.append(f"{where} refers to unknown image {ann['image_id']}")
            continue
        if ann["category_id"] not in categories:
            problems.append(f"{where} has unknown category {ann['category_id']}")
        rle = ann["segmentation"]
        if rle["size"] != [image["height"], image["width"]]:
            problems.append(f"{where} RLE size {rle['size']} differs from its image")
            continue
        area = int(mask_utils.area(rle))
        box = [int(round(v)) for v in mask_utils.toBbox(rle).tolist()]
        if area == 0:
            problems.append(f"{where} has an empty mask")
        if area != ann["area"]:
            problems.append(f"{where} area {ann['area']} differs from its RLE ({area})")
        if box != list(ann["bbox"]):
            problems.append(f"{where} bbox {ann['bbox']} differs from its RLE ({box})")
    report.problems.extend(problems[:MAX_PROBLEMS_PER_CHECK])
    if len(problems) > MAX_PROBLEMS_PER_CHECK:
        report.problems.append(f"{name}: ... and {len(problems) - MAX_PROBLEMS_PER_CHECK} more problems")


def validate_corpus(out: Path, check_pixels: bool = True) -> ValidationReport:
    """Ids unique, bboxes and areas agree with RLE, files exist at their stated sizes, no group
    in two splits, per-dataset and merged COCO agree, and Parquet agrees with COCO."""
    if not (out / "coco").is_dir():
        raise CorpusError(f"{out} holds no corpus (no coco/ folder); run `us43d build` first")
    report = ValidationReport()
    merged: dict[str, dict[int, tuple[str, str]]] = {}
    per_dataset: dict[int, tuple[str, str]] = {}
    per_dataset_anns = 0
    merged_anns = 0
    group_splits: dict[tuple[str, str], set[str]] = defaultdict(set)
    for dataset, split, path in _coco_files(out):
        doc = _load(path)
        name = path.relative_to(out).as_posix()
        # Pixels are checked once, through the per-dataset files.
        _check_document(doc, name, out, check_pixels and dataset is not None, report)
        if dataset is None:
            merged[split] = {i["id"]: (i["dataset"], split) for i in doc["images"]}
            merged_anns += len(doc["annotations"])
            if [c["name"] for c in doc["categories"]] != ["object"]:
                report.problems.append(f"{name}: merged files are class-agnostic, one category 'object'")
            continue
        report.checked_images += len(doc["images"])
        report.checked_annotations += len(doc["annotations"])
        per_dataset_anns += len(doc["annotations"])
        for image in doc["images"]:
            if image["dataset"] != dataset:
                report.problems.append(f"{name}: image {image['id']} says dataset {image['dataset']}")
            if image["id"] in per_dataset:
                report.problems.append(f"{name}: image id {image['id']} also in {per_dataset[image['id']]}")
            per_dataset[image["id"]] = (dataset, split)
            group_splits[dataset, image["group"]].add(split)
    for (dataset, group), splits in sorted(group_splits.items()):
        if len(splits) > 1:
            report.problems.append(f"{dataset}: group '{group}' is in several splits: {sorted(splits)}")
    merged_all = {k: v for split in merged.values() for k, v in split.items()}
    if merged_all != per_dataset:
        report.problems.append(
            f"merged COCO files ({len(merged_all)} images) disagree with the per-dataset files ({len(per_dataset)} images)"
        )
    if merged_anns != per_dataset_anns:
        report.problems.append(f"merged COCO has {merged_anns} annotations, per-dataset files {per_dataset_anns}")
    _check_parquet(out, per_dataset, per_dataset_anns, report)
    return report


def _check_parquet(out: Path, images: dict[int, tuple[str, str]], n_annotations: int, report: ValidationReport) -> None:
    folder = out / "parquet"
    for name in ("images.parquet", "annotations.parquet"):
        if not (folder / name).is_file():
            report.problems.append(f"parquet/{name} is missing")
            return
    table = pq.read_table(folder / "images.parquet", columns=["image_id", "dataset", "split"]).to_pydict()
    rows = {i: (d, s) for i, d, s in zip(table["image_id"], table["dataset"], table["split"])}
    if len(rows) != len(table["image_id"]):
        report.problems.append("parquet/images.parquet has duplicate image ids")
    if rows != images:
        differing = len(set(rows.items()) ^ set(images.items()))
        report.problems.append(f"parquet/images.parquet disagrees with COCO on {differing} image rows (id, dataset, split)")
    anns = pq.read_table(folder / "annotations.parquet", columns=["annotation_id", "image_id"])
    if anns.num_rows != n_annotations:
        report.problems.append(f"parquet/annotations.parquet has {anns.num_rows} rows, COCO {n_annotations} annotations")
    ids = anns.column("annotation_id").to_numpy()
    if len(np.unique(ids)) != len(ids):
        report.problems.append("parquet/annotations.parquet has duplicate annotation ids")
    unknown = set(anns.column("image_id").to_pylist()) - images.keys()
    if unknown:
        report.problems.append(f"parquet/annotations.parquet refers to {len(unknown)} unknown image ids")
