from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from helpers import (
    beyond_coverage,
    build,
    ellipse,
    load_json,
    make_stu_hospital,
    private_entry,
    speckle_image,
    write_entries,
    write_png,
)
from us43d.corpus.build import StrictStop
from us43d.corpus.validate import validate_corpus
from us43d.errors import CorpusError, RegistryError
from us43d.registry import Registry

OUTPUTS = [
    "coco/train.json",
    "coco/val.json",
    "coco/STU-Hospital/train.json",
    "coco/STU-Hospital/val.json",
    "parquet/images.parquet",
    "parquet/annotations.parquet",
]


def hospital(raw: Path) -> Path:
    return raw / "STU-Hospital" / "Hospital"


def test_same_inputs_give_byte_identical_outputs(tmp_path: Path) -> None:
    make_stu_hospital(tmp_path / "raw" / "STU-Hospital", n=25, wrapper=None)
    build(tmp_path / "raw", tmp_path / "a", workers=1)
    build(tmp_path / "raw", tmp_path / "b", workers=2)
    for name in OUTPUTS:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    pngs = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a" / "images").rglob("*.png"))
    assert len(pngs) == 25
    for png in pngs:
        assert (tmp_path / "a" / png).read_bytes() == (tmp_path / "b" / png).read_bytes()


def test_rerun_skips_unchanged_and_rebuilds_changed(tmp_path: Path) -> None:
    make_stu_hospital(tmp_path / "raw" / "STU-Hospital", n=4, wrapper=None)
    first = build(tmp_path / "raw", tmp_path / "out")
    assert not first.reports["STU-Hospital"].reused
    again = build(tmp_path / "raw", tmp_path / "out")
    assert again.reports["STU-Hospital"].reused and again.reports["STU-Hospital"].images == 4
    (hospital(tmp_path / "raw") / "Test_Image_4.png").unlink()
    (hospital(tmp_path / "raw") / "mask_4.png").unlink()
    changed = build(tmp_path / "raw", tmp_path / "out")
    assert not changed.reports["STU-Hospital"].reused and changed.reports["STU-Hospital"].images == 3
    assert not (tmp_path / "out" / "images" / "STU-Hospital" / "Test_Image_4.png").exists()
    assert validate_corpus(tmp_path / "out").ok


def test_a_dataset_without_its_state_file_is_rebuilt(tmp_path: Path) -> None:
    make_stu_hospital(tmp_path / "raw" / "STU-Hospital", n=3, wrapper=None)
    build(tmp_path / "raw", tmp_path / "out")
    (tmp_path / "out" / ".state" / "STU-Hospital.json").unlink()  # as if killed before marking done
    assert not build(tmp_path / "raw", tmp_path / "out").reports["STU-Hospital"].reused


