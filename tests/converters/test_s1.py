from pathlib import Path

import numpy as np

from helpers import built_instances, ellipse, write_pair


def test_fake_tree(tmp_path: Path, rng: np.random.Generator) -> None:
    data = tmp_path / "raw" / "S1" / "Data"
    truth = {}
    for part, names in (("TrainingDataSet", ("a1", "a2", "a3", "a4")), ("TestingDataSet", ("t1", "t2"))):
        for i, name in enumerate(names):
            value = 127 if i % 2 == 0 else 255
            truth[name] = (
                value,
                write_pair(rng, data / part / "Images" / f"{name}.png", data / part / "Labels" / f"{name}.png", foreground=value),
            )
            write_pair(rng, None, data / part / "General Labels" / f"{name}.png", mask=ellipse((60, 80), (5, 5), (3, 3)))
    result, found = built_instances(tmp_path / "raw", tmp_path / "out", "S1")
    assert result.item_errors == [] and result.reports["S1"].images == 6
    ((category, split, _, mask),) = found["Data/TestingDataSet/Images/t2.png"]
    assert (category, split) == ("breast lesion malignant", "test")
    np.testing.assert_array_equal(mask, truth["t2"][1])
    assert found["Data/TrainingDataSet/Images/a1.png"][0][0] == "breast lesion benign"
