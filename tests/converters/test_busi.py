from pathlib import Path

import numpy as np

from helpers import built_instances, ellipse, write_pair


def test_fake_tree(tmp_path: Path, rng: np.random.Generator) -> None:
    root = tmp_path / "raw" / "BUSI" / "Dataset_BUSI_with_GT"
    truth = {}
    for pathology in ("benign", "malignant"):
        for n in (1, 2):
            truth[f"{pathology} ({n})"] = write_pair(
                rng, root / pathology / f"{pathology} ({n}).png", root / pathology / f"{pathology} ({n})_mask.png"
            )
    second = ellipse((60, 80), (10, 10), (5, 5))
    write_pair(rng, None, root / "benign" / "benign (2)_mask_1.png", mask=second)  # multifocal lesion
    write_pair(rng, root / "normal" / "normal (1).png", root / "normal" / "normal (1)_mask.png", mask=np.zeros((60, 80), bool))
    result, found = built_instances(tmp_path / "raw", tmp_path / "out", "BUSI")
    assert result.item_errors == [] and result.reports["BUSI"].images == 4
    assert len(found["Dataset_BUSI_with_GT/benign/benign (2).png"]) == 2
    ((category, _, _, mask),) = found["Dataset_BUSI_with_GT/malignant/malignant (1).png"]
    assert category == "breast lesion"
    np.testing.assert_array_equal(mask, truth["malignant (1)"])
    masks = [m for *_, m in found["Dataset_BUSI_with_GT/benign/benign (2).png"]]
    assert any(np.array_equal(m, second) for m in masks)
