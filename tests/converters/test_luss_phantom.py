import json
from pathlib import Path

import numpy as np
from PIL import Image

from helpers import built_instances, speckle_image


def test_fake_tree(tmp_path: Path, rng: np.random.Generator) -> None:
    raw = tmp_path / "raw" / "LUSS-phantom" / "LUSS_phantom"
    (raw / "images").mkdir(parents=True)
    (raw / "masks").mkdir()
    labels = np.zeros((60, 80), np.uint8)
    labels[5:10, 10:20] = 1  # rib
    labels[5:10, 50:60] = 1  # another rib: two instances
    labels[20:22, 5:75] = 2  # pleural line
    labels[40:42, 5:75] = 3  # A-line
    for n in range(3):
        Image.fromarray(speckle_image(rng, (60, 80))).save(raw / "images" / f"frame_{n}.png")
        Image.fromarray(np.dstack([labels] * 3)).save(raw / "masks" / f"frame_{n}.png")
    result, found = built_instances(tmp_path / "raw", tmp_path / "out", "LUSS-phantom")
    assert result.item_errors == [] and result.reports["LUSS-phantom"].instances == 12
    rows = found["LUSS_phantom/images/frame_1.png"]
    assert sorted(c for c, *_ in rows) == ["A-line", "pleural line", "rib", "rib"]
    line = next(m for c, *_, m in rows if c == "pleural line")
    np.testing.assert_array_equal(line, labels == 2)


def test_the_same_name_in_train_and_test_gives_two_items(tmp_path: Path, rng: np.random.Generator) -> None:
    """A train/test split of same-named frames (as readers of the release describe it) loses
    nothing; two images that would still pair with one mask are reported, not overwritten."""
    raw = tmp_path / "raw" / "LUSS-phantom" / "data-3"
    labels = np.zeros((60, 80), np.uint8)
    labels[20:22, 5:75] = 2
    for part in ("train", "test"):
        (raw / part / "images").mkdir(parents=True)
        (raw / part / "masks").mkdir()
        for n in range(2):
            Image.fromarray(speckle_image(rng, (60, 80))).save(raw / part / "images" / f"clip-F{n}.png")
            Image.fromarray(labels).save(raw / part / "masks" / f"clip-F{n}.png")
    Image.fromarray(speckle_image(rng, (60, 80))).save(raw / "test" / "clip-F1.png")  # a second image for test's mask
    result, found = built_instances(tmp_path / "raw", tmp_path / "out", "LUSS-phantom")
    assert result.reports["LUSS-phantom"].images == 3
    assert sorted(found) == [
        "data-3/test/images/clip-F0.png",
        "data-3/train/images/clip-F0.png",
        "data-3/train/images/clip-F1.png",
    ]
    assert [(e["file"], e["reason"]) for e in result.item_errors] == [
        ("data-3/test/clip-F1.png", "several images or masks have this name in this place of the tree")
    ]


def test_keys_do_not_depend_on_the_archive_folder_and_image_folders_may_be_named_otherwise(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    labels = np.zeros((60, 80), np.uint8)
    labels[20:22, 5:75] = 2
    keys = {}
    for top, image_folder in (("LUSS_phantom", "images"), ("download/LUSS", "Images")):
        raw = tmp_path / top.replace("/", "_") / "raw" / "LUSS-phantom" / top
        (raw / image_folder).mkdir(parents=True)
        (raw / "Masks").mkdir()
        for n in range(2):
            Image.fromarray(speckle_image(rng, (60, 80))).save(raw / image_folder / f"frame_{n}.png")
            Image.fromarray(labels).save(raw / "Masks" / f"frame_{n}.png")
        root = tmp_path / top.replace("/", "_")
        result, _ = built_instances(root / "raw", root / "out", "LUSS-phantom")
        assert result.item_errors == [] and result.reports["LUSS-phantom"].images == 2
        coco = (root / "out" / "coco" / "LUSS-phantom").glob("*.json")
        keys[top] = sorted(i["file_name"] for path in coco for i in json.loads(path.read_text())["images"])
    assert keys["LUSS_phantom"] == keys["download/LUSS"]  # the same images whatever the archive's folders
