from pathlib import Path

import numpy as np
from PIL import Image

from helpers import built_instances, ellipse, speckle_image, write_jpeg


def test_fake_tree(tmp_path: Path, rng: np.random.Generator) -> None:
    root = tmp_path / "raw" / "AbdomenUS" / "abdominal_US" / "abdominal_US"
    liver = ellipse((60, 80), (20, 25), (12, 18))
    kidney = ellipse((60, 80), (45, 60), (8, 10))
    for part, names in (("test", ("r1", "r2")), ("train", ("r3",))):
        for name in names:
            write_jpeg(root / "RUS" / "images" / part / f"{name}.jpg", np.dstack([speckle_image(rng, (60, 80))] * 3))
            mask = np.zeros((60, 80, 3), np.uint8)
            mask[liver] = (100, 0, 100)
            mask[kidney] = (255, 255, 0)
            (root / "RUS" / "annotations" / part).mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask).save(root / "RUS" / "annotations" / part / f"{name}.png")
    write_jpeg(root / "AUS" / "images" / "train" / "sim.jpg", np.zeros((60, 80, 3), np.uint8))
    result, found = built_instances(tmp_path / "raw", tmp_path / "out", "AbdomenUS")
    assert result.item_errors == [] and result.reports["AbdomenUS"].images == 3  # simulated images are not read
    rows = {c: m for c, *_, m in found["abdominal_US/abdominal_US/RUS/images/test/r2.jpg"]}
    assert set(rows) == {"liver", "kidney"}
    np.testing.assert_array_equal(rows["kidney"], kidney)
