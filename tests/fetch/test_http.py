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


BIG = os.urandom(1 << 20)


def test_redirect_to_plain_http_on_another_host_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the first URL used to be checked: a redirect to plain http:// elsewhere was followed.
    The second local server stands for a real host here (it is not counted as loopback)."""
    from us43d.fetch import http

    with FakePlatform(files={"/a.bin": DATA}) as elsewhere, FakePlatform() as server:
        server.redirects["/a.bin"] = f"{elsewhere.url}/a.bin?sig=SECRET"
        monkeypatch.setattr(http, "is_loopback", lambda url: url.startswith(server.url))
        with pytest.raises(DownloadError, match="redirects to .* only https") as info:
            download(RemoteFile("a.bin", f"{server.url}/a.bin"), tmp_path)
        assert elsewhere.requests == [] and "SECRET" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_every_hop_is_followed_and_credentials_stay_with_their_host(tmp_path: Path) -> None:
    with FakePlatform(files={"/a.bin": DATA}) as storage, FakePlatform() as api:
        api.redirects["/dl"] = f"{storage.url}/a.bin?X-Amz-Signature=SECRET"
        path = download(RemoteFile("a.bin", f"{api.url}/dl", len(DATA), MD5, auth=("alice", "k3y")), tmp_path)
        assert path.read_bytes() == DATA
        assert "Authorization" in api.requests[0][1] and "Authorization" not in storage.requests[0][1]


@pytest.mark.parametrize("location", ["/loop?token=SECRET", "ftp://127.0.0.1/a.bin?token=SECRET"])
def test_redirect_errors_never_print_the_query_token(tmp_path: Path, location: str) -> None:
    with FakePlatform() as server:
        server.redirects["/loop"] = location if location.startswith("ftp") else f"{server.url}{location}"
        with pytest.raises(DownloadError) as info:
            download(RemoteFile("a.bin", f"{server.url}/loop?token=SECRET"), tmp_path, policy=policy([]))
    assert "SECRET" not in str(info.value)


def test_resume_with_a_lying_content_range_is_refused(tmp_path: Path) -> None:
    """The server answers the resume with the whole file again, under a Content-Range that
    claims the asked start: appended, the file grew to 1.5 MiB and was taken as fetched."""
    with FakePlatform(files={"/a.bin": BIG}, faults={"/a.bin": ["drop", "lie-range"]}) as server:
        with pytest.raises(DownloadError, match="Content-Range"):
            download(RemoteFile("a.bin", f"{server.url}/a.bin"), tmp_path, policy=policy([]))
    assert list(tmp_path.iterdir()) == []


def test_resume_whose_total_differs_from_the_first_answer_is_refused(tmp_path: Path) -> None:
    with FakePlatform(files={"/a.bin": BIG}, faults={"/a.bin": ["drop", "wrong-total"]}) as server:
        with pytest.raises(DownloadError, match="Content-Range"):
            download(RemoteFile("a.bin", f"{server.url}/a.bin"), tmp_path, policy=policy([]))
    assert list(tmp_path.iterdir()) == []


def test_body_without_a_length_that_ends_early_is_not_accepted(tmp_path: Path) -> None:
    with FakePlatform(files={"/a.bin": BIG}, faults={"/a.bin": ["nolength-drop"]}) as server:
        with pytest.raises(DownloadError, match="no length"):
            download(RemoteFile("a.bin", f"{server.url}/a.bin"), tmp_path, policy=policy([]))
    assert list(tmp_path.iterdir()) == []
    # with a pinned checksum the bytes are checked anyway, so a body without a length is fine
    sha = hashlib.sha256(BIG).hexdigest()
    with FakePlatform(files={"/a.bin": BIG}, faults={"/a.bin": ["nolength"]}) as server:
        assert download(RemoteFile("a.bin", f"{server.url}/a.bin", sha256=sha), tmp_path).read_bytes() == BIG


def test_chunked_body_cut_short_is_resumed_not_accepted(tmp_path: Path) -> None:
    with FakePlatform(files={"/a.bin": BIG}, faults={"/a.bin": ["chunked-drop"]}) as server:
        assert download(RemoteFile("a.bin", f"{server.url}/a.bin"), tmp_path, policy=policy([])).read_bytes() == BIG
    with FakePlatform(files={"/b.bin": BIG}, faults={"/b.bin": ["chunked-drop"] * 10}) as server:
        with pytest.raises(DownloadError, match="giving up"):
            download(RemoteFile("b.bin", f"{server.url}/b.bin"), tmp_path, policy=policy([]))
    assert not (tmp_path / "b.bin").exists()
    with FakePlatform(files={"/c.bin": BIG}, faults={"/c.bin": ["chunked"]}) as server:
        assert download(RemoteFile("c.bin", f"{server.url}/c.bin"), tmp_path).read_bytes() == BIG


def test_html_page_where_a_file_was_expected_is_an_error(tmp_path: Path) -> None:
    with FakePlatform(files={"/record/1263/": DATA}, faults={"/record/1263/": ["html"]}) as server:
        with pytest.raises(DownloadError, match="HTML page"):
            download(RemoteFile("data.zip", f"{server.url}/record/1263/"), tmp_path)
    html = b"  <!doctype html><html><body>Please log in</body></html>"
    with FakePlatform(files={"/x.zip": html}) as server:  # served as application/octet-stream
        with pytest.raises(DownloadError, match="HTML page"):
            download(RemoteFile("x.zip", f"{server.url}/x.zip"), tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "target", ["http://127.0.0.1:9/a.bin", "https://10.0.0.1/a.bin", "https://169.254.169.254/latest/meta-data"]
)
def test_a_public_host_may_not_redirect_to_this_machine_or_a_private_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str
) -> None:
    """A real host (the local server stands for one here) redirecting to loopback, a private
    address or a cloud's metadata service is refused before any request goes there."""
    from us43d.fetch import http

    real_is_local = http.is_local
    with FakePlatform() as server:
        server.redirects["/a.bin"] = target
        monkeypatch.setattr(http, "is_local", lambda url: not url.startswith(server.url) and real_is_local(url))
        with pytest.raises(DownloadError, match="redirects to .* refused"):
            download(RemoteFile("a.bin", f"{server.url}/a.bin"), tmp_path)
    assert list(tmp_path.iterdir()) == []
    assert real_is_local(target) and not real_is_local("https://zenodo.org/records/1")
