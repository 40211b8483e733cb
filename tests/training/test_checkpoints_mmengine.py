"""The UltraSam release is an MMEngine checkpoint: its metadata holds MMEngine objects (a message
hub of HistoryBuffers with NumPy arrays inside). Such files load without MMEngine and without
running anything they name; any other global still refuses the file."""

from __future__ import annotations

import collections
import os
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from us43d.cli import app
from us43d.training.checkpoints import CheckpointError, read_state_dict, sam_to_mmdet
from us43d.training.sam import build_model, model_config

HISTORY_BUFFER = "mmengine.logging.history_buffer"
CONFIG = "mmengine.config.config"
MMENGINE_MODULES = ("mmengine", "mmengine.logging", HISTORY_BUFFER, "mmengine.config", CONFIG)
runner = CliRunner()


@contextmanager
def fake_mmengine() -> Iterator[type]:
    """Modules under MMEngine's names, in sys.modules only inside the block, so that pickle
    writes `mmengine.logging.history_buffer.HistoryBuffer` exactly as the real release names it."""
    assert not any(name in sys.modules for name in MMENGINE_MODULES), "mmengine itself must not be installed here"
    modules = {name: types.ModuleType(name) for name in MMENGINE_MODULES}

    class HistoryBuffer:  # MMEngine's fields: the logged values and counts as NumPy arrays
        def __init__(self, values: list[float]) -> None:
            self.max_length = 1_000_000
            self._log_history = np.asarray(values, dtype=np.float64)
            self._count_history = np.ones(len(values), dtype=np.float64)

    class ConfigDict(dict):  # MMEngine's ConfigDict is an addict Dict: a dict whose state is itself
        def __getstate__(self) -> dict:
            return self

        def __setstate__(self, state: dict) -> None:
            self.update(state)

    class Config:  # MMEngine's Config pickles its state as a tuple
        def __init__(self, text: str) -> None:
            self._text = text

        def __getstate__(self) -> tuple:
            return ({"model": {"type": "SAM"}}, "ultrasam.py", self._text, {}, False, set())

        def __setstate__(self, state: tuple) -> None:
            self._text = state[2]

    class Slotted:  # an object with __slots__ pickles (None, slots)
        __slots__ = ("iteration",)

        def __init__(self, iteration: int) -> None:
            self.iteration = iteration

    for cls in (Config, Slotted):
        cls.__module__, cls.__qualname__ = CONFIG, cls.__name__
        setattr(modules[CONFIG], cls.__name__, cls)
    HistoryBuffer.config = Config
    HistoryBuffer.slotted = Slotted
    HistoryBuffer.__module__ = HISTORY_BUFFER
    HistoryBuffer.__qualname__ = "HistoryBuffer"
    modules[HISTORY_BUFFER].HistoryBuffer = HistoryBuffer
    ConfigDict.__module__, ConfigDict.__qualname__ = CONFIG, "ConfigDict"
    modules[CONFIG].ConfigDict = ConfigDict
    HistoryBuffer.config_dict = ConfigDict  # for writers that want one
    sys.modules.update(modules)
    try:
        yield HistoryBuffer
    finally:
        for name in MMENGINE_MODULES:
            sys.modules.pop(name, None)


