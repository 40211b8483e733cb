"""benchmarks/train_step.py works without a GPU: it refuses plainly, or runs its tiny smoke
configuration; the figures themselves are read on a GPU, never asserted here."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "train_step.py"


def benchmark():
    spec = importlib.util.spec_from_file_location("train_step_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a CUDA machine the script would run the real benchmark")
def test_without_a_gpu_it_says_so_and_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert benchmark().main(["--json", str(tmp_path / "figures.json")]) == 1
    assert "no CUDA device: nothing was measured" in capsys.readouterr().err
    assert not (tmp_path / "figures.json").exists()


def test_the_smoke_run_measures_every_configuration_and_writes_its_figures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    figures = tmp_path / "figures.json"
    assert benchmark().main(["--smoke", "--json", str(figures)]) == 0
    report = json.loads(figures.read_text())
    assert report["smoke"] is True and report["model"] == "tiny"
    seen = {(e["precision"], e["attention"], e["checkpointing"]) for e in report["train_step"]}
    assert seen == {(p, a, c) for p in ("fp32", "bf16") for a in ("sdpa", "reference") for c in (False, True)}
    assert all(e["images_per_s"] > 0 for e in report["train_step"])
    assert report["eval"]["fp32_images_per_s"] > 0 and report["eval"]["bf16_autocast_images_per_s"] > 0
    assert report["goal"]["met"] is False  # a smoke run never claims the GPU goal
    printed = capsys.readouterr().out
    assert "goal: not assessed" in printed and f"figures written to {figures}" in printed
