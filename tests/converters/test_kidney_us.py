from pathlib import Path

import numpy as np

from helpers import built_instances, write_pair


def test_fake_tree(tmp_path: Path, rng: np.random.Generator) -> None:
    raw = tmp_path / "raw" / "kidneyUS"
    images = raw / "kidneyUS_images_14_june_2022" / "kidneyUS_images_14_june_2022"
    capsule = raw / "labels" / "reviewed_masks_1" / "capsule"
    truth = {}
    for name in ("1_IM-0001-0001_anon", "2_IM-0002-0001_anon", "2_IM-0002-0002_anon", "115_IM-0474-0001-0002_anon"):
        truth[name] = write_pair(rng, images / f"{name}.png", capsule / f"{name}.png", foreground=1)
        write_pair(rng, None, raw / "labels" / "reviewed_masks_1" / "regions" / f"{name}.png", foreground=2)
    write_pair(rng, images / "3_IM-0003-0001_anon.png", capsule / "3_IM-0003-0001_anon.png", mask=np.zeros((60, 80), bool))
    result, found = built_instances(tmp_path / "raw", tmp_path / "out", "kidneyUS")
    assert result.item_errors == [] and result.reports["kidneyUS"].images == 4
    assert result.reports["kidneyUS"].dropped_without_instances == 1
    source = "kidneyUS_images_14_june_2022/kidneyUS_images_14_june_2022/2_IM-0002-0002_anon.png"
    ((category, _, group, mask),) = found[source]
    assert category == "kidney" and group == "2"
    np.testing.assert_array_equal(mask, truth["2_IM-0002-0002_anon"])
