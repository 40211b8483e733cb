"""DDTI, TG3K and TN3K come from one combined archive ("Thyroid Dataset/...")."""

from pathlib import Path

import numpy as np

from helpers import built_instances, iou, jpeg_truth, write_pair


def test_ddti(tmp_path: Path, rng: np.random.Generator) -> None:
    stage = tmp_path / "raw" / "DDTI" / "Thyroid Dataset" / "DDTI dataset" / "DDTI" / "2_preprocessed_data" / "stage1"
    truth = {n: write_pair(rng, stage / "p_image" / f"{n}.PNG", stage / "p_mask" / f"{n}.PNG") for n in range(1, 6)}
    result, found = built_instances(tmp_path / "raw", tmp_path / "out", "DDTI")
    assert result.item_errors == [] and result.reports["DDTI"].images == 5
    ((category, _, _, mask),) = found["Thyroid Dataset/DDTI dataset/DDTI/2_preprocessed_data/stage1/p_image/4.PNG"]
    assert category == "thyroid nodule"
    np.testing.assert_array_equal(mask, truth[4])


def test_tg3k_jpeg_masks(tmp_path: Path, rng: np.random.Generator) -> None:
    root = tmp_path / "raw" / "TG3K" / "Thyroid Dataset" / "tg3k"
    truth = {
        n: write_pair(rng, root / "thyroid-image" / f"{n:04d}.jpg", root / "thyroid-mask" / f"{n:04d}.jpg") for n in range(6)
    }
    result, found = built_instances(tmp_path / "raw", tmp_path / "out", "TG3K")
    assert result.item_errors == [] and result.reports["TG3K"].images == 6
    ((category, _, _, mask),) = found["Thyroid Dataset/tg3k/thyroid-image/0002.jpg"]
    assert category == "thyroid gland" and iou(mask, truth[2]) > 0.97
    np.testing.assert_array_equal(mask, jpeg_truth(root / "thyroid-mask" / "0002.jpg"))


def test_tn3k_official_test(tmp_path: Path, rng: np.random.Generator) -> None:
    root = tmp_path / "raw" / "TN3K" / "Thyroid Dataset" / "tn3k"
    truth = {}
    for part, count in (("trainval", 6), ("test", 3)):
        for n in range(count):
            truth[(part, n)] = write_pair(rng, root / f"{part}-image" / f"{n:04d}.jpg", root / f"{part}-mask" / f"{n:04d}.jpg")
    result, found = built_instances(tmp_path / "raw", tmp_path / "out", "TN3K")
    assert result.item_errors == [] and result.reports["TN3K"].images == 9
    assert {rows[0][1] for source, rows in found.items() if "/test-image/" in source} == {"test"}
    assert {rows[0][1] for source, rows in found.items() if "/trainval-image/" in source} <= {"train", "val"}
    ((category, split, _, mask),) = found["Thyroid Dataset/tn3k/test-image/0001.jpg"]
    assert category == "thyroid nodule" and iou(mask, truth[("test", 1)]) > 0.97
    np.testing.assert_array_equal(mask, jpeg_truth(root / "test-mask" / "0001.jpg"))
