from pathlib import Path

import numpy as np

from helpers import built_instances, write_pair


def test_fake_tree(tmp_path: Path, rng: np.random.Generator) -> None:
    root = tmp_path / "raw" / "CCAUI" / "Common Carotid Artery Ultrasound Images"
    truth = {}
    for series in ("202201121748100022VAS", "202201121748100023CAR", "202201121748100024VAS"):
        for frame in (1, 2, 3):
            name = f"{series}_slice_{frame}.png"
            truth[name] = write_pair(rng, root / "US images" / name, root / "Expert mask images" / name)
    result, found = built_instances(tmp_path / "raw", tmp_path / "out", "CCAUI")
    assert result.item_errors == [] and result.reports["CCAUI"].images == 9
    name = "202201121748100023CAR_slice_2.png"
    ((category, split, group, mask),) = found[f"Common Carotid Artery Ultrasound Images/US images/{name}"]
    assert category == "carotid artery" and group == "202201121748100023CAR"
    np.testing.assert_array_equal(mask, truth[name])
    splits_per_series = {}
    for rows in found.values():
        splits_per_series.setdefault(rows[0][2], set()).add(rows[0][1])
    assert all(len(s) == 1 for s in splits_per_series.values())
