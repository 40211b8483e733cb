from pathlib import Path

import numpy as np

from helpers import built_instances, write_pair


def test_fake_tree(tmp_path: Path, rng: np.random.Generator) -> None:
    root = tmp_path / "raw" / "TNSCUI" / "TNSCUI2020_train"
    truth = {n: write_pair(rng, root / "image" / f"{n:05d}.png", root / "mask" / f"{n:05d}.png") for n in range(1, 6)}
    (root / "train.csv").write_text("ID,CATE\n" + "".join(f"{n:05d}.png,{n % 2}\n" for n in range(1, 6)))
    result, found = built_instances(tmp_path / "raw", tmp_path / "out", "TNSCUI")
    assert result.item_errors == [] and result.reports["TNSCUI"].images == 5
    ((category, _, _, mask),) = found["TNSCUI2020_train/image/00003.png"]
    assert category == "thyroid nodule"
    np.testing.assert_array_equal(mask, truth[3])
