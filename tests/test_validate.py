"""`us43d validate`: every promise of a corpus broken once, and found; malformed files reported,
never a traceback."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from helpers import build, make_stu_hospital, private_entry, write_entries, write_png
from us43d.cli import app
from us43d.corpus.validate import validate_corpus
from us43d.demo import make_bus_bra_like
from us43d.errors import CorpusError
from us43d.registry import Registry


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two datasets: BUS-BRA (two categories, an official test fold, patients with two images)
    and STU-Hospital (one category, no official test)."""
    root = tmp_path_factory.mktemp("corpus")
    make_bus_bra_like(root / "raw" / "BUS-BRA", patients=14, size=(96, 128))
    make_stu_hospital(root / "raw" / "STU-Hospital", n=8, wrapper=None)
    build(root / "raw", root / "out")
    return root / "out"


@pytest.fixture
def out(corpus: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "out"
    shutil.copytree(corpus, copy)
    return copy


def problems(out: Path, **options: Any) -> str:
    return "\n".join(validate_corpus(out, **options).problems)


def edit_json(path: Path, change: Callable[[Any], Any]) -> None:
    doc = json.loads(path.read_text())
    doc = change(doc) or doc
    path.write_text(json.dumps(doc))


def edit_parquet(path: Path, column: str, change: Callable[[list[Any]], None]) -> None:
    table = pq.read_table(path)
    index = table.schema.get_field_index(column)
    values = table.column(column).to_pylist()
    change(values)
    pq.write_table(table.set_column(index, table.schema.field(index), pa.array(values, table.schema.field(index).type)), path)


def cli(*args: str):
    return CliRunner().invoke(app, list(args), catch_exceptions=False, env={"COLUMNS": "220"})


def test_the_built_corpus_is_valid(corpus: Path) -> None:
    report = validate_corpus(corpus, deep=True)
    assert report.ok, report.problems
    assert report.checked_images == len(list((corpus / "images").rglob("*.png"))) > 20
    test = json.loads((corpus / "coco" / "BUS-BRA" / "test.json").read_text())
    assert test["images"] and len(test["categories"]) == 2  # the fixture holds what the checks need
    result = cli("validate", str(corpus), "--deep")
    assert result.exit_code == 0 and "valid" in result.output


@pytest.mark.parametrize(
    "table, column, change",
    [
        ("images", "organ", lambda v: v.__setitem__(0, "thyroid")),
        ("images", "file_name", lambda v: v.__setitem__(0, v[1])),
        ("images", "width", lambda v: v.__setitem__(0, v[0] + 1)),
        ("images", "group", lambda v: v.__setitem__(0, "someone else")),
        ("images", "split", lambda v: v.__setitem__(0, "val" if v[0] == "train" else "train")),
        ("annotations", "bbox_x", lambda v: v.__setitem__(0, v[0] + 1)),
        ("annotations", "rle_counts", lambda v: v.__setitem__(0, v[1])),
        ("annotations", "category", lambda v: v.__setitem__(0, "breast lesion malignant")),
        ("annotations", "category_id", lambda v: v.__setitem__(0, 2 if v[0] == 1 else 1)),
        ("annotations", "area", lambda v: v.__setitem__(0, v[0] + 1)),
    ],
)
def test_a_changed_parquet_cell_is_found(out: Path, table: str, column: str, change: Callable[[list[Any]], None]) -> None:
    edit_parquet(out / "parquet" / f"{table}.parquet", column, change)
    found = problems(out)
    assert f"parquet/{table}.parquet" in found and column in found, found


def test_a_dropped_parquet_column_is_found(out: Path) -> None:
    path = out / "parquet" / "images.parquet"
    pq.write_table(pq.read_table(path).drop(["organ"]), path)
    found = problems(out)
    assert "parquet/images.parquet" in found and "organ" in found, found


def test_a_coco_file_name_pointed_at_another_image_is_found(out: Path) -> None:
    def point(doc: dict) -> None:
        doc["images"][0]["file_name"] = doc["images"][1]["file_name"]

    edit_json(out / "coco" / "STU-Hospital" / "train.json", point)
    found = problems(out)
    assert "coco/STU-Hospital/train.json" in found and "file_name" in found, found


def test_an_annotation_moved_to_another_image_is_found(out: Path) -> None:
    for path in (out / "coco" / "STU-Hospital" / "train.json", out / "coco" / "train.json"):

        def move(doc: dict) -> None:
            stu = [i["id"] for i in doc["images"] if i["dataset"] == "STU-Hospital"]
            ann = next(a for a in doc["annotations"] if a["image_id"] == stu[0])
            ann["image_id"] = stu[1]  # the same size: the RLE still fits

        edit_json(path, move)
    found = problems(out)
    assert "coco/STU-Hospital/train.json" in found and "coco/train.json" in found and "image_id" in found, found


def test_swapped_category_ids_are_found(out: Path) -> None:
    for path in (out / "coco" / "BUS-BRA").glob("*.json"):

        def swap(doc: dict) -> None:
            first, second = doc["categories"]
            first["id"], second["id"] = second["id"], first["id"]

        edit_json(path, swap)
    found = problems(out)
    assert "coco/BUS-BRA/train.json" in found and "categories" in found, found


def test_an_official_test_group_moved_into_train_everywhere_is_found(out: Path) -> None:
    """The move is consistent across per-dataset COCO, merged COCO and Parquet: only the build's
    record knows these images are official test images."""
    test = json.loads((out / "coco" / "BUS-BRA" / "test.json").read_text())
    group = test["images"][0]["group"]
    moved = {i["id"] for i in test["images"] if i["group"] == group}
    for source, target in (
        (out / "coco" / "BUS-BRA" / "test.json", out / "coco" / "BUS-BRA" / "train.json"),
        (out / "coco" / "test.json", out / "coco" / "train.json"),
    ):
        src, dst = json.loads(source.read_text()), json.loads(target.read_text())
        dst["images"] += [i for i in src["images"] if i["id"] in moved]
        dst["annotations"] += [a for a in src["annotations"] if a["image_id"] in moved]
        src["images"] = [i for i in src["images"] if i["id"] not in moved]
        src["annotations"] = [a for a in src["annotations"] if a["image_id"] not in moved]
        source.write_text(json.dumps(src))
        target.write_text(json.dumps(dst))
    for table in ("images", "annotations"):
        path = out / "parquet" / f"{table}.parquet"
        ids = pq.read_table(path, columns=["image_id"]).column("image_id").to_pylist()
        splits = pq.read_table(path, columns=["split"]).column("split").to_pylist()
        moved_splits = ["train" if i in moved else s for i, s in zip(ids, splits)]
        edit_parquet(path, "split", lambda v, new=moved_splits: v.__setitem__(slice(None), new))
    found = problems(out)
    assert "official test" in found and group in found, found


def test_orphan_and_missing_pngs_and_leftover_staging_are_found(out: Path) -> None:
    stu = out / "images" / "STU-Hospital"
    shutil.copy(stu / "Test_Image_1.png", stu / "stray.png")
    shutil.copy(stu / "Test_Image_1.png", out / "images" / "loose.png")
    (stu / "Test_Image_2.png").unlink()
    (out / "images" / ".staging-BUS-BRA").mkdir()
    found = problems(out)
    assert "STU-Hospital/stray.png" in found and "loose.png" in found, found
    assert "STU-Hospital/Test_Image_2.png" in found and ".staging-BUS-BRA" in found, found


def test_an_empty_corpus_is_a_problem(tmp_path: Path) -> None:
    make_stu_hospital(tmp_path / "raw" / "STU-Hospital", n=3, wrapper=None)
    build(tmp_path / "raw", tmp_path / "out")
    for mask in (tmp_path / "raw" / "STU-Hospital" / "Hospital").glob("mask_*.png"):
        write_png(mask, np.zeros((512, 512), np.uint8))  # every image left without an instance
    build(tmp_path / "raw", tmp_path / "out")
    report = validate_corpus(tmp_path / "out")
    assert not report.ok and "holds no image" in "\n".join(report.problems)
    assert cli("validate", str(tmp_path / "out")).exit_code == 1


@pytest.mark.parametrize(
    "where, change, words",
    [
        ("coco/STU-Hospital/train.json", lambda d: d["annotations"][0].__delitem__("bbox"), "lacks 'bbox'"),
        ("coco/train.json", lambda d: d["annotations"][0].__delitem__("bbox"), "lacks 'bbox'"),
        ("coco/STU-Hospital/train.json", lambda d: d.__setitem__("images", {"a": 1}), "'images' is not a list"),
        ("coco/train.json", lambda d: d.__setitem__("annotations", None), "'annotations' is not a list"),
        ("coco/BUS-BRA/test.json", lambda d: [1, 2], "not a COCO document"),
        ("coco/STU-Hospital/train.json", lambda d: d["images"].append("oops"), "without an integer id"),
    ],
)
def test_malformed_coco_is_a_problem_naming_the_file(out: Path, where: str, change: Callable[[Any], Any], words: str) -> None:
    edit_json(out / where, change)
    found = problems(out)
    assert where in found and words in found, found


@pytest.mark.parametrize(
    "where, data",
    [
        ("images/STU-Hospital/Test_Image_1.png", b"garbage"),
        ("coco/STU-Hospital/train.json", b"{not json"),
        ("parquet/images.parquet", b"garbage"),
        ("parquet/annotations.parquet", b""),
        ("build.json", b"[]"),
        (".state/STU-Hospital.json", b"{}"),
        (".state/BUS-BRA.json", b"\xff\xfe"),
    ],
)
def test_garbage_files_are_problems_naming_them_not_tracebacks(out: Path, where: str, data: bytes) -> None:
    (out / where).write_bytes(data)
    found = problems(out, deep=True)
    assert where in found, found
    result = cli("validate", str(out), "--deep")
    assert result.exit_code == 1 and "Traceback" not in result.output


def test_deep_finds_changed_pixels_the_size_cannot_tell(out: Path) -> None:
    path = out / "images" / "STU-Hospital" / "Test_Image_3.png"
    data = bytearray(path.read_bytes())
    middle = data.index(b"IDAT") + 40  # inside the compressed pixels: same size, same header
    data[middle] ^= 0xFF
    path.write_bytes(bytes(data))
    assert "Test_Image_3.png" not in problems(out)  # headers and sizes still agree
    found = problems(out, deep=True)
    assert "STU-Hospital/Test_Image_3.png" in found and "differ" in found, found


def test_merged_coco_must_equal_the_union(out: Path) -> None:
    def drop(doc: dict) -> None:
        gone = doc["images"].pop()["id"]
        doc["annotations"] = [a for a in doc["annotations"] if a["image_id"] != gone]

    edit_json(out / "coco" / "train.json", drop)
    found = problems(out)
    assert "coco/train.json" in found and "missing" in found, found


def test_organs_and_category_order_must_match_the_registry(tmp_path: Path) -> None:
    make_stu_hospital(tmp_path / "raw" / "Mine", n=3, wrapper=None)
    built_with = write_entries(tmp_path / "a", private_entry("Mine", categories=["lesion", "other"]))
    build(tmp_path / "raw", tmp_path / "out", registry_dirs=[built_with])
    assert validate_corpus(tmp_path / "out", registry=Registry.load([built_with])).ok
    changed = write_entries(tmp_path / "b", private_entry("Mine", organ="thyroid", categories=["other", "lesion"]))
    found = "\n".join(validate_corpus(tmp_path / "out", registry=Registry.load([changed])).problems)
    assert "organ" in found and "thyroid" in found and "categor" in found, found
    missing = "\n".join(validate_corpus(tmp_path / "out", registry=Registry.load([])).problems)
    assert "Mine" in missing and "not in the registry" in missing
    assert cli("validate", str(tmp_path / "out"), "--registry", str(built_with)).exit_code == 0


def test_no_corpus_is_a_clean_error(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="holds no corpus"):
        validate_corpus(tmp_path / "nothing")
    (tmp_path / "a-file").write_text("x")
    result = cli("validate", str(tmp_path / "a-file"))
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_a_label_outside_the_classes_is_found(out: Path) -> None:
    def relabel(doc: Any) -> None:
        doc["records"][0]["label"] = "cancer"

    edit_json(out / ".state" / "BUS-BRA.json", relabel)
    found = problems(out)
    assert """label "cancer" is not one of the classes ['benign', 'malignant']""" in found, found


def test_a_label_changed_in_coco_is_found(out: Path) -> None:
    def flip(doc: Any) -> None:
        image = doc["images"][0]
        image["label"] = "benign" if image["label"] == "malignant" else "malignant"

    edit_json(out / "coco" / "BUS-BRA" / "train.json", flip)
    found = problems(out)
    assert "coco/BUS-BRA/train.json" in found and "has label" in found, found


def test_a_label_changed_in_parquet_is_found(out: Path) -> None:
    edit_parquet(out / "parquet" / "images.parquet", "label", lambda values: values.__setitem__(0, "other"))
    found = problems(out)
    assert "images.parquet" in found and "label" in found, found


def test_classes_must_match_the_registry_and_labels_outside_them_fail_the_item(tmp_path: Path) -> None:
    make_bus_bra_like(tmp_path / "raw" / "Mine", patients=4, size=(64, 80))
    lesions = ["breast lesion benign", "breast lesion malignant"]
    built_with = write_entries(
        tmp_path / "a", private_entry("Mine", converter="bus_bra", categories=lesions, classes=["benign", "malignant"])
    )
    build(tmp_path / "raw", tmp_path / "out", registry_dirs=[built_with])
    assert validate_corpus(tmp_path / "out", registry=Registry.load([built_with])).ok
    changed = write_entries(
        tmp_path / "b", private_entry("Mine", converter="bus_bra", categories=lesions, classes=["malignant", "benign"])
    )
    found = "\n".join(validate_corpus(tmp_path / "out", registry=Registry.load([changed])).problems)
    assert "image-level classes ['benign', 'malignant'] in the corpus" in found, found
    # a release whose label is not one of the entry's classes: every item fails, naming its file
    result = build(
        tmp_path / "raw",
        tmp_path / "out2",
        registry_dirs=[
            write_entries(
                tmp_path / "c", {**private_entry("Mine", converter="bus_bra", categories=lesions, classes=["cyst", "solid"])}
            )
        ],
    )
    assert result.reports["Mine"].images == 0
    reasons = {e["reason"] for e in result.item_errors}
    assert (
        reasons
        <= {
            "image-level class 'benign' is not in the registry entry (one of ['cyst', 'solid'])",
            "image-level class 'malignant' is not in the registry entry (one of ['cyst', 'solid'])",
        }
        and reasons
    ), reasons
    assert all(e["file"].startswith("BUSBRA/Images/") for e in result.item_errors)
