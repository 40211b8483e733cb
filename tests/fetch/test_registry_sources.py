"""The built-in registry's sources, fetched from local servers that answer as their platforms
do: what a user gets from `us43d fetch ID` must be what the dataset's converter reads."""

from __future__ import annotations

from pathlib import Path

import pytest
from fake_platforms import FakePlatform
from test_fetch import FAST, zip_bytes

from us43d.converters.base import Item, load_converter
from us43d.fetch.fetcher import fetch
from us43d.registry import Registry

CAMUS_NIFTI = "/database/api/v1/folder/63fde55f73e9f004868fb7ac/download"
CAMUS_SPLIT = "/database/api/v1/folder/66e27d12961576b1bad4e4e1/download"


def listed(dataset_id: str, raw: Path) -> list[Item]:
    entry = Registry.load().get(dataset_id)
    return [i for i in load_converter(entry.converter).list_items(raw / dataset_id, entry) if isinstance(i, Item)]


def test_camus_downloads_are_extracted_and_bring_the_official_split(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Girder serves both folders at `.../download`: a download named `download` was never
    extracted, and the split lists (another folder) were never downloaded."""
    nifti = {
        f"database_nifti/patient000{p}/patient000{p}_{view}_half_sequence{gt}.nii.gz": b"nifti"
        for p in (1, 2)
        for view in ("2CH", "4CH")
        for gt in ("", "_gt")
    }
    split = {
        "database_split/subgroup_training.txt": b"patient0001\n",
        "database_split/subgroup_validation.txt": b"",
        "database_split/subgroup_testing.txt": b"patient0002\n",
    }
    with FakePlatform(files={CAMUS_NIFTI: zip_bytes(nifti), CAMUS_SPLIT: zip_bytes(split)}) as server:
        server.headers[CAMUS_NIFTI] = {"Content-Disposition": 'attachment; filename="database_nifti.zip"'}
        monkeypatch.setenv("US43D_GIRDER_URL", server.url)
        (outcome,) = fetch([Registry.load().get("CAMUS")], tmp_path / "dl", tmp_path / "raw", policy=FAST)
    assert outcome.state == "fetched", outcome.messages
    assert any((tmp_path / "raw" / "CAMUS").rglob("database_split/subgroup_testing.txt"))
    splits = {item.key: item.split for item in listed("CAMUS", tmp_path / "raw")}
    assert splits == {"patient0001_2CH": None, "patient0001_4CH": None, "patient0002_2CH": "test", "patient0002_4CH": "test"}


def test_luss_phantom_is_a_manual_step_not_a_saved_landing_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with FakePlatform(files={"/1263/": b""}, faults={"/1263/": ["html"] * 3}) as server:
        monkeypatch.setenv("US43D_HTTP_URL", server.url)
        (outcome,) = fetch([Registry.load().get("LUSS-phantom")], tmp_path / "dl", tmp_path / "raw", policy=FAST)
        assert server.requests == []
    assert outcome.state == "manual" and "archive.researchdata.leeds.ac.uk/1263" in outcome.messages[0]
    assert not (tmp_path / "raw" / "LUSS-phantom").exists()


def png(tag: str) -> bytes:
    return f"PNG of {tag}".encode()


MENDELEY = {
    "BUS-UC": (
        "3ksd7w7jkx",
        {
            f"BUS_UC/{kind}/{folder}/{n:02d}.png": png(f"{kind}/{folder}/{n}")
            for kind in ("Benign", "Malignant")
            for folder in ("images", "masks")
            for n in (1, 2)
        },
    ),
    "BUS-UCLM": (
        "7fvgj4jsp7",
        {f"BUS-UCLM/{folder}/ALWI_{n:03d}.png": png(f"{folder}/{n}") for folder in ("images", "masks") for n in (0, 1)},
    ),
    "CCAUI": (
        "d4xt63mgjm",
        {
            f"Common Carotid Artery Ultrasound Images/{folder}/202201121748100022VAS_slice_{n}.png": png(f"{folder}/{n}")
            for folder in ("US images", "Expert mask images")
            for n in (1, 2)
        },
    ),
}


@pytest.mark.parametrize("parent_key", ["parent_id", "parent_folder_id"])
@pytest.mark.parametrize("dataset_id", sorted(MENDELEY))
def test_mendeley_files_keep_their_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dataset_id: str, parent_key: str
) -> None:
    """images/001.png and masks/001.png used to land on one bare name, the second over the first."""
    location, tree = MENDELEY[dataset_id]
    with FakePlatform() as server:
        server.mendeley(location, 1, tree, parent_key)
        monkeypatch.setenv("US43D_MENDELEY_URL", server.url)
        (outcome,) = fetch([Registry.load().get(dataset_id)], tmp_path / "dl", tmp_path / "raw", policy=FAST)
    assert outcome.state == "fetched", outcome.messages
    for path, data in tree.items():
        assert (tmp_path / "raw" / dataset_id / path).read_bytes() == data
    items = listed(dataset_id, tmp_path / "raw")
    assert len(items) == len(tree) // 2 and all(item.problem is None for item in items)
