from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from helpers import SAMPLES, build, decode, load_json, make_stu_hospital


def test_fake_tree(tmp_path: Path) -> None:
    truth = make_stu_hospital(tmp_path / "raw" / "STU-Hospital", n=6)
    result = build(tmp_path / "raw", tmp_path / "out", ["stu-hospital"])
    assert result.item_errors == []
    report = result.reports["STU-Hospital"]
    assert (report.images, report.instances) == (6, 6)
    docs = {s: load_json(p) for s in ("train", "val") if (p := tmp_path / "out" / "coco" / "STU-Hospital" / f"{s}.json").exists()}
    assert not (tmp_path / "out" / "coco" / "STU-Hospital" / "test.json").exists()
    assert sum(len(d["images"]) for d in docs.values()) == 6 and len(docs["val"]["images"]) == 1
    assert docs["train"]["categories"] == [{"id": 1, "name": "breast tumour", "supercategory": "breast"}]
    for doc in docs.values():
        for image, annotation in zip(doc["images"], doc["annotations"]):
            number = int(image["file_name"].rsplit("_", 1)[1].removesuffix(".png"))
            assert image["source_file"] == f"STU-Hospital-master/Hospital/Test_Image_{number}.png"
            assert (image["width"], image["height"]) == (128, 128)
            np.testing.assert_array_equal(decode(annotation), truth[number])


def test_orphans_are_reported(tmp_path: Path) -> None:
    make_stu_hospital(tmp_path / "raw" / "STU-Hospital", n=3, wrapper=None)
    (tmp_path / "raw" / "STU-Hospital" / "Hospital" / "mask_2.png").unlink()
    (tmp_path / "raw" / "STU-Hospital" / "Hospital" / "Test_Image_3.png").unlink()
    result = build(tmp_path / "raw", tmp_path / "out", ["STU-Hospital"])
    assert result.reports["STU-Hospital"].images == 1
    assert sorted((e["file"], e["reason"]) for e in result.item_errors) == [
        ("Hospital/Test_Image_2.png", "image has no matching mask"),
        ("Hospital/mask_3.png", "mask has no matching image"),
    ]


@pytest.mark.skipif(not (SAMPLES / "STU-Hospital").is_dir(), reason="../shared/samples is absent")
def test_real_files(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "STU-Hospital").symlink_to(SAMPLES / "STU-Hospital")
    result = build(raw, tmp_path / "out", ["STU-Hospital"])
    assert result.item_errors == []
    report = result.reports["STU-Hospital"]
    assert (report.images, report.instances) == (42, 42)
    train = load_json(tmp_path / "out" / "coco" / "STU-Hospital" / "train.json")
    val = load_json(tmp_path / "out" / "coco" / "STU-Hospital" / "val.json")
    assert len(train["images"]) + len(val["images"]) == 42
    # every lesion is a sensible blob: neither a speck nor the whole frame
    areas = [a["area"] for a in train["annotations"] + val["annotations"]]
    assert min(areas) > 30 and max(areas) < 0.8 * 128 * 128
