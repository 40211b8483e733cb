"""BUS-UCLM as the real release lays it out: the doubled title folder, RGB images and colour
masks of 856x606 scaled down here, and HESN images smaller than their masks (RGBA), whose masks
were drawn on the image stretched to the mask's size."""

from pathlib import Path

import numpy as np
from PIL import Image

from helpers import built_instances, ellipse, speckle_image

TITLE = "BUS-UCLM Breast ultrasound lesion segmentation dataset"
SHAPE = (60, 86)


def test_fake_tree(tmp_path: Path, rng: np.random.Generator) -> None:
    root = tmp_path / "raw" / "BUS-UCLM" / TITLE / TITLE / "BUS-UCLM"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    lesion = ellipse(SHAPE, (30, 40), (10, 15))
    for name, colour in (("ALWI_000", (0, 255, 0)), ("ALWI_001", (255, 0, 0)), ("BRGA_000", None), ("BRGA_001", (0, 255, 0))):
        Image.fromarray(np.dstack([speckle_image(rng, SHAPE)] * 3)).save(root / "images" / f"{name}.png")
        mask = np.zeros((*SHAPE, 3), np.uint8)
        if colour:
            mask[lesion] = colour
        Image.fromarray(mask).save(root / "masks" / f"{name}.png")
    small = (47, 79)  # HESN_002: the image is smaller, and not in the mask's aspect ratio
    Image.fromarray(np.dstack([speckle_image(rng, small)] * 3 + [np.full(small, 255, np.uint8)]), "RGBA").save(
        root / "images" / "HESN_002.png"
    )
    stretched = np.zeros((*SHAPE, 3), np.uint8)
    stretched[lesion] = (0, 255, 0)
    Image.fromarray(stretched).save(root / "masks" / "HESN_002.png")
    (root / "INFO.csv").write_bytes("\ufeffImage;Resolution;Label\nALWI_000.png;856x606;Benign\n".encode())
    result, found = built_instances(tmp_path / "raw", tmp_path / "out", "BUS-UCLM")
    report = result.reports["BUS-UCLM"]
    assert result.item_errors == [] and report.images == 4 and report.dropped_without_instances == 1
    prefix = f"{TITLE}/{TITLE}/BUS-UCLM/images"
    ((category, _, group, mask),) = found[f"{prefix}/ALWI_001.png"]
    assert category == "breast lesion malignant" and group == "ALWI"
    np.testing.assert_array_equal(mask, lesion)
    assert found[f"{prefix}/ALWI_000.png"][0][0] == "breast lesion benign"
    ((category, _, _, mask),) = found[f"{prefix}/HESN_002.png"]
    expected = np.asarray(Image.fromarray(lesion.astype(np.uint8)).resize(small[::-1], Image.Resampling.NEAREST)).astype(bool)
    assert category == "breast lesion benign" and mask.shape == small
    np.testing.assert_array_equal(mask, expected)  # the stretched drawing, brought back onto the image
