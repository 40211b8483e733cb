"""DDTI, TG3K and TN3K come from one combined archive ("Thyroid Dataset/...")."""

from pathlib import Path

import numpy as np

from helpers import beyond_coverage, built_instances, iou, jpeg_truth, write_pair, write_png


def test_ddti(tmp_path: Path, rng: np.random.Generator) -> None:
    """Stage-1 pairs as the re-release has them (mode L, 0/255, upper-case .PNG), inside the inner
    zip's own folder; some images keep a near-black strip of the frame that the mask runs onto."""
    stage = tmp_path / "raw" / "DDTI" / "Thyroid Dataset" / "DDTI dataset" / "DDTI" / "2_preprocessed_data" / "stage1"
    truth = {n: write_pair(rng, stage / "p_image" / f"{n}.PNG", stage / "p_mask" / f"{n}.PNG") for n in range(1, 6)}
    image = np.clip(rng.rayleigh(50, (60, 80)), 20, 255).astype(np.uint8)
    image[:, :10] = rng.integers(0, 5, (60, 10))  # the strip: values 0-4 (the PNGs were saved from JPEG)
    nodule = np.zeros((60, 80), bool)
    nodule[20:40, 5:50] = True  # runs 5 columns onto the strip
    write_png(stage / "p_image" / "442.PNG", image)
    write_png(stage / "p_mask" / "442.PNG", np.where(nodule, 255, 0).astype(np.uint8))
    result, found = built_instances(tmp_path / "raw", tmp_path / "out", "DDTI")
    report = result.reports["DDTI"]
    assert result.item_errors == [] and report.images == 6
    ((category, _, _, mask),) = found["Thyroid Dataset/DDTI dataset/DDTI/2_preprocessed_data/stage1/p_image/4.PNG"]
    assert category == "thyroid nodule"
    np.testing.assert_array_equal(mask, truth[4])
    ((_, _, _, mask),) = found["Thyroid Dataset/DDTI dataset/DDTI/2_preprocessed_data/stage1/p_image/442.PNG"]
    np.testing.assert_array_equal(mask, nodule & (np.arange(80) >= 10))  # the strip's pixels go, nothing else
    assert (report.cleaned_pixels, report.cleaned_instances) == (20 * 5, 1)


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


def test_tn3k_from_the_repository_archives(tmp_path: Path, rng: np.random.Generator) -> None:
    """The registry's source: the repository archive, whose RARs under picture/ are extracted
    each into a folder named after it (picture/test-mask/test-mask/0000.jpg)."""
    picture = tmp_path / "raw" / "TN3K" / "TRFE-Net-for-thyroid-nodule-segmentation-6e35530" / "picture"
    for part, count in (("trainval", 4), ("test", 2)):
        for n in range(count):
            name = f"{n:04d}.jpg"
            write_pair(rng, picture / f"{part}-image" / f"{part}-image" / name, picture / f"{part}-mask" / f"{part}-mask" / name)
    (picture / "tn3k-trainval-fold0.json").write_text('{"train": [0, 1, 2], "val": [3]}')
    result, found = built_instances(tmp_path / "raw", tmp_path / "out", "TN3K")
    assert result.item_errors == [] and result.reports["TN3K"].images == 6
    assert {rows[0][1] for source, rows in found.items() if "/test-image/" in source} == {"test"}
    for part in ("trainval-image", "trainval-mask"):
        for path in (picture / part / part).iterdir():
            path.unlink()
    result = built_instances(tmp_path / "raw", tmp_path / "out2", "TN3K")[0]
    assert result.reports["TN3K"].images == 2  # the test part alone, and the build says the rest is missing
    assert [p["reason"] for p in beyond_coverage(result.problems)] == [
        "no images in TRFE-Net-for-thyroid-nodule-segmentation-6e35530/picture/trainval-image/trainval-image: "
        "the trainval part is not built"
    ]
