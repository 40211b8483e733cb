"""`us43d validate`: check every promise a built corpus makes against the build's own record.

The truth is what the build recorded: the per-dataset state files (OUT/.state/<ID>.json) hold
every image record (file, size, sha256, group, official split, annotations with RLE, bbox and
area) and the registry's organ and categories as the build used them; build.json holds the seed
of the split. From them the content of every COCO file and every Parquet row is derived again
with the writers' own functions and compared field by field, so a change to any corpus file is
found even when it is consistent with itself (an organ edited in Parquet, an annotation moved
to another image of the same size, category ids swapped, a test group moved to train everywhere).
Checks that do not rest on the writers stand beside: RLE agrees with bbox and area, official
test images stay test, no group is in two splits, organ and category order match the registry,
every PNG is there at its size (opened, with pixels; hashed, with deep) and nothing else lies
under images/. A malformed file is a problem naming it, never a traceback.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image
from pycocotools import mask as mask_utils

from us43d.corpus.output import IMAGES_MARK, STATE_DIR, build_in_progress
from us43d.corpus.records import SPLITS, STATE_VERSION, ImageRecord
from us43d.corpus.split import split_rows
from us43d.corpus.writers import (
    AGNOSTIC_CATEGORY,
    ANNOTATION_SCHEMA,
    IMAGE_SCHEMA,
    DatasetInfo,
    SplitRecord,
    annotations_json,
    dataset_categories,
    image_json,
    parquet_columns,
)
from us43d.errors import CorpusError, Us43dError
from us43d.registry.loader import Registry

MAX_PROBLEMS_PER_CHECK = 20
_LEFTOVERS = (".staging-", ".old-")  # what a build that did not finish leaves under images/


@dataclass
class ValidationReport:
    checked_images: int = 0
    checked_annotations: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


class _Problems:
    """The problems of one check: the first MAX_PROBLEMS_PER_CHECK are kept and the rest counted,
    so one broken file cannot bury what is wrong elsewhere."""

    def __init__(self, report: ValidationReport, name: str) -> None:
        self.report, self.name, self.count = report, name, 0

    def add(self, text: str) -> None:
        self.count += 1
        if self.count <= MAX_PROBLEMS_PER_CHECK:
            self.report.problems.append(text)

    def __enter__(self) -> _Problems:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, trace: TracebackType | None) -> None:
        if self.count > MAX_PROBLEMS_PER_CHECK:
            self.report.problems.append(f"{self.name}: ... and {self.count - MAX_PROBLEMS_PER_CHECK} more problems")


def _short(value: Any, limit: int = 90) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _read_json(path: Path, name: str, problems: _Problems) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as exc:
        problems.add(f"{name}: cannot be read as JSON ({exc})")
        return None


def validate_corpus(
    out: Path, check_pixels: bool = True, deep: bool = False, registry: Registry | None = None
) -> ValidationReport:
    """Every promise of the corpus in OUT, checked against the build's record.

    check_pixels opens every PNG (its header) to compare its size; deep also hashes every PNG
    and compares with the hash recorded when it was written. `registry` is the one the organs
    and categories are checked against (default: the built-in one and US43D_REGISTRY_PATH)."""
    if not out.is_dir() or not any((out / name).exists() for name in ("coco", "build.json", STATE_DIR)):
        raise CorpusError(f"{out} holds no corpus (no build.json, {STATE_DIR}/ or coco/); run `us43d build` first")
    holder = build_in_progress(out)
    if holder is not None:
        raise CorpusError(f"a us43d build (pid {holder}) is writing {out}; validate it once that build has finished")
    report = ValidationReport()
    datasets = _load_states(out, report)
    build = _load_build(out, datasets, report)
    _check_registry(datasets, registry if registry is not None else Registry.load(), report)
    infos = {d: info for d, (info, _) in datasets.items()}
    records = {d: recs for d, (_, recs) in datasets.items()}
    report.checked_images = sum(len(r) for r in records.values())
    report.checked_annotations = sum(len(r.annotations) for recs in records.values() for r in recs)
    if report.checked_images == 0:
        report.problems.append(f"{out}: the corpus holds no image (no dataset was built, or none yielded an image)")
    _check_records(datasets, report)
    seed = build.get("seed", 0) if isinstance(build.get("seed", 0), int) else 0
    try:
        rows, _ = split_rows(records, seed)
    except (Us43dError, ValueError, TypeError, AttributeError) as exc:  # records too broken to split
        report.problems.append(f"{STATE_DIR}/: the records cannot be split ({exc})")
        return report
    _check_coco(out, infos, rows, report)
    _check_parquet(out, infos, rows, report)
    _check_images(out, records, check_pixels, deep, report)
    return report


def _load_states(out: Path, report: ValidationReport) -> dict[str, tuple[DatasetInfo, list[ImageRecord]]]:
    """The build's record of every dataset; a state that cannot be read is a problem."""
    datasets: dict[str, tuple[DatasetInfo, list[ImageRecord]]] = {}
    folder = out / STATE_DIR
    if not folder.is_dir():
        report.problems.append(f"{STATE_DIR}/ is missing: the corpus has no build record to check it against (rebuild it)")
        return datasets
    for path in sorted(folder.glob("*.json")):
        name = f"{STATE_DIR}/{path.name}"
        with _Problems(report, name) as problems:
            data = _read_json(path, name, problems)
            if data is None:
                continue
            if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
                version = data.get("version") if isinstance(data, dict) else None
                problems.add(
                    f"{name}: not a build state of this us43d (version {version!r}, expected {STATE_VERSION}); rebuild it"
                )
                continue
            try:
                info = data["info"]
                dataset = DatasetInfo(
                    str(info["id"]),
                    str(info["organ"]),
                    tuple(str(c) for c in info["categories"]),
                    tuple(str(c) for c in info["classes"]),
                )
                dataset_records = [ImageRecord.from_json(r) for r in data["records"]]
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                problems.add(f"{name}: malformed build state ({type(exc).__name__}: {exc})")
                continue
            if dataset.id != path.stem:
                problems.add(f"{name}: names dataset '{dataset.id}'")
                continue
            datasets[dataset.id] = (dataset, dataset_records)
    return datasets


