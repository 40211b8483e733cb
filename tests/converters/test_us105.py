from pathlib import Path

import numpy as np

from helpers import built_instances, write_pair


def test_fake_tree(tmp_path: Path, rng: np.random.Generator) -> None:
    raw = tmp_path / "raw" / "105US"
    truth = {
        n: write_pair(rng, raw / "105 US Images" / f"{n:03d}.png", raw / "105 US Masks" / f"{n:03d} G man.png")
        for n in (1, 2, 10)
    }
    result, found = built_instances(tmp_path / "raw", tmp_path / "out", "105US")
    assert result.item_errors == [] and result.reports["105US"].images == 3
    ((category, _, _, mask),) = found["105 US Images/010.png"]
    assert category == "tumour"
    np.testing.assert_array_equal(mask, truth[10])
