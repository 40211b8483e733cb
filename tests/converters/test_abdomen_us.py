"""AbdomenUS as the real release lays it out: 1-channel JPEG images, RGBA colour masks for only
some of them, anti-aliased edges, one mask with a tinted background and one with a kidney drawn
a shade off the legend colour (as a2 and g25 are)."""

from pathlib import Path

import numpy as np
from PIL import Image

from helpers import built_instances, ellipse, speckle_image, write_jpeg

SHAPE = (60, 80)


def _mask(path: Path, regions: list[tuple[np.ndarray, tuple[int, int, int]]], background=(0, 0, 0)) -> None:
    rgba = np.zeros((*SHAPE, 4), np.uint8)
    rgba[..., :3] = background
    rgba[..., 3] = 255
    for region, colour in regions:
        rgba[region, :3] = colour
        edge = region & ~np.roll(region, 1, axis=1)
        rgba[edge, :3] = (np.asarray(colour) * 0.8).astype(np.uint8)  # anti-aliased left edge
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgba, "RGBA").save(path)


def test_fake_tree(tmp_path: Path, rng: np.random.Generator) -> None:
    root = tmp_path / "raw" / "AbdomenUS" / "abdominal_US" / "abdominal_US"
    liver = ellipse(SHAPE, (20, 25), (12, 18))
    kidney = ellipse(SHAPE, (45, 60), (8, 10))
    for part, names in (("test", ("a1", "a2", "g25", "h1")), ("train", ("c1", "c10"))):
        for name in names:
            write_jpeg(root / "RUS" / "images" / part / f"{name}.jpg", speckle_image(rng, SHAPE))  # mode L
    annotations = root / "RUS" / "annotations" / "test"
    _mask(annotations / "h1.png", [(liver, (100, 0, 100)), (kidney, (255, 255, 0))])
    _mask(annotations / "a2.png", [(liver, (100, 0, 100))], background=(10, 0, 10))
    _mask(annotations / "g25.png", [(kidney, (253, 253, 0))])
    _mask(annotations / "h100.png", [(kidney, (255, 255, 0))])  # its image is not in the release
    write_jpeg(root / "AUS" / "images" / "train" / "sim.jpg", np.zeros(SHAPE, np.uint8))
    result, found = built_instances(tmp_path / "raw", tmp_path / "out", "AbdomenUS")
    report = result.reports["AbdomenUS"]
    assert [(e["file"], e["reason"]) for e in result.item_errors] == [
        ("abdominal_US/abdominal_US/RUS/annotations/test/h100.png", "mask has no matching image")
    ]
    assert (report.images, report.unannotated) == (3, 3)  # a1, c1 and c10 carry no annotation: not errors
    rows = {c: m for c, *_, m in found["abdominal_US/abdominal_US/RUS/images/test/h1.jpg"]}
    assert set(rows) == {"liver", "kidney"}
    np.testing.assert_array_equal(rows["kidney"], kidney)
    np.testing.assert_array_equal(rows["liver"], liver)  # the anti-aliased edge is still liver
    ((category, *_, mask),) = found["abdominal_US/abdominal_US/RUS/images/test/a2.jpg"]
    assert category == "liver"
    np.testing.assert_array_equal(mask, liver)  # the (10, 0, 10) background is background
    ((category, *_, mask),) = found["abdominal_US/abdominal_US/RUS/images/test/g25.jpg"]
    assert category == "kidney"
    np.testing.assert_array_equal(mask, kidney)