def test_bad_inputs_are_reported_and_the_rest_is_built(tmp_path: Path, rng: np.random.Generator) -> None:
    make_stu_hospital(tmp_path / "raw" / "STU-Hospital", n=8, wrapper=None)
    folder = hospital(tmp_path / "raw")
    data = (folder / "Test_Image_1.png").read_bytes()
    (folder / "Test_Image_1.png").write_bytes(data[: len(data) // 2])  # truncated image
    (folder / "Test_Image_2.png").write_bytes(b"")  # zero bytes
    write_png(folder / "mask_3.png", rng.integers(1, 255, (512, 512), dtype=np.uint8))  # noise mask
    write_png(folder / "mask_4.png", np.zeros((512, 256), np.uint8))  # another aspect ratio
    write_png(folder / "mask_5.png", np.zeros((512, 512), np.uint8))  # empty mask: dropped, not an error
    (folder / "mask_6.png").unlink()  # missing pair
    result = build(tmp_path / "raw", tmp_path / "out")
    report = result.reports["STU-Hospital"]
    reasons = {e["file"]: e["reason"] for e in result.item_errors}
    assert set(reasons) == {
        "Hospital/Test_Image_1.png",
        "Hospital/Test_Image_2.png",
        "Hospital/mask_3.png",
        "Hospital/mask_4.png",
        "Hospital/Test_Image_6.png",
    }
    assert reasons["Hospital/Test_Image_1.png"].startswith("cannot decode image")
    assert "not binary" in reasons["Hospital/mask_3.png"]
    assert "aspect ratios differ" in reasons["Hospital/mask_4.png"]
    assert reasons["Hospital/Test_Image_6.png"] == "image has no matching mask"
    assert report.images == 2 and report.dropped_without_instances == 1
    assert report.images + report.dropped_without_instances + report.items_failed == report.items == 8
    recorded = load_json(tmp_path / "out" / "build.json")
    assert len(recorded["errors"]) == 5 and all({"dataset", "file", "reason"} <= e.keys() for e in recorded["errors"])
    assert recorded["datasets"]["STU-Hospital"]["dropped_without_instances"] == 1
    assert validate_corpus(tmp_path / "out").ok


def test_strict_stops_at_the_first_problem(tmp_path: Path) -> None:
    make_stu_hospital(tmp_path / "raw" / "STU-Hospital", n=3, wrapper=None)
    (hospital(tmp_path / "raw") / "Test_Image_2.png").write_bytes(b"broken")
    with pytest.raises(StrictStop, match="Test_Image_2.png"):
        build(tmp_path / "raw", tmp_path / "out", strict=True)
    assert not (tmp_path / "out" / ".state" / "STU-Hospital.json").exists()
    assert not (tmp_path / "out" / "coco").exists()


def test_missing_raw_unknown_id_and_missing_dataset(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="RAW folder .* does not exist"):
        build(tmp_path / "nowhere", tmp_path / "out")
    (tmp_path / "raw").mkdir()
    with pytest.raises(RegistryError, match="unknown dataset id 'NOPE'"):
        build(tmp_path / "raw", tmp_path / "out", ["NOPE"])
    with pytest.raises(CorpusError, match="no dataset folder found"):
        build(tmp_path / "raw", tmp_path / "out")
    make_stu_hospital(tmp_path / "raw" / "STU-Hospital", n=2, wrapper=None)
    result = build(tmp_path / "raw", tmp_path / "out", ["STU-Hospital", "BUS-BRA"])
    assert [(e["dataset"], e["reason"][:25]) for e in beyond_coverage(result.problems)] == [
        ("BUS-BRA", "raw folder is missing (ru")
    ]
    assert result.item_errors == []
    assert result.reports["STU-Hospital"].images == 2


def test_dataset_without_converter_yet_is_reported(tmp_path: Path) -> None:
    registry = write_entries(tmp_path / "registry", private_entry("Pending", converter="not_written_yet"))
    (tmp_path / "raw" / "Pending").mkdir(parents=True)
    make_stu_hospital(tmp_path / "raw" / "STU-Hospital", n=2, wrapper=None)
    result = build(tmp_path / "raw", tmp_path / "out", registry_dirs=[registry])
    assert [e["dataset"] for e in beyond_coverage(result.problems)] == ["Pending"]
    assert "converter 'not_written_yet' not found" in result.problems[0]["reason"]
    assert result.reports["STU-Hospital"].images == 2


def test_cleaning_follows_the_modality_and_the_registry_can_switch_it(tmp_path: Path, rng: np.random.Generator) -> None:
    folder = tmp_path / "raw" / "Fanned" / "Hospital"
    image = speckle_image(rng, (64, 64))
    image[:, :16] = 0  # the scan starts at column 16: a black frame on the left
    lesion = ellipse((64, 64), (32, 16), (10, 10))
    write_png(folder / "Test_Image_1.png", image)
    write_png(folder / "mask_1.png", (lesion * 255).astype(np.uint8))
    registry = tmp_path / "registry"
    entry = private_entry("Fanned", min_area=1)
    spill = int(lesion[:, :16].sum())
    runs = {
        "image default": ({}, 0),
        "image, switched on": ({"cleaning": {"background_overlap": True}}, spill),
        "video default": ({"modality": "video", "slicing_axis": "frames"}, spill),
        "video, switched off": ({"modality": "video", "slicing_axis": "frames", "cleaning": {"background_overlap": False}}, 0),
    }
    for name, (changes, cleaned) in runs.items():
        write_entries(registry, {**entry, **changes})
        report = build(tmp_path / "raw", tmp_path / name, ["Fanned"], registry_dirs=[registry]).reports["Fanned"]
        assert (report.cleaned_pixels, report.cleaned_instances, report.instances) == (cleaned, int(cleaned > 0), 1), name


def test_validate_catches_broken_promises(tmp_path: Path) -> None:
    make_stu_hospital(tmp_path / "raw" / "STU-Hospital", n=25, wrapper=None)
    build(tmp_path / "raw", tmp_path / "out")
    out = tmp_path / "out"
    assert validate_corpus(out).ok
    pristine = tmp_path / "pristine"
    shutil.copytree(out, pristine)

    train_path = out / "coco" / "STU-Hospital" / "train.json"
    doc = json.loads(train_path.read_text())
    doc["annotations"][0]["bbox"][0] += 1
    doc["images"][1]["width"] += 3
    train_path.write_text(json.dumps(doc))
    os.remove(out / "images" / doc["images"][2]["file_name"])
    problems = "\n".join(validate_corpus(out).problems)
    assert f"has bbox {doc['annotations'][0]['bbox']}, the build wrote" in problems
    assert f"images/{doc['images'][2]['file_name']} is missing" in problems
    assert f"has width {doc['images'][1]['width']}, the build wrote" in problems

    shutil.rmtree(out)
    shutil.copytree(pristine, out)
    val_path = out / "coco" / "STU-Hospital" / "val.json"
    val = json.loads(val_path.read_text())
    train = json.loads(train_path.read_text())
    val["images"][0]["group"] = train["images"][0]["group"]
    val_path.write_text(json.dumps(val))
    assert any("several splits" in p for p in validate_corpus(out).problems)

    shutil.rmtree(out)
    shutil.copytree(pristine, out)
    (out / "parquet" / "images.parquet").unlink()
    assert any("images.parquet is missing" in p for p in validate_corpus(out).problems)
    with pytest.raises(CorpusError, match="holds no corpus"):
        validate_corpus(tmp_path / "empty")


def test_outputs_follow_the_promised_shape(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    make_stu_hospital(tmp_path / "raw" / "STU-Hospital", n=5, wrapper=None)
    build(tmp_path / "raw", tmp_path / "out")
    merged = load_json(tmp_path / "out" / "coco" / "train.json")
    assert merged["categories"] == [{"id": 1, "name": "object", "supercategory": "object"}]
    assert all(a["category_id"] == 1 for a in merged["annotations"])
    image = merged["images"][0]
    assert {"dataset", "source_file", "frame", "group", "file_name"} <= image.keys()
    assert (tmp_path / "out" / "images" / image["file_name"]).is_file()
    images = pq.read_table(tmp_path / "out" / "parquet" / "images.parquet").to_pandas()
    annotations = pq.read_table(tmp_path / "out" / "parquet" / "annotations.parquet").to_pandas()
    assert {"dataset", "split", "organ", "group"} <= set(images.columns)
    assert {"dataset", "split", "rle_counts", "category"} <= set(annotations.columns)
    assert len(images) == 5 and len(annotations) == 5
    build_json = load_json(tmp_path / "out" / "build.json")
    assert {"versions", "registry_hash", "datasets", "errors", "timings"} <= build_json.keys()


def test_sixteen_bit_sources_are_written_unchanged(tmp_path: Path, rng: np.random.Generator) -> None:
    from PIL import Image

    folder = tmp_path / "raw" / "STU-Hospital" / "Hospital"
    deep = rng.integers(1, 65535, (32, 32), dtype=np.uint16)
    write_png(folder / "Test_Image_1.png", deep)
    write_png(folder / "mask_1.png", (ellipse((32, 32), (16, 16), (8, 8)) * 255).astype(np.uint8))
    build(tmp_path / "raw", tmp_path / "out")
    with Image.open(tmp_path / "out" / "images" / "STU-Hospital" / "Test_Image_1.png") as written:
        assert written.mode == "I;16"
        np.testing.assert_array_equal(np.asarray(written), deep)


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_rerun_rebuilds_a_dataset_whose_pngs_were_deleted_or_changed(tmp_path: Path) -> None:
    make_stu_hospital(tmp_path / "raw" / "STU-Hospital", n=5, wrapper=None)
    build(tmp_path / "raw", tmp_path / "out")
    victim = tmp_path / "out" / "images" / "STU-Hospital" / "Test_Image_2.png"
    good = victim.read_bytes()
    victim.unlink()
    deleted = build(tmp_path / "raw", tmp_path / "out").reports["STU-Hospital"]
    assert not deleted.reused and victim.read_bytes() == good
    victim.write_bytes(good[:-10])  # cut short: same name, other size
    changed = build(tmp_path / "raw", tmp_path / "out").reports["STU-Hospital"]
    assert not changed.reused and victim.read_bytes() == good
    assert build(tmp_path / "raw", tmp_path / "out").reports["STU-Hospital"].reused
    assert validate_corpus(tmp_path / "out", deep=True).ok


def _lose_a_png(out: Path) -> None:
    (out / "images" / "Other" / "Test_Image_1.png").unlink()


def _lose_the_folder(out: Path) -> None:
    shutil.rmtree(out / "images" / "Other")


def _older_state(out: Path) -> None:
    path = out / ".state" / "Other.json"
    path.write_text(json.dumps({**load_json(path), "version": 1}))


@pytest.mark.parametrize(
    "damage, words",
    [(_lose_a_png, "missing or changed"), (_lose_the_folder, "missing or changed"), (_older_state, "another version")],
)
def test_a_dataset_outside_the_run_that_cannot_be_trusted_is_a_problem_not_a_table_row(
    tmp_path: Path, damage, words: str
) -> None:
    registry = write_entries(tmp_path / "registry", private_entry("Other"))
    make_stu_hospital(tmp_path / "raw" / "STU-Hospital", n=3, wrapper=None)
    make_stu_hospital(tmp_path / "raw" / "Other", n=3, seed=1, wrapper=None)
    build(tmp_path / "raw", tmp_path / "out", registry_dirs=[registry])
    damage(tmp_path / "out")
    result = build(tmp_path / "raw", tmp_path / "out", ["STU-Hospital"], registry_dirs=[registry])
    assert [(p["dataset"], words in p["reason"]) for p in beyond_coverage(result.problems)] == [("Other", True)]
    merged = load_json(tmp_path / "out" / "coco" / "train.json")
    assert {i["dataset"] for i in merged["images"]} == {"STU-Hospital"}  # no row points at a file that is not there
    assert not list((tmp_path / "out" / "coco").glob("Other/*.json"))
    assert "Other" not in load_json(tmp_path / "out" / "build.json")["datasets"]
    assert build(tmp_path / "raw", tmp_path / "out", registry_dirs=[registry]).reports["Other"].images == 3  # rebuilt
    assert validate_corpus(tmp_path / "out", registry=Registry.load([registry])).ok


def test_raw_and_out_may_not_be_one_folder_or_hold_one_another(tmp_path: Path) -> None:
    corpus = tmp_path / "x"
    raw = corpus / "images"  # `build --raw X/images --out X`: OUT/images/<ID> would be the raw data
    make_stu_hospital(raw / "STU-Hospital", n=2, wrapper=None)
    (tmp_path / "link").symlink_to(raw)
    before = _files(tmp_path)
    for raw_arg, out_arg in (
        (raw, corpus),
        (raw, raw),
        (raw, raw / "corpus"),
        (corpus, tmp_path / "link"),
        (tmp_path / "link", corpus),
    ):
        with pytest.raises(CorpusError, match="same folder or one is inside the other"):
            build(raw_arg, out_arg)
        assert _files(tmp_path) == before, (raw_arg, out_arg)


def test_out_must_be_a_folder_and_a_us43d_corpus_or_empty(tmp_path: Path) -> None:
    make_stu_hospital(tmp_path / "raw" / "STU-Hospital", n=2, wrapper=None)
    (tmp_path / "a-file").write_text("mine")
    with pytest.raises(CorpusError, match="is not a folder"):
        build(tmp_path / "raw", tmp_path / "a-file")
    with pytest.raises(CorpusError, match="is not a folder"):
        build(tmp_path / "raw", tmp_path / "a-file" / "corpus")
    assert (tmp_path / "a-file").read_text() == "mine"
    users = tmp_path / "photos"
    (users / "images" / "STU-Hospital").mkdir(parents=True)
    (users / "images" / "STU-Hospital" / "holiday.png").write_bytes(b"not ours")
    (users / "notes.txt").write_text("mine")
    with pytest.raises(CorpusError, match="not a us43d corpus"):
        build(tmp_path / "raw", users)
    assert _files(users) == {"images/STU-Hospital/holiday.png": b"not ours", "notes.txt": b"mine"}
    (tmp_path / "empty").mkdir()
    assert build(tmp_path / "raw", tmp_path / "empty").reports["STU-Hospital"].images == 2


def test_a_folder_in_images_that_no_build_made_is_never_deleted(tmp_path: Path) -> None:
    registry = write_entries(tmp_path / "registry", private_entry("Other"))
    make_stu_hospital(tmp_path / "raw" / "STU-Hospital", n=2, wrapper=None)
    make_stu_hospital(tmp_path / "raw" / "Other", n=2, seed=1, wrapper=None)
    out = tmp_path / "out"
    build(tmp_path / "raw", out, ["Other"], registry_dirs=[registry])
    foreign = out / "images" / "STU-Hospital"
    foreign.mkdir()
    (foreign / "keep.png").write_bytes(b"somebody's")
    with pytest.raises(CorpusError, match="not made by us43d"):
        build(tmp_path / "raw", out, ["STU-Hospital"], registry_dirs=[registry])
    assert (foreign / "keep.png").read_bytes() == b"somebody's"


def test_cli_build_refuses_a_file_as_out_cleanly(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from us43d.cli import app

    make_stu_hospital(tmp_path / "raw" / "STU-Hospital", n=2, wrapper=None)
    (tmp_path / "a-file").write_text("mine")
    result = CliRunner().invoke(app, ["build", "--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "a-file")])
    assert result.exit_code == 2 and "is not a folder" in result.output and "Traceback" not in result.output


def test_a_lock_file_that_is_a_link_is_never_written_through(tmp_path: Path) -> None:
    make_stu_hospital(tmp_path / "raw" / "STU-Hospital", n=2, wrapper=None)
    build(tmp_path / "raw", tmp_path / "out")
    (tmp_path / "precious.txt").write_text("mine")
    (tmp_path / "out" / ".lock").unlink()
    (tmp_path / "out" / ".lock").symlink_to(tmp_path / "precious.txt")
    with pytest.raises(CorpusError, match=r"\.lock"):
        build(tmp_path / "raw", tmp_path / "out")
    assert (tmp_path / "precious.txt").read_text() == "mine"


def test_coverage_counts_images_read_not_files_listed(tmp_path: Path) -> None:
    """Masks without their image (a partial copy) are listed and reported, but are no images: 20
    images with 10 orphan masks are 20 of STU-Hospital's 42, too few."""
    folder = tmp_path / "raw" / "STU-Hospital"
    make_stu_hospital(folder, n=30, wrapper=None)
    for number in range(21, 31):
        (folder / "Hospital" / f"Test_Image_{number}.png").unlink()
    result = build(tmp_path / "raw", tmp_path / "out", ["STU-Hospital"])
    report = result.reports["STU-Hospital"]
    assert (report.items, report.found, report.expected, report.expected_unit) == (30, 20, 42, "images")
    assert [p["reason"][:50] for p in result.problems] == ["found 20 images where the registry expects 42: inc"]
    assert len(result.item_errors) == 10
