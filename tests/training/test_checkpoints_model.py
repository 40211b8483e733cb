"""The model a checkpoint holds: its shape read from the file (eval and predict need no --model),
the decoder form it runs (the authors' or segment_anything's), and a tiny test model in which
every path of the real one, the mask prompt included, is alive."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from training.conftest import tiny_config
from us43d.cli import app
from us43d.training import engine
from us43d.training.sam import MODEL_CONFIGS, build_model, model_config

runner = CliRunner()
LIN2 = re.compile(r"^mask_decoder\.transformer\.layers\.\d+\.mlp\.lin2\.")
POINTS = torch.tensor([[40.0, 50.0], [10.0, 90.0]])
BOXES = torch.tensor([[20.0, 30.0, 80.0, 90.0], [5.0, 5.0, 60.0, 40.0]])


def random_weights(name: str = "tiny", seed: int = 0, image_size: int | None = None) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model = build_model(model_config(name, image_size))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    return model.state_dict()


def save(weights: dict[str, torch.Tensor], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(weights, path)
    return path


def invoke(*args: str):
    return runner.invoke(app, list(args), env={"COLUMNS": "220"})


# --- item 13: the tiny model's mask prompt is alive -------------------------------------------


def test_every_model_keeps_a_live_mask_prompt_path() -> None:
    for name in MODEL_CONFIGS:
        assert model_config(name).mask_in_chans // 4 > 1, f"{name}: a 1-channel LayerNorm2d zeroes the mask prompt"


def test_the_mask_prompt_changes_the_tiny_models_output_and_carries_gradients() -> None:
    torch.manual_seed(0)
    sam = build_model(model_config("tiny"))
    sam.load_state_dict(random_weights())
    embedding = sam.image_encoder(torch.randn(1, 3, 128, 128))
    is_box = torch.tensor([False, True])
    low = model_config("tiny").low_res_size
    first, _ = engine.decode(sam, embedding, POINTS, BOXES, is_box, multimask=False)
    with torch.no_grad():
        plain = engine.decode(sam, embedding, POINTS, BOXES, is_box, multimask=True)[0]
        other = engine.decode(sam, embedding, POINTS, BOXES, is_box, True, mask_input=torch.randn(2, 1, low, low) * 5)[0]
    refined, _ = engine.decode(sam, embedding, POINTS, BOXES, is_box, multimask=True, mask_input=first)
    assert not torch.allclose(refined.detach(), other, atol=1e-4)  # which mask comes in matters
    assert not torch.allclose(refined.detach(), plain, atol=1e-4)
    # the refinement pass's loss reaches the first pass through the fed-back logits: the first
    # mask token's hypernetwork serves only pass 1 here, and the mask path itself learns
    sam.zero_grad()
    refined.square().mean().backward()
    assert sam.mask_decoder.output_hypernetworks_mlps[0].layers[0].weight.grad.abs().sum() > 0
    assert sam.prompt_encoder.mask_downscaling[0].weight.grad.abs().sum() > 0


# --- item 8: the decoder form --------------------------------------------------------------------


def doubled_residual_reference(weights: dict[str, torch.Tensor]) -> torch.nn.Module:
    """The authors' layer, written independently: norm3(q + (q + MLP(q)))."""
    model = build_model(model_config("tiny")).eval()
    model.load_state_dict(weights)

    class PlusInput(torch.nn.Module):
        def __init__(self, mlp: torch.nn.Module) -> None:
            super().__init__()
            self.mlp = mlp

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.mlp(x)

    for layer in model.mask_decoder.transformer.layers:
        layer.mlp = PlusInput(layer.mlp)
    return model


