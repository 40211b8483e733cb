from pathlib import Path

import numpy as np
from PIL import Image

from helpers import built_instances, ellipse, write_pair


def test_fake_tree(tmp_path: Path, rng: np.random.Generator) -> None:
    root = tmp_path / "raw" / "BrEaST" / "BrEaST-Lesions_USG-images_and_masks"
    truth = {}
    for n in range(1, 5):
        truth[n] = write_pair(rng, root / f"case{n:03d}.png", root / f"case{n:03d}_tumor.png")
    Image.open(root / "case002.png").convert("LA").save(root / "case002.png")  # grey + alpha, as distributed
    other = ellipse((60, 80), (8, 8), (4, 4))
    write_pair(rng, None, root / "case003_other1.png", mask=other)
    result, found = built_instances(tmp_path / "raw", tmp_path / "out", "BrEaST")
    assert result.item_errors == [] and result.reports["BrEaST"].instances == 5
    by_category = {c: m for c, *_, m in found["BrEaST-Lesions_USG-images_and_masks/case003.png"]}
    np.testing.assert_array_equal(by_category["breast lesion"], truth[3])
    np.testing.assert_array_equal(by_category["other finding"], other)
    assert {g for c, s, g, m in found["BrEaST-Lesions_USG-images_and_masks/case001.png"]} == {"case001"}


def test_a_numbered_tumor_mask_is_a_lesion_too(tmp_path: Path, rng: np.random.Generator) -> None:
    root = tmp_path / "raw" / "BrEaST" / "BrEaST-Lesions_USG-images_and_masks"
    first = write_pair(rng, root / "case007.png", root / "case007_tumor.png")
    second = ellipse((60, 80), (40, 20), (5, 5))
    write_pair(rng, None, root / "case007_tumor2.png", mask=second)
    other = ellipse((60, 80), (10, 60), (4, 4))
    write_pair(rng, None, root / "case007_other1.png", mask=other)
    result, found = built_instances(tmp_path / "raw", tmp_path / "out", "BrEaST")
    assert result.item_errors == []
    masks = sorted(found["BrEaST-Lesions_USG-images_and_masks/case007.png"], key=lambda r: (r[0], int(r[3].argmax())))
    assert [c for c, *_ in masks] == ["breast lesion", "breast lesion", "other finding"]
    lesions = [m for c, *_, m in masks if c == "breast lesion"]
    assert any(np.array_equal(m, first) for m in lesions) and any(np.array_equal(m, second) for m in lesions)
