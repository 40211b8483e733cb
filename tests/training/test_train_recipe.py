"""The recipe on any hardware and length: the global batch through accumulation, a schedule
scaled to --iters, validation with the best checkpoint kept, memory and precision settings."""

from __future__ import annotations

import copy
import io
import json
import sys
from pathlib import Path

import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from training.conftest import tiny_config
from us43d.cli import app
from us43d.errors import Us43dError
from us43d.training.data import InfiniteBatchSampler
from us43d.training.sam import build_model, model_config
from us43d.training.train import TrainConfig, lr_factor, resume, step_losses, train

runner = CliRunner()
TINY = ["--model", "tiny", "--workers", "0", "--no-refine", "--init", "none"]


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0 if atol == 0 else 1e-5, atol=atol, msg=key)


def synthetic_batch(images: int, instances: int = 2, seed: int = 0) -> dict:
    """A batch in the collate layout for the tiny model (128 px, 32 x 32 logits); every image
    has the same number of instances, so the mean over the batch is the mean of the halves."""
    g = torch.Generator().manual_seed(seed)
    return {
        "image": torch.randn(images, 3, 128, 128, generator=g),
        "targets": [(torch.rand(instances, 32, 32, generator=g) > 0.6).float() for _ in range(images)],
        "points": [torch.rand(instances, 2, generator=g) * 120 for _ in range(images)],
        "boxes": [torch.tensor([[10.0, 12.0, 90.0, 80.0]] * instances) for _ in range(images)],
        "is_box": [torch.tensor([True, False] * (instances // 2)) for _ in range(images)],
    }


def split(batch: dict, parts: int) -> list[dict]:
    size = len(batch["image"]) // parts
    return [{k: v[i * size : (i + 1) * size] for k, v in batch.items()} for i in range(parts)]


def tiny_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    sam = build_model(model_config("tiny"))
    with torch.no_grad():  # rel-pos tables and some embeddings start at zero: make every path matter
        for parameter in sam.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.02)
    return sam.train()


def grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


# ---- 9: the global batch ------------------------------------------------------------------


def test_accumulated_gradient_equals_one_big_batch() -> None:
    from us43d.training.train import TrainStep, accumulate_gradients

    config = TrainConfig(model="tiny")
    big, small = tiny_model(), tiny_model()
    batch = synthetic_batch(4)
    whole = accumulate_gradients(TrainStep(big, config, torch.device("cpu")), [batch], 1, "cpu", None)
    halves = accumulate_gradients(TrainStep(small, config, torch.device("cpu")), split(batch, 2), 2, "cpu", None)
    torch.testing.assert_close(halves.total, whole.total, rtol=1e-5, atol=1e-6)
    expected, got = grads(big), grads(small)
    assert expected.keys() == got.keys() and len(expected) > 100
    for name in expected:
        scale = expected[name].abs().max()
        assert (got[name] - expected[name]).abs().max() <= 1e-4 * scale + 1e-7, name
    # and the same weights after one optimiser step of the recipe
    for model in (big, small):
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4).step()
    assert_same_weights(small.state_dict(), big.state_dict(), atol=1e-6)


def test_one_process_accumulating_reads_the_samples_of_several_gpus() -> None:
    def first(sampler: InfiniteBatchSampler, count: int) -> list:
        stream = iter(sampler)
        return [next(stream) for _ in range(count)]

    # 4 steps of 8 on one process = the 4 ranks of 8 of the recipe, iteration after iteration
    single = first(InfiniteBatchSampler(100, 8, seed=5, accumulation=4, start_step=3), 8)
    ranks = [first(InfiniteBatchSampler(100, 8, seed=5, rank=r, world=4, start_step=3), 2) for r in range(4)]
    for iteration in range(2):
        assert single[4 * iteration : 4 * iteration + 4] == [ranks[r][iteration] for r in range(4)]
    # without accumulation the stream is the one earlier runs drew (checkpoints stay valid)
    assert first(InfiniteBatchSampler(100, 2, seed=5, accumulation=1), 1) == first(InfiniteBatchSampler(100, 2, seed=5), 1)


def test_batch_plan_reaches_the_recipe_or_refuses() -> None:
    from us43d.training.train import batch_plan

    recipe = TrainConfig()
    assert (batch_plan(recipe, 1).batch_size, batch_plan(recipe, 1).accumulation) == (8, 4)
    assert batch_plan(recipe, 2).accumulation == 2 and batch_plan(recipe, 4).accumulation == 1
    assert batch_plan(TrainConfig(batch_size=2), 1).accumulation == 16
    assert batch_plan(TrainConfig(batch_size=8, accumulation=2), 2).per_iteration == 32
    with pytest.raises(Us43dError, match=r"--batch-size 8 x --accumulation 2 x 1 process = 16 .* global batch of 32"):
        batch_plan(TrainConfig(batch_size=8, accumulation=2), 1)
    with pytest.raises(Us43dError, match="not a whole number of steps of --batch-size 6"):
        batch_plan(TrainConfig(batch_size=6), 1)
    with pytest.raises(Us43dError, match="not a whole number of steps"):
        batch_plan(TrainConfig(batch_size=8), 8)  # 64 images per step exceed the 32 of an iteration
    with pytest.raises(Us43dError, match="cannot be shared evenly by 3 processes"):
        batch_plan(TrainConfig(batch_size=8), 3)
    assert batch_plan(TrainConfig(batch_size=8, global_batch=None), 3).per_iteration == 24  # no target: as given


def test_accumulated_run_gives_the_weights_of_one_big_batch(demo_corpus: Path, tmp_path: Path) -> None:
    # the demo corpus has one instance per image, so the mean of the halves is the mean of the whole;
    # segment_anything's decoder has no dropout (the authors' draws other masks for other batch shapes)
    train(demo_corpus, tmp_path / "big", tiny_config(iters=2, batch_size=4, global_batch=4, decoder="sam"))
    train(demo_corpus, tmp_path / "acc", tiny_config(iters=2, batch_size=2, global_batch=4, decoder="sam"))
    assert json.loads((tmp_path / "acc" / "run.json").read_text())["batch"] == {
        "per_step": 2,
        "accumulation": 2,
        "world_size": 1,
        "per_iteration": 4,
    }
    assert_same_weights(weights(tmp_path / "acc" / "model.pth"), weights(tmp_path / "big" / "model.pth"), atol=1e-5)


def test_the_command_line_says_how_the_recipe_batch_is_reached_or_refuses(demo_corpus: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    base = ["train", "--corpus", str(demo_corpus), "--out", str(run), *TINY, "--iters", "1", "--val-every", "0"]
    refused = runner.invoke(app, [*base, "--batch-size", "8", "--accumulation", "2"], env={"COLUMNS": "300"})
    assert refused.exit_code == 2, refused.output
    assert "--batch-size 8 x --accumulation 2 x 1 process = 16 images per iteration, not the global batch of 32" in (
        refused.output
    )
    assert not run.exists()
    done = runner.invoke(app, [*base, "--batch-size", "16"], env={"COLUMNS": "300"})
    assert done.exit_code == 0, done.output
    assert (
        "batch: 16 images per step x 2 accumulation steps x 1 process = 32 images per iteration (the recipe's global batch)"
        in done.output
    )
    assert json.loads((run / "run.json").read_text())["batch"]["per_iteration"] == 32


# ---- 10: the schedule scales with --iters --------------------------------------------------


def test_a_300_iteration_run_reaches_its_peak_and_decays_at_the_scaled_points() -> None:
    short = TrainConfig(iters=300)
    factors = [lr_factor(step, short) for step in range(300)]
    assert factors[0] == pytest.approx(0.001)
    assert factors[5] == 1.0 and max(factors) == 1.0  # warm-up 500/30,000 of 300 = 5 iterations
    assert factors[199] == 1.0 and factors[200] == pytest.approx(0.1)  # 20,000/30,000 of 300
    assert factors[288] == pytest.approx(0.1) and factors[289] == pytest.approx(0.01)  # 28,888/30,000 of 300 = 288.9
    recipe = TrainConfig()
    assert lr_factor(499, recipe) < 1 and lr_factor(500, recipe) == 1.0
    assert lr_factor(19_999, recipe) == 1.0 and lr_factor(20_000, recipe) == pytest.approx(0.1)
    assert lr_factor(28_887, recipe) == pytest.approx(0.1) and lr_factor(28_888, recipe) == pytest.approx(0.01)
    given = TrainConfig(iters=300, warmup_iters=50, milestones=(100,))  # what is set stays as set
    assert lr_factor(49, given) < 1 and lr_factor(50, given) == 1.0 and lr_factor(100, given) == pytest.approx(0.1)


def test_a_short_run_logs_the_scaled_schedule_and_says_so(demo_corpus: Path, tmp_path: Path) -> None:
    output = io.StringIO()
    config = tiny_config(iters=30, batch_size=1, warmup_iters=None, milestones=None, lr=1e-3, log_every=1, refine=False)
    train(demo_corpus, tmp_path / "run", config, console=Console(file=output, width=300))
    text = output.getvalue()
    assert "schedule: 30 iterations, peak lr 0.001, warm-up 1 (lr x0.001 -> x1), lr x0.1 at 20 and 29" in text
    assert "(warm-up and decays scaled from the recipe's 500 / 20,000 / 28,888 of 30,000)" in text
    lrs = {r["step"]: r["lr"] for r in map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())}
    # record k holds the lr of the k-th iteration (index k - 1)
    assert lrs[1] == pytest.approx(1e-6) and lrs[2] == pytest.approx(1e-3) and lrs[20] == pytest.approx(1e-3)
    assert lrs[21] == pytest.approx(1e-4) and lrs[29] == pytest.approx(1e-4) and lrs[30] == pytest.approx(1e-5)
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert state["config"]["warmup_iters"] == 1 and tuple(state["config"]["milestones"]) == (20, 29)


def test_a_decay_that_falls_after_the_last_iteration_is_not_listed_as_applied() -> None:
    from us43d.training.train import describe_schedule

    text = describe_schedule(TrainConfig(iters=10), frozenset({"warmup_iters", "milestones"}))  # decays at 7 and 10
    assert "lr x0.1 at 7 (a decay at 10 falls after the last iteration)" in text
    assert [lr_factor(step, TrainConfig(iters=10)) for step in range(10)][-1] == pytest.approx(0.1)  # only one decay ran
    assert "falls after" not in describe_schedule(TrainConfig(iters=30), frozenset())  # 20 and 29 both run


def test_an_extended_run_keeps_the_schedule_it_started_with(demo_corpus: Path, tmp_path: Path) -> None:
    scaled = tiny_config(iters=3, warmup_iters=None, milestones=None)  # warm-up 0, decays at 2 and 3
    train(demo_corpus, tmp_path / "part", scaled)
    resume(demo_corpus, tmp_path / "part", {"iters": 6})
    train(demo_corpus, tmp_path / "full", tiny_config(iters=6, warmup_iters=0, milestones=(2, 3)))
    assert_same_weights(weights(tmp_path / "part" / "model.pth"), weights(tmp_path / "full" / "model.pth"))


# ---- 11: validation and the best checkpoint ------------------------------------------------


def scripted_scores(monkeypatch: pytest.MonkeyPatch, scores: list[float]) -> list[int]:
    """Validation that returns the given mean mAPs in order; returns the list of calls made."""
    from us43d.training.validation import Validator

    calls: list[int] = []

    def score(self, sam, device):
        value = scores[len(calls)]
        calls.append(len(calls))
        return {"BUS-BRA": {"point": {"mAP": value, "mAP50": value}, "box": {"mAP": value, "mAP50": value}}}

    monkeypatch.setattr(Validator, "score", score)
    return calls


def test_the_best_validation_checkpoint_is_kept_beside_the_last(
    demo_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = scripted_scores(monkeypatch, [10.0, 30.0, 20.0])  # the peak is at step 4 of 6
    summary = train(demo_corpus, tmp_path / "run", tiny_config(iters=6, val_every=2))
    assert len(calls) == 3
    assert summary["best"] == {"file": "best.pth", "step": 4, "val_mAP": 30.0}
    log = json.loads((tmp_path / "run" / "run.json").read_text())
    assert log["best"] == {"file": "best.pth", "step": 4, "val_mAP": 30.0}
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["val_mAP"]) for r in records if "val_mAP" in r] == [(2, 10.0), (4, 30.0), (6, 20.0)]
    protocols = [r["val_protocol"] for r in records if "val_mAP" in r]  # each record says how it was measured
    assert all(p["refine"] is True and p["preset"] == "authors" and p["class_agnostic"] for p in protocols)
    assert (tmp_path / "run" / "losses.png").is_file()  # the plot skips validation records
    monkeypatch.undo()
    train(demo_corpus, tmp_path / "four", tiny_config(iters=4))
    best, last = weights(tmp_path / "run" / "best.pth"), weights(tmp_path / "run" / "model.pth")
    assert_same_weights(best, weights(tmp_path / "four" / "model.pth"))  # the weights of step 4
    assert any(not torch.equal(best[k], last[k]) for k in best)  # not the last ones


