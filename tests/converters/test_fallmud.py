from pathlib import Path

import numpy as np
from PIL import Image

from helpers import built_instances, write_pair


def test_fake_tree(tmp_path: Path, rng: np.random.Generator) -> None:
    root = tmp_path / "raw" / "FALLMUD" / "FALLMUD"
    aponeuroses = np.zeros((60, 80), bool)
    aponeuroses[8:12, 5:75] = aponeuroses[45:49, 5:75] = True  # superficial and deep: two instances
    fascicle = np.zeros((60, 80), bool)
    fascicle[20:40, 30:33] = True
    for n in (1, 2):
        write_pair(
            rng,
            root / "NeilCronin" / "images" / f"img_{n:05d}.tif",
            root / "NeilCronin" / "aponeurosis_masks" / f"img_{n:05d}.png",
            mask=aponeuroses,
        )
        write_pair(rng, None, root / "NeilCronin" / "fascicle_masks" / f"img_{n:05d}.tif", mask=fascicle)
    write_pair(rng, root / "RyanCunningham" / "images" / "r1.png", None)
    (root / "RyanCunningham" / "aponeurosis_masks").mkdir(parents=True)
    Image.fromarray((np.rot90(aponeuroses, k=1) * 255).astype(np.uint8)).save(
        root / "RyanCunningham" / "aponeurosis_masks" / "r1.png"
    )
    write_pair(rng, None, root / "RyanCunningham" / "fascicle_masks" / "r1.png", mask=fascicle)
    write_pair(rng, root / "RyanCunningham" / "images" / "r2.png", None)
    result, found = built_instances(tmp_path / "raw", tmp_path / "out", "FALLMUD")
    assert [e["reason"] for e in result.item_errors] == ["image has no aponeurosis_masks or fascicle_masks"]
    assert result.reports["FALLMUD"].images == 3
    rows = found["FALLMUD/NeilCronin/images/img_00002.tif"]
    assert sorted(c for c, *_ in rows) == ["aponeurosis", "aponeurosis", "fascicle"]
    union = np.zeros((60, 80), bool)
    for category, *_, mask in found["FALLMUD/RyanCunningham/images/r1.png"]:
        if category == "aponeurosis":
            union |= mask
    np.testing.assert_array_equal(union, aponeuroses)  # the transposed mask was turned back
