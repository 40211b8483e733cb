from pathlib import Path

import numpy as np
from PIL import Image

from helpers import built_instances, iou, write_pair


def test_fake_tree(tmp_path: Path, rng: np.random.Generator) -> None:
    root = tmp_path / "raw" / "BUS-UC" / "BUS_UC" / "BUS_UC"
    truth = {}
    for pathology in ("Benign", "Malignant"):
        for n in range(3):
            truth[(pathology, n)] = write_pair(
                rng, root / pathology / "images" / f"{n:02d}.png", root / pathology / "masks" / f"{n:02d}.png"
            )
            write_pair(rng, root / "All" / "images" / f"{pathology}{n}.png", root / "All" / "masks" / f"{pathology}{n}.png")
    big = np.asarray(
        Image.fromarray((truth[("Malignant", 1)] * 255).astype(np.uint8)).resize((160, 120), Image.Resampling.NEAREST)
    )
    Image.fromarray(big).save(root / "Malignant" / "masks" / "01.png")  # a mask stored at twice the size
    result, found = built_instances(tmp_path / "raw", tmp_path / "out", "BUS-UC")
    assert result.item_errors == [] and result.reports["BUS-UC"].images == 6  # All/ is not read
    ((category, _, _, mask),) = found["BUS_UC/BUS_UC/Benign/images/02.png"]
    assert category == "breast lesion benign"
    np.testing.assert_array_equal(mask, truth[("Benign", 2)])
    ((category, _, _, mask),) = found["BUS_UC/BUS_UC/Malignant/images/01.png"]
    assert category == "breast lesion malignant" and iou(mask, truth[("Malignant", 1)]) > 0.95
