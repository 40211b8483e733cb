"""Fake UBPD (LabelMe polygons) and FASS (pickled structure arrays)."""

import json
from pathlib import Path

import numpy as np

from helpers import built_instances, ellipse, write_pair
from us43d.converters.readers import polygons_to_mask

NERVE = [[10, 10], [30, 10], [30, 25], [10, 25]]
ARTERY = [[40, 30], [60, 30], [50, 50]]


def test_ubpd(tmp_path: Path, rng: np.random.Generator) -> None:
    raw = tmp_path / "raw" / "UBPD"
    for n in range(3):
        write_pair(rng, raw / "JPEGImages" / f"{n}.jpg", None)
        shapes = [{"label": "shenjing", "points": NERVE, "shape_type": "polygon"}, {"label": "dongmai", "points": ARTERY}]
        (raw / "json_train").mkdir(parents=True, exist_ok=True)
        (raw / "json_train" / f"{n}.json").write_bytes(json.dumps({"shapes": shapes, "imagePath": "\u795e\u7ecf"}).encode())
    (raw / "json_train" / "2.json").write_text(json.dumps({"shapes": [{"label": "xinzang", "points": NERVE}]}))
    result, found = built_instances(tmp_path / "raw", tmp_path / "out", "UBPD")
    assert [(e["file"], e["reason"]) for e in result.item_errors] == [("json_train/2.json", "unknown label 'xinzang'")]
    rows = {c: m for c, *_, m in found["JPEGImages/1.jpg"]}
    np.testing.assert_array_equal(rows["nerve"], polygons_to_mask([[v for p in NERVE for v in p]], 60, 80, "n"))
    assert set(rows) == {"nerve", "artery"}


def test_fass(tmp_path: Path, rng: np.random.Generator) -> None:
    title = "Fetal Abdominal Structures Segmentation Dataset Using Ultrasonic Images"
    root = tmp_path / "raw" / "FASS" / title / title
    stomach = ellipse((60, 80), (30, 30), (8, 8))
    liver = ellipse((60, 80), (30, 50), (15, 20))  # overlaps the stomach: both kept
    for n in range(3):
        write_pair(rng, root / "IMAGES" / f"img{n}.png", None)
        (root / "ARRAY_FORMAT").mkdir(exist_ok=True)
        structures = {
            "artery": np.zeros((60, 80), np.uint8),
            "liver": liver.astype(np.uint8),
            "stomach": stomach.astype(np.uint8),
            "vein": np.zeros((60, 80), np.uint8),
        }
        np.save(root / "ARRAY_FORMAT" / f"img{n}.npy", {"structures": structures}, allow_pickle=True)
    result, found = built_instances(tmp_path / "raw", tmp_path / "out", "FASS")
    assert result.item_errors == [] and result.reports["FASS"].instances == 6
    rows = {c: m for c, *_, m in found[f"{title}/{title}/IMAGES/img1.png"]}
    np.testing.assert_array_equal(rows["stomach"], stomach)
    np.testing.assert_array_equal(rows["liver"], liver)
