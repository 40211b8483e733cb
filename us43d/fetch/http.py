"""One file over HTTP(S): resumable, retried, verified, and never kept when it does not verify.

Bytes go to `<name>.part`; a dropped connection resumes with a Range request; connection
errors, 429 and 5xx are retried with exponential back-off (a `Retry-After` header wins); the
file is renamed to its final name only after its size and checksum match. A mismatch deletes
the partial file and raises: nothing unverified is ever taken as downloaded.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import requests

from us43d import __version__
from us43d.errors import Us43dError

USER_AGENT = f"us43d/{__version__} (+https://github.com/us43d)"
CHUNK = 1 << 16  # small enough that a dropped connection keeps most of what arrived
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class DownloadError(Us43dError):
    """A download failed for good (after retries), or its bytes did not verify."""


@dataclass(frozen=True)
class RemoteFile:
    """One file to download and what it must turn out to be."""

    name: str
    url: str
    size: int | None = None
    md5: str | None = None
    sha256: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    auth: tuple[str, str] | None = None  # HTTP basic (Kaggle); never printed
    refused_hint: str | None = None  # what to tell the user when the server answers 401/403


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 6
    base_delay: float = 1.0
    max_delay: float = 60.0
    sleep: Callable[[float], None] = time.sleep


def is_loopback(url: str) -> bool:
    host = urlparse(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: str) -> None:
    """Only HTTPS goes out to real hosts; plain HTTP is allowed to loopback (local test servers)."""
    scheme = urlparse(url).scheme
    if scheme == "https" or (scheme == "http" and is_loopback(url)):
        return
    raise DownloadError(f"refusing {url}: only https:// to real hosts")


def redact(url: str) -> str:
    """A URL fit for messages: no query string (SAS tokens, access tokens) and no user info."""
    parts = urlparse(url)
    return f"{parts.scheme}://{parts.hostname}{':' + str(parts.port) if parts.port else ''}{parts.path}"


def session() -> requests.Session:
    s = requests.Session()
    s.headers["User-Agent"] = USER_AGENT
    return s


def _retry_after(response: requests.Response | None, attempt: int, policy: RetryPolicy) -> float:
    if response is not None:
        value = response.headers.get("Retry-After")
        if value and value.strip().isdigit():
            return min(float(value), policy.max_delay)
    return min(policy.base_delay * 2**attempt, policy.max_delay)


def _hashes(path: Path) -> tuple[hashlib._Hash, hashlib._Hash]:
    md5, sha256 = hashlib.md5(), hashlib.sha256()
    if path.exists():
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(CHUNK), b""):
                md5.update(block)
                sha256.update(block)
    return md5, sha256


def verify(path: Path, remote: RemoteFile) -> None:
    """Size and checksums of a finished file; raises with what differs."""
    size = path.stat().st_size
    if remote.size is not None and size != remote.size:
        raise DownloadError(f"{remote.name}: size {size} differs from the expected {remote.size}")
    md5, sha256 = _hashes(path)
    if remote.md5 and md5.hexdigest() != remote.md5.lower():
        raise DownloadError(f"{remote.name}: md5 {md5.hexdigest()} differs from the expected {remote.md5}")
    if remote.sha256 and sha256.hexdigest() != remote.sha256.lower():
        raise DownloadError(f"{remote.name}: sha256 {sha256.hexdigest()} differs from the expected {remote.sha256}")


def download(
    remote: RemoteFile,
    folder: Path,
    http: requests.Session | None = None,
    policy: RetryPolicy = RetryPolicy(),
    progress: Callable[[int, int | None], None] | None = None,
) -> Path:
    """Download `remote` into `folder` and return the verified file; an existing verified
    file is kept as is. `progress(done_bytes, total_bytes)` is called as bytes arrive."""
    check_url(remote.url)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / remote.name
    if final.exists():
        try:
            verify(final, remote)
            return final
        except DownloadError:
            final.unlink()  # a stale or corrupt copy: fetch it again
    partial = final.with_name(final.name + ".part")
    http = http or session()
    attempt = 0
    while True:
        have = partial.stat().st_size if partial.exists() else 0
        headers = {**remote.headers, **({"Range": f"bytes={have}-"} if have else {})}
        response = None
        try:
            response = http.get(remote.url, headers=headers, auth=remote.auth, stream=True, timeout=(15, 60))
            if response.status_code in RETRY_STATUSES:
                raise _Retry(response)
            if response.status_code == 416 and remote.size is not None and have >= remote.size:
                break  # already complete
            if response.status_code in (401, 403):
                hint = f"; {remote.refused_hint}" if remote.refused_hint else ""
                raise DownloadError(f"{remote.name}: {response.status_code} from {redact(remote.url)} (access refused){hint}")
            if response.status_code == 404:
                raise DownloadError(f"{remote.name}: not found at {redact(remote.url)}")
            if response.status_code not in (200, 206):
                raise DownloadError(f"{remote.name}: HTTP {response.status_code} from {redact(remote.url)}")
            append = response.status_code == 206 and have > 0
            total = remote.size
            length = response.headers.get("Content-Length")
            if total is None and length and length.isdigit():
                total = int(length) + (have if append else 0)
            with partial.open("ab" if append else "wb") as handle:
                done = have if append else 0
                for block in response.iter_content(CHUNK):
                    handle.write(block)
                    done += len(block)
                    if progress:
                        progress(done, total)
            if total is not None and partial.stat().st_size < total:
                raise _Retry(None)  # the server closed the connection early: resume
            break
        except (_Retry, requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
            attempt += 1
            if attempt >= policy.attempts:
                status = (
                    f"HTTP {exc.response.status_code}"
                    if isinstance(exc, _Retry) and exc.response is not None
                    else type(exc).__name__
                )
                raise DownloadError(
                    f"{remote.name}: giving up after {attempt} attempts ({status}) at {redact(remote.url)}"
                ) from None
            policy.sleep(_retry_after(exc.response if isinstance(exc, _Retry) else None, attempt - 1, policy))
        finally:
            if response is not None:
                response.close()
    try:
        verify(partial, remote)
    except DownloadError:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, final)
    return final


class _Retry(Exception):
    def __init__(self, response: requests.Response | None) -> None:
        super().__init__("retry")
        self.response = response
