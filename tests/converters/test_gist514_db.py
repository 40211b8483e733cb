from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from helpers import build, decode, load_json, speckle_image, write_jpeg
from us43d.converters.readers import polygons_to_mask

# As the release's files are read by the authors' code (query2): categories named lmym and GIST,
# an extra anatomy_id on every image. Source category ids deliberately differ from the registry's
# order: matching is by name.
SOURCE_CATEGORIES = [{"id": 1, "name": "GIST", "supercategory": "GIST"}, {"id": 2, "name": "lmym", "supercategory": "lmym"}]
SQUARE = [10.0, 10.0, 40.0, 10.0, 40.0, 35.0, 10.0, 35.0]
TRIANGLE = [60.0, 40.0, 90.0, 40.0, 75.0, 60.0]


def coco(
    images: list[tuple[int, str]], annotations: list[tuple[int, int, list[list[float]]]], categories: list | None = None
) -> str:
    return json.dumps(
        {
            "images": [{"id": i, "file_name": name, "width": 100, "height": 80, "anatomy_id": 3} for i, name in images],
            "annotations": [
                {"id": k, "image_id": i, "category_id": c, "segmentation": seg, "iscrowd": 0}
                for k, (i, c, seg) in enumerate(annotations)
            ],
            "categories": categories or SOURCE_CATEGORIES,
        }
    )


def make_gist(root: Path, seed: int = 0, categories: list | None = None) -> None:
    rng = np.random.default_rng(seed)
    base = root / "usd514_jpeg_roi"
    for name in ("a1.jpg", "a2.jpg", "a3.jpg", "a4.jpg", "b1.jpg", "unused.jpg"):
        write_jpeg(base / "images" / name, np.dstack([speckle_image(rng, (80, 100))] * 3))
    annotations = base / "annotations"
    annotations.mkdir(parents=True)
    (annotations / "train_anno_crop_split_0.json").write_text(
        coco(
            [(1, "a1.jpg"), (2, "a2.jpg"), (3, "a3.jpg"), (4, "a4.jpg")],
            [(1, 1, [SQUARE]), (2, 2, [SQUARE, TRIANGLE]), (3, 2, [TRIANGLE]), (4, 1, [SQUARE])],
            categories,
        )
    )
    (annotations / "val_anno_crop_split_0.json").write_text(coco([(7, "b1.jpg")], [(7, 1, [TRIANGLE])], categories))


def test_fake_tree(tmp_path: Path) -> None:
    check_tree(tmp_path, "GIST")  # the spelling the authors' code asks for


def test_lower_case_gist_as_third_party_converters_write_it(tmp_path: Path) -> None:
    check_tree(tmp_path, "gist")


def check_tree(tmp_path: Path, gist: str) -> None:
    categories = [{"id": 1, "name": gist, "supercategory": gist}, {"id": 2, "name": "lmym", "supercategory": "lmym"}]
    make_gist(tmp_path / "raw" / "GIST514-DB", categories=categories)
    result = build(tmp_path / "raw", tmp_path / "out", ["GIST514-DB"])
    assert result.item_errors == []
    assert (result.reports["GIST514-DB"].images, result.reports["GIST514-DB"].instances) == (5, 6)
    coco_dir = tmp_path / "out" / "coco" / "GIST514-DB"
    test = load_json(coco_dir / "test.json")
    assert [i["source_file"] for i in test["images"]] == ["usd514_jpeg_roi/images/b1.jpg"]
    assert [c["name"] for c in test["categories"]] == ["leiomyoma", "gastrointestinal stromal tumour"]
    (annotation,) = test["annotations"]
    assert annotation["category_id"] == 2  # source "gist" (id 1 there) is our second category
    np.testing.assert_array_equal(decode(annotation), polygons_to_mask([TRIANGLE], 80, 100, "t"))
    per_image = {}
    for split in ("train", "val"):
        if (coco_dir / f"{split}.json").exists():
            doc = load_json(coco_dir / f"{split}.json")
            names = {i["id"]: Path(i["source_file"]).name for i in doc["images"]}
            for a in doc["annotations"]:
                per_image.setdefault(names[a["image_id"]], []).append(a["category_id"])
    assert sorted(per_image["a2.jpg"]) == [1, 1]  # two polygons of one leiomyoma annotation: two instances
    assert per_image["a1.jpg"] == [2]
    assert "unused.jpg" not in per_image


def test_listed_image_missing_is_reported(tmp_path: Path) -> None:
    make_gist(tmp_path / "raw" / "GIST514-DB")
    (tmp_path / "raw" / "GIST514-DB" / "usd514_jpeg_roi" / "images" / "a3.jpg").unlink()
    result = build(tmp_path / "raw", tmp_path / "out", ["GIST514-DB"])
    assert [(e["file"], e["reason"]) for e in result.item_errors] == [
        ("usd514_jpeg_roi/images/a3.jpg", "listed in train_anno_crop_split_0.json but the image file is missing")
    ]


def test_image_level_label_is_the_tumour_of_the_image(tmp_path: Path) -> None:
    make_gist(tmp_path / "raw" / "GIST514-DB")
    base = tmp_path / "raw" / "GIST514-DB" / "usd514_jpeg_roi"
    write_jpeg(base / "images" / "b2.jpg", np.dstack([speckle_image(np.random.default_rng(1), (80, 100))] * 3))
    # b2 has one polygon of each kind: no single image-level class, its instances are kept
    (base / "annotations" / "val_anno_crop_split_0.json").write_text(
        coco([(7, "b1.jpg"), (8, "b2.jpg")], [(7, 1, [TRIANGLE]), (8, 1, [SQUARE]), (8, 2, [TRIANGLE])])
    )
    build(tmp_path / "raw", tmp_path / "out", ["GIST514-DB"])
    labels = {}
    for split in ("train", "val", "test"):
        path = tmp_path / "out" / "coco" / "GIST514-DB" / f"{split}.json"
        for image in load_json(path)["images"] if path.exists() else []:
            labels[Path(image["source_file"]).name] = image["label"]
    gist, lmym = "gastrointestinal stromal tumour", "leiomyoma"
    assert labels == {"a1.jpg": gist, "a2.jpg": lmym, "a3.jpg": lmym, "a4.jpg": gist, "b1.jpg": gist, "b2.jpg": None}
