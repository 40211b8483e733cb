from pathlib import Path

import numpy as np

from helpers import built_instances, write_pair


def test_fake_tree(tmp_path: Path, rng: np.random.Generator) -> None:
    root = tmp_path / "raw" / "STMUS-NDA" / "Polito-Radboud-DeepLearningUS"
    truth = {}
    for muscle in ("BB", "GM", "TA"):
        for n in (1, 2):
            truth[(muscle, n)] = write_pair(
                rng, root / muscle / "Images" / f"p{n}.png", root / muscle / "Masks" / f"p{n}.png", foreground=1
            )
    result, found = built_instances(tmp_path / "raw", tmp_path / "out", "STMUS-NDA")
    assert result.item_errors == [] and result.reports["STMUS-NDA"].images == 6
    ((category, _, _, mask),) = found["Polito-Radboud-DeepLearningUS/GM/Images/p2.png"]
    assert category == "muscle"
    np.testing.assert_array_equal(mask, truth[("GM", 2)])
