"""The evaluation protocol: the authors' Table 1 measurement by default, SAM's as an option.

Model outputs are replaced by a fake decoder where the test is about what evaluation does with
them (which passes run, what the second pass is fed, how masks are resized and scored), so the
numbers below are exact and do not depend on a trained model.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from typer.testing import CliRunner

import us43d.training.evaluate as evaluation
from us43d.cli import app
from us43d.errors import CorpusError, Us43dError
from us43d.training import engine
from us43d.training.data import resized_shape
from us43d.training.evaluate import (
    Predictor,
    coco_map,
    evaluate,
    largest_instances,
    load_predictor,
    mask_box,
    merge_categories,
    to_original,
)
from us43d.training.protocol import PROTOCOLS, resolve_protocol

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), env={"COLUMNS": "250"})


class FakeDecoder:
    """Stands in for `engine.decode`: a fixed square for single-mask passes, the prompt's box
    filled for multimask passes; records what each call was given."""

    def __init__(self, low: int = 32, square: tuple[slice, slice] = (slice(8, 16), slice(10, 20))) -> None:
        self.low, self.square, self.calls = low, square, []

    def __call__(self, sam, embedding, points, boxes, is_box, multimask, mask_input=None):
        count, outputs = points.shape[0], 3 if multimask else 1
        logits = torch.full((count, outputs, self.low, self.low), -4.0)
        if multimask:
            centres = (torch.arange(self.low) + 0.5) * 4  # low-res pixel centres in the 4x input frame
            for i in range(count):
                x0, y0, x1, y1 = boxes[i].tolist() if is_box[i] else (*(points[i] - 12).tolist(), *(points[i] + 12).tolist())
                inside = ((centres[:, None] >= y0) & (centres[:, None] < y1)) & ((centres[None] >= x0) & (centres[None] < x1))
                logits[i, :, inside] = 4.0
        else:
            logits[:, :, self.square[0], self.square[1]] = 4.0
        ious = torch.tensor([0.2, 0.9, 0.5][:outputs]).repeat(count, 1) if multimask else torch.full((count, 1), 0.7)
        self.calls.append(
            {
                "multimask": multimask,
                "is_box": is_box.clone(),
                "boxes": boxes.clone(),
                "mask_input": None if mask_input is None else mask_input.clone(),
                "logits": logits.clone(),
            }
        )
        return logits, ious


@pytest.fixture
def fake_decoder(monkeypatch: pytest.MonkeyPatch) -> FakeDecoder:
    fake = FakeDecoder()
    monkeypatch.setattr(engine, "decode", fake)
    return fake


@pytest.fixture(scope="module")
def tiny_predictor() -> Predictor:
    torch.manual_seed(0)
    return load_predictor(None, "tiny")


# item 4: refinement on by default, and what its second pass gets


def test_refinement_turns_a_point_into_the_box_of_the_first_mask(fake_decoder: FakeDecoder) -> None:
    predictor = Predictor(sam=None, image_size=128, device=torch.device("cpu"))
    original = (200, 150)
    resized = resized_shape(*original, 128)  # (128, 96)
    points = np.array([[60.0, 70.0]])
    masks, scores = predictor.masks(None, resized, original, points, np.zeros((0, 4)), False, True, "binary")
    first, second = fake_decoder.calls
    assert first["multimask"] is False and not first["is_box"].any()
    assert second["multimask"] is True and second["is_box"].all()
    torch.testing.assert_close(second["mask_input"], first["logits"])  # pass 1's raw logits as mask prompt
    # the square covers low-res rows 8..15 and columns 10..19; binarised and upsampled 4x it spans
    # rows 30..65 and columns 38..81 of the input frame (2 pixels wider on each side), exclusive
    # edges 66 and 82; segment_anything's encoder adds 0.5, so the box fed is 0.5 less (up to a
    # pixel moves in the round trip through the original size)
    expected = np.array([38.0, 30.0, 82.0, 66.0]) - 0.5
    np.testing.assert_allclose(second["boxes"][0].numpy(), expected, atol=1.0)
    # exactly: the box of the first mask after post-processing at the original size, scaled
    first_mask = to_original(first["logits"][:, 0], 128, resized, original, "binary")[0]
    scale = np.array([resized[1] / original[1], resized[0] / original[0]] * 2)
    np.testing.assert_allclose(second["boxes"][0].numpy(), mask_box(first_mask) * scale - 0.5, rtol=0, atol=1e-4)
    assert masks.shape == (1, *original) and scores.tolist() == pytest.approx([0.9])


def test_refinement_keeps_a_box_prompt(fake_decoder: FakeDecoder) -> None:
    predictor = Predictor(sam=None, image_size=128, device=torch.device("cpu"))
    original = (200, 150)
    resized = resized_shape(*original, 128)
    box = np.array([[30.0, 40.0, 90.0, 120.0]])
    predictor.masks(None, resized, original, np.zeros((0, 2)), box, True, True, "binary")
    first, second = fake_decoder.calls
    assert first["multimask"] is False and second["multimask"] is True and second["mask_input"] is not None
    scale = np.array([resized[1] / original[1], resized[0] / original[0]] * 2)
    np.testing.assert_allclose(second["boxes"][0].numpy(), box[0] * scale, rtol=1e-6)


def test_evaluation_follows_the_authors_by_default_and_sam_on_request(
    tiny_predictor: Predictor, demo_corpus: Path, fake_decoder: FakeDecoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []
    real = evaluation.to_original

    def spying(low_res, image_size, resized, original, postprocess):
        seen.append(postprocess)
        return real(low_res, image_size, resized, original, postprocess)

    monkeypatch.setattr(evaluation, "to_original", spying)
    evaluate(tiny_predictor, demo_corpus, ["BUS-BRA"], ["point"])
    images = len(json.loads((demo_corpus / "coco" / "BUS-BRA" / "test.json").read_text())["images"])
    assert [c["multimask"] for c in fake_decoder.calls] == [False, True] * images
    assert set(seen) == {"binary"}
    fake_decoder.calls.clear(), seen.clear()
    evaluate(tiny_predictor, demo_corpus, ["BUS-BRA"], ["point"], protocol=PROTOCOLS["sam"])
    assert [c["multimask"] for c in fake_decoder.calls] == [True] * images
    assert set(seen) == {"logits"}
    fake_decoder.calls.clear()
    evaluate(tiny_predictor, demo_corpus, ["BUS-BRA"], ["point"], False)  # the old positional `refine` still works
    assert [c["multimask"] for c in fake_decoder.calls] == [True] * images


def test_protocol_settings_override_the_preset_and_say_so() -> None:
    authors = resolve_protocol()
    assert (authors.refine, authors.postprocess, authors.class_agnostic, authors.mmotu_largest) == (True, "binary", True, True)
    assert authors.changed == ()
    sam = resolve_protocol("sam")
    assert (sam.refine, sam.postprocess, sam.class_agnostic, sam.mmotu_largest) == (False, "logits", True, False)
    mixed = resolve_protocol("authors", refine=False, postprocess="binary", class_agnostic=False)
    assert mixed.changed == ("refine", "class_agnostic")  # binary is the preset's: not a change
    assert mixed.as_dict()["changed"] == ["refine", "class_agnostic"]
    assert "changed: refine, class_agnostic" in dict(mixed.describe("test"))["protocol"]
    with pytest.raises(Us43dError, match="unknown protocol 'paper'"):
        resolve_protocol("paper")
    with pytest.raises(Us43dError, match="unknown post-processing 'soft'"):
        resolve_protocol(postprocess="soft")


# item 5: class-agnostic scoring


def _rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def _square(top: int, left: int, side: int, shape=(64, 64)) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[top : top + side, left : left + side] = True
    return mask


def _two_class_file() -> tuple[dict, list[dict]]:
    """Two images, one instance each, of two categories; the category-2 instance is missed by a
    prediction that outranks the right one."""
    first, second = _square(5, 5, 20), _square(30, 30, 20)
    truth = {
        "images": [
            {"id": 1, "file_name": "a.png", "height": 64, "width": 64},
            {"id": 2, "file_name": "b.png", "height": 64, "width": 64},
        ],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 1,
                "segmentation": _rle(first),
                "area": 400,
                "bbox": [5, 5, 20, 20],
                "iscrowd": 0,
            },
            {
                "id": 2,
                "image_id": 2,
                "category_id": 2,
                "segmentation": _rle(second),
                "area": 400,
                "bbox": [30, 30, 20, 20],
                "iscrowd": 0,
            },
        ],
        "categories": [{"id": 1, "name": "benign"}, {"id": 2, "name": "malignant"}],
    }
    predictions = [
        {"image_id": 1, "category_id": 1, "segmentation": _rle(first), "score": 0.2},
        {"image_id": 2, "category_id": 2, "segmentation": _rle(_square(0, 0, 10)), "score": 0.9},
    ]
    return truth, predictions


def test_identical_predictions_score_class_agnostic_by_default() -> None:
    truth, predictions = _two_class_file()
    # per class: 100 for benign, 0 for malignant; pooled: the miss ranks first, so recall 0.5 at
    # precision 0.5, which is 0.5 x 51/101 of the 101-point interpolated curve
    assert coco_map(truth, predictions, class_agnostic=False) == {"mAP": 50.0, "mAP50": 50.0}
    pooled = coco_map(truth, predictions)
    assert pooled == {"mAP": 25.25, "mAP50": 25.25}
    merged = [{**p, "category_id": 1} for p in predictions]
    assert coco_map(merge_categories(truth), merged, class_agnostic=False) == pooled  # the class-agnostic file's number
    assert truth["categories"][1]["name"] == "malignant" and truth["annotations"][1]["category_id"] == 2  # input untouched


def test_one_category_scores_the_same_either_way() -> None:
    truth, predictions = _two_class_file()
    single = merge_categories(truth)
    merged = [{**p, "category_id": 1} for p in predictions]
    assert coco_map(single, merged, class_agnostic=False) == coco_map(single, merged, class_agnostic=True)


def test_evaluate_scores_class_agnostic_unless_asked(
    tiny_predictor: Predictor, demo_corpus: Path, fake_decoder: FakeDecoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    flags: list[object] = []
    real = evaluation.coco_map

    def spying(ground_truth, predictions, class_agnostic="not given"):
        flags.append(class_agnostic)
        return real(ground_truth, predictions, class_agnostic is True)

    monkeypatch.setattr(evaluation, "coco_map", spying)
    evaluate(tiny_predictor, demo_corpus, ["BUS-BRA"], ["box"])
    evaluate(tiny_predictor, demo_corpus, ["BUS-BRA"], ["box"], protocol=resolve_protocol(class_agnostic=False))
    assert flags == [True, False]


# item 6: post-processing


def _disc_logits(radius: float, centre: tuple[float, float], original: tuple[int, int], size: int = 1024) -> torch.Tensor:
    """Signed distance to a disc of `radius` original pixels, sampled at the low-res pixel centres."""
    scale = size / max(original)
    centres = (np.arange(size // 4) + 0.5) * 4 / scale  # low-res pixel centres in original pixels
    xs, ys = np.meshgrid(centres, centres)
    return torch.tensor(radius - np.hypot(xs - centre[0], ys - centre[1]), dtype=torch.float32)[None]


def test_binary_post_processing_enlarges_a_small_mask_by_45_percent() -> None:
    original = (533, 958)
    resized = resized_shape(*original, 1024)
    logits = _disc_logits(15, (400.0, 250.0), original)
    sam_area = int(to_original(logits, 1024, resized, original, "logits")[0].sum())
    authors_area = int(to_original(logits, 1024, resized, original, "binary")[0].sum())
    assert abs(sam_area - np.pi * 15**2) < 0.02 * np.pi * 15**2  # SAM's keeps the disc's area
    assert 1.42 < authors_area / sam_area < 1.49, (sam_area, authors_area)  # +45 %
    big = _disc_logits(100, (400.0, 250.0), original)
    ratio = (
        to_original(big, 1024, resized, original, "binary")[0].sum()
        / to_original(big, 1024, resized, original, "logits")[0].sum()
    )
    assert 1.03 < ratio < 1.09  # the same two pixels matter less on a large mask


def test_binary_post_processing_adds_two_pixels_each_side_at_1024() -> None:
    logits = torch.full((1, 256, 256), -3.0)
    logits[0, 100:110, 40:60] = 3.0  # low-res rows 100..109, columns 40..59
    sam = to_original(logits, 1024, (1024, 1024), (1024, 1024), "logits")[0]
    authors = to_original(logits, 1024, (1024, 1024), (1024, 1024), "binary")[0]
    assert mask_box(sam).tolist() == [160, 400, 240, 440]
    assert mask_box(authors).tolist() == [158, 398, 242, 442]
    assert authors.sum() == 84 * 44  # a full rectangle
    assert 80 * 40 - 4 <= sam.sum() <= 80 * 40  # the bilinear zero crossing may cut the four corner pixels
    with pytest.raises(Us43dError, match="unknown post-processing"):
        to_original(logits, 1024, (1024, 1024), (1024, 1024), "soft")


# item 7: MMOTU-2D's test ground truth


def test_largest_instances_keeps_those_within_5_percent_of_the_largest() -> None:
    truth = {
        "images": [{"id": 1}, {"id": 2}],
        "annotations": [
            {"id": 1, "image_id": 1, "area": 1000},
            {"id": 2, "image_id": 1, "area": 960},
            {"id": 3, "image_id": 1, "area": 949},
            {"id": 4, "image_id": 2, "area": 16},
        ],
        "categories": [],
    }
    assert [a["id"] for a in largest_instances(truth)["annotations"]] == [1, 2, 4]
    assert len(truth["annotations"]) == 4


def _mmotu_corpus(root: Path) -> Path:
    """MMOTU-2D test and val files with a large and a small instance in every image."""
    corpus = root / "corpus"
    documents = {}
    for split in ("test", "val"):
        images, annotations = [], []
        for index in range(2):
            name = f"MMOTU-2D/{split}_{index}.png"
            path = corpus / "images" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((90, 120, 3), 60 + 40 * index, np.uint8)).save(path)
            image_id = len(images) + (10 if split == "val" else 0)
            images.append({"id": image_id, "file_name": name, "height": 90, "width": 120})
            for number, (top, left, side) in enumerate(((10, 10, 40), (60, 80, 8))):
                mask = _square(top, left, side, (90, 120))
                annotations.append(
                    {
                        "id": 100 * image_id + number,
                        "image_id": image_id,
                        "category_id": 1 + number,
                        "segmentation": _rle(mask),
                        "area": int(mask.sum()),
                        "bbox": [left, top, side, side],
                        "iscrowd": 0,
                    }
                )
        documents[split] = {
            "images": images,
            "annotations": annotations,
            "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
        }
        (corpus / "coco" / "MMOTU-2D").mkdir(parents=True, exist_ok=True)
        (corpus / "coco" / "MMOTU-2D" / f"{split}.json").write_text(json.dumps(documents[split]))
    return corpus


def test_mmotu_test_ground_truth_follows_the_protocol(
    tiny_predictor: Predictor, tmp_path: Path, fake_decoder: FakeDecoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus = _mmotu_corpus(tmp_path)
    on_disk = (corpus / "coco" / "MMOTU-2D" / "test.json").read_bytes()
    scored: list[tuple[int, int]] = []
    real = evaluation.coco_map

    def spying(ground_truth, predictions, class_agnostic=True):
        scored.append((len(ground_truth["annotations"]), len(predictions)))
        return real(ground_truth, predictions, class_agnostic)

    monkeypatch.setattr(evaluation, "coco_map", spying)
    evaluate(tiny_predictor, corpus, ["MMOTU-2D"], ["box"])
    assert scored == [(2, 2)]  # one instance per image, one prompt per instance
    scored.clear()
    evaluate(tiny_predictor, corpus, ["MMOTU-2D"], ["box"], protocol=PROTOCOLS["sam"])
    assert scored == [(4, 4)]
    scored.clear()
    evaluate(tiny_predictor, corpus, ["MMOTU-2D"], ["box"], split="val")  # the authors filtered their test file only
    assert scored == [(4, 4)]
    assert (corpus / "coco" / "MMOTU-2D" / "test.json").read_bytes() == on_disk


# item 14 and the command line


def test_eval_prints_and_writes_the_protocol(demo_corpus: Path, tmp_path: Path, fake_decoder: FakeDecoder) -> None:
    out = tmp_path / "scores.json"
    base = ["eval", "--corpus", str(demo_corpus), "--model", "tiny", "--datasets", "BUS-BRA"]
    result = invoke(*base, "--json", str(out))
    assert result.exit_code == 0, result.output
    for words in (
        "evaluation protocol",
        "authors",
        "refinement",
        "on: pass 1",
        "binary (authors)",
        "class-agnostic",
        "MMOTU-2D test",
        "largest instance per image",
        "centroid",
    ):
        assert words in result.output, (words, result.output)
    document = json.loads(out.read_text())
    assert document["split"] == "test" and document["checkpoint"] is None and set(document["scores"]) == {"BUS-BRA"}
    protocol = document["protocol"]
    assert {
        k: protocol[k] for k in ("preset", "refine", "postprocess", "class_agnostic", "mmotu_2d_largest_only", "changed")
    } == {
        "preset": "authors",
        "refine": True,
        "postprocess": "binary",
        "class_agnostic": True,
        "mmotu_2d_largest_only": True,
        "changed": [],
    }
    assert set(protocol["prompt_rule"]) == {"point", "box"}
    other = tmp_path / "sam.json"
    result = invoke(*base, "--protocol", "sam", "--per-class", "--json", str(other))
    assert result.exit_code == 0, result.output
    assert "logits (SAM)" in result.output and "off: one pass" in result.output and "per class" in result.output
    protocol = json.loads(other.read_text())["protocol"]
    assert (protocol["preset"], protocol["refine"], protocol["postprocess"], protocol["class_agnostic"]) == (
        "sam",
        False,
        "logits",
        False,
    )
    assert protocol["changed"] == ["class_agnostic"]


def test_eval_on_the_val_split_of_every_dataset(
    demo_corpus: Path, tmp_path: Path, fake_decoder: FakeDecoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus = tmp_path / "corpus"
    shutil.copytree(demo_corpus, corpus)
    (corpus / "coco" / "BUSI").mkdir()
    shutil.copy(corpus / "coco" / "BUS-BRA" / "val.json", corpus / "coco" / "BUSI" / "val.json")
    (corpus / "coco" / "HC18").mkdir()
    shutil.copy(corpus / "coco" / "BUS-BRA" / "test.json", corpus / "coco" / "HC18" / "test.json")  # no val: left out
    read: list[Path] = []
    real = evaluation.read_ground_truth
    monkeypatch.setattr(evaluation, "read_ground_truth", lambda path: read.append(path) or real(path))
    out = tmp_path / "val.json"
    result = invoke("eval", "--corpus", str(corpus), "--model", "tiny", "--split", "val", "--datasets", "all", "--json", str(out))
    assert result.exit_code == 0, result.output
    assert sorted(read) == [corpus / "coco" / "BUS-BRA" / "val.json", corpus / "coco" / "BUSI" / "val.json"]
    document = json.loads(out.read_text())
    assert document["split"] == "val" and list(document["scores"]) == ["BUS-BRA", "BUSI"]
    assert document["scores"]["BUS-BRA"] == document["scores"]["BUSI"]  # the same file gives the same score
    assert "val split" in result.output and "BUSI" in result.output and "HC18" not in result.output
    assert "on the test split only (this is val" in result.output


def test_eval_refuses_a_split_it_cannot_score(demo_corpus: Path, tmp_path: Path) -> None:
    base = ["eval", "--corpus", str(demo_corpus), "--model", "tiny"]
    result = invoke(*base, "--split", "dev")
    assert result.exit_code == 2 and "--split takes train, val or test" in result.output
    result = invoke(*base, "--protocol", "paper")
    assert result.exit_code == 2 and "unknown protocol 'paper'" in result.output
    result = invoke(*base, "--postprocess", "soft")
    assert result.exit_code == 2 and "unknown post-processing 'soft'" in result.output
    empty = tmp_path / "empty"
    (empty / "coco").mkdir(parents=True)
    result = invoke("eval", "--corpus", str(empty), "--model", "tiny", "--split", "val", "--datasets", "all")
    assert result.exit_code == 2 and "no dataset with a val split" in result.output
    result = invoke(*base, "--datasets", "BUS-BRA", "--split", "val", "--protocol", "sam", "--max-images", "0")
    assert result.exit_code == 2


def test_a_damaged_coco_file_is_named(tiny_predictor: Predictor, tmp_path: Path) -> None:
    corpus = _mmotu_corpus(tmp_path)
    path = corpus / "coco" / "MMOTU-2D" / "test.json"
    path.write_text("{not json")
    with pytest.raises(CorpusError, match="cannot read .*test.json"):
        evaluate(tiny_predictor, corpus, ["MMOTU-2D"])
    path.write_text(json.dumps({"images": [], "annotations": [{"id": 1, "image_id": 1}], "categories": []}))
    with pytest.raises(CorpusError, match="test.json is not a usable COCO file: an annotation lacks"):
        evaluate(tiny_predictor, corpus, ["MMOTU-2D"])


def test_max_images_scores_a_fixed_subset(
    tiny_predictor: Predictor, demo_corpus: Path, fake_decoder: FakeDecoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[list[int]] = []
    real = evaluation.predict_dataset

    def spying(ground_truth, *args, **kwargs):
        seen.append([image["id"] for image in ground_truth["images"]])
        return real(ground_truth, *args, **kwargs)

    monkeypatch.setattr(evaluation, "predict_dataset", spying)
    evaluate(tiny_predictor, demo_corpus, ["BUS-BRA"], ["box"], max_images=2)
    evaluate(tiny_predictor, demo_corpus, ["BUS-BRA"], ["box"], max_images=2)
    first_two = [image["id"] for image in json.loads((demo_corpus / "coco" / "BUS-BRA" / "test.json").read_text())["images"][:2]]
    assert seen == [first_two, first_two]
    with pytest.raises(Us43dError, match="max_images"):
        evaluate(tiny_predictor, demo_corpus, ["BUS-BRA"], ["box"], max_images=0)
