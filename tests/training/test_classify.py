"""`us43d classify`: the paper's Table 2 classifier on a checkpoint's encoder, its metrics, the
probe's feature cache, and its refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from training.test_refusals import assert_clean_error, invoke
from us43d.training import classify as classify_module
from us43d.training.class_metrics import macro_scores
from us43d.training.classify import ClassifyConfig, averaged_tokens, classify, lr_factor, prompted_tokens
from us43d.training.sam import build_model, model_config

BUS_BRA = ("benign", "malignant")


@pytest.fixture(scope="module")
def separable_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic BUS-BRA whose pathology shows (shadowing or enhancement behind the lesion)."""
    from helpers import build
    from us43d.demo import make_bus_bra_like

    root = tmp_path_factory.mktemp("separable")
    make_bus_bra_like(root / "raw" / "BUS-BRA", patients=100, seed=5, size=(64, 80))
    build(root / "raw", root / "corpus", ["BUS-BRA"])
    return root / "corpus"


def classifier_of(document: dict) -> dict:
    """The scores without the count of features computed, which a cached run rightly changes."""
    return {k: v for k, v in document["scores"]["BUS-BRA"].items() if k != "features_computed"}


def probe(**changes) -> ClassifyConfig:
    settings = dict(mode="probe", variant="image", iters=200, lr=1e-2, batch_size=8)
    settings.update(changes)
    return ClassifyConfig(**settings)


@pytest.mark.parametrize("classes", [2, 3, 8])
def test_macro_metrics_match_scikit_learn(classes: int) -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(classes)
    names = [f"c{i}" for i in range(classes)]
    cases = [
        (rng.integers(0, classes, 50), rng.integers(0, classes, 50)),
        (np.zeros(10, int), np.zeros(10, int)),  # every other class absent from truth and predictions
        (rng.integers(0, classes, 30), np.full(30, classes - 1)),  # one class always predicted
        (np.arange(classes), np.arange(classes)[::-1]),
    ]
    for truth, predicted in cases:
        ours = macro_scores(truth.tolist(), predicted.tolist(), names)
        p, r, f, _ = metrics.precision_recall_fscore_support(
            truth, predicted, labels=list(range(classes)), average="macro", zero_division=0
        )
        assert (ours.precision, ours.recall, ours.f1) == pytest.approx((p, r, f), abs=1e-12)
        assert ours.accuracy == pytest.approx(metrics.accuracy_score(truth, predicted))


def test_the_schedule_is_the_recipe_at_2000_iterations_and_scales() -> None:
    assert lr_factor(0, 2000) == pytest.approx(0.001)
    assert lr_factor(250, 2000) == pytest.approx(0.001 + 0.999 * 0.5)
    assert lr_factor(500, 2000) == lr_factor(1599, 2000) == 1.0
    assert lr_factor(1600, 2000) == pytest.approx(0.1)
    assert lr_factor(50, 200) == 1.0 and lr_factor(160, 200) == pytest.approx(0.1)


def test_features_are_averaged_encoder_tokens_or_decoder_tokens_that_see_the_box() -> None:
    torch.manual_seed(0)
    sam = build_model(model_config("tiny")).eval()
    images = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        tokens = averaged_tokens(sam.image_encoder, images)
        encoder = sam.image_encoder
        x = encoder.patch_embed(images) + encoder.pos_embed
        for block in encoder.blocks:
            x = block(x)
        assert tokens.shape == (2, 64)  # the encoder's width, not the neck's
        torch.testing.assert_close(tokens, x.mean(dim=(1, 2)))
        boxes = torch.tensor([[10.0, 10.0, 60.0, 50.0], [30.0, 40.0, 100.0, 120.0]])
        prompted = prompted_tokens(sam, images, boxes)
        assert prompted.shape == (2, 32)  # the decoder's width
        moved = prompted_tokens(sam, images, boxes + 8)
        assert not torch.allclose(prompted, moved)
        alone = prompted_tokens(sam, images[1:], boxes[1:])  # each image decoded with its own box only
        torch.testing.assert_close(alone[0], prompted[1], rtol=1e-4, atol=1e-5)


