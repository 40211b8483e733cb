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
