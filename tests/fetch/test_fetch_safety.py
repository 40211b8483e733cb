"""Fetch against hostile or broken input: names from servers and the registry, the user's own
files in RAW/<ID>/, malformed listings, odd registry entries, and what the exit code says."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from fake_platforms import FakePlatform
from test_fetch import ARCHIVE, FAST, entry, registry_with, zip_bytes
from typer.testing import CliRunner

from helpers import write_entries
from us43d.cli import app
from us43d.fetch.fetcher import fetch
from us43d.fetch.names import UnsafeName, safe_relative_path

runner = CliRunner()
PAYLOAD = b"bytes from the server"


@pytest.mark.parametrize(
    "name", ["../../../victim.txt", "/abs/victim.txt", "a/../../../../victim.txt", "..\\..\\..\\victim.txt", "", "x\x00y"]
)
def test_the_name_check(name: str) -> None:
    with pytest.raises(UnsafeName):
        safe_relative_path(name, "listing")


def test_the_name_check_keeps_folders_and_refuses_overlong_parts() -> None:
    assert safe_relative_path("Benign/images/001.png", "listing").as_posix() == "Benign/images/001.png"
    assert safe_relative_path("./a//b.zip", "listing").as_posix() == "a/b.zip"
    with pytest.raises(UnsafeName, match="longer than 255"):
        safe_relative_path("a" * 256 + ".zip", "listing")


def _victim(tmp_path: Path, key: str) -> Path:
    """Where a name would land if it were joined to the downloads folder of its source unchecked."""
    return Path(key) if key.startswith("/") else (tmp_path / "dl" / "zenodo" / "42" / key).resolve()


@pytest.mark.parametrize("key", ["../../../victim.txt", "ABSOLUTE"])
def test_zenodo_key_that_leads_outside_is_refused_and_deletes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: str
) -> None:
    """A listing key `../x` or `/x` used to be joined to the downloads folder: an existing file
    there whose checksum differed was deleted, then overwritten with the server's bytes."""
    if key == "ABSOLUTE":
        key = str(tmp_path / "elsewhere" / "victim.txt")
    victim = _victim(tmp_path, key)
    victim.parent.mkdir(parents=True, exist_ok=True)
    victim.write_text("the user's file")
    with FakePlatform(files={"/payload": PAYLOAD}) as server:
        monkeypatch.setenv("US43D_ZENODO_URL", server.url)
        record = {"key": key, "size": len(PAYLOAD), "checksum": f"md5:{hashlib.md5(PAYLOAD).hexdigest()}"}
        server.json["/api/records/42"] = {"files": [{**record, "links": {"self": f"{server.url}/payload"}}]}
        reg = registry_with(tmp_path, entry("ZenSet", [{"kind": "zenodo", "location": "42"}]))
        (outcome,) = fetch(list(reg), tmp_path / "dl", tmp_path / "raw", policy=FAST)
    assert outcome.state == "failed" and "refusing" in outcome.messages[0]
    assert victim.read_text() == "the user's file"


def test_mendeley_figshare_and_registry_names_are_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with FakePlatform(files={"/payload": PAYLOAD}) as server:
        for key in ("US43D_MENDELEY_URL", "US43D_FIGSHARE_URL", "US43D_HTTP_URL"):
            monkeypatch.setenv(key, server.url)
        details = {"download_url": f"{server.url}/payload", "size": len(PAYLOAD)}
        server.json["/public-api/datasets/abc/folders/1"] = [{"id": "f1", "name": "..", "parent_id": None}]
        server.json["/public-api/datasets/abc/files?folder_id=root&version=1"] = []
        server.json["/public-api/datasets/abc/files?folder_id=f1&version=1"] = [
            {"filename": "victim.txt", "content_details": details}
        ]
        server.json["/public-api/datasets/def/folders/1"] = []
        server.json["/public-api/datasets/def/files?folder_id=root&version=1"] = [
            {"filename": "../../../../victim.txt", "content_details": details}
        ]
        server.json["/v2/articles/7/files"] = [{"name": "../../../../victim.txt", "download_url": f"{server.url}/payload"}]
        reg = registry_with(
            tmp_path,
            entry("MenFolder", [{"kind": "mendeley", "location": "abc", "ref": "1"}]),
            entry("MenFile", [{"kind": "mendeley", "location": "def", "ref": "1"}]),
            entry("Fig", [{"kind": "figshare", "location": "7"}]),
            entry(
                "Pinned",
                [{"kind": "http", "location": "https://example.org/payload", "files": [{"name": "../../../victim.txt"}]}],
            ),
        )
        outcomes = fetch(list(reg), tmp_path / "dl", tmp_path / "raw", policy=FAST)
    for outcome in outcomes:
        assert outcome.state == "failed" and "refusing" in outcome.messages[0], (outcome.dataset, outcome.messages)
    assert [p for p in tmp_path.rglob("victim.txt")] == []


