from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from helpers import make_stu_hospital
from us43d.cli import app

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]


def run(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False, env={"COLUMNS": "220"})


def test_list_filters_and_info() -> None:
    result = run("list", "--organ", "ovary")
    assert result.exit_code == 0
    assert "MMOTU-2D" in result.output and "MMOTU-3D" in result.output and "BUS-BRA" not in result.output
    assert "2 of 43 datasets" in result.output
    info = run("info", "gist514-db")
    assert info.exit_code == 0
    assert "gastrointestinal stromal tumour" in info.output and "val_anno_crop_split_0.json" in info.output


def test_unknown_id_is_a_clean_error() -> None:
    result = run("info", "nope")
    assert result.exit_code == 2
    assert "unknown dataset id 'nope'" in result.output
    assert "Traceback" not in result.output


def test_docs_check(tmp_path: Path) -> None:
    assert run("docs", "--check", "--output", str(ROOT / "DATASETS.md")).exit_code == 0
    stale = tmp_path / "DATASETS.md"
    stale.write_text("old")
    assert run("docs", "--check", "--output", str(stale)).exit_code == 1
    assert run("docs", "--output", str(stale)).exit_code == 0
    assert run("docs", "--check", "--output", str(stale)).exit_code == 0


def test_build_validate_stats(tmp_path: Path) -> None:
    make_stu_hospital(tmp_path / "raw" / "STU-Hospital", n=21)  # half the release: enough not to be flagged
    raw, out = str(tmp_path / "raw"), str(tmp_path / "out")
    result = run("build", "stu-hospital", "--raw", raw, "--out", out, "--workers", "1")
    assert result.exit_code == 0, result.output
    assert run("validate", out).exit_code == 0
    stats = run("stats", out)
    assert stats.exit_code == 0
    assert "STU-Hospital" in stats.output and "breast" in stats.output and "21 / 42" in stats.output
    assert "problem" not in stats.output
    assert json.loads((tmp_path / "out" / "build.json").read_text())["totals"]["images"] == 21
    missing = run("build", "--raw", str(tmp_path / "none"), "--out", out)
    assert missing.exit_code == 2 and "does not exist" in missing.output
    assert run("stats", str(tmp_path / "none")).exit_code == 2


def test_a_dataset_that_yields_too_little_fails_the_build(tmp_path: Path) -> None:
    make_stu_hospital(tmp_path / "raw" / "STU-Hospital", n=6)
    raw, out = str(tmp_path / "raw"), str(tmp_path / "out")
    result = run("build", "stu-hospital", "--raw", raw, "--out", out, "--workers", "1")
    assert result.exit_code == 1
    assert "found 6 images where the registry expects 42" in result.output
    stats = run("stats", out)
    assert stats.exit_code == 0 and "6 / 42" in stats.output and "registry expects 42" in stats.output
    empty = tmp_path / "raw" / "STU-Hospital" / "STU-Hospital-master" / "Hospital"
    for path in empty.iterdir():
        path.unlink()
    nothing = run("build", "stu-hospital", "--raw", raw, "--out", out, "--workers", "1")
    assert nothing.exit_code == 1 and "no images found" in nothing.output


def test_user_registry_option(tmp_path: Path) -> None:
    (tmp_path / "reg").mkdir()
    (tmp_path / "reg" / "Broken.yaml").write_text("id: Broken\nname: x\n")
    result = run("list", "--registry", str(tmp_path / "reg"))
    assert result.exit_code == 2
    assert "Broken.yaml" in result.output and "field 'description'" in result.output


def test_demo_runs_offline(tmp_path: Path) -> None:
    """The whole path, training included; few iterations, so nothing here waits on the machine's speed."""
    demo = tmp_path / "demo"
    result = run("demo", "--dir", str(demo), "--workers", "2", "--train-iters", "3")
    assert result.exit_code == 0, result.output
    assert "valid" in result.output and "BUS-BRA" in result.output
    assert "training the tiny model for 3 iterations" in result.output and "trained" in result.output
    images = json.loads((demo / "corpus" / "build.json").read_text())["totals"]["images"]
    assert images >= 16
    assert torch_state_step(demo / "run" / "checkpoint.pt") == 3


def torch_state_step(path: Path) -> int | None:
    torch = pytest.importorskip("torch")
    return torch.load(path, weights_only=True)["step"] if path.is_file() else None


def test_demo_reruns_in_its_own_folder_and_replaces_only_its_own_files(tmp_path: Path) -> None:
    demo = tmp_path / "demo"
    assert run("demo", "--dir", str(demo), "--workers", "1", "--train-iters", "0", "--patients", "9").exit_code == 0
    (demo / "notes.txt").write_text("mine")
    again = run("demo", "--dir", str(demo), "--workers", "1", "--train-iters", "0", "--patients", "6")
    assert again.exit_code == 0, again.output
    # the earlier, larger synthetic set is gone, not mixed in with the new one
    raw_images = sorted((demo / "raw" / "BUS-BRA" / "BUSBRA" / "Images").iterdir())
    assert all(int(p.name[4:8]) <= 6 for p in raw_images), raw_images
    assert (demo / "notes.txt").read_text() == "mine"


def test_demo_refuses_a_folder_it_does_not_own(tmp_path: Path) -> None:
    """`us43d demo --dir .` in a project must not replace the real raw data or corpus."""
    project = tmp_path / "project"
    real_raw = project / "raw" / "BUS-BRA" / "BUSBRA" / "Images"
    real_raw.mkdir(parents=True)
    (real_raw / "bus_0001-l.png").write_bytes(b"a real image")
    (project / "corpus").mkdir()
    (project / "corpus" / "build.json").write_text("{}")
    before = {p: p.read_bytes() for p in project.rglob("*") if p.is_file()}
    result = run("demo", "--dir", str(project), "--train-iters", "0")
    assert result.exit_code == 2
    assert "not made by `us43d demo`" in result.output and "Traceback" not in result.output
    assert {p: p.read_bytes() for p in project.rglob("*") if p.is_file()} == before
    (tmp_path / "afile").write_text("x")
    assert run("demo", "--dir", str(tmp_path / "afile"), "--train-iters", "0").exit_code == 2
    assert (tmp_path / "afile").read_text() == "x"


def test_demo_will_not_delete_through_a_link(tmp_path: Path) -> None:
    demo = tmp_path / "demo"
    assert run("demo", "--dir", str(demo), "--workers", "1", "--train-iters", "0", "--patients", "5").exit_code == 0
    elsewhere = tmp_path / "elsewhere" / "BUS-BRA"
    elsewhere.mkdir(parents=True)
    (elsewhere / "keep.png").write_bytes(b"keep")
    import shutil

    shutil.rmtree(demo / "raw")
    (demo / "raw").symlink_to(tmp_path / "elsewhere")
    result = run("demo", "--dir", str(demo), "--workers", "1", "--train-iters", "0", "--patients", "5")
    assert result.exit_code == 2 and "link" in result.output
    assert (elsewhere / "keep.png").read_bytes() == b"keep"


@pytest.mark.parametrize("flags", [["--patients", "0"], ["--workers", "0"], ["--train-iters", "-1"]])
def test_demo_refuses_bad_numbers(tmp_path: Path, flags: list[str]) -> None:
    result = run("demo", "--dir", str(tmp_path / "demo"), *flags)
    assert result.exit_code == 2 and "Invalid value" in result.output
    assert not (tmp_path / "demo").exists()
