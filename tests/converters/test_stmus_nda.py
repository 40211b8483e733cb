"""STMUS-NDA as its readme lays it out: `{BB,GM,TA}/{Healthy,Pathological}/{Images,Masks}`, with
the same file name in Healthy and Pathological, and the release's own split folder."""

from pathlib import Path

import numpy as np

from helpers import beyond_coverage, built_instances, write_pair


def test_fake_tree(tmp_path: Path, rng: np.random.Generator) -> None:
    root = tmp_path / "raw" / "STMUS-NDA" / "Polito-Radboud-DeepLearningUS"
    truth = {}
    for muscle in ("BB", "GM", "TA"):
        for group in ("Healthy", "Pathological"):
            for name in ("p1", f"{muscle}_{group}_2"):
                folder = root / muscle / group
                truth[(muscle, group, name)] = write_pair(
                    rng, folder / "Images" / f"{name}.png", folder / "Masks" / f"{name}.png", foreground=1
                )
    split = root / "Segmentation_models" / "data" / "MuscleCNN"
    write_pair(rng, split / "test" / "GM_Pathological_2.png", split / "testannot" / "GM_Pathological_2.png")
    write_pair(rng, split / "test" / "p1.png", split / "testannot" / "p1.png")  # in every folder: all of them test
    result, found = built_instances(tmp_path / "raw", tmp_path / "out", "STMUS-NDA")
    assert result.item_errors == [] and beyond_coverage(result.problems) == []
    assert result.reports["STMUS-NDA"].images == 12  # p1 of Healthy and of Pathological are both kept
    for group in ("Healthy", "Pathological"):
        ((category, split_name, _, mask),) = found[f"Polito-Radboud-DeepLearningUS/GM/{group}/Images/p1.png"]
        assert category == "muscle" and split_name == "test"  # which p1 is meant is unknown: none may train
        np.testing.assert_array_equal(mask, truth[("GM", group, "p1")])
    ((_, split_name, _, _),) = found["Polito-Radboud-DeepLearningUS/GM/Healthy/Images/GM_Healthy_2.png"]
    assert split_name != "test"
    ((_, split_name, _, _),) = found["Polito-Radboud-DeepLearningUS/GM/Pathological/Images/GM_Pathological_2.png"]
    assert split_name == "test"
