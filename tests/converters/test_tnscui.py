"""TN-SCUI 2020 as the release has it: `<n>.PNG` names that are neither padded nor contiguous,
train.csv with ID including the suffix and bare carriage returns, and the doubled
`TNSCUI2020_train/TNSCUI2020_train/` folder seen in users' paths."""

from pathlib import Path

import numpy as np

from helpers import built_instances, write_pair

NAMES = (2, 17, 1273, 9767)


def test_fake_tree(tmp_path: Path, rng: np.random.Generator) -> None:
    root = tmp_path / "raw" / "TNSCUI" / "TNSCUI2020_train" / "TNSCUI2020_train"
    truth = {n: write_pair(rng, root / "image" / f"{n}.PNG", root / "mask" / f"{n}.PNG") for n in NAMES}
    (root / "train.csv").write_bytes(("ID,CATE\r" + "".join(f"{n}.PNG,{n % 2}\r" for n in NAMES)).encode())
    result, found = built_instances(tmp_path / "raw", tmp_path / "out", "TNSCUI")
    assert result.item_errors == [] and result.reports["TNSCUI"].images == 4
    ((category, _, _, mask),) = found["TNSCUI2020_train/TNSCUI2020_train/image/1273.PNG"]
    assert category == "thyroid nodule"
    np.testing.assert_array_equal(mask, truth[1273])
