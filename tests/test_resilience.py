"""Faults: a build killed part-way, a raw tree full of planted defects, untrusted inputs."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from helpers import build, load_json, make_stu_hospital, write_pair
from us43d.errors import CorpusError

ROOT = Path(__file__).resolve().parents[1]
OUTPUTS = ("coco/train.json", "coco/val.json", "parquet/images.parquet", "parquet/annotations.parquet")


def many_datasets(raw: Path, rng: np.random.Generator) -> None:
    make_stu_hospital(raw / "STU-Hospital", n=60, wrapper=None)
    for n in range(1, 61):
        write_pair(
            rng,
            raw / "BUS-B" / "BUS" / "original" / f"{n:06d}.png",
            raw / "BUS-B" / "BUS" / "GT" / f"{n:06d}.png",
            shape=(120, 160),
        )
        write_pair(
            rng,
            raw / "TNSCUI" / "TNSCUI2020_train" / "image" / f"{n:05d}.png",
            raw / "TNSCUI" / "TNSCUI2020_train" / "mask" / f"{n:05d}.png",
            shape=(120, 160),
        )


def _same_outputs(a: Path, b: Path) -> None:
    for name in OUTPUTS:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    pngs_a = sorted(p.relative_to(a) for p in (a / "images").rglob("*.png"))
    pngs_b = sorted(p.relative_to(b) for p in (b / "images").rglob("*.png"))
    assert pngs_a == pngs_b
    assert not [p for p in (a / "images").iterdir() if p.name.startswith(".staging")]


@pytest.mark.parametrize("delay", [0.8, 2.0])
def test_sigkill_then_rerun_equals_a_clean_build(tmp_path: Path, delay: float) -> None:
    raw = tmp_path / "raw"
    many_datasets(raw, np.random.default_rng(0))
    build(raw, tmp_path / "clean")
    command = [sys.executable, "-m", "us43d.cli", "build", "--raw", str(raw), "--out", str(tmp_path / "out"), "--workers", "2"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    time.sleep(delay)
    os.killpg(process.pid, signal.SIGKILL)  # the build and its workers, mid-flight
    process.wait()
    states = (
        sorted(p.stem for p in (tmp_path / "out" / ".state").glob("*.json")) if (tmp_path / "out" / ".state").exists() else []
    )
    for dataset in states:  # whatever was marked done is complete
        state = load_json(tmp_path / "out" / ".state" / f"{dataset}.json")
        for record in state["records"]:
            assert (tmp_path / "out" / "images" / record["file_name"]).is_file()
    result = build(raw, tmp_path / "out")
    assert result.item_errors == []
    _same_outputs(tmp_path / "out", tmp_path / "clean")


def test_planted_defects_are_all_reported(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    raw = tmp_path / "raw"
    bus = raw / "BUS-B" / "BUS"
    for n in range(1, 9):
        write_pair(rng, bus / "original" / f"{n:06d}.png", bus / "GT" / f"{n:06d}.png")
    image_1 = bus / "original" / "000001.png"
    image_1.write_bytes(image_1.read_bytes()[:100])  # truncated PNG
    (bus / "GT" / "000002.png").write_bytes(b"")  # zero-byte file
    write_pair(rng, None, bus / "GT" / "000003.png", shape=(30, 90))  # mask of another size
    write_pair(rng, None, bus / "GT" / "000004.png", mask=None)
    from PIL import Image

    Image.fromarray(rng.integers(1, 255, (60, 80), dtype=np.uint8)).save(bus / "GT" / "000004.png")  # noise only
    (bus / "GT" / "000005.png").unlink()  # missing pair
    tg3k = raw / "TG3K" / "Thyroid Dataset" / "tg3k"
    for n in range(4):
        write_pair(rng, tg3k / "thyroid-image" / f"{n}.jpg", tg3k / "thyroid-mask" / f"{n}.jpg")
    jpeg = tg3k / "thyroid-image" / "1.jpg"
    jpeg.write_bytes(jpeg.read_bytes()[: len(jpeg.read_bytes()) // 2])  # JPEG cut in half
    scans = raw / "MicroSeg" / "Micro_Ultrasound_Prostate_Segmentation_Dataset" / "train"
    for n in ("01", "02"):
        volume = rng.random((4, 20, 24)).astype(np.float32)
        label = np.zeros((4, 20, 24), np.uint8)
        label[1, 5:15, 5:15] = 1
        if n == "02":
            volume[2, 3, 3] = np.nan  # NaN in a volume
        (scans / "micro_ultrasound_scans").mkdir(parents=True, exist_ok=True)
        (scans / "expert_annotations").mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(volume, np.eye(4)), scans / "micro_ultrasound_scans" / f"microUS_train_{n}.nii.gz")
        nib.save(nib.Nifti1Image(label, np.eye(4)), scans / "expert_annotations" / f"expert_annotation_train_{n}.nii.gz")
    (raw / "STU-Hospital").mkdir()
    (raw / "STU-Hospital" / "Hospital").symlink_to(tmp_path / "gone")  # a folder that cannot be read

    result = build(raw, tmp_path / "out")
    coverage = {e["dataset"] for e in result.problems if "where the registry expects" in e["reason"]}
    assert coverage == {"BUS-B", "TG3K", "MicroSeg"}  # small fake trees: far fewer images or volumes than the releases
    reported = {
        (e["dataset"], e["file"]): e["reason"]
        for e in result.errors
        if e["dataset"] not in coverage or "expects" not in e["reason"]
    }
    expected = {
        ("BUS-B", "BUS/original/000001.png"): "cannot decode",
        ("BUS-B", "BUS/GT/000002.png"): "cannot decode",
        ("BUS-B", "BUS/GT/000003.png"): "mask is 90x30",
        ("BUS-B", "BUS/GT/000004.png"): "not binary",
        ("BUS-B", "BUS/original/000005.png"): "no matching mask",
        ("TG3K", "Thyroid Dataset/tg3k/thyroid-image/1.jpg"): "cannot decode",
        (
            "MicroSeg",
            "Micro_Ultrasound_Prostate_Segmentation_Dataset/train/micro_ultrasound_scans/microUS_train_02.nii.gz",
        ): "NaN",
        ("STU-Hospital", "."): "expected 'Hospital'",
    }
    assert set(reported) == set(expected), reported
    for key, words in expected.items():
        assert words in reported[key], (key, reported[key])
    for dataset in ("BUS-B", "TG3K", "MicroSeg"):
        r = result.reports[dataset]
        assert r.items_converted + r.items_failed == r.items  # converted + reported = total
    bus_report = result.reports["BUS-B"]
    assert (bus_report.images, bus_report.items_failed, bus_report.items) == (3, 5, 8)  # converted + reported = total
    assert result.reports["TG3K"].images == 3 and result.reports["MicroSeg"].images == 1
    written = load_json(tmp_path / "out" / "build.json")
    assert len(written["errors"]) + len(written["problems"]) == len(expected) + len(coverage)


def test_nothing_unpickles_freely_and_loading_is_safe() -> None:
    sources = {p: p.read_text() for p in (ROOT / "us43d").rglob("*.py")}
    assert not [p.name for p, text in sources.items() if "allow_pickle=True" in text]
    assert not [p for p, text in sources.items() if "yaml.load(" in text or "pickle.load" in text]
    unpicklers = [p.name for p, text in sources.items() if "pickle.Unpickler" in text]
    assert unpicklers == ["readers.py"] and "def find_class" in sources[ROOT / "us43d" / "converters" / "readers.py"]
    loads = [line for text in sources.values() for line in text.splitlines() if "torch.load(" in line]
    assert loads and all("weights_only=True" in line for line in loads)


# A second process holding the corpus lock the way a running build does: an exclusive flock on
# OUT/.lock, its pid written inside.
HOLD_LOCK = """
import fcntl, os, sys
handle = open(sys.argv[1], "a+")
fcntl.flock(handle, fcntl.LOCK_EX)
handle.seek(0)
handle.truncate()
handle.write(str(os.getpid()))
handle.flush()
print("locked", flush=True)
sys.stdin.read()
"""


def _snapshot(out: Path) -> dict[str, bytes]:
    """Every file of a corpus but the lock, by path."""
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file() and p.name != ".lock"}


def _cli(*args: str):
    from typer.testing import CliRunner

    from us43d.cli import app

    return CliRunner().invoke(app, list(args), catch_exceptions=False, env={"COLUMNS": "220"})


def test_a_build_into_an_out_another_build_holds_stops_at_once_naming_it(tmp_path: Path) -> None:
    raw, out = tmp_path / "raw", tmp_path / "out"
    make_stu_hospital(raw / "STU-Hospital", n=4, wrapper=None)
    build(raw, out)
    before = _snapshot(out)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(out / ".lock")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        second = _cli("build", "--raw", str(raw), "--out", str(out), "--workers", "1", "--force")
        from us43d.corpus.validate import validate_corpus

        with pytest.raises(CorpusError, match=f"pid {holder.pid}"):
            validate_corpus(out)  # nor is a corpus being written validated
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait()
    assert second.exit_code == 2, second.output
    assert f"pid {holder.pid}" in second.output and "Traceback" not in second.output
    assert _snapshot(out) == before  # the refused build touched nothing
    assert build(raw, out, force=True).reports["STU-Hospital"].images == 4  # free again once the holder is gone


def test_two_builds_started_together_leave_one_complete_corpus(tmp_path: Path) -> None:
    raw, out = tmp_path / "raw", tmp_path / "out"
    make_stu_hospital(raw / "STU-Hospital", n=30, wrapper=None)
    command = [sys.executable, "-m", "us43d.cli", "build", "--raw", str(raw), "--out", str(out), "--workers", "1"]
    runs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    finished = [(p.wait(), p.communicate()[1]) for p in runs]
    assert any(code == 0 for code, _ in finished)
    for code, stderr in finished:  # the other one either came second or was refused at once
        assert code == 0 or (code == 2 and "another us43d build (pid" in stderr), stderr
    from us43d.corpus.validate import validate_corpus

    assert validate_corpus(out).ok
    assert len(list((out / "images" / "STU-Hospital").glob("*.png"))) == 30
    assert build(raw, out).reports["STU-Hospital"].reused


def _add_pair(raw: Path, number: int) -> None:
    """One more image of the fake STU-Hospital tree: its inputs changed, so it is rebuilt."""
    rng = np.random.default_rng(number)
    folder = raw / "STU-Hospital" / "Hospital"
    write_pair(rng, folder / f"Test_Image_{number}.png", None, shape=(128, 128))
    from helpers import anti_aliased_upscale, ellipse, write_png

    write_png(folder / f"mask_{number}.png", anti_aliased_upscale(ellipse((128, 128), (64, 64), (20, 20))))


def _no_space(path: object) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def _inject(monkeypatch: pytest.MonkeyPatch, fault: str, out: Path) -> None:
    """A full disk at one place of the build: the PNG writer, the rename of a PNG into place, the
    dataset's state file, the swap of its image folder, or the Parquet tables."""
    from us43d.corpus import process

    calls = {"n": 0}
    real_replace, real_write_bytes, real_write_png = os.replace, Path.write_bytes, process.write_png

    def write_png(pixels, path):
        calls["n"] += 1
        if calls["n"] > 5:
            raise _no_space(path)
        return real_write_png(pixels, path)

    def replace(src, dst, *args, **kwargs):
        target = Path(dst)
        if fault == "png rename" and target.suffix == ".png":
            calls["n"] += 1
            if calls["n"] > 5:
                raise _no_space(dst)
        if fault == "swap" and target == out / "images" / "STU-Hospital" and "swapped" not in calls:
            calls["swapped"] = 1  # once: putting the previous images back succeeds
            raise _no_space(dst)
        return real_replace(src, dst, *args, **kwargs)

    def write_bytes(self, data):
        if (fault == "state" and self.parent.name == ".state" and "STU-Hospital" in self.name) or (
            fault == "tables" and ".parquet" in self.name
        ):
            raise _no_space(self)
        return real_write_bytes(self, data)

    if fault == "png writer":
        monkeypatch.setattr(process, "write_png", write_png)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(Path, "write_bytes", write_bytes)


