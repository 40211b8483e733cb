from pathlib import Path

import numpy as np
from scipy import ndimage

from helpers import built_instances, ellipse, write_pair


def test_fake_tree(tmp_path: Path, rng: np.random.Generator) -> None:
    folder = tmp_path / "raw" / "HC18" / "training_set"
    truth = {}
    for stem in ("001_HC", "002_HC", "002_2HC", "003_HC", "004_HC"):
        head = ellipse((54, 80), (27, 40), (18, 25))
        outline = head & ~ndimage.binary_erosion(head)  # the release draws the ellipse as a line
        write_pair(rng, folder / f"{stem}.png", folder / f"{stem}_Annotation.png", shape=(54, 80), mask=outline)
        truth[stem] = head
    result, found = built_instances(tmp_path / "raw", tmp_path / "out", "HC18")
    assert result.item_errors == [] and result.reports["HC18"].images == 5
    ((category, split, group, mask),) = found["training_set/002_2HC.png"]
    assert category == "fetal head" and group == "002"
    np.testing.assert_array_equal(mask, truth["002_2HC"])  # filled, not the outline
    assert found["training_set/002_HC.png"][0][1] == split  # one examination, one split
