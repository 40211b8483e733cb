"""Faults: a build killed part-way, a raw tree full of planted defects, untrusted inputs."""

from __future__ import annotations

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


@pytest.mark.timeout(300)
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
    assert coverage == {"BUS-B", "TG3K"}  # small fake trees: far fewer images than the real releases
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