def outputs(model: torch.nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        embedding = model.image_encoder(images)
        found = []
        for is_box in (torch.tensor([False, True]), torch.tensor([True, True])):
            for multimask in (False, True):
                found += engine.decode(model, embedding, POINTS, BOXES, is_box, multimask)
        return found


def test_the_authors_decoder_adds_the_mlp_input_twice_and_drops_out_in_training() -> None:
    from us43d.training.checkpoints import in_decoder_form

    weights = random_weights(seed=1)
    authors = build_model(model_config("tiny"), decoder="authors").eval()
    authors.load_state_dict(weights)  # same keys in both forms
    images = torch.randn(1, 3, 128, 128)
    for a, b in zip(outputs(authors, images), outputs(doubled_residual_reference(weights), images)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # segment_anything's decoder gives the same outputs from the halved lin2 (what convert-checkpoint writes)
    plain = build_model(model_config("tiny")).eval()
    plain.load_state_dict(in_decoder_form(weights, "authors", "sam"))
    for a, b in zip(outputs(authors, images), outputs(plain, images)):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)
    unconverted = build_model(model_config("tiny")).eval()
    unconverted.load_state_dict(weights)
    assert not torch.allclose(outputs(unconverted, images)[0], outputs(authors, images)[0], rtol=1e-3, atol=1e-4)

    def twice(model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = model.image_encoder(images).detach()
        return tuple(engine.decode(model, embedding, POINTS, BOXES, torch.tensor([True, True]), True)[0] for _ in range(2))

    torch.manual_seed(0)
    assert not torch.equal(*twice(authors.train()))  # dropout 0.1 while training
    assert torch.equal(*twice(authors.eval()))
    assert torch.equal(*twice(plain.train()))  # segment_anything's decoder has none
    dropouts = [m for m in authors.mask_decoder.modules() if isinstance(m, torch.nn.Dropout)]
    assert len(dropouts) == 2 and all(m.p == 0.1 for m in dropouts)


def test_official_sam_weights_run_as_the_authors_ran_them_by_default(tmp_path: Path) -> None:
    """The paper's SAM row: official SAM's tensors in the authors' decoder; --decoder sam is SAM itself."""
    from us43d.training.decoder import decoder_of
    from us43d.training.evaluate import load_predictor

    weights = random_weights(seed=2)
    path = save(weights, tmp_path / "sam_vit_b_01ec64.pth")
    notes: list[str] = []
    default = load_predictor(path, report=notes.append)
    assert decoder_of(default.sam) == "authors" and "decoder: authors (from the default)" in notes[0]
    images = torch.randn(1, 3, 128, 128)
    for a, b in zip(outputs(default.sam, images), outputs(doubled_residual_reference(weights), images)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    official = load_predictor(path, decoder="sam")
    reference = build_model(model_config("tiny")).eval()
    reference.load_state_dict(weights)
    for a, b in zip(outputs(official.sam, images), outputs(reference, images)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_a_run_records_its_decoder_and_its_files_keep_their_outputs(demo_corpus: Path, tmp_path: Path) -> None:
    from us43d.training.decoder import decoder_of
    from us43d.training.evaluate import load_predictor
    from us43d.training.train import TrainConfig, train

    assert TrainConfig().decoder == "authors"
    run = tmp_path / "run"
    train(demo_corpus, run, tiny_config(iters=2))
    assert json.loads((run / "run.json").read_text())["config"]["decoder"] == "authors"
    notes: list[str] = []
    trained = load_predictor(run / "model.pth", report=notes.append)
    assert decoder_of(trained.sam) == "authors" and "(from the run's record)" in notes[0]
    images = torch.randn(1, 3, 128, 128)
    # the same model run in segment_anything's decoder (converted on load) ...
    as_sam = load_predictor(run / "model.pth", decoder="sam")
    for a, b in zip(outputs(trained.sam, images), outputs(as_sam.sam, images)):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)
    # ... and written for segment_anything by convert-checkpoint: plain segment_anything gives the same outputs
    result = invoke("convert-checkpoint", str(run / "model.pth"), str(tmp_path / "sam.pth"))
    assert result.exit_code == 0 and "--decoder sam" in result.output, result.output
    plain = build_model(model_config("tiny")).eval()
    plain.load_state_dict(torch.load(tmp_path / "sam.pth", weights_only=True))
    for a, b in zip(outputs(trained.sam, images), outputs(plain, images)):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)
    # a run trained with segment_anything's decoder records that, and is evaluated so
    train(demo_corpus, tmp_path / "sam-run", tiny_config(iters=1, decoder="sam"))
    assert decoder_of(load_predictor(tmp_path / "sam-run" / "model.pth").sam) == "sam"


def test_init_from_a_file_of_the_other_form_is_converted(demo_corpus: Path, tmp_path: Path) -> None:
    from us43d.training.checkpoints import in_decoder_form
    from us43d.training.train import train

    train(demo_corpus, tmp_path / "sam-run", tiny_config(iters=1, decoder="sam"))
    source = torch.load(tmp_path / "sam-run" / "model.pth", weights_only=True)
    train(demo_corpus, tmp_path / "next", tiny_config(iters=1, lr=1e-12, init=str(tmp_path / "sam-run" / "model.pth")))
    started = torch.load(tmp_path / "next" / "model.pth", weights_only=True)
    for key, value in in_decoder_form(source, "sam", "authors").items():
        torch.testing.assert_close(started[key], value, rtol=0, atol=1e-9, msg=key)
    assert any(LIN2.match(key) for key in source)


def test_a_run_from_before_the_decoder_setting_resumes_in_segment_anythings_form(demo_corpus: Path, tmp_path: Path) -> None:
    from us43d.training.train import resume, train

    train(demo_corpus, tmp_path / "full", tiny_config(iters=4, checkpoint_every=2, decoder="sam"))
    train(demo_corpus, tmp_path / "old", tiny_config(iters=2, checkpoint_every=2, decoder="sam"))
    state = torch.load(tmp_path / "old" / "checkpoint.pt", weights_only=True)
    del state["config"]["decoder"]  # as saved before the setting existed
    state["config"]["iters"] = 4
    torch.save(state, tmp_path / "old" / "checkpoint.pt")
    resume(demo_corpus, tmp_path / "old")
    full = torch.load(tmp_path / "full" / "model.pth", weights_only=True)
    resumed = torch.load(tmp_path / "old" / "model.pth", weights_only=True)
    for key in full:
        torch.testing.assert_close(resumed[key], full[key], rtol=0, atol=0, msg=key)


def test_a_bad_decoder_is_refused_in_one_line(tmp_path: Path) -> None:
    path = save(random_weights(), tmp_path / "tiny.pth")
    image = tmp_path / "scan.png"
    Image.new("L", (64, 48), 80).save(image)
    result = invoke(
        "predict", str(image), "--checkpoint", str(path), "--box", "1,1,9,9", "--decoder", "mmdet", "--out", str(tmp_path)
    )
    assert result.exit_code == 2 and "unknown decoder 'mmdet'" in result.output, result.output
    result = invoke("train", "--decoder", "mine", "--init", "none", "--out", str(tmp_path / "run"))
    assert result.exit_code == 2 and "decoder" in result.output and not (tmp_path / "run").exists(), result.output


def test_convert_refuses_a_decoder_that_contradicts_the_file(tmp_path: Path) -> None:
    from us43d.training.checkpoints import sam_to_mmdet

    torch.save({"state_dict": sam_to_mmdet(random_weights())}, tmp_path / "UltraSam.pth")
    result = invoke("convert-checkpoint", str(tmp_path / "UltraSam.pth"), str(tmp_path / "out.pth"), "--decoder", "sam")
    assert result.exit_code == 2 and "contradicts" in result.output and not (tmp_path / "out.pth").exists()


# --- item 3: the shape comes from the file ----------------------------------------------------------


@pytest.mark.parametrize(
    "name, size",
    [(name, None) for name in MODEL_CONFIGS] + [("vit_b", 512), ("vit_b", 224), ("tiny", 64)],  # 224, 64: windows span the grid
)
def test_the_shape_of_every_model_is_read_from_its_tensors(name: str, size: int | None) -> None:
    from us43d.training.model_shape import fitting, found_shape

    config = model_config(name, size)
    with torch.device("meta"):  # shapes only: ViT-H costs nothing here
        state = build_model(config).state_dict()
    shape = found_shape(state)
    assert shape is not None and fitting(shape) == [name] and shape.image_size == config.image_size


def test_a_vit_l_file_given_another_model_says_what_it_is() -> None:
    from us43d.training.checkpoints import CheckpointError, Weights
    from us43d.training.model_shape import choose

    with torch.device("meta"):
        state = build_model(model_config("vit_l")).state_dict()
    assert choose(Weights(state), "vit_l.pth", None, None, None)[0].config.name == "vit_l"
    with pytest.raises(
        CheckpointError, match=r"vit_l.pth holds a vit_l model for 1024-pixel inputs .*--model vit_b does not fit"
    ):
        choose(Weights(state), "vit_l.pth", "vit_b", None, None)


def test_eval_and_predict_read_the_shape_from_the_checkpoint(demo_corpus: Path, tmp_path: Path) -> None:
    small = save(random_weights(), tmp_path / "tiny.pth")
    wide = save(random_weights(image_size=160), tmp_path / "tiny160.pth")
    image = tmp_path / "scan.png"
    Image.new("L", (64, 48), 80).save(image)
    for checkpoint, size in ((small, 128), (wide, 160)):
        result = invoke(
            "eval", "--checkpoint", str(checkpoint), "--corpus", str(demo_corpus), "--datasets", "BUS-BRA", "--prompt", "box"
        )
        assert result.exit_code == 0, result.output
        assert f"model: tiny at {size} px (from the checkpoint's tensors)" in result.output
        out = tmp_path / f"mask{size}.png"
        result = invoke("predict", str(image), "--checkpoint", str(checkpoint), "--box", "8,8,40,30", "--out", str(out))
        assert result.exit_code == 0 and out.is_file(), result.output
    wrong = invoke("eval", "--checkpoint", str(small), "--corpus", str(demo_corpus), "--datasets", "BUS-BRA", "--model", "vit_b")
    assert wrong.exit_code == 2 and "missing keys" not in wrong.output
    assert "holds a tiny model for 128-pixel inputs" in wrong.output and "--model vit_b does not fit it" in wrong.output
    assert "give --model tiny" in wrong.output
    wrong = invoke(
        "predict", str(image), "--checkpoint", str(wide), "--box", "1,1,9,9", "--image-size", "128", "--out", str(tmp_path)
    )
    assert wrong.exit_code == 2 and "--image-size 128 does not fit it" in wrong.output and "160-pixel" in wrong.output


def test_a_shape_no_model_has_is_named(tmp_path: Path) -> None:
    from us43d.training.sam import ModelConfig

    odd = ModelConfig(**{**model_config("tiny").__dict__, "name": "odd", "encoder_dim": 96, "encoder_heads": 3})
    torch.save(build_model(odd).state_dict(), tmp_path / "odd.pth")
    image = tmp_path / "scan.png"
    Image.new("L", (64, 48), 80).save(image)
    result = invoke("predict", str(image), "--checkpoint", str(tmp_path / "odd.pth"), "--box", "1,1,9,9", "--out", str(tmp_path))
    assert result.exit_code == 2 and "96 dims" in result.output and "none of the models us43d builds" in result.output
    assert "the nearest, tiny, differs in encoder_dim 96 (not 64), encoder_heads 3 (not 2)" in result.output


def test_run_json_beside_the_file_is_used_and_checked(demo_corpus: Path, tmp_path: Path) -> None:
    from us43d.training.decoder import decoder_of
    from us43d.training.evaluate import load_predictor
    from us43d.training.train import train

    run = tmp_path / "run"
    train(demo_corpus, run, tiny_config(iters=1, decoder="sam"))
    notes: list[str] = []
    assert decoder_of(load_predictor(run / "model.pth", report=notes.append).sam) == "sam"
    assert notes[0] == "model: tiny at 128 px (from the run's record); decoder: sam (from the run's record)"
    # a run.json that records another model is not this file's: it is set aside, with a note
    record = json.loads((run / "run.json").read_text())
    record["config"]["model"] = "vit_b"
    (run / "run.json").write_text(json.dumps(record))
    notes.clear()
    assert decoder_of(load_predictor(run / "model.pth", report=notes.append).sam) == "authors"
    assert any("records another model" in note for note in notes) and "(from the checkpoint's tensors)" in notes[0]
    for broken in ("{not json", "[]", '{"config": {"model": "tiny", "decoder": "mmdet"}}'):
        (run / "run.json").write_text(broken)
        notes.clear()
        load_predictor(run / "model.pth", report=notes.append)
        assert any(note.startswith(f"ignored {run / 'run.json'}") for note in notes), (broken, notes)
    # copied away from its run, the file is read by its tensors, in the default form
    shutil.copy(run / "model.pth", tmp_path / "copied.pth")
    notes.clear()
    assert decoder_of(load_predictor(tmp_path / "copied.pth", report=notes.append).sam) == "authors"
