"""From a registry source to the files to download, one small resolver per platform.

Every platform's base URL can be overridden with `US43D_<KIND>_URL` (US43D_ZENODO_URL,
US43D_MENDELEY_URL, US43D_GITHUB_URL, US43D_KAGGLE_URL, US43D_FIGSHARE_URL; for plain URLs
US43D_HTTP_URL, US43D_GIRDER_URL and US43D_TCIA_URL replace scheme and host), so the whole path
can be exercised against a local server.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlparse, urlunparse

import requests

from us43d.errors import Us43dError
from us43d.fetch.http import DownloadError, RemoteFile, check_url, redact
from us43d.registry.schema import Source

DEFAULT_BASES = {
    "zenodo": "https://zenodo.org",
    "mendeley": "https://data.mendeley.com",
    "github": "https://codeload.github.com",
    "kaggle": "https://www.kaggle.com",
    "figshare": "https://api.figshare.com",
}


class ManualStep(Us43dError):
    """A source that needs a person: the message says where to go and what to do."""


class CredentialsMissing(Us43dError):
    """A source needs credentials that are not configured."""


def base_url(kind: str) -> str:
    key = "kaggle" if kind.startswith("kaggle") else kind
    return os.environ.get(f"US43D_{key.upper().replace('-', '_')}_URL", DEFAULT_BASES.get(key, "")).rstrip("/")


def _override_host(url: str, kind: str) -> str:
    """Plain URLs (http, girder) keep their path but take the override's scheme and host."""
    override = os.environ.get(f"US43D_{kind.upper()}_URL")
    if not override:
        return url
    parts, base = urlparse(url), urlparse(override)
    return urlunparse((base.scheme, base.netloc, parts.path, "", parts.query, ""))


def _json(http: requests.Session, url: str, **kwargs: Any) -> Any:
    check_url(url)
    try:
        response = http.get(url, timeout=(15, 60), **kwargs)
    except requests.RequestException as exc:
        raise DownloadError(f"cannot reach {redact(url)}: {type(exc).__name__}") from exc
    if response.status_code in (401, 403):
        raise DownloadError(f"{response.status_code} from {redact(url)}: access refused")
    if response.status_code != 200:
        raise DownloadError(f"HTTP {response.status_code} from {redact(url)}")
    try:
        return response.json()
    except ValueError as exc:
        raise DownloadError(f"{redact(url)} did not answer JSON") from exc


def _wanted(source: Source, name: str) -> bool:
    return not source.files or any(f.name == name for f in source.files)


def _pinned(source: Source, name: str) -> tuple[int | None, str | None, str | None]:
    for f in source.files:
        if f.name == name:
            return f.size, f.md5, f.sha256
    return None, None, None


def zenodo(source: Source, http: requests.Session) -> list[RemoteFile]:
    """Record JSON: `files` is a list (legacy serializer) or {"entries": ...} (InvenioRDM)."""
    base = base_url("zenodo")
    record = _json(http, f"{base}/api/records/{source.location}")
    entries = record.get("files", [])
    if isinstance(entries, dict):
        entries = (
            list(entries.get("entries", {}).values()) if isinstance(entries.get("entries"), dict) else entries.get("entries", [])
        )
    files = []
    for entry in entries:
        name = entry.get("key") or entry.get("filename")
        if not name or not _wanted(source, name):
            continue
        checksum = str(entry.get("checksum", ""))
        md5 = checksum.split(":", 1)[1] if checksum.startswith("md5:") else (checksum if len(checksum) == 32 else None)
        size, pinned_md5, sha256 = _pinned(source, name)
        links = entry.get("links", {})
        url = (
            links.get("content")
            or links.get("self")
            or links.get("download")
            or f"{base}/api/records/{source.location}/files/{quote(name)}/content"
        )
        if base != DEFAULT_BASES["zenodo"] and url.startswith(DEFAULT_BASES["zenodo"]):
            url = base + url[len(DEFAULT_BASES["zenodo"]) :]
        files.append(
            RemoteFile(name, _quote_path(url), size or entry.get("size") or entry.get("filesize"), pinned_md5 or md5, sha256)
        )
    _all_found(source, files)
    return files


def _quote_path(url: str) -> str:
    """Zenodo builds self links by concatenation: a key with spaces must be quoted."""
    parts = urlparse(url)
    return urlunparse(parts._replace(path=quote(parts.path, safe="/%")))


def mendeley(source: Source, http: requests.Session) -> list[RemoteFile]:
    base = base_url("mendeley")
    version = source.ref or "1"
    headers = {"Accept": "application/vnd.mendeley-public-dataset.1+json"}
    dataset = f"{base}/public-api/datasets/{source.location}"
    folders = _json(http, f"{dataset}/folders/{version}", headers=headers)
    entries: list[dict[str, Any]] = []
    for folder_id in ["root", *(f["id"] for f in folders if isinstance(f, dict) and "id" in f)]:
        entries.extend(_json(http, f"{dataset}/files?folder_id={folder_id}&version={version}", headers=headers))
    files = []
    for entry in entries:
        name = entry.get("filename")
        details = entry.get("content_details", {})
        if not name or not details.get("download_url") or not _wanted(source, name):
            continue
        size, md5, sha256 = _pinned(source, name)
        files.append(
            RemoteFile(name, details["download_url"], size or details.get("size"), md5, sha256 or details.get("sha256_hash"))
        )
    _all_found(source, files)
    return files