def test_probe_beats_chance_on_a_separable_set_and_reuses_its_features(
    separable_corpus: Path, tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    calls = {"n": 0}
    encode = classify_module._encode

    def counted(*args, **kwargs):
        calls["n"] += 1
        return encode(*args, **kwargs)

    monkeypatch.setattr(classify_module, "_encode", counted)
    first = classify(separable_corpus, run, tiny_checkpoint, ["BUS-BRA"], probe())
    scores = first["scores"]["BUS-BRA"]
    test_count = scores["images"]["test"]
    majority = max(s["support"] for s in scores["per_class"].values()) / test_count
    assert test_count >= 30 and scores["features_computed"] == sum(scores["images"].values())
    # chance: macro F1 0.5 for a coin, below that for always one class
    assert scores["f1"] >= 0.65 and scores["accuracy"] > majority, scores
    assert calls["n"] > 0
    saved = json.loads((run / "scores.json").read_text())
    assert saved["scores"]["BUS-BRA"]["f1"] == scores["f1"] and saved["settings"]["mode"] == "probe"

    calls["n"] = 0
    again = classify(separable_corpus, run, tiny_checkpoint, ["BUS-BRA"], probe())
    assert calls["n"] == 0 and again["scores"]["BUS-BRA"]["features_computed"] == 0
    assert classifier_of(again) == classifier_of(first)  # the same features, seed and schedule: the same classifier

    # a damaged cache file is computed again, not trusted
    victim = next((run / "features").rglob("*.npy"))
    victim.write_bytes(b"not an array")
    third = classify(separable_corpus, run, tiny_checkpoint, ["BUS-BRA"], probe())
    assert third["scores"]["BUS-BRA"]["features_computed"] == 1
    assert np.load(victim, allow_pickle=False).shape == (64,)


def test_the_cache_is_keyed_by_the_checkpoint_and_the_variant(demo_corpus: Path, tiny_checkpoint: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    images = classify(demo_corpus, run, tiny_checkpoint, ["BUS-BRA"], probe(iters=2))["scores"]["BUS-BRA"]["images"]
    total = sum(images.values())
    other = tmp_path / "other.pth"
    torch.manual_seed(1)
    torch.save(build_model(model_config("tiny")).state_dict(), other)
    assert classify(demo_corpus, run, other, ["BUS-BRA"], probe(iters=2))["scores"]["BUS-BRA"]["features_computed"] == total
    prompted = classify(demo_corpus, run, tiny_checkpoint, ["BUS-BRA"], probe(iters=2, variant="prompted"))
    assert prompted["scores"]["BUS-BRA"]["features_computed"] == total
    assert classify(demo_corpus, run, other, ["BUS-BRA"], probe(iters=2))["scores"]["BUS-BRA"]["features_computed"] == 0
    assert len(list((run / "features").iterdir())) == 3


def test_finetuning_trains_the_encoder_in_both_variants(demo_corpus: Path, tiny_checkpoint: Path, tmp_path: Path) -> None:
    start = torch.load(tiny_checkpoint, weights_only=True)
    for variant in ("image", "prompted"):
        run = tmp_path / variant
        config = ClassifyConfig(mode="finetune", variant=variant, iters=2, batch_size=2, lr=1e-3)
        document = classify(demo_corpus, run, tiny_checkpoint, ["BUS-BRA"], config)
        scores = document["scores"]["BUS-BRA"]
        assert 0 <= scores["f1"] <= 1 and scores["classes"] == list(BUS_BRA)
        assert not (run / "features").exists()  # only the probe caches
        weights = torch.load(run / "BUS-BRA.pt", weights_only=True)
        trained = weights["features.sam.image_encoder.blocks.0.attn.qkv.weight"]
        assert not torch.equal(trained, start["image_encoder.blocks.0.attn.qkv.weight"])
        assert weights["head.weight"].shape == ((2, 64) if variant == "image" else (2, 32))


def test_cli_prints_table_2_layout_and_writes_json(demo_corpus: Path, tiny_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "table.json"
    result = invoke(
        "classify",
        *("--checkpoint", str(tiny_checkpoint), "--corpus", str(demo_corpus), "--out", str(tmp_path / "run")),
        *("--datasets", "bus-bra", "--mode", "probe", "--iters", "20", "--lr", "0.01", "--json", str(out)),
    )
    assert result.exit_code == 0, result.output
    assert "BUS-BRA P" in result.output and "BUS-BRA F1" in result.output and "tiny.pth" in result.output
    document = json.loads(out.read_text())
    assert set(document["scores"]["BUS-BRA"]) >= {"precision", "recall", "f1", "per_class"}
    assert document == json.loads((tmp_path / "run" / "scores.json").read_text())


def test_refusals_are_one_line_and_exit_2(demo_corpus: Path, tiny_checkpoint: Path, tmp_path: Path) -> None:
    base = ["classify", "--checkpoint", str(tiny_checkpoint), "--corpus", str(demo_corpus), "--mode", "probe"]
    run = ["--out", str(tmp_path / "run")]
    assert_clean_error(invoke(*base, *run, "--datasets", "NoSuchSet"), "unknown dataset 'NoSuchSet'")
    assert_clean_error(invoke(*base, *run, "--datasets", "../../BUS-BRA"), "unknown dataset '../../BUS-BRA'")
    assert_clean_error(invoke(*base, *run, "--datasets", "STU-Hospital"), "STU-Hospital has no image-level classes")
    assert_clean_error(invoke(*base, *run, "--datasets", "MMOTU-2D"), "MMOTU-2D is not in the corpus", "build it first")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00not a checkpoint")
    result = invoke("classify", "--checkpoint", str(garbage), "--corpus", str(demo_corpus), *run, "--datasets", "BUS-BRA")
    assert_clean_error(result, str(garbage))
    assert not (tmp_path / "run").exists()  # nothing written for a run that could not start
    assert_clean_error(invoke(*base, *run, "--datasets", "BUS-BRA", "--mode", "linear"), "unknown mode 'linear'")
    assert_clean_error(invoke(*base, *run, "--datasets", "BUS-BRA", "--iters", "0"), "--iters")
    # a folder of the user's, or a training run, is never written into
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    assert_clean_error(invoke(*base, "--out", str(mine), "--datasets", "BUS-BRA"), "not made by `us43d classify`")
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    result = invoke(*base, *run, "--datasets", "BUS-BRA", "--json", str(tiny_checkpoint))
    assert_clean_error(result, "would overwrite the checkpoint")


def test_a_corpus_built_before_labels_is_refused(demo_corpus: Path, tiny_checkpoint: Path, tmp_path: Path) -> None:
    old = tmp_path / "old"
    shutil.copytree(demo_corpus, old)
    state = old / ".state" / "BUS-BRA.json"
    data = json.loads(state.read_text())
    data["version"] = 4
    state.write_text(json.dumps(data))
    result = invoke(
        *("classify", "--checkpoint", str(tiny_checkpoint), "--corpus", str(old)),
        *("--out", str(tmp_path / "r"), "--datasets", "BUS-BRA"),
    )
    assert_clean_error(result, "another version of us43d", "rebuild BUS-BRA")


def test_unlabelled_images_are_left_out_and_a_label_outside_the_classes_names_the_file(
    demo_corpus: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    corpus = tmp_path / "corpus"
    shutil.copytree(demo_corpus, corpus)
    path = corpus / "coco" / "BUS-BRA" / "train.json"
    document = json.loads(path.read_text())
    document["images"][0]["label"] = None
    path.write_text(json.dumps(document))
    config = probe(iters=2)
    result = classify(corpus, tmp_path / "run", tiny_checkpoint, ["BUS-BRA"], config)
    assert result["scores"]["BUS-BRA"]["unlabelled_left_out"]["train"] == 1
    document["images"][0]["label"] = "cancer"
    path.write_text(json.dumps(document))
    result = invoke(
        "classify",
        "--checkpoint",
        str(tiny_checkpoint),
        "--corpus",
        str(corpus),
        "--out",
        str(tmp_path / "run"),
        "--datasets",
        "BUS-BRA",
    )
    assert_clean_error(result, str(path), "'cancer'")
