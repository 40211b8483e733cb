from pathlib import Path

import numpy as np
from PIL import Image

from helpers import built_instances, ellipse, speckle_image


def test_fake_tree(tmp_path: Path, rng: np.random.Generator) -> None:
    root = tmp_path / "raw" / "BUS-UCLM" / "BUS-UCLM Breast ultrasound lesion segmentation dataset" / "BUS-UCLM"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    truth = {}
    for name, colour in (("ALWI_000", (0, 255, 0)), ("ALWI_001", (255, 0, 0)), ("BRGA_000", None), ("BRGA_001", (0, 255, 0))):
        Image.fromarray(np.dstack([speckle_image(rng, (60, 80))] * 3)).save(root / "images" / f"{name}.png")
        mask = np.zeros((60, 80, 3), np.uint8)
        lesion = ellipse((60, 80), (30, 40), (10, 15))
        if colour:
            mask[lesion] = colour
        Image.fromarray(mask).save(root / "masks" / f"{name}.png")
        truth[name] = lesion
    (root / "INFO.csv").write_text("Image;Label\nALWI_000.png;benign\n")
    result, found = built_instances(tmp_path / "raw", tmp_path / "out", "BUS-UCLM")
    report = result.reports["BUS-UCLM"]
    assert result.item_errors == [] and report.images == 3 and report.dropped_without_instances == 1
    prefix = "BUS-UCLM Breast ultrasound lesion segmentation dataset/BUS-UCLM/images"
    ((category, _, group, mask),) = found[f"{prefix}/ALWI_001.png"]
    assert category == "breast lesion malignant" and group == "ALWI"
    np.testing.assert_array_equal(mask, truth["ALWI_001"])
    assert found[f"{prefix}/ALWI_000.png"][0][0] == "breast lesion benign"