def github(source: Source, http: requests.Session) -> list[RemoteFile]:
    """The repository archive at a pinned commit (a branch would move under our feet)."""
    if not source.ref or len(source.ref) < 7:
        raise DownloadError(f"github source {source.location} must pin a commit (ref)")
    owner_repo = source.location.strip("/")
    name = f"{owner_repo.replace('/', '-')}-{source.ref[:12]}.zip"
    size, md5, sha256 = _pinned(source, name)
    return [RemoteFile(name, f"{base_url('github')}/{owner_repo}/zip/{source.ref}", size, md5, sha256)]


def figshare(source: Source, http: requests.Session) -> list[RemoteFile]:
    listing = _json(http, f"{base_url('figshare')}/v2/articles/{source.location}/files")
    files = []
    for entry in listing:
        if entry.get("is_link_only") or not _wanted(source, entry.get("name", "")):
            continue
        size, md5, sha256 = _pinned(source, entry["name"])
        files.append(
            RemoteFile(entry["name"], entry["download_url"], size or entry.get("size"), md5 or entry.get("computed_md5"), sha256)
        )
    _all_found(source, files)
    return files


def kaggle_credentials(environ: dict[str, str] | None = None) -> tuple[str, str]:
    environ = dict(os.environ) if environ is None else environ
    if environ.get("KAGGLE_USERNAME") and environ.get("KAGGLE_KEY"):
        return environ["KAGGLE_USERNAME"], environ["KAGGLE_KEY"]
    folder = Path(environ.get("KAGGLE_CONFIG_DIR", Path.home() / ".kaggle"))
    path = folder / "kaggle.json"
    if path.is_file():
        try:
            data = json.loads(path.read_text())
            return str(data["username"]), str(data["key"])
        except (ValueError, KeyError) as exc:
            raise CredentialsMissing(f"{path} is not a valid kaggle.json ({{'username': ..., 'key': ...}})") from exc
    raise CredentialsMissing(
        "Kaggle credentials are not configured: set KAGGLE_USERNAME and KAGGLE_KEY, or put kaggle.json "
        "(Kaggle > Settings > API > Create New Token) in ~/.kaggle/"
    )


def kaggle(source: Source, http: requests.Session) -> list[RemoteFile]:
    auth = kaggle_credentials()
    base = f"{base_url('kaggle')}/api/v1"
    if source.kind == "kaggle-competition":
        url, name = f"{base}/competitions/data/download-all/{source.location}", f"{source.location}.zip"
        hint = (
            f"Kaggle answers 403 until you join the competition and accept its rules, with the same account, at "
            f"https://www.kaggle.com/c/{source.location}/rules (the API cannot accept them for you)"
        )
    else:
        owner, slug = source.location.split("/", 1)
        url, name = f"{base}/datasets/download/{owner}/{slug}", f"{slug}.zip"
        hint = "check your Kaggle credentials (KAGGLE_USERNAME/KAGGLE_KEY or ~/.kaggle/kaggle.json)"
    size, md5, sha256 = _pinned(source, name)
    return [RemoteFile(name, url, size, md5, sha256, auth=auth, refused_hint=hint)]


def plain(source: Source, http: requests.Session) -> list[RemoteFile]:
    url = _override_host(source.location, source.kind)
    name = source.files[0].name if source.files else Path(urlparse(url).path).name
    if not name:
        raise ManualStep(f"{source.location}: the file to download is not pinned yet; {source.note or 'see the page'}")
    size, md5, sha256 = _pinned(source, name)
    return [RemoteFile(name, url, size, md5, sha256)]


def manual(source: Source, http: requests.Session) -> list[RemoteFile]:
    raise ManualStep(source.instructions or f"download the files from {source.location} by hand")


def _all_found(source: Source, files: list[RemoteFile]) -> None:
    missing = [f.name for f in source.files if f.name not in {r.name for r in files}]
    if missing:
        raise DownloadError(f"{source.kind} {source.location}: the listing has no {missing}")


RESOLVERS: dict[str, Callable[[Source, requests.Session], list[RemoteFile]]] = {
    "zenodo": zenodo,
    "mendeley": mendeley,
    "github": github,
    "figshare": figshare,
    "kaggle": kaggle,
    "kaggle-competition": kaggle,
    "http": plain,
    "tcia": plain,
    "girder": plain,
    "grand-challenge": manual,
    "manual": manual,
}


def resolve(source: Source, http: requests.Session) -> list[RemoteFile]:
    return RESOLVERS[source.kind](source, http)
