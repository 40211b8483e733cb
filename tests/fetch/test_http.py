from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from fake_platforms import FakePlatform

from us43d.fetch.http import DownloadError, RemoteFile, RetryPolicy, download

DATA = os.urandom(300_000)
MD5 = hashlib.md5(DATA).hexdigest()
SHA = hashlib.sha256(DATA).hexdigest()


def policy(sleeps: list[float]) -> RetryPolicy:
    return RetryPolicy(attempts=4, base_delay=0.01, sleep=sleeps.append)


def test_verified_download(tmp_path: Path) -> None:
    with FakePlatform(files={"/a.bin": DATA}) as server:
        path = download(RemoteFile("a.bin", f"{server.url}/a.bin", len(DATA), MD5, SHA), tmp_path)
        assert path.read_bytes() == DATA and not (tmp_path / "a.bin.part").exists()
        again = download(RemoteFile("a.bin", f"{server.url}/a.bin", len(DATA), MD5), tmp_path)
        assert again == path and len(server.requests) == 1  # a verified file is not fetched twice


def test_dropped_connection_resumes_with_range(tmp_path: Path) -> None:
    sleeps: list[float] = []
    with FakePlatform(files={"/a.bin": DATA}, faults={"/a.bin": ["drop"]}) as server:
        path = download(RemoteFile("a.bin", f"{server.url}/a.bin", len(DATA), MD5), tmp_path, policy=policy(sleeps))
        assert path.read_bytes() == DATA
        ranges = [h.get("Range") for _, h in server.requests]
        assert ranges[0] is None and ranges[1].startswith("bytes=") and int(ranges[1][6:-1]) > 0
        assert server.requests[1][0] == "/a.bin" and len(server.requests) == 2


def test_503_then_success_and_429_honours_retry_after(tmp_path: Path) -> None:
    sleeps: list[float] = []
    with FakePlatform(files={"/a.bin": DATA}, faults={"/a.bin": ["503", "429:7"]}) as server:
        download(RemoteFile("a.bin", f"{server.url}/a.bin", len(DATA), MD5), tmp_path, policy=policy(sleeps))
        assert len(server.requests) == 3
    assert sleeps[1] == 7.0  # Retry-After wins over the back-off


def test_wrong_checksum_keeps_nothing(tmp_path: Path) -> None:
    with FakePlatform(files={"/a.bin": DATA}) as server:
        with pytest.raises(DownloadError, match="md5 .* differs"):
            download(RemoteFile("a.bin", f"{server.url}/a.bin", len(DATA), "0" * 32), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_gives_up_and_refuses_plain_http_to_real_hosts(tmp_path: Path) -> None:
    sleeps: list[float] = []
    with FakePlatform(files={"/a.bin": DATA}, faults={"/a.bin": ["503"] * 10}) as server:
        with pytest.raises(DownloadError, match="giving up after 4 attempts"):
            download(RemoteFile("a.bin", f"{server.url}/a.bin"), tmp_path, policy=policy(sleeps))
    with pytest.raises(DownloadError, match="only https"):
        download(RemoteFile("a.bin", "http://example.org/a.bin"), tmp_path)


def test_refusal_carries_the_hint_and_hides_the_query(tmp_path: Path) -> None:
    with FakePlatform(files={"/c.zip": DATA}, faults={"/c.zip": ["403"]}) as server:
        remote = RemoteFile("c.zip", f"{server.url}/c.zip?token=SECRET", refused_hint="accept the rules")
        with pytest.raises(DownloadError) as info:
            download(remote, tmp_path)
    assert "accept the rules" in str(info.value) and "SECRET" not in str(info.value)