def test_files_the_user_put_in_raw_are_never_deleted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The build's own error advises putting files in RAW/<ID>/; fetch used to swap its staging
    folder over it and delete them."""
    raw = tmp_path / "raw"
    mine = raw / "ZenSet" / "my_notes.txt"
    mine.parent.mkdir(parents=True)
    mine.write_text("mine")
    md5 = hashlib.md5(ARCHIVE).hexdigest()
    with FakePlatform(files={"/data.zip": ARCHIVE}) as server:
        monkeypatch.setenv("US43D_ZENODO_URL", server.url)
        file = {"key": "data.zip", "size": len(ARCHIVE), "checksum": f"md5:{md5}", "links": {"self": f"{server.url}/data.zip"}}
        server.json["/api/records/42"] = {"files": [file]}
        reg = registry_with(tmp_path, entry("ZenSet", [{"kind": "zenodo", "location": "42"}]))
        (refused,) = fetch(list(reg), tmp_path / "dl", raw, policy=FAST)
        assert refused.state == "failed" and str(raw / "ZenSet") in refused.messages[0] and "Move it away" in refused.messages[0]
        assert mine.read_text() == "mine" and server.requests == []  # refused before anything is downloaded
        mine.unlink()
        mine.parent.rmdir()
        (first,) = fetch(list(reg), tmp_path / "dl", raw, policy=FAST)
        assert first.state == "fetched", first.messages
        (again,) = fetch(list(reg), tmp_path / "dl", raw, policy=FAST)  # our own folder is replaced
        assert again.state == "fetched", again.messages
        (raw / "ZenSet" / "BUS" / "GT" / "extra.png").write_bytes(b"added by hand")
        (raw / "ZenSet" / "BUS" / "GT" / "000001.png").write_bytes(b"edited")
        (refused,) = fetch(list(reg), tmp_path / "dl", raw, policy=FAST)
    assert refused.state == "failed" and "BUS/GT/extra.png" in refused.messages[0] and "BUS/GT/000001.png" in refused.messages[0]
    assert (raw / "ZenSet" / "BUS" / "GT" / "extra.png").read_bytes() == b"added by hand"
    assert (raw / "ZenSet" / "BUS" / "GT" / "000001.png").read_bytes() == b"edited"


def test_import_never_replaces_the_users_folder(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    (raw / "HandSet").mkdir(parents=True)
    (raw / "HandSet" / "mine.png").write_bytes(b"mine")
    (tmp_path / "data.zip").write_bytes(ARCHIVE)
    reg = registry_with(tmp_path, entry("HandSet", [{"kind": "manual", "location": "https://example.org"}], "manual"))
    (outcome,) = fetch(list(reg), tmp_path / "dl", raw, imported=[tmp_path / "data.zip"])
    assert outcome.state == "failed" and (raw / "HandSet" / "mine.png").read_bytes() == b"mine"


@pytest.mark.parametrize(
    "record",
    [
        [],
        {"files": "BUS data.zip"},
        {"files": [None]},
        {"files": [{"key": 5}]},
        {"files": [{"key": "a.zip", "size": "big"}]},
        {"files": [{"key": "a.zip", "links": "https://example.org"}]},
        {"files": {"entries": 3}},
    ],
)
def test_malformed_zenodo_json_is_a_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, record: object) -> None:
    with FakePlatform() as server:
        monkeypatch.setenv("US43D_ZENODO_URL", server.url)
        server.json["/api/records/42"] = record
        reg = registry_with(tmp_path, entry("ZenSet", [{"kind": "zenodo", "location": "42"}]))
        (outcome,) = fetch(list(reg), tmp_path / "dl", tmp_path / "raw", policy=FAST)
    assert outcome.state == "failed" and "unexpected shape" in outcome.messages[0] and "/api/records/42" in outcome.messages[0]


def test_kaggle_location_without_owner_is_a_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAGGLE_USERNAME", "alice")
    monkeypatch.setenv("KAGGLE_KEY", "k3y")
    reg = registry_with(tmp_path, entry("KagSet", [{"kind": "kaggle", "location": "justaslug"}], "credentials"))
    (outcome,) = fetch(list(reg), tmp_path / "dl", tmp_path / "raw", policy=FAST)
    assert outcome.state == "failed" and "owner/slug" in outcome.messages[0]


def test_a_very_long_dataset_id_is_fetched_or_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from us43d.errors import RegistryError

    with pytest.raises(RegistryError, match="field 'id'"):  # 250 characters: refused, with its field named
        registry_with(tmp_path / "too-long", entry("A" * 250, [{"kind": "http", "location": "https://example.org/a/data.zip"}]))
    long_id = "A" * 64  # the longest id the registry takes
    with FakePlatform(files={"/a/data.zip": ARCHIVE}) as server:
        monkeypatch.setenv("US43D_HTTP_URL", server.url)
        reg = registry_with(tmp_path, entry(long_id, [{"kind": "http", "location": "https://example.org/a/data.zip"}]))
        (outcome,) = fetch(list(reg), tmp_path / "dl", tmp_path / "raw", policy=FAST)
        assert outcome.state == "fetched", outcome.messages
        assert (tmp_path / "raw" / long_id / "BUS" / "GT" / "000001.png").is_file()
    (tmp_path / "not-a-folder").write_text("a file where RAW should be")
    with FakePlatform(files={"/a/data.zip": ARCHIVE}) as server:
        monkeypatch.setenv("US43D_HTTP_URL", server.url)
        (outcome,) = fetch(list(reg), tmp_path / "dl", tmp_path / "not-a-folder", policy=FAST)
    assert outcome.state == "failed" and "cannot write" in outcome.messages[0]


def test_missing_kaggle_credentials_exit_non_zero_naming_what_to_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KAGGLE_USERNAME", raising=False)
    monkeypatch.delenv("KAGGLE_KEY", raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "nowhere"))
    folder = write_entries(tmp_path / "registry", entry("KagSet", [{"kind": "kaggle", "location": "owner/slug"}], "credentials"))
    result = runner.invoke(
        app, ["fetch", "KagSet", "--registry", str(folder), "--raw", str(tmp_path / "raw"), "--downloads", str(tmp_path / "dl")]
    )
    assert result.exit_code == 3, result.output
    assert "needs credentials" in result.output and "KAGGLE_USERNAME" in result.output and "kaggle.json" in result.output


def test_exit_codes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """0 only when every dataset is fetched and readable; 1 when one failed or cannot be read;
    3 when none failed but one waits for the user."""
    unreadable = zip_bytes({"something/else.txt": b"not the release"})
    with FakePlatform(files={"/good.zip": ARCHIVE, "/odd.zip": unreadable, "/gone.zip": ARCHIVE}) as server:
        server.faults["/gone.zip"] = ["404"] * 5
        monkeypatch.setenv("US43D_HTTP_URL", server.url)
        folder = write_entries(
            tmp_path / "registry",
            entry("Good", [{"kind": "http", "location": "https://example.org/good.zip"}]),
            entry("Odd", [{"kind": "http", "location": "https://example.org/odd.zip"}]),
            entry("Gone", [{"kind": "http", "location": "https://example.org/gone.zip"}]),
            entry("Hand", [{"kind": "manual", "location": "https://example.org/form", "instructions": "by hand"}], "manual"),
        )

        def run(*ids: str) -> object:
            options = ["--registry", str(folder), "--raw", str(tmp_path / "raw"), "--downloads", str(tmp_path / "dl")]
            return runner.invoke(app, ["fetch", *ids, *options])

        assert run("Good").exit_code == 0
        odd = run("Odd")
        assert odd.exit_code == 1 and "fetched but unreadable" in odd.output and "expected a folder 'BUS'" in odd.output
        assert run("Gone").exit_code == 1
        assert run("Hand").exit_code == 3
        assert run("Good", "Hand").exit_code == 3
        assert run("Good", "Hand", "Gone").exit_code == 1
