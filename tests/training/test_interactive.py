"""Interactive evaluation: the simulated user, the scores it yields, and `us43d eval --clicks`.

The user is tested on synthetic masks whose right clicks are known by construction; the scores
with a stand-in model ("oracle") that answers fixed masks, so Dice and IoU are exact; the command
end to end on the tiny model and the demo corpus.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from typer.testing import CliRunner

import us43d.training.interactive as interactive
from us43d.cli import app
from us43d.errors import Us43dError
from us43d.training import engine
from us43d.training.boundary import boundary_mask, first_boundary_points
from us43d.training.evaluate import centroid, load_predictor
from us43d.training.interactive import (
    NEGATIVE,
    POSITIVE,
    dice_iou,
    evaluate_clicks,
    first_region_click,
    next_region_click,
    parse_clicks,
    score_clicks,
    simulate,
)
from us43d.training.protocol import PROTOCOLS

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), env={"COLUMNS": "250"})


def disc(shape: tuple[int, int], centre: tuple[int, int], radius: float) -> np.ndarray:
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    return (cols - centre[0]) ** 2 + (rows - centre[1]) ** 2 <= radius**2


def inside(mask: np.ndarray, point: np.ndarray) -> bool:
    return bool(mask[int(point[1]), int(point[0])])


# the simulated user


def test_the_first_click_is_the_mask_centre_and_inside_it() -> None:
    assert first_region_click(disc((60, 80), (30, 20), 9)).tolist() == [30, 20]
    # a crescent: its centroid is outside it, the user's first click is inside, away from the edge
    crescent = disc((80, 80), (40, 40), 25) & ~disc((80, 80), (46, 40), 23)
    click = first_region_click(crescent)
    assert not inside(crescent, centroid(crescent)) and inside(crescent, click)
    x, y = click.astype(int)
    assert crescent[y - 2 : y + 3, x - 2 : x + 3].all()  # in the thick part of the crescent, not on its edge
    # the image border is an edge too: a band along the top is clicked in its middle row, not at row 0
    band = np.zeros((40, 40), dtype=bool)
    band[:7, 5:35] = True
    assert first_region_click(band)[1] == 3


def test_the_next_click_goes_to_the_largest_error_region_with_its_label() -> None:
    truth = np.zeros((80, 80), dtype=bool)
    truth[10:50, 10:50] = True
    missed = truth.copy()
    missed[20:31, 20:31] = False  # 121 pixels missed
    missed[60:65, 60:65] = True  # 25 pixels false
    point, label = next_region_click(truth, missed)
    assert label == POSITIVE and point.tolist() == [25, 25]  # the centre of the missed square
    false = truth.copy()
    false[12:15, 12:15] = False  # 9 pixels missed
    false[55:75, 55:75] = True  # 400 pixels false
    point, label = next_region_click(truth, false)
    assert label == NEGATIVE and 55 <= point[0] < 75 and 55 <= point[1] < 75
    assert point.tolist() == [64, 64]  # the first of the four central pixels in row-major order
    # the largest region wins, not the error kind with the most pixels: 3 small missed patches
    # (3 x 36 = 108) against one false region of 64
    several = truth.copy()
    for start in (12, 24, 36):
        several[start : start + 6, 12:18] = False
    several[60:68, 60:68] = True
    assert next_region_click(truth, several)[1] == NEGATIVE
    # a tie goes to the missed region
    tie = truth.copy()
    tie[20:25, 20:25] = False
    tie[60:65, 60:65] = True
    assert next_region_click(truth, tie)[1] == POSITIVE
    assert next_region_click(truth, truth.copy()) is None  # nothing wrong: no click


class Oracle:
    """Stands in for the model: answers `answers[round]` (or the last one) for every instance and
    records what each round was given."""

    def __init__(self, *answers: np.ndarray) -> None:
        self.answers, self.calls = answers, []

    def __call__(self, coords, labels, previous, multimask):
        answer = self.answers[min(len(self.calls), len(self.answers) - 1)]
        count = len(coords)
        logits = torch.full((count, 1, 8, 8), float(len(self.calls)))
        self.calls.append({"coords": coords.copy(), "labels": labels.copy(), "previous": previous, "multimask": multimask})
        return np.stack([answer] * count), logits


def test_each_round_feeds_every_click_and_the_previous_logits() -> None:
    truth = disc((64, 64), (30, 30), 12)
    half = truth.copy()
    half[:, 30:] = False
    oracle = Oracle(half)
    simulate([truth], 4, "region", oracle, [np.random.default_rng(0)], POSITIVE)
    assert [c["coords"].shape for c in oracle.calls] == [(1, k, 2) for k in (1, 2, 3, 4)]
    assert [c["multimask"] for c in oracle.calls] == [True, False, False, False]  # three masks in round 1 only
    assert oracle.calls[0]["previous"] is None
    for round_ in (1, 2, 3):  # each round gets the logits the round before kept
        assert torch.equal(oracle.calls[round_]["previous"], torch.full((1, 1, 8, 8), float(round_ - 1)))
    first = oracle.calls[0]["coords"][0]
    assert first.tolist() == [[30, 30]] and oracle.calls[0]["labels"].tolist() == [[POSITIVE]]
    # the prediction misses the right half: every later click is positive, inside it, and all clicks are kept
    assert oracle.calls[3]["labels"].tolist() == [[POSITIVE] * 4]
    for point in oracle.calls[3]["coords"][0][1:]:
        assert inside(truth & ~half, point)
    np.testing.assert_array_equal(oracle.calls[3]["coords"][0][:3], oracle.calls[2]["coords"][0])


def test_boundary_clicks_lie_on_the_boundary_with_the_boundary_label() -> None:
    truth = disc((70, 90), (40, 35), 20)
    smaller = disc((70, 90), (40, 35), 12)
    oracle = Oracle(smaller)
    simulate([truth], 6, "boundary", oracle, [np.random.default_rng([0, 0, 0])], 7)
    clicks, labels = oracle.calls[-1]["coords"][0], oracle.calls[-1]["labels"][0]
    edge = boundary_mask(truth)
    assert len(clicks) == 6 and all(inside(edge, p) for p in clicks) and labels.tolist() == [7] * 6
    # clicks 1 and 2 are the boundary helper's first two points for the instance's seeded generator
    np.testing.assert_array_equal(clicks[:2], first_boundary_points(truth, np.random.default_rng([0, 0, 0])))
    assert len({tuple(p) for p in clicks}) == 6  # no point is clicked twice
    assert oracle.calls[0]["coords"].shape == (1, 1, 2)  # one point after one click


def test_the_oracle_scores_are_the_known_values(tmp_path: Path) -> None:
    """Truth 20 x 20, prediction its left half: Dice 2*200/600 = 2/3 and IoU 1/2 after every
    click; a prediction right from click 2 on scores 100 and the user stops clicking."""
    truth = np.zeros((40, 50), dtype=bool)
    truth[10:30, 10:30] = True
    half = truth.copy()
    half[:, 20:] = False
    Image.fromarray(np.zeros((40, 50, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    rle = mask_utils.encode(np.asfortranarray(truth.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    annotation = {"image_id": 1, "category_id": 1, "segmentation": rle, "bbox": [10, 10, 20, 20], "area": 400}
    document = {"images": [{"id": 1, "file_name": "a.png"}], "annotations": [annotation, {**annotation, "id": 2}]}
    curve = score_clicks(document, tmp_path, lambda rgb: Oracle(half), 3, "region")
    assert curve.instances == 2 and curve.dice == [66.67] * 3 and curve.iou == [50.0] * 3
    oracle = Oracle(half, truth)
    curve = score_clicks(document, tmp_path, lambda rgb: oracle, 4, "region")
    assert curve.dice == [66.67, 100.0, 100.0, 100.0] and curve.iou == [50.0, 100.0, 100.0, 100.0]
    assert len(oracle.calls) == 2  # both instances in one call per round, none once the mask is right
    assert dice_iou(truth, np.zeros_like(truth)) == (0.0, 0.0)


# the model


def test_the_image_is_embedded_once_for_every_click(demo_corpus: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    predictor = load_predictor(None, "tiny")
    embedded, decoded = [], []
    real_encoder, real_decode = predictor.sam.image_encoder.forward, engine.decode_clicks
    monkeypatch.setattr(predictor.sam.image_encoder, "forward", lambda x: embedded.append(1) or real_encoder(x))
    monkeypatch.setattr(engine, "decode_clicks", lambda *a, **k: decoded.append(a[2].shape) or real_decode(*a, **k))
    curves = evaluate_clicks(predictor, demo_corpus, ["BUS-BRA"], 3, "region", PROTOCOLS["sam"])
    document = json.loads((demo_corpus / "coco" / "BUS-BRA" / "test.json").read_text())
    images = len({a["image_id"] for a in document["annotations"]})
    assert curves["BUS-BRA"].instances == len(document["annotations"]) and len(embedded) == images
    # one decoder call per image and round, every instance of the image in it
    first_round = [shape for shape in decoded if shape[1] == 1]
    assert len(first_round) == images and sum(shape[0] for shape in first_round) == curves["BUS-BRA"].instances
    assert len(decoded) <= 3 * images and {shape[1] for shape in decoded} == {1, 2, 3}
    assert all(0 <= v <= 100 for v in curves["BUS-BRA"].dice + curves["BUS-BRA"].iou)
    again = evaluate_clicks(predictor, demo_corpus, ["BUS-BRA"], 3, "boundary", PROTOCOLS["sam"])
    assert again == evaluate_clicks(predictor, demo_corpus, ["BUS-BRA"], 3, "boundary", PROTOCOLS["sam"])  # seeded


def test_model_clicks_reach_the_prompt_encoder_as_labelled_points(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    predictor = load_predictor(None, "tiny")
    seen = []
    real = predictor.sam.prompt_encoder.forward

    def spying(points, boxes, masks):
        seen.append((points[0].clone(), points[1].clone(), boxes, masks))
        return real(points, boxes, masks)

    monkeypatch.setattr(predictor.sam.prompt_encoder, "forward", spying)
    rgb = np.zeros((100, 200, 3), dtype=np.uint8)
    decide = interactive.model_decide(predictor, rgb, "logits")
    masks, logits = decide(np.array([[[100.0, 50.0], [20.0, 10.0]]]), np.array([[1, 0]]), None, False)
    assert masks.shape == (1, 100, 200) and logits.shape == (1, 1, 32, 32)
    points, labels, boxes, mask_input = seen[0]
    # the model's input frame is 128 x 64 for a 200 x 100 image: coordinates scaled by 0.64
    torch.testing.assert_close(points, torch.tensor([[[64.0, 32.0], [12.8, 6.4]]]))
    assert labels.tolist() == [[1, 0]] and boxes is None and mask_input is None
    downscaled = []  # the previous round's logits become the dense (mask) prompt
    real_down = predictor.sam.prompt_encoder.mask_downscaling.forward
    monkeypatch.setattr(predictor.sam.prompt_encoder.mask_downscaling, "forward", lambda x: downscaled.append(x) or real_down(x))
    decide(np.array([[[100.0, 50.0]]]), np.array([[1]]), logits, True)
    assert len(downscaled) == 1 and torch.equal(downscaled[0], logits)


# the command


def test_eval_clicks_writes_the_table_json_and_plot(demo_corpus: Path, tmp_path: Path) -> None:
    out, plot = tmp_path / "clicks.json", tmp_path / "clicks.png"
    base = ["eval", "--corpus", str(demo_corpus), "--model", "tiny", "--datasets", "BUS-BRA"]
    result = invoke(*base, "--clicks", "1..3", "--json", str(out), "--plot", str(plot))
    assert result.exit_code == 0, result.output
    for words in ("mean Dice (%) after each click", "mean IoU (%) after each click", "interactive evaluation", "largest"):
        assert words in result.output, (words, result.output)
    document = json.loads(out.read_text())
    assert (document["checkpoint"], document["split"], document["max_images"]) == (None, "test", None)
    section = document["interactive"]
    assert (section["mode"], section["clicks"], section["postprocess"], section["boundary_clicks_as"]) == (
        "region",
        3,
        "binary",
        None,
    )
    scores = section["scores"]["BUS-BRA"]
    assert set(scores) == {"instances", "skipped_empty", "dice", "iou"} and len(scores["dice"]) == len(scores["iou"]) == 3
    assert "scores" not in document  # no mAP was measured
    for value in scores["dice"]:
        assert f"{value:.1f}" in result.output
    with Image.open(plot) as image:
        assert image.format == "PNG" and image.size == (1000, 460 + 14)  # one legend line
        colours = {c for _, c in image.convert("RGB").getcolors(1 << 20)}
    assert (31, 119, 180) in colours  # the dataset's line
    result = invoke(*base, "--clicks", "2", "--click-mode", "boundary", "--protocol", "sam", "--json", str(out))
    assert result.exit_code == 0, result.output
    assert "boundary clicks were fed as positive points" in result.output
    section = json.loads(out.read_text())["interactive"]
    assert section["mode"] == "boundary" and section["postprocess"] == "logits" and "positive" in section["boundary_clicks_as"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--clicks", "0"], "--clicks takes N or 1..N"),
        (["--clicks", "21"], "--clicks takes N or 1..N"),
        (["--clicks", "2..5"], "--clicks takes N or 1..N"),
        (["--clicks", "ten"], "--clicks takes N or 1..N"),
        (["--clicks", "3", "--click-mode", "edge"], "--click-mode takes region or boundary"),
        (["--click-mode", "region"], "--click-mode needs --clicks"),
        (["--plot", "x.png"], "--plot needs --clicks"),
        (["--clicks", "3", "--plot", "x.jpg"], "must be the path of a .png file"),
        (["--clicks", "3", "--prompt", "box"], "--prompt belongs to the mAP evaluation"),
        (["--clicks", "3", "--no-refine"], "--refine/--no-refine belongs to the mAP evaluation"),
        (["--clicks", "3", "--per-class"], "--class-agnostic/--per-class belongs to the mAP evaluation"),
    ],
)
def test_eval_refuses_bad_click_options(demo_corpus: Path, options: list[str], message: str) -> None:
    result = invoke("eval", "--corpus", str(demo_corpus), "--model", "tiny", "--datasets", "BUS-BRA", *options)
    assert result.exit_code == 2 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


def test_eval_clicks_never_writes_over_its_inputs(demo_corpus: Path, tmp_path: Path) -> None:
    checkpoint = tmp_path / "model.png"
    checkpoint.write_bytes(b"weights")
    result = invoke(
        "eval", "--corpus", str(demo_corpus), "--checkpoint", str(checkpoint), "--clicks", "2", "--plot", str(checkpoint)
    )
    assert result.exit_code == 2 and "would overwrite the checkpoint" in result.output
    assert checkpoint.read_bytes() == b"weights"


def test_parse_clicks_and_library_refusals(demo_corpus: Path) -> None:
    assert parse_clicks("10") == 10 and parse_clicks("1..10") == 10 and parse_clicks(" 1 .. 4 ") == 4
    predictor = load_predictor(None, "tiny")
    with pytest.raises(Us43dError, match="from 1 to 20"):
        evaluate_clicks(predictor, demo_corpus, ["BUS-BRA"], 0, "region", PROTOCOLS["sam"])
    with pytest.raises(Us43dError, match="--click-mode takes"):
        evaluate_clicks(predictor, demo_corpus, ["BUS-BRA"], 2, "inside", PROTOCOLS["sam"])


def test_the_plot_draws_dice_and_iou_against_clicks() -> None:
    import io

    from us43d.training.plot import PALETTE, click_curves_png

    with Image.open(io.BytesIO(click_curves_png({"A": {"dice": [0.0, 100.0], "iou": [100.0, 0.0]}}))) as image:
        pixels = np.asarray(image.convert("RGB"))

    def coloured(x: int, y: int) -> bool:
        return bool((pixels[y - 2 : y + 3, x - 2 : x + 3] == PALETTE[0]).all(axis=2).any())

    # Dice rises from (click 1, 0) to (click 2, 100) in the left panel; IoU falls in the right one
    assert coloured(265, 222) and coloured(764, 222)
    assert coloured(45, 415) and coloured(485, 30) and coloured(544, 30) and coloured(984, 415)
    assert not coloured(45, 30) and not coloured(544, 415)  # not the other diagonal


def test_boundary_clicks_use_the_models_boundary_embedding_when_it_has_one(
    demo_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.manual_seed(0)
    predictor = load_predictor(None, "tiny")
    assert interactive.boundary_label_of(predictor.sam)[0] == POSITIVE  # SAM, MedSAM, UltraSam: positive points
    engine.add_boundary_embedding(predictor.sam)
    assert interactive.boundary_label_of(predictor.sam)[0] == engine.BOUNDARY_LABEL
    fed = []
    real = engine.decode_clicks
    monkeypatch.setattr(engine, "decode_clicks", lambda *a, **k: fed.append(a[3].clone()) or real(*a, **k))
    evaluate_clicks(predictor, demo_corpus, ["BUS-BRA"], 3, "boundary", PROTOCOLS["sam"], max_images=1)
    assert fed and all((labels == engine.BOUNDARY_LABEL).all() for labels in fed)
    fed.clear()
    evaluate_clicks(predictor, demo_corpus, ["BUS-BRA"], 1, "region", PROTOCOLS["sam"], max_images=1)
    assert fed and all((labels == POSITIVE).all() for labels in fed)  # region clicks keep SAM's labels
    monkeypatch.setattr(engine, "decode_clicks", real)
    checkpoint = tmp_path / "boundary.pth"
    torch.save(predictor.sam.state_dict(), checkpoint)
    out = tmp_path / "boundary.json"
    base = ["eval", "--corpus", str(demo_corpus), "--datasets", "BUS-BRA", "--max-images", "1", "--json", str(out)]
    result = invoke(*base, "--checkpoint", str(checkpoint), "--clicks", "2", "--click-mode", "boundary")
    assert result.exit_code == 0, result.output
    assert "boundary clicks were fed as boundary points (label 4" in result.output
    assert json.loads(out.read_text())["interactive"]["boundary_clicks_as"].startswith("boundary points (label 4")
