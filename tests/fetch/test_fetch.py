"""End to end: registry sources -> local fake platforms -> verified downloads -> RAW/<ID>/."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import pytest
import yaml
from fake_platforms import FakePlatform
from typer.testing import CliRunner

from helpers import private_entry, write_entries
from us43d.cli import app
from us43d.fetch.fetcher import dataset_status, fetch
from us43d.fetch.http import RetryPolicy
from us43d.registry import Registry

runner = CliRunner()
FAST = RetryPolicy(attempts=4, base_delay=0.0, sleep=lambda _: None)


def zip_bytes(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for name, data in entries.items():
            bundle.writestr(name, data)
    return buffer.getvalue()


def entry(dataset_id: str, sources: list[dict], access: str = "open") -> dict:
    return private_entry(dataset_id, licence="CC BY 4.0", access=access, converter="bus_b", sources=sources)


def registry_with(tmp_path: Path, *entries: dict) -> Registry:
    return Registry.load([write_entries(tmp_path / "registry", *entries)], include_builtin=False)


ARCHIVE = zip_bytes({"BUS/original/000001.png": b"png", "BUS/GT/000001.png": b"mask"})
MD5 = hashlib.md5(ARCHIVE).hexdigest()


def zenodo_record(url: str, legacy: bool = True) -> dict:
    file = {
        "id": "f1",
        "key": "BUS data.zip",
        "size": len(ARCHIVE),
        "checksum": f"md5:{MD5}",
        "links": {"self": f"{url}/api/records/42/files/BUS data.zip/content"},
    }
    return {"id": 42, "files": [file] if legacy else {"enabled": True, "entries": {"BUS data.zip": file}}}


@pytest.mark.parametrize("legacy", [True, False])
def test_zenodo_record_to_raw(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, legacy: bool) -> None:
    with FakePlatform(files={"/api/records/42/files/BUS%20data.zip/content": ARCHIVE}) as server:
        server.json["/api/records/42"] = zenodo_record(server.url, legacy)
        server.faults["/api/records/42/files/BUS%20data.zip/content"] = ["drop", "503"]
        monkeypatch.setenv("US43D_ZENODO_URL", server.url)
        reg = registry_with(tmp_path, entry("ZenSet", [{"kind": "zenodo", "location": "42"}]))
        (outcome,) = fetch(list(reg), tmp_path / "dl", tmp_path / "raw", policy=FAST)
    assert outcome.state == "fetched", outcome.messages
    assert (tmp_path / "raw" / "ZenSet" / "BUS" / "GT" / "000001.png").read_bytes() == b"mask"
    assert dataset_status(reg.get("ZenSet"), tmp_path / "dl", tmp_path / "raw", None) == "fetched"


def test_wrong_checksum_from_the_api_fails_and_installs_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with FakePlatform(files={"/api/records/42/files/BUS%20data.zip/content": ARCHIVE[:-1] + b"X"}) as server:
        server.json["/api/records/42"] = zenodo_record(server.url)
        monkeypatch.setenv("US43D_ZENODO_URL", server.url)
        reg = registry_with(tmp_path, entry("ZenSet", [{"kind": "zenodo", "location": "42"}]))
        (outcome,) = fetch(list(reg), tmp_path / "dl", tmp_path / "raw", policy=FAST)
    assert outcome.state == "failed" and "md5" in outcome.messages[0]
    assert not (tmp_path / "raw" / "ZenSet").exists()


def test_zip_slip_download_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    evil = zip_bytes({"../../escape.txt": b"x"})
    with FakePlatform(files={"/files/evil.zip": evil}) as server:
        monkeypatch.setenv("US43D_HTTP_URL", server.url)
        source = {
            "kind": "http",
            "location": "https://example.org/files/evil.zip",
            "files": [{"name": "evil.zip", "sha256": hashlib.sha256(evil).hexdigest()}],
        }
        reg = registry_with(tmp_path, entry("Evil", [source]))
        (outcome,) = fetch(list(reg), tmp_path / "dl", tmp_path / "raw", policy=FAST)
    assert outcome.state == "failed" and "refusing entry" in outcome.messages[0]
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "raw" / "Evil").exists()


def test_mendeley_github_figshare(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sha = hashlib.sha256(ARCHIVE).hexdigest()
    with FakePlatform() as server:
        server.files["/dl/mendeley.zip"] = ARCHIVE
        server.json["/public-api/datasets/abc/folders/1"] = [{"id": "sub", "name": "images", "parent_id": "root"}]
        server.files["/owner/repo/zip/0123456789abcdef"] = ARCHIVE
        server.json["/v2/articles/99/files"] = [
            {
                "id": 1,
                "name": "fig.zip",
                "size": len(ARCHIVE),
                "is_link_only": False,
                "download_url": f"{server.url}/ndownloader/files/1",
                "computed_md5": MD5,
            }
        ]
        server.files["/ndownloader/files/1"] = ARCHIVE
        listing = [
            {
                "id": "x",
                "filename": "mendeley.zip",
                "content_details": {"download_url": f"{server.url}/dl/mendeley.zip", "sha256_hash": sha, "size": len(ARCHIVE)},
            }
        ]
        for key in ("US43D_MENDELEY_URL", "US43D_GITHUB_URL", "US43D_FIGSHARE_URL"):
            monkeypatch.setenv(key, server.url)

        server.json["/public-api/datasets/abc/files?folder_id=root&version=1"] = []
        server.json["/public-api/datasets/abc/files?folder_id=sub&version=1"] = listing
        reg = registry_with(
            tmp_path,
            entry("MenSet", [{"kind": "mendeley", "location": "abc", "ref": "1"}]),
            entry("GitSet", [{"kind": "github", "location": "owner/repo", "ref": "0123456789abcdef"}]),
            entry("FigSet", [{"kind": "figshare", "location": "99"}]),
        )
        outcomes = {o.dataset: o for o in fetch(list(reg), tmp_path / "dl", tmp_path / "raw", workers=3, policy=FAST)}
    assert {k: o.state for k, o in outcomes.items()} == {"MenSet": "fetched", "GitSet": "fetched", "FigSet": "fetched"}
    for dataset_id, folder in (("MenSet", "images"), ("GitSet", ""), ("FigSet", "")):  # Mendeley keeps the file's folder
        assert (tmp_path / "raw" / dataset_id / folder / "BUS" / "original" / "000001.png").is_file()


def test_kaggle_credentials_and_competition_rules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with FakePlatform(
        files={"/api/v1/datasets/download/owner/slug": ARCHIVE, "/api/v1/competitions/data/download-all/nerves": ARCHIVE}
    ) as server:
        server.basic_auth["/api/v1/datasets/download/owner/slug"] = ("alice", "k3y")
        server.faults["/api/v1/competitions/data/download-all/nerves"] = ["403"]
        monkeypatch.setenv("US43D_KAGGLE_URL", server.url)
        monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "nowhere"))
        monkeypatch.delenv("KAGGLE_USERNAME", raising=False)
        monkeypatch.delenv("KAGGLE_KEY", raising=False)
        reg = registry_with(
            tmp_path,
            entry("KagSet", [{"kind": "kaggle", "location": "owner/slug"}], "credentials"),
            entry("Comp", [{"kind": "kaggle-competition", "location": "nerves"}], "credentials"),
        )
        missing = {o.dataset: o for o in fetch(list(reg), tmp_path / "dl", tmp_path / "raw", policy=FAST)}
        assert missing["KagSet"].state == "credentials" and "KAGGLE_USERNAME" in missing["KagSet"].messages[0]
        monkeypatch.setenv("KAGGLE_USERNAME", "alice")
        monkeypatch.setenv("KAGGLE_KEY", "k3y")
        outcomes = {o.dataset: o for o in fetch(list(reg), tmp_path / "dl", tmp_path / "raw", policy=FAST)}
    assert outcomes["KagSet"].state == "fetched"
    assert outcomes["Comp"].state == "failed" and "accept its rules" in outcomes["Comp"].messages[0]
    assert all("k3y" not in m for o in outcomes.values() for m in o.messages)


def test_manual_source_guides_then_imports(tmp_path: Path) -> None:
    folder = tmp_path / "registry"
    folder.mkdir()
    manual = entry(
        "HandSet",
        [{"kind": "manual", "location": "https://example.org/form", "instructions": "Fill the form, then import the zip."}],
        "manual",
    )
    (folder / "HandSet.yaml").write_text(yaml.safe_dump(manual))
    raw, downloads = tmp_path / "raw", tmp_path / "dl"
    result = runner.invoke(app, ["fetch", "handset", "--registry", str(folder), "--raw", str(raw), "--downloads", str(downloads)])
    assert result.exit_code == 3 and "Fill the form" in result.output and "--from FILE" in result.output
    (tmp_path / "mine.zip").write_bytes(ARCHIVE)
    result = runner.invoke(
        app,
        [
            "fetch",
            "HandSet",
            "--from",
            str(tmp_path / "mine.zip"),
            "--registry",
            str(folder),
            "--raw",
            str(raw),
            "--downloads",
            str(downloads),
        ],
    )
    assert result.exit_code == 0, result.output
    assert (raw / "HandSet" / "BUS" / "GT" / "000001.png").is_file()
    status = runner.invoke(app, ["status", "--registry", str(folder), "--raw", str(raw), "--downloads", str(downloads)])
    assert "HandSet" in status.output and "fetched" in status.output
    for path in (raw / "HandSet" / "BUS" / "GT").iterdir():  # the masks gone: nothing left to build
        path.unlink()
    status = runner.invoke(app, ["status", "--registry", str(folder), "--raw", str(raw), "--downloads", str(downloads)])
    assert "unreadable" in status.output


def test_import_is_checked_against_pinned_checksums(tmp_path: Path) -> None:
    pinned = entry(
        "Pinned",
        [
            {
                "kind": "manual",
                "location": "https://example.org",
                "instructions": "by hand",
                "files": [{"name": "data.zip", "sha256": "0" * 64}],
            }
        ],
        "manual",
    )
    reg = registry_with(tmp_path, pinned)
    (tmp_path / "data.zip").write_bytes(ARCHIVE)
    (outcome,) = fetch(list(reg), tmp_path / "dl", tmp_path / "raw", imported=[tmp_path / "data.zip"])
    assert outcome.state == "failed" and "sha256" in outcome.messages[0]
    assert not (tmp_path / "raw" / "Pinned").exists()


def test_import_keeps_what_the_automatic_sources_brought(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    labels = zip_bytes({"labels/reviewed_masks_1/capsule/1_IM_anon.png": b"mask"})
    with FakePlatform(files={"/rsingla92/kidneyUS/zip/becfa9a897df8a47": labels}) as server:
        monkeypatch.setenv("US43D_GITHUB_URL", server.url)
        sources = [
            {"kind": "manual", "location": "https://example.org/form", "instructions": "fill the form"},
            {"kind": "github", "location": "rsingla92/kidneyUS", "ref": "becfa9a897df8a47"},
        ]
        reg = registry_with(tmp_path, entry("Kid", sources, "manual"))
        (first,) = fetch(list(reg), tmp_path / "dl", tmp_path / "raw", policy=FAST)
    assert first.state == "manual" and "fill the form" in first.messages[0]
    (tmp_path / "images.zip").write_bytes(zip_bytes({"kidneyUS_images/1_IM_anon.png": b"image"}))
    fetch(list(reg), tmp_path / "dl", tmp_path / "raw", imported=[tmp_path / "images.zip"])
    assert (tmp_path / "raw" / "Kid" / "kidneyUS_images" / "1_IM_anon.png").is_file()
    assert (tmp_path / "raw" / "Kid" / "labels" / "reviewed_masks_1" / "capsule" / "1_IM_anon.png").is_file()


def test_content_check_for_archives_without_a_stable_checksum(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = zip_bytes(
        {
            "CAMUS_public/database_nifti/patient0001/patient0001_2CH_half_sequence.nii.gz": b"x",
            "CAMUS_public/database_nifti/patient0001/patient0001_2CH_half_sequence_gt.nii.gz": b"x",
        }
    )
    bad = zip_bytes({"CAMUS_public/readme.txt": b"maintenance page"})
    pattern = "database_nifti/patient*/patient*_2CH_half_sequence.nii.gz"
    for name, payload, fetched in (("Bad", bad, False), ("Good", good, True)):
        with FakePlatform(files={f"/api/v1/folder/{name}/download": payload}) as server:
            monkeypatch.setenv("US43D_GIRDER_URL", server.url)
            source = {
                "kind": "girder",
                "location": f"https://example.org/api/v1/folder/{name}/download",
                "files": [{"name": f"{name}.zip"}],
                "contents": [pattern],
            }
            camus = private_entry(name, licence="x", access="open", converter="camus", modality="video", slicing_axis="frames")
            reg = registry_with(tmp_path / name, {**camus, "sources": [source]})
            (outcome,) = fetch(list(reg), tmp_path / "dl", tmp_path / "raw", policy=FAST)
        assert (outcome.state == "fetched") is fetched, outcome.messages
        assert (tmp_path / "raw" / name).exists() is fetched
        if not fetched:
            assert "nothing matching" in outcome.messages[0]
