from __future__ import annotations

from pathlib import Path

import numpy as np

from helpers import (
    build,
    decode,
    ellipse,
    load_json,
    speckle_image,
    write_jpeg,
    write_png,
)
from us43d.registry import Registry

# Listed out of order, as the real train_cls.txt is (it opens "658.JPG  5", "384.JPG  3", ...)
TRAIN = {"6": 1, "2": 3, "3": 7, "1": 0, "5": 5, "4": 0}
TEST = {"7": 2, "8": 7}
COLOURS = [(64, 0, 0), (0, 64, 0), (0, 0, 64), (128, 128, 0), (0, 128, 128), (128, 0, 128), (255, 255, 255), (200, 100, 50)]


def make_otu_2d(root: Path, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    base = root / "OTU_2d"
    truth = {}
    for number, cls in {**TRAIN, **TEST}.items():
        shape = (70, 110)
        mask = ellipse(shape, (35, 40), (10, 14)) | ellipse(shape, (35, 90), (6, 6))  # two parts
        write_jpeg(base / "images" / f"{number}.JPG", np.dstack([speckle_image(rng, shape)] * 3), quality=95)
        colour = np.zeros(shape + (3,), np.uint8)
        colour[mask] = COLOURS[cls]
        write_png(base / "annotations" / f"{number}.PNG", colour)
        write_png(base / "annotations" / f"{number}_binary.PNG", (mask * 255).astype(np.uint8))
        write_png(
            base / "annotations" / f"{number}_binary_binary.PNG", (mask * 255).astype(np.uint8)
        )  # the release has 3 per image
        truth[number] = mask
    # two spaces between name and class, as third-party readers of the real lists show; CRLF in one
    (base / "train_cls.txt").write_text("".join(f"{n}.JPG  {c}\n" for n, c in TRAIN.items()))
    (base / "val_cls.txt").write_bytes("".join(f"{n}.JPG  {c}\r\n" for n, c in TEST.items()).encode())
    (base / "train.txt").write_text("".join(f"{n}\n" for n in TRAIN))
    (base / "val.txt").write_text("".join(f"{n}\n" for n in TEST))
    return truth


def test_fake_tree(tmp_path: Path) -> None:
    truth = make_otu_2d(tmp_path / "raw" / "MMOTU-2D")
    result = build(tmp_path / "raw", tmp_path / "out", ["MMOTU-2D"])
    assert result.item_errors == []
    assert (result.reports["MMOTU-2D"].images, result.reports["MMOTU-2D"].instances) == (8, 16)
    categories = Registry.load().get("MMOTU-2D").categories
    coco = tmp_path / "out" / "coco" / "MMOTU-2D"
    test = load_json(coco / "test.json")
    assert sorted(i["source_file"] for i in test["images"]) == ["OTU_2d/images/7.JPG", "OTU_2d/images/8.JPG"]
    seen = 0
    for split in ("train", "val", "test"):
        doc = load_json(coco / f"{split}.json")
        names = {c["id"]: c["name"] for c in doc["categories"]}
        files = {i["id"]: Path(i["source_file"]).stem for i in doc["images"]}
        per_image: dict[str, np.ndarray] = {}
        for annotation in doc["annotations"]:
            number = files[annotation["image_id"]]
            assert names[annotation["category_id"]] == categories[{**TRAIN, **TEST}[number]]
            per_image[number] = per_image.get(number, np.zeros_like(truth[number])) | decode(annotation)
            seen += 1
        for number, union in per_image.items():
            np.testing.assert_array_equal(union, truth[number])
    assert seen == 16


def test_unlisted_image_is_reported(tmp_path: Path) -> None:
    make_otu_2d(tmp_path / "raw" / "MMOTU-2D")
    base = tmp_path / "raw" / "MMOTU-2D" / "OTU_2d"
    write_jpeg(base / "images" / "9.JPG", np.full((70, 110, 3), 50, np.uint8))
    write_png(base / "annotations" / "9.PNG", np.zeros((70, 110, 3), np.uint8))
    result = build(tmp_path / "raw", tmp_path / "out", ["MMOTU-2D"])
    assert [(e["file"], e["reason"]) for e in result.item_errors] == [
        ("OTU_2d/images/9.JPG", "listed in neither train_cls.txt nor val_cls.txt")
    ]
    assert result.reports["MMOTU-2D"].images == 8


def test_image_level_label_is_the_listed_class(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    make_otu_2d(tmp_path / "raw" / "MMOTU-2D")
    build(tmp_path / "raw", tmp_path / "out", ["MMOTU-2D"])
    classes = Registry.load().get("MMOTU-2D").classes
    assert len(classes) == 8
    rows = pq.read_table(tmp_path / "out" / "parquet" / "images.parquet").to_pylist()
    assert {Path(r["source_file"]).stem: r["label"] for r in rows} == {n: classes[c] for n, c in {**TRAIN, **TEST}.items()}
    test = load_json(tmp_path / "out" / "coco" / "MMOTU-2D" / "test.json")
    assert sorted(i["label"] for i in test["images"]) == sorted([classes[2], classes[7]])