def _load_build(out: Path, datasets: Mapping[str, Any], report: ValidationReport) -> dict[str, Any]:
    """build.json, checked for the datasets and totals it states."""
    path = out / "build.json"
    with _Problems(report, "build.json") as problems:
        if not path.is_file():
            problems.add("build.json is missing")
            return {}
        build = _read_json(path, "build.json", problems)
        if build is None:
            return {}
        if not isinstance(build, dict):
            problems.add("build.json: not a JSON object")
            return {}
        if not isinstance(build.get("seed"), int):
            problems.add("build.json: 'seed' is missing or not an integer; the splits are checked for seed 0")
        listed = build.get("datasets")
        if not isinstance(listed, dict):
            problems.add("build.json: 'datasets' is missing or not an object")
        elif set(listed) != set(datasets):
            problems.add(
                f"build.json lists datasets {sorted(set(listed) - set(datasets))} without a build state, and not "
                f"{sorted(set(datasets) - set(listed))} that have one"
            )
        totals = build.get("totals")
        images = sum(len(recs) for _, recs in datasets.values())
        if isinstance(totals, dict) and totals.get("images") != images:
            problems.add(f"build.json: totals.images is {_short(totals.get('images'))}, the build states hold {images}")
    return build


def _check_registry(
    datasets: Mapping[str, tuple[DatasetInfo, list[ImageRecord]]], registry: Registry, report: ValidationReport
) -> None:
    """Organs drive `train --exclude` and category ids follow the registry's order: both must be
    the registry's."""
    for dataset, (info, _) in sorted(datasets.items()):
        if dataset not in registry:
            report.problems.append(
                f"{dataset}: not in the registry, so its organ and categories cannot be checked "
                "(pass --registry with the folder of its entry)"
            )
            continue
        entry = registry.get(dataset)
        if entry.organ != info.organ:
            report.problems.append(
                f"{dataset}: organ '{info.organ}' in the corpus, the registry says '{entry.organ}'; rebuild it"
            )
        if tuple(entry.categories) != info.categories:
            report.problems.append(
                f"{dataset}: categories {list(info.categories)} in the corpus (ids in that order), "
                f"the registry says {list(entry.categories)}; rebuild it"
            )
        if tuple(entry.classes) != info.classes:
            report.problems.append(
                f"{dataset}: image-level classes {list(info.classes)} in the corpus, "
                f"the registry says {list(entry.classes)}; rebuild it"
            )


