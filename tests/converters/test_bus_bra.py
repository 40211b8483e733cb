from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from helpers import build, decode, ellipse, load_json, speckle_image, write_png

# (image id, case, pathology, fold): case 3 has two views; fold 1 is the official test set.
ROWS = [
    ("bus_0001-l", "1", "benign", 1),
    ("bus_0002-r", "2", "malignant", 2),
    ("bus_0003-l", "3", "benign", 3),
    ("bus_0003-r", "3", "benign", 3),
    ("bus_0004-s", "4", "malignant", 4),
    ("bus_0005-l", "5", "benign", 5),
    ("bus_0006-l", "6", "malignant", 1),
]


def make_bus_bra(root: Path, rows=ROWS, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    base = root / "BUSBRA"
    truth = {}
    for image_id, *_ in rows:
        mask = ellipse((90, 120), (rng.uniform(30, 60), rng.uniform(40, 80)), (12, 18))
        write_png(base / "Images" / f"{image_id}.png", speckle_image(rng, (90, 120)))
        write_png(base / "Masks" / f"mask_{image_id.removeprefix('bus_')}.png", (mask * 255).astype(np.uint8))
        truth[image_id] = mask
    with open(base / "5-fold-cv.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["ID", "Pathology", "kFold"])
        writer.writerows((i, p, f) for i, _, p, f in rows)
    with open(base / "bus_data.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["ID", "Age", "Pathology", "Case", "BIRADS"])
        writer.writerows((i, 50, p, c, 4) for i, c, p, _ in rows)
    return truth


def test_fake_tree(tmp_path: Path) -> None:
    truth = make_bus_bra(tmp_path / "raw" / "BUS-BRA")
    result = build(tmp_path / "raw", tmp_path / "out", ["BUS-BRA"])
    assert result.item_errors == []
    assert (result.reports["BUS-BRA"].images, result.reports["BUS-BRA"].instances) == (7, 7)
    coco = tmp_path / "out" / "coco" / "BUS-BRA"
    test = load_json(coco / "test.json")
    assert sorted(i["source_file"] for i in test["images"]) == ["BUSBRA/Images/bus_0001-l.png", "BUSBRA/Images/bus_0006-l.png"]
    assert [c["name"] for c in test["categories"]] == ["breast lesion benign", "breast lesion malignant"]
    images = {}
    for split in ("train", "val", "test"):
        doc = load_json(coco / f"{split}.json")
        for image in doc["images"]:
            images[image["id"]] = (image, split)
        for annotation in doc["annotations"]:
            image, _ = images[annotation["image_id"]]
            image_id = Path(image["source_file"]).stem
            pathology = next(p for i, _, p, _ in ROWS if i == image_id)
            assert annotation["category_id"] == (1 if pathology == "benign" else 2)
            np.testing.assert_array_equal(decode(annotation), truth[image_id])
    groups = {Path(i["source_file"]).stem: (i["group"], s) for i, s in images.values()}
    assert groups["bus_0003-l"][0] == groups["bus_0003-r"][0] == "3"
    assert groups["bus_0003-l"][1] == groups["bus_0003-r"][1]
    assert sum(1 for _, s in images.values() if s == "val") >= 1


def test_image_missing_from_csv_is_reported_not_guessed(tmp_path: Path) -> None:
    make_bus_bra(tmp_path / "raw" / "BUS-BRA")
    write_png(tmp_path / "raw" / "BUS-BRA" / "BUSBRA" / "Images" / "bus_0099-l.png", np.full((90, 120), 9, np.uint8))
    write_png(tmp_path / "raw" / "BUS-BRA" / "BUSBRA" / "Masks" / "mask_0099-l.png", np.zeros((90, 120), np.uint8))
    result = build(tmp_path / "raw", tmp_path / "out", ["BUS-BRA"])
    assert result.reports["BUS-BRA"].images == 7
    assert [(e["file"], e["reason"]) for e in result.item_errors] == [
        ("BUSBRA/Images/bus_0099-l.png", "bus_0099-l has no row in 5-fold-cv.csv")
    ]


def test_missing_fold_file_is_a_dataset_error(tmp_path: Path) -> None:
    make_bus_bra(tmp_path / "raw" / "BUS-BRA")
    (tmp_path / "raw" / "BUS-BRA" / "BUSBRA" / "5-fold-cv.csv").unlink()
    result = build(tmp_path / "raw", tmp_path / "out", ["BUS-BRA"])
    assert result.reports["BUS-BRA"].images == 0
    assert [(e["file"], e["reason"]) for e in result.problems] == [("BUSBRA/5-fold-cv.csv", "file is missing")]


def test_image_level_label_is_the_pathology_in_coco_and_parquet(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    make_bus_bra(tmp_path / "raw" / "BUS-BRA")
    build(tmp_path / "raw", tmp_path / "out", ["BUS-BRA"])
    pathology = {i: p for i, _, p, _ in ROWS}
    seen = {}
    for split in ("train", "val", "test"):
        path = tmp_path / "out" / "coco" / "BUS-BRA" / f"{split}.json"
        for image in load_json(path)["images"] if path.exists() else []:
            seen[Path(image["source_file"]).stem] = image["label"]
    assert seen == pathology
    merged = load_json(tmp_path / "out" / "coco" / "test.json")  # the class-agnostic files keep it too
    assert {Path(i["source_file"]).stem: i["label"] for i in merged["images"]} == {
        "bus_0001-l": "benign",
        "bus_0006-l": "malignant",
    }
    table = pq.read_table(tmp_path / "out" / "parquet" / "images.parquet").to_pylist()
    assert {Path(r["source_file"]).stem: r["label"] for r in table} == pathology


def test_unknown_pathology_is_an_error_naming_the_csv(tmp_path: Path) -> None:
    rows = [*ROWS[:-1], ("bus_0006-l", "6", "probably bad", 1)]
    make_bus_bra(tmp_path / "raw" / "BUS-BRA", rows=rows)
    result = build(tmp_path / "raw", tmp_path / "out", ["BUS-BRA"])
    assert result.reports["BUS-BRA"].images == 6
    ((file, reason),) = [(e["file"], e["reason"]) for e in result.item_errors]
    assert file == "BUSBRA/Images/bus_0006-l.png" and "5-fold-cv.csv" in reason and "probably bad" in reason
