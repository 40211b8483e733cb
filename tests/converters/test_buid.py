from pathlib import Path

import numpy as np

from helpers import built_instances, write_pair


def test_fake_tree(tmp_path: Path, rng: np.random.Generator) -> None:
    raw = tmp_path / "raw" / "BUID"
    truth = {}
    for pathology in ("Benign", "Malignant"):
        for n in (1, 2, 3):
            truth[(pathology, n)] = write_pair(
                rng, raw / pathology / f"{n} {pathology} Image.bmp", raw / pathology / f"{n} {pathology} Mask.tif"
            )
    (raw / "Malignant" / "3 Malignant Mask.tif").unlink()
    result, found = built_instances(tmp_path / "raw", tmp_path / "out", "BUID")
    assert [(e["file"], e["reason"]) for e in result.item_errors] == [
        ("Malignant/3 Malignant Image.bmp", "image has no matching mask")
    ]
    assert result.reports["BUID"].images == 5
    ((category, _, _, mask),) = found["Benign/2 Benign Image.bmp"]
    assert category == "breast lesion"
    np.testing.assert_array_equal(mask, truth[("Benign", 2)])


def test_a_mask_under_another_name_is_reported_not_lost(tmp_path: Path, rng: np.random.Generator) -> None:
    raw = tmp_path / "raw" / "BUID"
    for n in (1, 2):
        write_pair(rng, raw / "Benign" / f"{n} Benign Image.bmp", raw / "Benign" / f"{n} Benign Mask.tif")
        write_pair(rng, raw / "Malignant" / f"{n} Malignant Image.bmp", raw / "Malignant" / f"{n} Malignant Mask.tif")
    write_pair(rng, raw / "Benign" / "2 Benign Lesion.bmp", raw / "Benign" / "2 Benign Mask 2.tif")  # lesion drawing: not read
    write_pair(rng, None, raw / "Malignant" / "1 Malignant.TIF")  # a name that once shared a pair's key, another case
    result, _ = built_instances(tmp_path / "raw", tmp_path / "out", "BUID")
    assert result.reports["BUID"].images == 4
    assert sorted((e["file"], e["reason"]) for e in result.item_errors) == [
        ("Benign/2 Benign Mask 2.tif", "a mask not named '<n> <Class> Mask.tif'"),
        ("Malignant/1 Malignant.TIF", "a mask not named '<n> <Class> Mask.tif'"),
    ]