@pytest.mark.parametrize("fault", ["png writer", "png rename", "state", "swap"])
def test_a_full_disk_stops_the_rebuild_and_keeps_the_previous_dataset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    from us43d.corpus.validate import validate_corpus

    raw, out = tmp_path / "raw", tmp_path / "out"
    make_stu_hospital(raw / "STU-Hospital", n=12, wrapper=None)
    build(raw, out)
    before = _snapshot(out)
    _add_pair(raw, 13)
    with monkeypatch.context() as patch:
        _inject(patch, fault, out)
        with pytest.raises(CorpusError, match="No space left on device"):
            build(raw, out)
    assert _snapshot(out) == before  # the 12 images, their state and the tables, byte for byte
    assert not [p.name for p in (out / "images").iterdir() if p.name.startswith(".")]  # no staging left
    assert validate_corpus(out, deep=True).ok
    again = build(raw, out)  # space freed: the rebuild completes
    assert again.reports["STU-Hospital"].images == 13 and not again.reports["STU-Hospital"].reused
    assert validate_corpus(out, deep=True).ok


def test_a_full_disk_while_writing_the_tables_keeps_them_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from us43d.corpus.validate import validate_corpus

    raw, out = tmp_path / "raw", tmp_path / "out"
    make_stu_hospital(raw / "STU-Hospital", n=12, wrapper=None)
    build(raw, out)
    tables = {k: v for k, v in _snapshot(out).items() if k.startswith(("coco/", "parquet/")) or k == "build.json"}
    _add_pair(raw, 13)
    with monkeypatch.context() as patch:
        _inject(patch, "tables", out)
        with pytest.raises(CorpusError, match="No space left on device"):
            build(raw, out)
    after = _snapshot(out)
    assert {k: after[k] for k in tables} == tables and not [k for k in after if ".tmp" in k]  # old tables, none half-new
    problems = validate_corpus(out).problems  # the dataset is new, the tables are not: never passes silently
    assert any("Test_Image_13" in p for p in problems), problems
    build(raw, out)
    assert validate_corpus(out, deep=True).ok


