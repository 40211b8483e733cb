from pathlib import Path

import numpy as np

from helpers import built_instances, write_pair


def test_fake_tree(tmp_path: Path, rng: np.random.Generator) -> None:
    root = tmp_path / "raw" / "MMOTU-3D" / "OTU_3d"
    truth = {}
    for n in range(1, 5):
        truth[n] = write_pair(rng, root / "images" / f"{n}.JPG", root / "annotations" / f"{n}.PNG", foreground=128)
        write_pair(rng, None, root / "annotations" / f"{n}_binary.PNG", mask=truth[n])
    result, found = built_instances(tmp_path / "raw", tmp_path / "out", "MMOTU-3D")
    assert result.item_errors == [] and result.reports["MMOTU-3D"].images == 4
    ((category, _, _, mask),) = found["OTU_3d/images/2.JPG"]
    assert category == "ovarian lesion"
    np.testing.assert_array_equal(mask, truth[2])