def tiny_weights(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model = build_model(model_config("tiny"))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    return model.state_dict()


def write_mmengine_checkpoint(
    path: Path, weights: dict[str, torch.Tensor], legacy: bool = False, config_dict: bool = False, **extra: object
) -> None:
    """What MMEngine's runner saves: meta with the message hub, the weights under state_dict in
    MMDetection names (the authors' decoder form), the message hub again at the top; with
    `config_dict`, also a configuration kept as MMEngine objects in the metadata: ConfigDicts (dict
    subclasses), a Config (tuple state) and an object with __slots__."""
    with fake_mmengine() as history_buffer:
        hub = {
            "log_scalars": {"train/loss": history_buffer([0.9, 0.4]), "train/lr": history_buffer([1e-4])},
            "runtime_info": {"iter": np.int64(30_000), "epoch": 0},
            "resumed_keys": {"iter": True},
        }
        meta = {"mmengine_version": "0.10.4", "seed": 0, "message_hub": hub, "dataset_meta": {"classes": ("object",)}}
        if config_dict:
            config = history_buffer.config_dict
            meta["cfg"] = config(model=config(type="SAM", decoder=config(num_layers=2)), work_dir="work_dirs/UltraSam")
            meta["config"] = history_buffer.config("model = dict(type='SAM')")
            meta["progress"] = history_buffer.slotted(30_000)
        content = {"meta": meta, "state_dict": sam_to_mmdet(weights), "message_hub": hub, **extra}
        torch.save(content, path, _use_new_zipfile_serialization=not legacy)
    assert not any(name in sys.modules for name in MMENGINE_MODULES)


@pytest.fixture()
def ultrasam_like(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    weights = tiny_weights()
    path = tmp_path / "UltraSam.pth"
    write_mmengine_checkpoint(path, weights)
    return path, weights


def assert_same(found: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert found.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(found[key], expected[key], rtol=0, atol=0, msg=key)


def test_the_fixture_names_mmengine_globals_as_the_release_does(ultrasam_like) -> None:
    path, _ = ultrasam_like
    named = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    assert f"{HISTORY_BUFFER}.HistoryBuffer" in named
    assert any(name.startswith("numpy.") for name in named)
    with pytest.raises(Exception, match="HistoryBuffer"):  # what torch's safe loader alone does with it
        torch.load(path, weights_only=True)


@pytest.mark.parametrize("config_dict", [False, True], ids=["hub", "hub+configs"])
@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_an_mmengine_checkpoint_reads_without_mmengine(tmp_path: Path, legacy: bool, config_dict: bool) -> None:
    weights = tiny_weights()
    path = tmp_path / "UltraSam.pth"
    write_mmengine_checkpoint(path, weights, legacy=legacy, config_dict=config_dict)
    assert_same(read_state_dict(path), weights)  # lin2 halved back: segment_anything's form
    assert not any(name in sys.modules for name in MMENGINE_MODULES)


def test_nothing_an_mmengine_file_names_runs_even_with_mmengine_installed(ultrasam_like, tmp_path: Path) -> None:
    path, weights = ultrasam_like
    marker = tmp_path / "ran"

    def leave_a_mark(*args, **kwargs):
        marker.write_text("code from the checkpoint ran")

    with fake_mmengine() as history_buffer:  # an installed MMEngine whose class would act when built
        history_buffer.__setstate__ = leave_a_mark
        history_buffer.__init__ = leave_a_mark
        assert_same(read_state_dict(path), weights)
    assert not marker.exists()


class RunsShell:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_any_other_global_still_refuses_the_file(tmp_path: Path, legacy: bool) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "UltraSam.pth"
    write_mmengine_checkpoint(path, tiny_weights(), legacy=legacy, hook=RunsShell(marker))
    with pytest.raises(CheckpointError) as refused:
        read_state_dict(path)
    message = str(refused.value)
    assert str(path) in message and f"{os.system.__module__}.system" in message and "refused by the safe loader" in message
    assert "weights_only" not in message and "safe_globals" not in message and "trust" not in message
    assert not marker.exists()


def test_refusal_never_advises_unsafe_loading(tmp_path: Path) -> None:
    """torch's own message for a global it does not know suggests weights_only=False: never passed on."""
    for legacy in (False, True):
        path = tmp_path / f"foreign{legacy}.pth"
        torch.save({"w": collections.defaultdict(list)}, path, _use_new_zipfile_serialization=not legacy)
        result = runner.invoke(app, ["convert-checkpoint", str(path), str(tmp_path / "out.pth")])
        assert result.exit_code == 2 and "collections.defaultdict" in result.output, result.output
        assert "weights_only" not in result.output and "safe_globals" not in result.output and "trust" not in result.output
    assert not (tmp_path / "out.pth").exists()


def test_convert_train_eval_and_predict_read_the_mmengine_file(ultrasam_like, demo_corpus: Path, tmp_path: Path) -> None:
    path, weights = ultrasam_like
    converted = tmp_path / "sam.pth"
    result = runner.invoke(app, ["convert-checkpoint", str(path), str(converted)])
    assert result.exit_code == 0, result.output
    assert_same(torch.load(converted, weights_only=True), weights)

    run = tmp_path / "run"
    flags = ["--model", "tiny", "--iters", "1", "--batch-size", "2", "--workers", "0", "--lr", "1e-12"]
    result = runner.invoke(app, ["train", "--corpus", str(demo_corpus), "--out", str(run), "--init", str(path), *flags])
    assert result.exit_code == 0, result.output
    # the run starts from the file: its weights, in the authors' decoder form the run trains (lin2 as in the file)
    from us43d.training.checkpoints import in_decoder_form

    started = torch.load(run / "model.pth", weights_only=True)
    for key, value in in_decoder_form(weights, "sam", "authors").items():
        torch.testing.assert_close(started[key], value, rtol=0, atol=1e-9, msg=key)

    result = runner.invoke(
        app, ["eval", "--checkpoint", str(path), "--corpus", str(demo_corpus), "--datasets", "BUS-BRA", "--prompt", "box"]
    )
    assert result.exit_code == 0, result.output
    image = tmp_path / "scan.png"
    Image.new("L", (64, 48), 80).save(image)
    result = runner.invoke(app, ["predict", str(image), "--checkpoint", str(path), "--box", "8,8,40,30", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "scan.mask.png").is_file()


def test_a_torch_without_the_safe_loaders_tools_is_named(tmp_path: Path, monkeypatch) -> None:
    """Listing a file's globals and giving stand-ins under their names came with PyTorch 2.6;
    an older torch must be named as the reason, not reported as a damaged file."""
    path = tmp_path / "sam.pth"
    torch.save(tiny_weights(), path)
    monkeypatch.delattr(torch.serialization, "get_unsafe_globals_in_checkpoint")
    monkeypatch.delattr(torch.serialization, "safe_globals")
    with pytest.raises(CheckpointError) as refused:
        read_state_dict(path)
    message = str(refused.value)
    assert str(path) in message and "PyTorch 2.6" in message and torch.__version__ in message
    assert "damaged" not in message and "weights_only" not in message


class ShadowedDict:
    """Pickles as an OrderedDict whose attributes are named like dict's methods (get, items,
    keys), as a crafted file can make it: the loader must read it as the dict it is."""

    def __init__(self, **items: object) -> None:
        self.items_ = items

    def __reduce__(self):
        return (collections.OrderedDict, (), {"get": 5, "items": 3, "keys": 1}, None, iter(self.items_.items()))


def test_a_dict_with_attributes_named_like_its_methods_is_read_as_a_dict(tmp_path: Path, demo_corpus: Path) -> None:
    weights = tiny_weights()
    path = tmp_path / "shadowed.pth"
    torch.save(ShadowedDict(state_dict=ShadowedDict(**sam_to_mmdet(weights))), path)
    assert_same(read_state_dict(path), weights)
    # a run's checkpoint.pt so made still resumes (its config is read as a plain dict)
    run = tmp_path / "run"
    flags = ["--model", "tiny", "--iters", "1", "--batch-size", "2", "--workers", "0", "--init", "none"]
    assert runner.invoke(app, ["train", "--corpus", str(demo_corpus), "--out", str(run), *flags]).exit_code == 0
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    state["config"] = ShadowedDict(**state["config"])
    torch.save(ShadowedDict(**state), run / "checkpoint.pt")
    result = runner.invoke(app, ["train", "--corpus", str(demo_corpus), "--out", str(run), "--resume", "--iters", "2"])
    assert result.exit_code == 0, result.output