def test_a_full_disk_is_a_clean_error_and_a_failed_exit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    raw, out = tmp_path / "raw", tmp_path / "out"
    make_stu_hospital(raw / "STU-Hospital", n=22, wrapper=None)  # enough not to be a dataset problem
    _inject(monkeypatch, "png writer", out)
    result = _cli("build", "--raw", str(raw), "--out", str(out), "--workers", "1")
    assert result.exit_code == 2, result.output
    assert "No space left on device" in result.output and "Traceback" not in result.output
    assert not (out / ".state" / "STU-Hospital.json").exists() and not (out / "images" / "STU-Hospital").exists()


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs POSIX file size limits")
def test_a_real_write_fault_in_worker_processes_stops_the_build(tmp_path: Path) -> None:
    """The kernel refuses every write past 8 kB (RLIMIT_FSIZE, as a full disk refuses all): the
    PNG writes fail in the worker processes, and the build stops with the previous corpus kept."""
    import resource

    raw, out = tmp_path / "raw", tmp_path / "out"
    make_stu_hospital(raw / "STU-Hospital", n=22, wrapper=None)
    build(raw, out)
    before = _snapshot(out)
    _add_pair(raw, 23)
    assert (out / "images" / "STU-Hospital" / "Test_Image_1.png").stat().st_size > 8000  # every PNG write fails

    def limit_file_size() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a refused write, not a killed process
        resource.setrlimit(resource.RLIMIT_FSIZE, (8000, 8000))

    command = [sys.executable, "-m", "us43d.cli", "build", "--raw", str(raw), "--out", str(out), "--workers", "2"]
    # No bytecode is written under the limit: a cut .pyc would break later imports.
    environment = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(ROOT)}
    run = subprocess.run(command, preexec_fn=limit_file_size, env=environment, capture_output=True, text=True)
    assert run.returncode == 2, run.stderr
    assert "cannot write" in run.stderr and "File too large" in run.stderr and "Traceback" not in run.stderr
    assert _snapshot(out) == before
    assert not [p.name for p in (out / "images").iterdir() if p.name.startswith(".")]