def _check_records(datasets: Mapping[str, tuple[DatasetInfo, list[ImageRecord]]], report: ValidationReport) -> None:
    """The build's own records: files where the build puts them, known categories, and every
    RLE agreeing with its bbox and area (the COCO and Parquet files must then equal them)."""
    for dataset, (info, records) in sorted(datasets.items()):
        name = f"{STATE_DIR}/{dataset}.json"
        with _Problems(report, name) as problems:
            for record in records:
                where = f"{name}: {record.file_name}"
                if record.dataset != dataset or record.file_name != f"{dataset}/{record.key}.png":
                    problems.add(f"{where}: not a file name the build gives ({dataset}/<key>.png)")
                if record.label is not None and record.label not in info.classes:
                    problems.add(f"{where}: label {_short(record.label)} is not one of the classes {list(info.classes)}")
                for index, ann in enumerate(record.annotations):
                    if ann.category not in info.categories:
                        problems.add(
                            f"{where}: annotation {index} has category '{ann.category}', not one of {list(info.categories)}"
                        )
                try:
                    rles = [{"size": [record.height, record.width], "counts": a.rle_counts.encode()} for a in record.annotations]
                    areas = mask_utils.area(rles).tolist() if rles else []
                    boxes = mask_utils.toBbox(rles).tolist() if rles else []
                except (TypeError, ValueError, AttributeError, OverflowError) as exc:
                    problems.add(f"{where}: an RLE cannot be decoded ({exc})")
                    continue
                for index, (ann, area, box) in enumerate(zip(record.annotations, areas, boxes)):
                    box = [int(round(v)) for v in box]
                    if area == 0:
                        problems.add(f"{where}: annotation {index} has an empty mask")
                    if area != ann.area or box != list(ann.bbox):
                        problems.add(
                            f"{where}: annotation {index} has area {ann.area} and bbox {list(ann.bbox)}, its RLE {area} and {box}"
                        )


def _compare_entries(
    name: str, kind: str, entries: list[Any], expected: dict[int, dict[str, Any]], problems: _Problems
) -> list[dict[str, Any]]:
    """Entries (images or annotations) of one COCO file against what the build wrote there, by id.
    Returns every entry with an id, known or not, for the checks across files."""
    known: list[dict[str, Any]] = []
    seen: set[int] = set()
    for entry in entries:
        ident = entry.get("id") if isinstance(entry, dict) else None
        if not isinstance(ident, int) or isinstance(ident, bool):
            problems.add(f"{name}: {kind} without an integer id: {_short(entry)}")
            continue
        if ident in seen:
            problems.add(f"{name}: {kind} id {ident} appears twice")
            continue
        seen.add(ident)
        known.append(entry)
        want = expected.get(ident)
        if want is None:
            problems.add(f"{name}: {kind} {ident} {_short(entry, 60)} is not one the build wrote in this file")
            continue
        label = f"{kind} {ident}" + (f" ({want['file_name']})" if "file_name" in want else "")
        for key, value in want.items():
            if key not in entry:
                problems.add(f"{name}: {label} lacks '{key}'")
            elif entry[key] != value:
                problems.add(f"{name}: {label} has {key} {_short(entry[key])}, the build wrote {_short(value)}")
        extra = sorted(set(entry) - set(want))
        if extra:
            problems.add(f"{name}: {label} has keys the build does not write: {extra}")
    missing = [ident for ident in expected if ident not in seen]
    if missing:
        first = expected[missing[0]]
        example = first.get("file_name", f"id {missing[0]}")
        problems.add(f"{name}: {len(missing)} {kind}(s) the build wrote here are missing, e.g. {example}")
    return known


