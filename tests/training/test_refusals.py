"""Bad settings, foreign files and outputs that would overwrite inputs: one clear line, exit 2,
and nothing of the user's lost."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from training.conftest import tiny_config
from us43d.cli import app
from us43d.training.checkpoints import CheckpointError, read_state_dict
from us43d.training.train import train

runner = CliRunner()
TINY_RUN = [
    *("--model", "tiny", "--batch-size", "2", "--global-batch", "2", "--val-every", "0"),
    *("--workers", "0", "--no-refine", "--init", "none"),
]


def invoke(*args: str):
    return runner.invoke(app, list(args), env={"COLUMNS": "220"})


def assert_clean_error(result, *words: str) -> None:
    """Exit 2 with one line that says what is wrong, and no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    for word in words:
        assert word in result.output, (word, result.output)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(
    "flags, words",
    [
        (["--batch-size", "0"], ["batch_size", "greater than or equal to 1"]),
        (["--lr", "nan"], ["lr", "finite"]),
        (["--lr", "inf"], ["lr", "finite"]),
        (["--lr", "-0.1"], ["lr", "greater than 0"]),
        (["--workers", "-1"], ["workers", "greater than or equal to 0"]),
        (["--iters", "-5"], ["iters", "greater than or equal to 1"]),
        (["--iters", "0"], ["iters", "greater than or equal to 1"]),
        (["--checkpoint-every", "0"], ["checkpoint_every"]),
        (["--image-size", "0"], ["image_size"]),
        (["--seed", "-1"], ["seed"]),
    ],
)
def test_bad_training_settings_are_refused_before_anything_is_written(
    demo_corpus: Path, tmp_path: Path, flags: list[str], words: list[str]
) -> None:
    run = tmp_path / "run"
    result = invoke("train", "--corpus", str(demo_corpus), "--out", str(run), *TINY_RUN, "--iters", "1", *flags)
    assert_clean_error(result, "invalid training setting", *words)
    assert not run.exists()


def test_bad_settings_in_a_config_file_are_refused(demo_corpus: Path, tmp_path: Path) -> None:
    base = ["train", "--corpus", str(demo_corpus), "--out", str(tmp_path / "run"), "--model", "tiny"]
    config = tmp_path / "settings.yaml"
    config.write_text("batch_size: 0\n")
    assert_clean_error(invoke(*base, "--config", str(config)), "batch_size", "settings.yaml")
    config.write_text("- a list\n- not settings\n")
    assert_clean_error(invoke(*base, "--config", str(config)), "settings.yaml", "mapping")
    config.write_text("lr: [unclosed\n")
    assert_clean_error(invoke(*base, "--config", str(config)), "settings.yaml", "YAML")
    config.write_text("warmup_factor: 2\n")
    assert_clean_error(invoke(*base, "--config", str(config)), "warmup_factor")
    assert_clean_error(invoke(*base, "--config", str(tmp_path / "absent.yaml")), "absent.yaml", "does not exist")
    assert not (tmp_path / "run").exists()


def test_a_comma_separated_exclude_in_a_config_file_is_a_list_of_organs(tmp_path: Path) -> None:
    from us43d.training.train import TrainConfig

    config = tmp_path / "settings.yaml"
    config.write_text("exclude: breast,ovary\ndatasets: BUS-BRA\nlr: 1e-3\n")
    settings = TrainConfig.from_file(config)
    assert settings.exclude == ("breast", "ovary") and settings.datasets == ("BUS-BRA",) and settings.lr == 1e-3