def test_the_best_checkpoint_survives_a_crash_and_resume(
    demo_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tiny_config(iters=8, val_every=2, checkpoint_every=2)
    scripted_scores(monkeypatch, [10.0, 30.0, 20.0])
    original_step = torch.optim.AdamW.step
    calls = {"n": 0}

    def crashing_step(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 7:  # dies in iteration 7, after the checkpoint (and validation) of 6
            raise KeyboardInterrupt
        return original_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", crashing_step)
    with pytest.raises(KeyboardInterrupt):
        train(demo_corpus, tmp_path / "run", config)
    monkeypatch.setattr(torch.optim.AdamW, "step", original_step)
    best_before = weights(tmp_path / "run" / "best.pth")
    scripted_scores(monkeypatch, [25.0])  # step 8: better than 20, worse than the 30 of step 4
    summary = resume(demo_corpus, tmp_path / "run")
    assert summary["best"] == {"file": "best.pth", "step": 4, "val_mAP": 30.0}
    assert json.loads((tmp_path / "run" / "run.json").read_text())["best"]["step"] == 4
    assert_same_weights(weights(tmp_path / "run" / "best.pth"), best_before)
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps.count(8) == 2 and steps.count(6) == 2  # a loss and a validation record each, once


def test_a_crashed_run_with_every_new_setting_resumes_to_the_uninterrupted_run(
    demo_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Accumulation, the scaled schedule, real validation and the best checkpoint together."""
    config = tiny_config(
        iters=4, batch_size=1, global_batch=2, warmup_iters=None, milestones=None, val_every=2, checkpoint_every=2
    )
    full = train(demo_corpus, tmp_path / "full", config)
    original_step = torch.optim.AdamW.step
    calls = {"n": 0}

    def crashing_step(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:  # dies in iteration 4, after the checkpoint and validation of 2
            raise KeyboardInterrupt
        return original_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", crashing_step)
    with pytest.raises(KeyboardInterrupt):
        train(demo_corpus, tmp_path / "crash", config)
    monkeypatch.setattr(torch.optim.AdamW, "step", original_step)
    resumed = resume(demo_corpus, tmp_path / "crash")
    assert resumed["best"] == full["best"] and resumed["batch"]["accumulation"] == 2
    for name in ("model.pth", "best.pth"):
        assert_same_weights(weights(tmp_path / "crash" / name), weights(tmp_path / "full" / name))
    records = [(tmp_path / run / "metrics.jsonl").read_text().splitlines() for run in ("full", "crash")]
    without_speed = [[{k: v for k, v in json.loads(line).items() if k != "images_per_s"} for line in r] for r in records]
    assert without_speed[0] == without_speed[1]


def test_validation_scores_each_dataset_class_agnostic_on_a_fixed_subset(demo_corpus: Path, tmp_path: Path) -> None:
    from us43d.training.validation import read_val_files

    raw = json.loads((demo_corpus / "coco" / "BUS-BRA" / "val.json").read_text())
    assert len(raw["categories"]) == 2
    truths, _ = read_val_files(demo_corpus, ["BUS-BRA", "MMOTU-2D"], max_images=1, seed=0)
    assert list(truths) == ["BUS-BRA"]  # a dataset without val images is left out
    subset = truths["BUS-BRA"]
    assert len(subset["images"]) == 1 and subset["categories"] == [{"id": 1, "name": "object", "supercategory": "object"}]
    assert {a["category_id"] for a in subset["annotations"]} == {1}
    assert read_val_files(demo_corpus, ["BUS-BRA"], max_images=1, seed=0)[0] == truths  # the same subset every time
    output = io.StringIO()
    train(demo_corpus, tmp_path / "run", tiny_config(iters=2, val_every=2), console=Console(file=output, width=300))
    assert "validation: every 2 iterations and at the end, on 2 val images of 1 dataset (" in output.getvalue()
    record = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()][-1]
    assert record["step"] == 2 and set(record["val"]["BUS-BRA"]) == {"point", "box"}
    assert set(record["val"]["BUS-BRA"]["box"]) >= {"mAP", "mAP50"}
    assert (tmp_path / "run" / "best.pth").is_file()
    assert json.loads((tmp_path / "run" / "run.json").read_text())["validation"]["images"] == {"BUS-BRA": 2}


@pytest.mark.parametrize("refine", [True, False], ids=["refine", "no-refine"])
def test_validation_measures_the_way_the_run_trains(demo_corpus: Path, tmp_path: Path, monkeypatch, refine: bool) -> None:
    """The authors validate a refinement model with the test-time refinement pass and a
    one-pass model without it: a --no-refine run's mask path is never trained, so scoring
    through it would choose best.pth by a pass the run does not learn."""
    from us43d.training.evaluate import Predictor

    used: list[bool] = []
    original = Predictor.masks

    def spy(self, *args, **kwargs):
        used.append(args[6])  # masks(embedding, resized, original, points, boxes, use_box, refine, postprocess)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Predictor, "masks", spy)
    train(demo_corpus, tmp_path / "run", tiny_config(iters=1, val_every=1, val_max_images=1, refine=refine))
    assert used and set(used) == {refine}
    assert json.loads((tmp_path / "run" / "run.json").read_text())["validation"]["refine"] is refine


def test_validation_asked_for_without_val_images_is_refused(tmp_path: Path, demo_corpus: Path) -> None:
    import shutil

    corpus = tmp_path / "corpus"
    shutil.copytree(demo_corpus, corpus)
    (corpus / "coco" / "BUS-BRA" / "val.json").unlink()
    with pytest.raises(Us43dError, match="--val-every 2: the datasets trained on have no val images"):
        train(corpus, tmp_path / "run", tiny_config(iters=2, val_every=2))
    assert not (tmp_path / "run").exists()


# ---- 12: memory and precision settings -----------------------------------------------------


def test_activation_checkpointing_gives_the_same_loss_and_gradients() -> None:
    from us43d.training.memory import use_activation_checkpointing

    plain = tiny_model()
    checkpointed = copy.deepcopy(plain)
    assert use_activation_checkpointing(checkpointed) == 2
    config, batch = TrainConfig(model="tiny"), synthetic_batch(2)
    loss_plain = step_losses(plain, batch, config, torch.device("cpu")).total
    loss_checkpointed = step_losses(checkpointed, batch, config, torch.device("cpu")).total
    torch.testing.assert_close(loss_checkpointed, loss_plain, rtol=0, atol=0)
    loss_plain.backward()
    loss_checkpointed.backward()
    expected, got = grads(plain), grads(checkpointed)
    assert expected.keys() == got.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-7, msg=name)
    assert checkpointed.state_dict().keys() == plain.state_dict().keys()  # checkpoints stay interchangeable
    use_activation_checkpointing(checkpointed, enabled=False)
    assert not any("forward" in block.__dict__ for block in checkpointed.image_encoder.blocks)


def test_a_frozen_encoder_keeps_its_weights_while_the_decoder_trains(demo_corpus: Path, tmp_path: Path) -> None:
    start = tmp_path / "start.pth"
    torch.save(tiny_model(seed=1).state_dict(), start)
    train(demo_corpus, tmp_path / "run", tiny_config(iters=3, freeze_encoder=True, init=str(start)))
    before, after = weights(start), weights(tmp_path / "run" / "model.pth")
    encoder = [k for k in before if k.startswith("image_encoder.")]
    assert encoder and all(torch.equal(after[k], before[k]) for k in encoder)
    decoder = [k for k in before if k.startswith("mask_decoder.")]
    assert sum(not torch.equal(after[k], before[k]) for k in decoder) > len(decoder) // 2


def test_presets_choose_batch_and_checkpointing_and_what_is_given_wins() -> None:
    from us43d.training.train import batch_plan, resolve_new_run

    small, _ = resolve_new_run(TrainConfig(preset="24gb"))
    assert small.batch_size == 4 and small.activation_checkpointing is True
    assert batch_plan(small, 1).accumulation == 8  # still the recipe's 32 per iteration
    large, _ = resolve_new_run(TrainConfig(preset="80gb"))
    assert large.batch_size == 8 and large.activation_checkpointing is False
    mine, derived = resolve_new_run(TrainConfig(preset="24gb", batch_size=2, activation_checkpointing=False))
    assert mine.batch_size == 2 and mine.activation_checkpointing is False and "batch_size" not in derived
    plain, _ = resolve_new_run(TrainConfig())
    assert plain.batch_size == 8 and plain.activation_checkpointing is False and plain.precision == "fp32"


@pytest.mark.parametrize(
    "flags, words",
    [
        (["--precision", "fp16"], ["precision", "'fp32' or 'bf16'"]),
        (["--preset", "12gb"], ["preset", "'24gb', '40gb' or '80gb'"]),
        (["--global-batch", "0"], ["global_batch", "greater than or equal to 1"]),
        (["--accumulation", "0"], ["accumulation", "greater than or equal to 1"]),
        (["--val-every", "-1"], ["val_every", "greater than or equal to 0"]),
        (["--val-max-images", "0"], ["val_max_images", "greater than or equal to 1"]),
        (["--milestones", "10,x"], ["--milestones takes comma-separated whole numbers"]),
    ],
)
def test_new_settings_are_checked_before_anything_is_written(
    demo_corpus: Path, tmp_path: Path, flags: list[str], words: list[str]
) -> None:
    run = tmp_path / "run"
    result = runner.invoke(
        app, ["train", "--corpus", str(demo_corpus), "--out", str(run), *TINY, "--iters", "1", *flags], env={"COLUMNS": "300"}
    )
    assert result.exit_code == 2, result.output
    assert all(word in result.output for word in words), result.output
    assert not run.exists()


def test_bf16_is_refused_where_the_gpu_cannot_compute_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from us43d.training.memory import autocast_dtype

    assert autocast_dtype("fp32", torch.device("cpu")) is None
    assert autocast_dtype("bf16", torch.device("cpu")) is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Tesla V100")
    with pytest.raises(Us43dError, match="Tesla V100 has no bfloat16 support"):
        autocast_dtype("bf16", torch.device("cuda"))


def test_a_bf16_run_trains(demo_corpus: Path, tmp_path: Path) -> None:
    train(demo_corpus, tmp_path / "run", tiny_config(iters=1, precision="bf16"))
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert torch.isfinite(torch.tensor(record["loss"]))
    assert json.loads((tmp_path / "run" / "run.json").read_text())["config"]["precision"] == "bf16"


def test_tensorboard_asked_for_but_missing_says_so_before_writing(
    demo_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were not installed
    with pytest.raises(Us43dError, match="--tensorboard needs the tensorboard package, which is not installed"):
        train(demo_corpus, tmp_path / "run", tiny_config(iters=1, tensorboard=True))
    assert not (tmp_path / "run").exists()


def test_tensorboard_logs_beside_the_metrics(demo_corpus: Path, tmp_path: Path) -> None:
    pytest.importorskip("tensorboard", reason="tensorboard is an optional extra")
    train(demo_corpus, tmp_path / "run", tiny_config(iters=2, tensorboard=True, val_every=2))
    events = list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    accumulator.Reload()
    tags = set(accumulator.Tags()["scalars"])
    assert {"train/loss", "train/lr", "val/val_mAP", "val/BUS-BRA/box/mAP"} <= tags


def test_a_run_saved_before_these_settings_resumes_as_it_ran(demo_corpus: Path, tmp_path: Path) -> None:
    train(demo_corpus, tmp_path / "full", tiny_config(iters=4))
    train(demo_corpus, tmp_path / "old", tiny_config(iters=2))
    state = torch.load(tmp_path / "old" / "checkpoint.pt", weights_only=True)
    for name in ("global_batch", "accumulation", "precision", "activation_checkpointing", "freeze_encoder", "preset"):
        del state["config"][name]
    for name in ("val_every", "val_max_images", "tensorboard"):
        del state["config"][name]
    for name in ("prompt", "boundary_click_images", "boundary_max_clicks", "boundary_loss_weight"):
        del state["config"][name]
    state["config"]["bf16"] = True  # the old default: autocast on GPU only
    state["config"]["iters"] = 4
    del state["validation"]
    torch.save(state, tmp_path / "old" / "checkpoint.pt")
    resume(demo_corpus, tmp_path / "old")
    log = json.loads((tmp_path / "old" / "run.json").read_text())
    assert log["batch"]["per_iteration"] == 2 and log["validation"] is None
    assert_same_weights(weights(tmp_path / "old" / "model.pth"), weights(tmp_path / "full" / "model.pth"))
