"""Fake UBPD (LabelMe polygons) and FASS (pickled structure arrays)."""

import json
from pathlib import Path

import numpy as np

from helpers import built_instances, ellipse, write_pair

NERVE = [[10, 10], [30, 10], [30, 25], [10, 25]]
ARTERY = [[40, 30], [60, 30], [50, 50]]


def test_ubpd(tmp_path: Path, rng: np.random.Generator) -> None:
    """The real release's shapes: `images/<patient>_<frame>.jpg`, `labels/json_train/<same>.json`
    (LabelMe, vertices on pixel centres), some JSONs GBK-encoded, `imagePath` naming another frame."""
    raw = tmp_path / "raw" / "UBPD"
    for stem in ("7_10", "7_20", "12_0"):
        write_pair(rng, raw / "images" / f"{stem}.jpg", None)
        shapes = [{"label": "shenjing", "points": NERVE, "shape_type": "polygon"}, {"label": "dongmai", "points": ARTERY}]
        (raw / "labels" / "json_train").mkdir(parents=True, exist_ok=True)
        document = {"version": "3.16.7", "shapes": shapes, "imagePath": "7_30.jpg", "imageData": None}
        (raw / "labels" / "json_train" / f"{stem}.json").write_text(json.dumps(document))
    gbk = json.dumps({"shapes": [{"label": "shenjing", "points": NERVE}], "imagePath": "2-1-标定.tif"}, ensure_ascii=False)
    (raw / "labels" / "json_train" / "7_20.json").write_bytes(gbk.encode("gbk"))
    write_pair(rng, raw / "images" / "9_1.jpg", None)
    (raw / "labels" / "json_train" / "9_1.json").write_text(json.dumps({"shapes": [{"label": "xinzang", "points": NERVE}]}))
    result, found = built_instances(tmp_path / "raw", tmp_path / "out", "UBPD")
    assert [(e["file"], e["reason"]) for e in result.item_errors] == [("labels/json_train/9_1.json", "unknown label 'xinzang'")]
    rows = {c: (m, g) for c, _, g, m in found["images/7_10.jpg"]}
    assert set(rows) == {"nerve", "artery"}
    nerve = np.zeros((60, 80), bool)
    nerve[10:26, 10:31] = True  # LabelMe fills the polygon and draws its outline through the vertex pixels
    np.testing.assert_array_equal(rows["nerve"][0], nerve)
    assert [c for c, *_ in found["images/7_20.jpg"]] == ["nerve"]  # the GBK file
    groups = {g for rows in found.values() for _, _, g, _ in rows}
    assert groups == {"7", "12"}  # frames of one patient's scan share a group
    assert len({s for key in ("images/7_10.jpg", "images/7_20.jpg") for _, s, _, _ in found[key]}) == 1


def test_fass(tmp_path: Path, rng: np.random.Generator) -> None:
    title = "Fetal Abdominal Structures Segmentation Dataset Using Ultrasonic Images"
    root = tmp_path / "raw" / "FASS" / title / title
    stomach = ellipse((60, 80), (30, 30), (8, 8))
    liver = ellipse((60, 80), (30, 50), (15, 20))  # overlaps the stomach: both kept
    for name in ("P010_IMG1", "P010_IMG2", "P011_IMG1"):
        write_pair(rng, root / "IMAGES" / f"{name}.png", None)
        (root / "ARRAY_FORMAT").mkdir(exist_ok=True)
        structures = {
            "artery": np.zeros((60, 80), np.uint8),
            "liver": liver.astype(np.uint8),
            "stomach": stomach.astype(np.uint8),
            "vein": np.zeros((60, 80), np.uint8),
        }
        np.save(root / "ARRAY_FORMAT" / f"{name}.npy", {"image": np.zeros((60, 80)), "structures": structures}, allow_pickle=True)
    result, found = built_instances(tmp_path / "raw", tmp_path / "out", "FASS")
    assert result.item_errors == [] and result.reports["FASS"].instances == 6
    rows = {c: m for c, *_, m in found[f"{title}/{title}/IMAGES/P010_IMG2.png"]}
    groups = {name: {g for _, _, g, _ in found[f"{title}/{title}/IMAGES/{name}.png"]} for name in ("P010_IMG1", "P011_IMG1")}
    assert groups == {"P010_IMG1": {"P010"}, "P011_IMG1": {"P011"}}  # images of one patient stay together
    np.testing.assert_array_equal(rows["stomach"], stomach)
    np.testing.assert_array_equal(rows["liver"], liver)


class _Payload:
    """What a hostile pickle carries: a call made while loading."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_fass_refuses_a_pickle_that_would_run_code(tmp_path: Path, rng: np.random.Generator) -> None:
    root = tmp_path / "raw" / "FASS"
    write_pair(rng, root / "IMAGES" / "P001_IMG1.png", None)
    hostile = np.empty((), dtype=object)
    marker = tmp_path / "ran"
    hostile[()] = {"structures": {"liver": _Payload(marker)}}
    (root / "ARRAY_FORMAT").mkdir()
    np.save(root / "ARRAY_FORMAT" / "P001_IMG1.npy", hostile, allow_pickle=True)
    result, _ = built_instances(tmp_path / "raw", tmp_path / "out", "FASS")
    ((error),) = result.item_errors
    assert error["file"] == "ARRAY_FORMAT/P001_IMG1.npy" and "refusing to load pathlib" in error["reason"]
    assert not marker.exists()


class _PointerArray:
    """A pickle that calls numpy.ndarray with its own bytes as the buffer of an object array:
    loaded, every "object" would be a pointer the file chose."""

    def __reduce__(self):
        return (np.ndarray, ((6, 8), np.dtype(object), b"A" * (6 * 8 * 8)))


def test_fass_refuses_an_object_array_made_of_the_files_bytes(tmp_path: Path, rng: np.random.Generator) -> None:
    root = tmp_path / "raw" / "FASS"
    write_pair(rng, root / "IMAGES" / "P001_IMG1.png", None, shape=(6, 8))
    (root / "ARRAY_FORMAT").mkdir()
    np.save(root / "ARRAY_FORMAT" / "P001_IMG1.npy", np.array({"structures": {"liver": _PointerArray()}}, dtype=object))
    result, _ = built_instances(tmp_path / "raw", tmp_path / "out", "FASS")  # in this process: a crash would end it
    ((error),) = result.item_errors
    assert error["file"] == "ARRAY_FORMAT/P001_IMG1.npy" and "cannot read NumPy file" in error["reason"]
