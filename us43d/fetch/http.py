"""One file over HTTP(S): resumable, retried, verified, and never kept when it does not verify.

Bytes go to `<name>.part`; a dropped connection resumes with a Range request; connection
errors, 429 and 5xx are retried with exponential back-off (a `Retry-After` header wins); the
file is renamed to its final name only after its size and checksum match. A mismatch deletes
the partial file and raises: nothing unverified is ever taken as downloaded.

Servers are not trusted either. Redirects are followed by hand so that every hop is checked
(https only, to real hosts) and credentials stay with the host they were given for; a resume
is appended only when its Content-Range starts at the bytes held and names the same total as
before; a body whose end cannot be told from a dropped connection (no length, not chunked) is
refused unless a pinned checksum will tell; an HTML page where a file was expected is an
error. No message ever carries a URL's query string (signed URLs hold their token there).
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urljoin, urlparse

import requests

from us43d import __version__
from us43d.errors import Us43dError
from us43d.fetch.names import UnsafeName, safe_relative_path

USER_AGENT = f"us43d/{__version__} (+https://github.com/us43d)"
CHUNK = 1 << 16  # small enough that a dropped connection keeps most of what arrived
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 10
TRANSFER_HEADERS = frozenset({"range", "accept-encoding"})  # what a redirect to another host may still carry
HTML_SUFFIXES = (".html", ".htm", ".xhtml")


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
    try:
        host = urlparse(url).hostname or ""
    except ValueError:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_local(url: str) -> bool:
    """The URL names this machine or a private network by address (loopback, private, link-local
    such as a cloud's metadata service 169.254.169.254, reserved): never a public host's file."""
    try:
        host = urlparse(url).hostname or ""
    except ValueError:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_private or address.is_link_local or address.is_reserved or address.is_unspecified


def check_url(url: str) -> None:
    """Only HTTPS goes out to real hosts; plain HTTP is allowed to loopback (local test servers)."""
    try:
        scheme = urlparse(url).scheme
    except ValueError:
        scheme = ""
    if scheme == "https" or (scheme == "http" and is_loopback(url)):
        return
    raise DownloadError(f"refusing {redact(url)}: only https:// to real hosts")


def redact(url: str) -> str:
    """A URL fit for messages: no query string (SAS tokens, access tokens) and no user info."""
    try:
        parts = urlparse(url)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<an unreadable URL>"
    if not parts.scheme or not parts.hostname:
        return url.split("?")[0].split("#")[0]
    host = f"[{parts.hostname}]" if parts.hostname and ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}{port}{parts.path}"


def session() -> requests.Session:
    s = requests.Session()
    s.headers["User-Agent"] = USER_AGENT
    return s


def _origin(url: str) -> tuple[str, str | None, int | None]:
    parts = urlparse(url)
    return parts.scheme, parts.hostname, parts.port


def get(
    http: requests.Session,
    url: str,
    headers: dict[str, str] | None = None,
    auth: tuple[str, str] | None = None,
    stream: bool = False,
    timeout: tuple[float, float] = (15, 60),
) -> requests.Response:
    """GET with every redirect checked like the first URL (requests would follow a redirect to
    plain http:// anywhere); credentials and headers of our own (tokens) go only to the first
    host, the others get the transfer headers alone."""
    check_url(url)
    first, first_url = _origin(url), url
    for _ in range(MAX_REDIRECTS + 1):
        home = _origin(url) == first
        response = http.get(
            url,
            headers=(headers or {}) if home else {k: v for k, v in (headers or {}).items() if k.lower() in TRANSFER_HEADERS},
            auth=auth if home else None,
            stream=stream,
            timeout=timeout,
            allow_redirects=False,
        )
        location = response.headers.get("Location")
        if response.status_code not in REDIRECT_STATUSES or not location:
            return response
        response.close()
        following = urljoin(url, location)
        try:
            check_url(following)
            if is_local(following) and not is_local(first_url):
                raise DownloadError("a public host may not send us to this machine or a private network")
        except DownloadError:
            raise DownloadError(f"{redact(url)} redirects to {redact(following)}: refused, only https:// to real hosts") from None
        url = following
    raise DownloadError(f"more than {MAX_REDIRECTS} redirects from {redact(url)}")


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


def _content_range(response: requests.Response, remote: RemoteFile) -> tuple[int, int | None]:
    """(first byte, total or None) of a 206 answer; a missing or malformed header is an error."""
    value = response.headers.get("Content-Range", "")
    match = re.fullmatch(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*", value)
    if match is None:
        raise _Lie(f"{remote.name}: the server resumed without a valid Content-Range ({value[:60]!r})")
    start, end = int(match[1]), int(match[2])
    length = response.headers.get("Content-Length")
    if end < start or (length is not None and length.strip().isdigit() and int(length) != end - start + 1):
        raise _Lie(f"{remote.name}: the server's Content-Range ({value}) does not match the {length} bytes it sends")
    return start, None if match[3] == "*" else int(match[3])


def _looks_like_html(path: Path) -> bool:
    with path.open("rb") as handle:
        head = handle.read(512).lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html"))


def _is_html(remote: RemoteFile, response: requests.Response) -> bool:
    wanted_html = remote.name.lower().endswith(HTML_SUFFIXES)
    return not wanted_html and response.headers.get("Content-Type", "").split(";")[0].strip().lower() == "text/html"


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
    try:
        final = folder / safe_relative_path(remote.name, f"file name from {redact(remote.url)}")
    except UnsafeName as exc:
        raise DownloadError(str(exc)) from None
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.is_file() and not final.is_symlink():
        try:
            verify(final, remote)
            return final
        except DownloadError:
            final.unlink()  # a stale or corrupt copy in our own downloads folder: fetch it again
    partial = final.with_name(final.name + ".part")
    http = http or session()
    attempt = 0
    expected = remote.size  # the whole file's size, once a pin or the server has said it
    pinned = bool(remote.md5 or remote.sha256)
    while True:
        have = partial.stat().st_size if partial.exists() else 0
        if expected is not None and have > expected:
            partial.unlink()
            have = 0
        headers = {**remote.headers, "Accept-Encoding": "identity", **({"Range": f"bytes={have}-"} if have else {})}
        response = None
        try:
            response = get(http, remote.url, headers, remote.auth, stream=True)
            where = redact(response.url or remote.url)
            if response.status_code in RETRY_STATUSES:
                raise _Retry(response)
            if response.status_code == 416:
                if expected is not None and have == expected:
                    break  # already complete
                partial.unlink(missing_ok=True)  # a partial file the server does not recognise: start again
                raise _Retry(response)
            if response.status_code in (401, 403):
                hint = f"; {remote.refused_hint}" if remote.refused_hint else ""
                raise DownloadError(f"{remote.name}: {response.status_code} from {where} (access refused){hint}")
            if response.status_code == 404:
                raise DownloadError(f"{remote.name}: not found at {where}")
            if response.status_code not in (200, 206):
                raise DownloadError(f"{remote.name}: HTTP {response.status_code} from {where}")
            if _is_html(remote, response):
                raise DownloadError(
                    f"{remote.name}: {where} answered an HTML page, not the file (a landing page, a login or an error page?)"
                )
            length = response.headers.get("Content-Length", "").strip()
            encoded = response.headers.get("Content-Encoding", "identity").strip().lower() not in ("", "identity")
            if response.status_code == 206:
                start, total = _content_range(response, remote)
                if start != have:
                    raise _Lie(f"{remote.name}: asked to resume at byte {have}, the server's Content-Range starts at {start}")
            else:
                start, have = 0, 0
                total = int(length) if length.isdigit() and not encoded else None
            if total is not None:
                if expected is not None and total != expected:
                    raise _Lie(
                        f"{remote.name}: the server's Content-Range or length says {total} bytes, {expected} were expected"
                    )
                expected = total
            chunked = "chunked" in response.headers.get("Transfer-Encoding", "").lower()
            if expected is None and not pinned and not chunked and not (length.isdigit() and encoded):
                # the end of such a body is the connection closing: a cut one looks complete
                raise DownloadError(
                    f"{remote.name}: {where} sent no length, so a cut download cannot be told from a complete one; "
                    "pin its size or checksum in the registry"
                )
            with partial.open("ab" if start else "wb") as handle:
                done = start
                for block in response.iter_content(CHUNK):
                    done += len(block)
                    if expected is not None and done > expected:
                        raise _Lie(f"{remote.name}: the server sent more than the {expected} bytes it announced")
                    handle.write(block)
                    if progress:
                        progress(done, expected)
            if expected is not None and partial.stat().st_size < expected:
                raise _Retry(None)  # the server closed the connection early: resume
            break
        except _Lie as exc:
            partial.unlink(missing_ok=True)
            raise DownloadError(str(exc)) from None
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
        except requests.RequestException as exc:  # an invalid URL or answer: its text may hold the URL's token
            raise DownloadError(f"{remote.name}: {type(exc).__name__} at {redact(remote.url)}") from None
        finally:
            if response is not None:
                response.close()
    try:
        verify(partial, remote)
        if not remote.name.lower().endswith(HTML_SUFFIXES) and _looks_like_html(partial):
            raise DownloadError(
                f"{remote.name}: {redact(remote.url)} served an HTML page, not the file (a landing page, a login or an "
                "error page?)"
            )
    except DownloadError:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, final)
    return final


class _Lie(Exception):
    """The server's answer contradicts itself or what it said before: resuming cannot help."""


class _Retry(Exception):
    def __init__(self, response: requests.Response | None) -> None:
        super().__init__("retry")
        self.response = response
