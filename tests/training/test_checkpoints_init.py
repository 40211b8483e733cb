"""The recipe fine-tunes SAM: training never starts from random weights unless asked by name."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from training.conftest import tiny_config
from us43d.cli import app
from us43d.errors import Us43dError

runner = CliRunner()
TINY = ["--model", "tiny", "--iters", "1", "--batch-size", "2", "--workers", "0", "--no-refine"]


def test_train_without_init_is_refused_and_says_where_sam_weights_come_from(demo_corpus: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", "--corpus", str(demo_corpus), "--out", str(run), *TINY], env={"COLUMNS": "300"})
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: no starting weights"), result.output
    for words in ("sam_vit_b_01ec64.pth", "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth", "MedSAM"):
        assert words in result.output
    assert "UltraSam" in result.output and "--init none" in result.output
    assert not run.exists()
    with pytest.raises(Us43dError, match="no starting weights"):
        from us43d.training.train import train

        settings = tiny_config()
        settings.init = None
        train(demo_corpus, tmp_path / "lib", settings)
    assert not (tmp_path / "lib").exists()


@pytest.mark.parametrize("spelling", ["none", "None"])
def test_init_none_trains_from_random_weights_on_request(demo_corpus: Path, tmp_path: Path, spelling: str) -> None:
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", "--corpus", str(demo_corpus), "--out", str(run), *TINY, "--init", spelling])
    assert result.exit_code == 0, result.output
    assert (run / "model.pth").is_file()


def test_init_none_in_a_settings_file(demo_corpus: Path, tmp_path: Path) -> None:
    settings = tmp_path / "settings.yaml"
    settings.write_text("init: none\n")
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", "--corpus", str(demo_corpus), "--out", str(run), *TINY, "--config", str(settings)])
    assert result.exit_code == 0, result.output


def test_an_init_of_another_shape_says_what_the_file_is(demo_corpus: Path, tmp_path: Path) -> None:
    import torch

    from us43d.training.sam import build_model, model_config

    torch.save(build_model(model_config("tiny")).state_dict(), tmp_path / "tiny.pth")
    run = tmp_path / "run"
    flags = [f for f in TINY if f not in ("--model", "tiny")]
    result = runner.invoke(
        app,
        ["train", "--corpus", str(demo_corpus), "--out", str(run), *flags, "--init", str(tmp_path / "tiny.pth")],
        env={"COLUMNS": "300"},
    )
    assert result.exit_code == 2, result.output
    assert "holds a tiny model for 128-pixel inputs" in result.output and "give --model tiny" in result.output
    assert not run.exists()
