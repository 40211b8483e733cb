from pathlib import Path

import numpy as np

from helpers import built_instances, write_pair


def test_fake_tree(tmp_path: Path, rng: np.random.Generator) -> None:
    root = tmp_path / "raw" / "BUS-B" / "BUS"
    truth = {n: write_pair(rng, root / "original" / f"{n:06d}.png", root / "GT" / f"{n:06d}.png") for n in range(1, 5)}
    write_pair(rng, root / "original" / "000009.png", None)
    result, found = built_instances(tmp_path / "raw", tmp_path / "out", "BUS-B")
    assert result.reports["BUS-B"].images == 4
    assert [e["reason"] for e in result.item_errors] == ["image has no matching mask"]
    ((category, _, _, mask),) = found["BUS/original/000003.png"]
    assert category == "breast lesion"
    np.testing.assert_array_equal(mask, truth[3])
