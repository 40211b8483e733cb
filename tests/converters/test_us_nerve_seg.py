from pathlib import Path

import numpy as np

from helpers import built_instances, write_pair


def test_fake_tree(tmp_path: Path, rng: np.random.Generator) -> None:
    folder = tmp_path / "raw" / "US-Nerve-Seg" / "train"
    truth = {}
    for subject in (1, 2, 3):
        for n in (1, 2, 3):
            empty = n == 3
            mask = np.zeros((42, 58), bool) if empty else None
            truth[(subject, n)] = write_pair(
                rng, folder / f"{subject}_{n}.tif", folder / f"{subject}_{n}_mask.tif", shape=(42, 58), mask=mask
            )
    (tmp_path / "raw" / "US-Nerve-Seg" / "test").mkdir()
    result, found = built_instances(tmp_path / "raw", tmp_path / "out", "US-Nerve-Seg")
    report = result.reports["US-Nerve-Seg"]
    assert result.item_errors == [] and report.images == 6 and report.dropped_without_instances == 3
    ((category, _, group, mask),) = found["train/2_1.tif"]
    assert category == "brachial plexus" and group == "2"
    np.testing.assert_array_equal(mask, truth[(2, 1)])