def _check_document(
    path: Path,
    name: str,
    records: Sequence[ImageRecord],
    categories: list[dict[str, Any]],
    category_id: Any,
    report: ValidationReport,
) -> list[dict[str, Any]]:
    """One COCO file against the records the build put in it; returns its images that have an id."""
    with _Problems(report, name) as problems:
        if not path.is_file():
            problems.add(f"{name} is missing ({len(records)} images belong in it)")
            return []
        doc = _read_json(path, name, problems)
        if doc is None:
            return []
        if not isinstance(doc, dict):
            problems.add(f"{name}: not a COCO document (a JSON object with images, annotations and categories)")
            return []
        lists = {key: doc.get(key) for key in ("images", "annotations", "categories")}
        for key, value in lists.items():
            if not isinstance(value, list):
                problems.add(f"{name}: '{key}' is not a list")
        if isinstance(lists["categories"], list) and lists["categories"] != categories:
            problems.add(
                f"{name}: categories {_short(lists['categories'], 200)} differ from the build's "
                f"{_short(categories, 200)} (ids follow the registry's order)"
            )
        images: list[dict[str, Any]] = []
        if isinstance(lists["images"], list):
            images = _compare_entries(name, "image", lists["images"], {r.image_id: image_json(r) for r in records}, problems)
        if isinstance(lists["annotations"], list):
            expected = {a["id"]: a for r in records for a in annotations_json(r, category_id)}
            _compare_entries(name, "annotation", lists["annotations"], expected, problems)
    return images


def _check_coco(out: Path, infos: Mapping[str, DatasetInfo], rows: Sequence[SplitRecord], report: ValidationReport) -> None:
    """Per-dataset files equal the build's records in their split; merged files equal the union,
    class-agnostic; official test images are in test and no group is in two splits."""
    coco = out / "coco"
    buckets: dict[tuple[str, str], list[ImageRecord]] = defaultdict(list)
    for row in rows:
        buckets[row.record.dataset, row.split].append(row.record)
    found_in: dict[int, list[str]] = defaultdict(list)  # image id -> per-dataset files holding it
    group_splits: dict[tuple[str, str], set[str]] = defaultdict(set)
    for dataset, info in infos.items():
        categories = dataset_categories(info)
        for split in SPLITS:
            path = coco / dataset / f"{split}.json"
            name = path.relative_to(out).as_posix()
            chosen = buckets.get((dataset, split), [])
            if not chosen:
                if path.exists():
                    report.problems.append(f"{name}: the build puts no {dataset} image in {split}, yet the file exists")
                continue
            for image in _check_document(path, name, chosen, categories, info.category_id, report):
                found_in[image["id"]].append(split)
                if isinstance(image.get("group"), str):
                    group_splits[dataset, image["group"]].add(split)
    for row in rows:
        record = row.record
        if record.official_split == "test" and any(split != "test" for split in found_in.get(record.image_id, [])):
            report.problems.append(
                f"{record.dataset}: official test image {record.file_name} (group '{record.group}') is in "
                f"{sorted(set(found_in[record.image_id]))}; official test images stay test"
            )
    with _Problems(report, "coco/: groups") as problems:
        for (dataset, group), splits in sorted(group_splits.items()):
            if len(splits) > 1:
                problems.add(f"coco/{dataset}: group '{group}' is in several splits: {sorted(splits)}")
    for split in SPLITS:
        path = coco / f"{split}.json"
        chosen = [row.record for row in rows if row.split == split]
        if not chosen:
            if path.exists():
                report.problems.append(f"coco/{split}.json: the build puts no image in {split}, yet the file exists")
            continue
        _check_document(path, f"coco/{split}.json", chosen, [AGNOSTIC_CATEGORY], lambda _name: 1, report)
    for folder in sorted(coco.iterdir()) if coco.is_dir() else []:
        if folder.is_dir() and folder.name not in infos and any(folder.glob("*.json")):
            report.problems.append(f"coco/{folder.name}/: no build state for a dataset '{folder.name}'")


