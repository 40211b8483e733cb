"""The real samples of ../shared/samples, built and compared with their independently computed
truth: every truth instance found with IoU >= 0.95 (0.90 for polygon outlines), nothing extra,
images without annotation neither kept nor reported as errors. Skipped where ../shared is absent."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from helpers import SAMPLES, beyond_coverage, build, decode, load_json

POLYGON_OUTLINES = {"UBPD", "AUL", "EchoNet-Dynamic", "EchoNet-Pediatric"}
BUILDABLE = sorted(p.parent.name for p in SAMPLES.glob("*/truth.json") if (p.parent / "raw").is_dir()) if SAMPLES.is_dir() else []
# dataset problems a partial sample rightly raises, beyond "far fewer images than the registry expects"
EXPECTED_PROBLEMS = {"TN3K": ["expected a folder 'trainval-image' in the raw folder: the trainval part is not built"]}

pytestmark = pytest.mark.skipif(not SAMPLES.is_dir(), reason="../shared/samples is absent")


def _built(out: Path, dataset: str) -> dict[tuple[str, int | None], list[tuple[str, np.ndarray]]]:
    found: dict[tuple[str, int | None], list[tuple[str, np.ndarray]]] = {}
    for path in sorted((out / "coco" / dataset).glob("*.json")):
        doc = load_json(path)
        names = {c["id"]: c["name"] for c in doc["categories"]}
        images = {i["id"]: i for i in doc["images"]}
        for a in doc["annotations"]:
            image = images[a["image_id"]]
            found.setdefault((image["source_file"], image["frame"]), []).append((names[a["category_id"]], decode(a)))
    return found


def _match(truth: list[tuple[str, np.ndarray | int]], got: list[tuple[str, np.ndarray]], threshold: float) -> list[str]:
    """Greedy one-to-one matching of truth instances to built ones of the same category."""
    problems, used = [], set()
    for category, expected in truth:
        best, best_index = 0.0, None
        for index, (name, mask) in enumerate(got):
            if index in used or name != category:
                continue
            if isinstance(expected, np.ndarray):
                score = float((mask & expected).sum() / max((mask | expected).sum(), 1)) if mask.shape == expected.shape else 0.0
            else:  # only the area is known: the ratio of the smaller to the larger area bounds the IoU
                area = int(mask.sum())
                score = min(area, expected) / max(area, expected)
            if score > best:
                best, best_index = score, index
        if best_index is not None:
            used.add(best_index)
        if best < threshold:
            problems.append(f"{category}: best match {best:.3f}")
    if len(got) > len(used):
        problems.append(f"{len(got) - len(used)} extra instances")
    return problems


def _truth(dataset: str) -> tuple[dict[tuple[str, int | None], list], str]:
    data = json.loads((SAMPLES / dataset / "truth.json").read_text())
    truth: dict[tuple[str, int | None], list] = {}
    if isinstance(data["images"], list):  # format A: instances as RLE
        for image in data["images"]:
            truth[(image["source_file"], image.get("frame"))] = [
                (i["category"], mask_utils.decode({"size": i["rle"]["size"], "counts": i["rle"]["counts"].encode()}).astype(bool))
                for i in image["instances"]
            ]
        return truth, "A"
    for source_file, image in data["images"].items():  # format B: areas of the components kept at 16 px
        kept = [(c, a) for c, a in zip(image["categories"], image["component_areas"]) if a >= 16]
        assert len(kept) == image["expected_instances_min_area_16"], source_file
        truth[(source_file, None)] = kept
    return truth, "B"


@pytest.mark.parametrize("dataset", BUILDABLE)
def test_real_sample_matches_its_truth(tmp_path: Path, dataset: str) -> None:
    result = build(SAMPLES / dataset / "raw", tmp_path / "out", [dataset])
    assert result.item_errors == [], result.item_errors
    assert [p["reason"] for p in beyond_coverage(result.problems)] == EXPECTED_PROBLEMS.get(dataset, [])
    truth, form = _truth(dataset)
    found = _built(tmp_path / "out", dataset)
    threshold = 0.90 if dataset in POLYGON_OUTLINES else 0.95
    problems = {key: p for key, instances in truth.items() if (p := _match(instances, found.get(key, []), threshold))}
    assert problems == {}
    unexpected = sorted(set(found) - {key for key, instances in truth.items() if instances})
    assert unexpected == []  # nothing built where the truth has no annotation
    report = result.reports[dataset]
    without = sum(1 for instances in truth.values() if not instances)
    if form == "A":
        assert report.images == len(truth) - without
        assert report.unannotated + report.dropped_without_instances == without


@pytest.mark.skipif(not (SAMPLES / "DDTI").is_dir(), reason="../shared/samples is absent")
def test_ddti_cleaning_removes_only_the_black_strip(tmp_path: Path) -> None:
    """442's nodule runs onto the black strip at the image's left edge and onto its black last
    column: those pixels, and only those, are removed."""
    raw = SAMPLES / "DDTI" / "raw"
    result = build(raw, tmp_path / "out", ["DDTI"])
    report = result.reports["DDTI"]
    assert report.cleaned_instances == 1 and 200 <= report.cleaned_pixels <= 500
    from PIL import Image

    stage = raw / "DDTI" / "2_preprocessed_data" / "stage1"
    original = np.asarray(Image.open(stage / "p_mask" / "442.PNG")) > 127
    pixels = np.asarray(Image.open(stage / "p_image" / "442.PNG"))
    ((_, kept),) = _built(tmp_path / "out", "DDTI")[("2_preprocessed_data/stage1/p_image/442.PNG", None)]
    removed = original & ~kept
    assert not (kept & ~original).any()
    assert int(removed.sum()) == report.cleaned_pixels
    columns = set(np.nonzero(removed)[1].tolist())
    assert columns <= set(range(10)) | {255} and pixels[removed].max() <= 8  # columns 0-9 and the last, near black


@pytest.mark.skipif(not (SAMPLES / "Fast-U-Net").is_dir(), reason="../shared/samples is absent")
def test_fast_u_net_masks_of_both_forms_give_one_filled_instance() -> None:
    from us43d.converters.readers import connected_components, filled_outline, read_binary_mask

    masks = sorted((SAMPLES / "Fast-U-Net" / "masks-only" / "Dataset" / "AC" / "mask").glob("*.png"))
    assert {p.name.startswith("fa_") for p in masks} == {True, False}  # 1-bit fa_ and 8-bit numbered masks
    for path in masks:
        region = filled_outline(read_binary_mask(path, (320, 472)), close_at_border=True)
        parts = [p for p in connected_components(region) if p.sum() >= 16]
        assert len(parts) == 1 and parts[0].sum() > 5000, path.name


@pytest.mark.skipif(not (SAMPLES / "HC18").is_dir(), reason="../shared/samples is absent")
def test_hc18_outlines_cut_by_the_border_are_closed(tmp_path: Path) -> None:
    result = build(SAMPLES / "HC18" / "raw", tmp_path / "out", ["HC18"])
    assert result.item_errors == []
    found = _built(tmp_path / "out", "HC18")
    for stem in ("186_HC", "346_HC", "628_2HC", "787_HC"):
        ((_, head),) = found[(f"training_set/{stem}.png", None)]
        assert head.sum() > 150_000, stem  # a filled head, not the thin ring of about 3,800 px


@pytest.mark.skipif(not (SAMPLES / "BUS-BRA").is_dir(), reason="../shared/samples is absent")
def test_bus_bra_labels_are_the_pathology_of_the_real_csv(tmp_path: Path) -> None:
    import csv

    import pyarrow.parquet as pq

    build(SAMPLES / "BUS-BRA" / "raw", tmp_path / "out", ["BUS-BRA"])
    with open(SAMPLES / "BUS-BRA" / "raw" / "BUS-BRA" / "BUSBRA" / "5-fold-cv.csv", newline="") as handle:
        rows = {row["ID"]: row for row in csv.DictReader(handle)}
    table = pq.read_table(tmp_path / "out" / "parquet" / "images.parquet").to_pylist()
    assert len(table) == 24
    labels = {Path(r["source_file"]).stem: (r["label"], r["split"]) for r in table}
    assert {i: label for i, (label, _) in labels.items()} == {i: rows[i]["Pathology"] for i in labels}
    assert {label for label, _ in labels.values()} == {"benign", "malignant"}
    assert {i for i, (_, split) in labels.items() if split == "test"} == {i for i in labels if rows[i]["kFold"] == "1"}