def test_training_into_an_existing_run_needs_resume(demo_corpus: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    first = invoke("train", "--corpus", str(demo_corpus), "--out", str(run), *TINY_RUN, "--iters", "1")
    assert first.exit_code == 0, first.output
    before = snapshot(run)
    assert {"model.pth", "checkpoint.pt", "metrics.jsonl", "run.json"} <= set(before)
    again = invoke("train", "--corpus", str(demo_corpus), "--out", str(run), *TINY_RUN, "--iters", "1")
    assert_clean_error(again, "--resume", "another --out")
    assert snapshot(run) == before
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    refused = invoke("train", "--corpus", str(demo_corpus), "--out", str(foreign), *TINY_RUN, "--iters", "1")
    assert_clean_error(refused, "not empty")
    assert snapshot(foreign) == {"notes.txt": b"keep me"}
    (tmp_path / "empty").mkdir()
    fine = invoke("train", "--corpus", str(demo_corpus), "--out", str(tmp_path / "empty"), *TINY_RUN, "--iters", "1")
    assert fine.exit_code == 0, fine.output


def test_resume_with_more_iterations_continues_to_the_new_count(demo_corpus: Path, tmp_path: Path) -> None:
    train(demo_corpus, tmp_path / "full", tiny_config(iters=6))
    train(demo_corpus, tmp_path / "part", tiny_config(iters=3))
    result = invoke("train", "--corpus", str(demo_corpus), "--out", str(tmp_path / "part"), "--resume", "--iters", "6")
    assert result.exit_code == 0, result.output
    assert "done: 6 iterations" in result.output
    state = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=True)
    assert state["step"] == 6 and state["config"]["iters"] == 6
    full = torch.load(tmp_path / "full" / "model.pth", weights_only=True)
    resumed = torch.load(tmp_path / "part" / "model.pth", weights_only=True)
    for key in full:
        torch.testing.assert_close(resumed[key], full[key], rtol=0, atol=0, msg=key)
    steps = [json.loads(line)["step"] for line in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_resume_refuses_what_it_cannot_honour(demo_corpus: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(demo_corpus, run, tiny_config(iters=4, checkpoint_every=4))
    before = snapshot(run)
    base = ["train", "--corpus", str(demo_corpus), "--out", str(run), "--resume"]
    assert_clean_error(invoke(*base), "already finished its 4 iterations", "--iters")
    assert_clean_error(invoke(*base, "--iters", "2"), "at iteration 4", "--iters 2")
    assert_clean_error(invoke(*base, "--iters", "8", "--lr", "0.5"), "lr 0.5", "the run's: 0.001", "another --out")
    assert_clean_error(invoke(*base, "--iters", "8", "--batch-size", "4"), "batch_size 4")
    assert snapshot(run) == before
    from us43d.training.train import resume

    with pytest.raises(CheckpointError, match="no checkpoint.pt to resume from"):
        resume(demo_corpus, tmp_path / "none")


def empty_file(path: Path) -> None:
    path.write_bytes(b"")


def text_file(path: Path) -> None:
    path.write_text("not weights\n")


def truncated_file(path: Path) -> None:
    torch.save({"w": torch.zeros(64)}, path)
    path.write_bytes(path.read_bytes()[:200])


class RunsCode:
    def __reduce__(self):
        return (os.getcwd, ())


def zipped_checkpoint(path: Path) -> None:
    import zipfile

    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("weights/model.bin", b"1234")


def pickled_code(path: Path) -> None:
    torch.save({"w": RunsCode()}, path)


@pytest.mark.parametrize(
    "make, reason",
    [
        (empty_file, "the file is empty"),
        (text_file, "not a PyTorch checkpoint"),
        (truncated_file, "damaged or truncated"),
        (zipped_checkpoint, "a zip archive, but not a PyTorch checkpoint"),
        (pickled_code, "refused by the safe loader"),
    ],
)
def test_an_unreadable_checkpoint_says_why(tmp_path: Path, make, reason: str) -> None:
    bad = tmp_path / "bad.pth"
    make(bad)
    with pytest.raises(CheckpointError, match=reason):
        read_state_dict(bad)
    image = tmp_path / "image.png"
    Image.new("L", (64, 48), 80).save(image)
    result = invoke(
        "predict", str(image), "--checkpoint", str(bad), "--model", "tiny", "--box", "1,1,9,9", "--out", str(tmp_path / "m.png")
    )
    assert_clean_error(result, str(bad), reason)
    assert not (tmp_path / "m.png").exists()


def test_a_folder_given_as_checkpoint_is_named_as_such(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="is a folder"):
        read_state_dict(tmp_path)


@pytest.fixture()
def image(tmp_path: Path) -> Path:
    path = tmp_path / "scan.png"
    Image.new("L", (64, 48), 80).save(path)
    return path


def predict(image: Path, checkpoint: Path, out: Path | str):
    return invoke(
        "predict", str(image), "--checkpoint", str(checkpoint), "--model", "tiny", "--box", "8,8,40,30", "--out", str(out)
    )


def test_predict_never_writes_over_its_inputs(
    image: Path, tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original, weights = image.read_bytes(), tiny_checkpoint.read_bytes()
    assert_clean_error(predict(image, tiny_checkpoint, image), "would overwrite", "the input image")
    monkeypatch.chdir(tmp_path)
    assert_clean_error(predict(image, tiny_checkpoint, Path("sub/../scan.png")), "would overwrite")
    (tmp_path / "link.png").symlink_to(image)
    assert_clean_error(predict(image, tiny_checkpoint, tmp_path / "link.png"), "would overwrite")
    os.link(image, tmp_path / "hard.png")
    assert_clean_error(predict(image, tiny_checkpoint, tmp_path / "hard.png"), "would overwrite")
    # the overlay goes beside the mask as <stem>.overlay.png: that must not hit the input either
    overlay_named = tmp_path / "case.overlay.png"
    overlay_named.write_bytes(original)
    assert_clean_error(predict(overlay_named, tiny_checkpoint, tmp_path / "case.png"), "would overwrite")
    checkpoint_png = tmp_path / "weights.png"
    checkpoint_png.write_bytes(weights)
    assert_clean_error(predict(image, checkpoint_png, checkpoint_png), "would overwrite", "the checkpoint")
    assert image.read_bytes() == original and overlay_named.read_bytes() == original
    assert checkpoint_png.read_bytes() == weights
    assert not (tmp_path / "case.png").exists()


def test_predict_into_a_folder_writes_named_files_inside(image: Path, tiny_checkpoint: Path, tmp_path: Path) -> None:
    folder = tmp_path / "masks"
    folder.mkdir()
    result = predict(image, tiny_checkpoint, folder)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in folder.iterdir()) == ["scan.mask.overlay.png", "scan.mask.png"]
    with Image.open(folder / "scan.mask.png") as mask:
        assert mask.size == (64, 48) and mask.mode == "L"
    # the folder that holds the image is fine too: the mask gets its own name
    assert predict(image, tiny_checkpoint, image.parent).exit_code == 0
    assert (image.parent / "scan.mask.png").is_file()


@pytest.mark.parametrize("name", ["mask", "mask.jpg"])
def test_predict_writes_png_only(image: Path, tiny_checkpoint: Path, tmp_path: Path, name: str) -> None:
    assert_clean_error(predict(image, tiny_checkpoint, tmp_path / name), "--out", ".png")
    assert not (tmp_path / name).exists()


def test_predict_reports_an_unwritable_output(image: Path, tiny_checkpoint: Path, tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    assert_clean_error(predict(image, tiny_checkpoint, tmp_path / "afile" / "mask.png"), "cannot write")


def test_predict_names_a_bad_image_as_the_input(tiny_checkpoint: Path, tmp_path: Path) -> None:
    (tmp_path / "notes.png").write_text("not an image")
    assert_clean_error(predict(tmp_path / "notes.png", tiny_checkpoint, tmp_path / "m.png"), "cannot read image", "notes.png")


def test_convert_and_eval_never_write_over_the_checkpoint(tiny_checkpoint: Path, demo_corpus: Path, tmp_path: Path) -> None:
    weights = tiny_checkpoint.read_bytes()
    assert_clean_error(invoke("convert-checkpoint", str(tiny_checkpoint), str(tiny_checkpoint)), "would overwrite")
    listed = ["eval", "--checkpoint", str(tiny_checkpoint), "--corpus", str(demo_corpus), "--model", "tiny"]
    assert_clean_error(invoke(*listed, "--datasets", "BUS-BRA", "--json", str(tiny_checkpoint)), "would overwrite")
    assert tiny_checkpoint.read_bytes() == weights
    folder = tmp_path / "folder"
    folder.mkdir()
    assert_clean_error(invoke("convert-checkpoint", str(tiny_checkpoint), str(folder)), "is a folder")
    (tmp_path / "afile").write_text("x")
    assert_clean_error(invoke("convert-checkpoint", str(tiny_checkpoint), str(tmp_path / "afile" / "x.pth")), "cannot write")
    assert_clean_error(invoke(*listed, "--datasets", "BUS-BRA", "--json", str(folder)), "is a folder")
    assert list(folder.iterdir()) == [] and (tmp_path / "afile").read_text() == "x"


@pytest.mark.parametrize("size", ["0", "-16", "100"])
def test_eval_and_predict_refuse_a_bad_image_size(image: Path, tiny_checkpoint: Path, demo_corpus: Path, size: str) -> None:
    out = image.parent / "m.png"
    common = ["--checkpoint", str(tiny_checkpoint), "--model", "tiny", "--image-size", size]
    assert_clean_error(invoke("predict", str(image), *common, "--box", "1,1,9,9", "--out", str(out)), "--image-size", size)
    assert_clean_error(invoke("eval", *common, "--corpus", str(demo_corpus), "--datasets", "BUS-BRA"), "--image-size", size)
    assert not out.exists()