def _check_parquet(out: Path, infos: Mapping[str, DatasetInfo], rows: Sequence[SplitRecord], report: ValidationReport) -> None:
    """Both tables hold exactly the rows the build writes, column by column (training reads them:
    a wrong organ would defeat --exclude, a wrong box would train on it)."""
    images, annotations = parquet_columns(infos, rows)
    file_of = dict(zip(images["image_id"], images["file_name"]))
    image_of = dict(zip(annotations["annotation_id"], annotations["image_id"]))
    tables = (
        ("images.parquet", IMAGE_SCHEMA, images, "image_id", lambda ident: f"image_id {ident} ({file_of.get(ident)})"),
        (
            "annotations.parquet",
            ANNOTATION_SCHEMA,
            annotations,
            "annotation_id",
            lambda ident: f"annotation_id {ident} (of {file_of.get(image_of.get(ident))})",
        ),
    )
    for file_name, schema, expected, key, describe in tables:
        name = f"parquet/{file_name}"
        path = out / "parquet" / file_name
        expected_row = {ident: i for i, ident in enumerate(expected[key])}
        with _Problems(report, name) as problems:
            if not path.is_file():
                problems.add(f"{name} is missing")
                continue
            try:
                table = pq.read_table(path)
            except (OSError, ValueError, pa.ArrowException) as exc:
                problems.add(f"{name}: cannot be read as Parquet ({exc})")
                continue
            types = {f.name: f.type for f in table.schema}
            for column in schema:
                if column.name not in types:
                    problems.add(f"{name}: lacks column '{column.name}'")
                elif types[column.name] != column.type:
                    problems.add(f"{name}: column '{column.name}' is {types[column.name]}, the build writes {column.type}")
            extra = [n for n in types if n not in schema.names]
            if extra:
                problems.add(f"{name}: has columns the build does not write: {extra}")
            columns = [n for n in schema.names if n in types]
            if key not in columns:
                continue
            data = table.select(columns).to_pydict()
            actual_row: dict[Any, int] = {}
            for i, ident in enumerate(data[key]):
                if ident in actual_row:
                    problems.add(f"{name}: {key} {ident} appears twice")
                else:
                    actual_row[ident] = i
            missing = [ident for ident in expected_row if ident not in actual_row]
            if missing:
                problems.add(f"{name}: {len(missing)} row(s) the build wrote are missing, e.g. {describe(missing[0])}")
            unknown = [ident for ident in actual_row if ident not in expected_row]
            if unknown:
                problems.add(f"{name}: {len(unknown)} row(s) the build did not write, e.g. {key} {unknown[0]}")
            shared = [(ident, expected_row[ident], actual_row[ident]) for ident in expected_row if ident in actual_row]
            for column in columns:
                wrong = [(ident, e, a) for ident, e, a in shared if data[column][a] != expected[column][e]]
                if wrong:
                    ident, e, a = wrong[0]
                    problems.add(
                        f"{name}: column '{column}' differs from the build's record in {len(wrong)} row(s), e.g. "
                        f"{describe(ident)}: {_short(data[column][a])}, the build wrote {_short(expected[column][e])}"
                    )


def _check_images(
    out: Path, records: Mapping[str, Sequence[ImageRecord]], check_pixels: bool, deep: bool, report: ValidationReport
) -> None:
    """Every recorded PNG is there at its size (and size in pixels, and bytes), nothing else is."""
    root = out / "images"
    expected = {r.file_name: r for recs in records.values() for r in recs}
    with _Problems(report, "images/") as problems:
        for folder, folders, files in os.walk(root):
            here = Path(folder).relative_to(root)
            for child in sorted(folders):
                if here == Path(".") and child.startswith(_LEFTOVERS):
                    problems.add(f"images/{child}: left over from a build that did not finish (the next build removes it)")
                    folders.remove(child)
                elif (Path(folder) / child).is_symlink():
                    problems.add(f"images/{(here / child).as_posix()}: a link no build makes")
            for file in sorted(files):
                relative = (here / file).as_posix()
                if file == IMAGES_MARK and len(here.parts) == 1 and here.parts[0] in records:
                    continue
                if relative not in expected:
                    problems.add(f"images/{relative}: a file no build record names")
    with _Problems(report, "images/: files") as problems:
        for file_name, record in expected.items():
            path = root / file_name
            name = f"images/{file_name}"
            try:
                size = path.stat().st_size
            except OSError:
                problems.add(f"{name} is missing")
                continue
            if size != record.size:
                problems.add(f"{name}: {size} bytes, the build wrote {record.size}")
            if check_pixels:
                try:
                    with Image.open(path) as image:
                        kind, pixels = image.format, image.size
                except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
                    problems.add(f"{name}: cannot be read as PNG ({exc})")
                    continue
                if kind != "PNG" or pixels != (record.width, record.height):
                    problems.add(
                        f"{name}: {kind} of {pixels[0]}x{pixels[1]}, the build wrote a PNG of {record.width}x{record.height}"
                    )
            if deep:
                try:
                    digest = hashlib.sha256(path.read_bytes()).hexdigest()
                except OSError as exc:
                    problems.add(f"{name}: cannot be read ({exc})")
                    continue
                if digest != record.sha256:
                    problems.add(f"{name}: its bytes differ from those the build wrote (sha256)")
