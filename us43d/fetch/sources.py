"""From a registry source to the files to download, one small resolver per platform.

Every platform's base URL can be overridden with `US43D_<KIND>_URL` (US43D_ZENODO_URL,
US43D_MENDELEY_URL, US43D_GITHUB_URL, US43D_KAGGLE_URL, US43D_FIGSHARE_URL; for plain URLs
US43D_HTTP_URL, US43D_GIRDER_URL and US43D_TCIA_URL replace scheme and host), so the whole path
can be exercised against a local server.

Listings are read through pydantic models: a server's answer is outside input, and a missing
key or a wrong type must give a message naming the listing, not a traceback. Every name that
becomes a path (a listing's file names and folders, a registry's `files`) passes the one check
of `us43d.fetch.names` in `resolve`, whatever the platform.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote, unquote, urlparse, urlunparse

import requests
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from us43d.errors import Us43dError
from us43d.fetch.http import DownloadError, RemoteFile, get, redact
from us43d.fetch.names import UnsafeName, safe_file_name, safe_relative_path
from us43d.registry.schema import Source

DEFAULT_BASES = {
    "zenodo": "https://zenodo.org",
    "mendeley": "https://data.mendeley.com",
    "github": "https://codeload.github.com",
    "kaggle": "https://www.kaggle.com",
    "figshare": "https://api.figshare.com",
}
SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


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


class _Listing(BaseModel):
    """A server's listing: unknown keys are ignored (platforms add fields), wrong types are not."""

    model_config = ConfigDict(extra="ignore")


class ZenodoFile(_Listing):
    key: str | None = None  # record JSON; the deposit API says filename and filesize
    filename: str | None = None
    size: int | None = Field(default=None, ge=0)
    filesize: int | None = Field(default=None, ge=0)
    checksum: str | None = None
    links: dict[str, Any] = {}


class ZenodoEntries(_Listing):
    entries: list[ZenodoFile] | dict[str, ZenodoFile] = []


class ZenodoRecord(_Listing):
    files: list[ZenodoFile] | ZenodoEntries = []


class MendeleyFolder(_Listing):
    id: str
    name: str
    parent_id: str | None = None  # scripts disagree on the key's name
    parent_folder_id: str | None = None


class MendeleyDetails(_Listing):
    download_url: str | None = None
    size: int | None = Field(default=None, ge=0)
    sha256_hash: str | None = None


class MendeleyFile(_Listing):
    filename: str | None = None
    content_details: MendeleyDetails = MendeleyDetails()


class FigshareFile(_Listing):
    name: str
    download_url: str
    size: int | None = Field(default=None, ge=0)
    computed_md5: str | None = None
    is_link_only: bool = False


def _json(http: requests.Session, url: str, shape: Any, headers: dict[str, str] | None = None) -> Any:
    """A listing, read as `shape` (a model or a list of models)."""
    try:
        response = get(http, url, headers)
    except requests.RequestException as exc:
        raise DownloadError(f"cannot reach {redact(url)}: {type(exc).__name__}") from None
    with response:
        if response.status_code in (401, 403):
            raise DownloadError(f"{response.status_code} from {redact(url)}: access refused")
        if response.status_code != 200:
            raise DownloadError(f"HTTP {response.status_code} from {redact(url)}")
        try:
            data = response.json()
        except ValueError:
            raise DownloadError(f"{redact(url)} did not answer JSON") from None
    try:
        return TypeAdapter(shape).validate_python(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(top level)"
        raise DownloadError(
            f"{redact(url)} answered a listing of an unexpected shape ({exc.error_count()} problem(s); at '{where}': "
            f"{first['msg']})"
        ) from None


def _where(source: Source) -> str:
    """A source's location fit for messages (a URL loses its query string)."""
    return f"{source.kind} {redact(source.location) if '://' in source.location else source.location}"


def _wanted(source: Source, name: str) -> bool:
    return not source.files or any(f.name == name for f in source.files)


def _pinned(source: Source, name: str) -> tuple[int | None, str | None, str | None]:
    for f in source.files:
        if f.name == name:
            return f.size, f.md5, f.sha256
    return None, None, None


def _location(source: Source, pattern: str, what: str) -> str:
    if not re.fullmatch(pattern, source.location):
        raise DownloadError(f"{_where(source)}: the location must be {what}")
    return source.location


def zenodo(source: Source, http: requests.Session) -> list[RemoteFile]:
    """Record JSON: `files` is a list (legacy serializer) or {"entries": ...} (InvenioRDM)."""
    base = base_url("zenodo")
    record_id = _location(source, r"\d+", "a Zenodo record number")
    record: ZenodoRecord = _json(http, f"{base}/api/records/{record_id}", ZenodoRecord)
    entries = record.files
    if isinstance(entries, ZenodoEntries):
        entries = list(entries.entries.values()) if isinstance(entries.entries, dict) else entries.entries
    files = []
    for entry in entries:
        name = entry.key or entry.filename
        if not name or not _wanted(source, name):
            continue
        checksum = entry.checksum or ""
        md5 = checksum.split(":", 1)[1] if checksum.startswith("md5:") else (checksum if len(checksum) == 32 else None)
        size, pinned_md5, sha256 = _pinned(source, name)
        links = {k: v for k, v in entry.links.items() if isinstance(v, str)}
        url = (
            links.get("content")
            or links.get("self")
            or links.get("download")
            or f"{base}/api/records/{record_id}/files/{quote(name)}/content"
        )
        if base != DEFAULT_BASES["zenodo"] and url.startswith(DEFAULT_BASES["zenodo"]):
            url = base + url[len(DEFAULT_BASES["zenodo"]) :]
        files.append(RemoteFile(name, _quote_path(url), size or entry.size or entry.filesize, pinned_md5 or md5, sha256))
    _all_found(source, files)
    return files


def _quote_path(url: str) -> str:
    """Zenodo builds self links by concatenation: a key with spaces must be quoted."""
    parts = urlparse(url)
    return urlunparse(parts._replace(path=quote(parts.path, safe="/%")))


def _mendeley_paths(folders: list[MendeleyFolder], where: str) -> dict[str, PurePosixPath]:
    """Each folder's path from the dataset's root: files of the same name live in several
    folders (images/ and masks/), so a file's folder is part of its name."""
    by_id = {folder.id: folder for folder in folders}
    paths: dict[str, PurePosixPath] = {}
    for folder in folders:
        names, seen, current = [], set(), folder
        while current is not None:
            if current.id in seen:
                raise DownloadError(f"{where}: the folder listing loops through folder {current.id}")
            seen.add(current.id)
            names.append(safe_file_name(current.name, f"{where}: folder"))
            parent = current.parent_id or current.parent_folder_id
            if parent in (None, "", "root"):
                current = None
            elif parent in by_id:
                current = by_id[parent]
            else:
                raise DownloadError(f"{where}: folder {current.name!r} has a parent ({parent}) the listing does not hold")
        paths[folder.id] = PurePosixPath(*reversed(names))
    return paths


def mendeley(source: Source, http: requests.Session) -> list[RemoteFile]:
    base = base_url("mendeley")
    dataset_id = _location(source, r"[a-z0-9]+", "a Mendeley Data dataset id")
    version = source.ref or "1"
    if not version.isdigit():
        raise DownloadError(f"mendeley source {dataset_id}: the ref must be a version number, not {version!r}")
    headers = {"Accept": "application/vnd.mendeley-public-dataset.1+json"}
    dataset = f"{base}/public-api/datasets/{dataset_id}"
    folders: list[MendeleyFolder] = _json(http, f"{dataset}/folders/{version}", list[MendeleyFolder], headers)
    paths = {"root": PurePosixPath(), **_mendeley_paths(folders, f"mendeley {dataset_id}")}
    files = []
    for folder_id, folder in paths.items():
        entries: list[MendeleyFile] = _json(
            http, f"{dataset}/files?folder_id={quote(folder_id)}&version={version}", list[MendeleyFile], headers
        )
        for entry in entries:
            details = entry.content_details
            if not entry.filename or not details.download_url:
                continue
            name = (folder / safe_file_name(entry.filename, f"mendeley {dataset_id}: file")).as_posix()
            if not _wanted(source, name):
                continue
            size, md5, sha256 = _pinned(source, name)
            files.append(RemoteFile(name, details.download_url, size or details.size, md5, sha256 or details.sha256_hash))
    _all_found(source, files)
    return files


def github(source: Source, http: requests.Session) -> list[RemoteFile]:
    """The repository archive at a pinned commit (a branch would move under our feet)."""
    if not source.ref or not re.fullmatch(r"[0-9a-f]{7,40}", source.ref):
        raise DownloadError(f"github source {source.location} must pin a commit (ref, 7 to 40 hex digits)")
    owner_repo = _location(source, r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9._-]+", "owner/repository")
    name = f"{owner_repo.replace('/', '-')}-{source.ref[:12]}.zip"
    size, md5, sha256 = _pinned(source, name)
    return [RemoteFile(name, f"{base_url('github')}/{owner_repo}/zip/{source.ref}", size, md5, sha256)]


def figshare(source: Source, http: requests.Session) -> list[RemoteFile]:
    article = _location(source, r"\d+", "a figshare article number")
    listing: list[FigshareFile] = _json(http, f"{base_url('figshare')}/v2/articles/{article}/files", list[FigshareFile])
    files = []
    for entry in listing:
        if entry.is_link_only or not _wanted(source, entry.name):
            continue
        size, md5, sha256 = _pinned(source, entry.name)
        files.append(RemoteFile(entry.name, entry.download_url, size or entry.size, md5 or entry.computed_md5, sha256))
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
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CredentialsMissing(f"{path} is not a valid kaggle.json ({{'username': ..., 'key': ...}})") from exc
    raise CredentialsMissing(
        "Kaggle credentials are not configured: set KAGGLE_USERNAME and KAGGLE_KEY, or put kaggle.json "
        f"(Kaggle > Settings > API > Create New Token) in {folder}/"
    )


def kaggle(source: Source, http: requests.Session) -> list[RemoteFile]:
    base = f"{base_url('kaggle')}/api/v1"
    if source.kind == "kaggle-competition":
        slug = _location(source, SLUG.pattern, "a Kaggle competition name")
        url, name = f"{base}/competitions/data/download-all/{slug}", f"{slug}.zip"
        hint = (
            f"Kaggle answers 403 until you join the competition and accept its rules, with the same account, at "
            f"https://www.kaggle.com/c/{slug}/rules (the API cannot accept them for you)"
        )
    else:
        owner, slug = _location(source, r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*", "owner/slug").split("/")
        url, name = f"{base}/datasets/download/{owner}/{slug}", f"{slug}.zip"
        hint = "check your Kaggle credentials (KAGGLE_USERNAME/KAGGLE_KEY or ~/.kaggle/kaggle.json)"
    auth = kaggle_credentials()
    size, md5, sha256 = _pinned(source, name)
    return [RemoteFile(name, url, size, md5, sha256, auth=auth, refused_hint=hint)]


def plain(source: Source, http: requests.Session) -> list[RemoteFile]:
    """One URL. Its file name comes from the registry, else from the URL's last part; a URL
    that names no file (a landing page, Girder's `.../download`) must have its name pinned,
    or the download could not be told apart as an archive."""
    url = _override_host(source.location, source.kind)
    name = source.files[0].name if source.files else unquote(Path(urlparse(url).path).name)
    if "." not in name.strip("."):
        raise DownloadError(
            f"{redact(source.location)} names no file ({name!r}): pin the file's name (with its suffix) under `files` "
            "in the registry entry"
        )
    size, md5, sha256 = _pinned(source, name)
    return [RemoteFile(name, url, size, md5, sha256)]


def manual(source: Source, http: requests.Session) -> list[RemoteFile]:
    raise ManualStep(source.instructions or f"download the files from {redact(source.location)} by hand")


def _all_found(source: Source, files: list[RemoteFile]) -> None:
    missing = [f.name for f in source.files if f.name not in {r.name for r in files}]
    if missing:
        raise DownloadError(f"{_where(source)}: the listing has no {missing}")


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
    """The files of one source, every name checked before it can become a path."""
    try:
        for pinned in source.files:
            safe_relative_path(pinned.name, f"registry: {_where(source)}: files")
        remotes = RESOLVERS[source.kind](source, http)
        for remote in remotes:
            safe_relative_path(remote.name, f"{_where(source)}: listing")
    except UnsafeName as exc:
        raise DownloadError(str(exc)) from None
    names = [remote.name for remote in remotes]
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise DownloadError(f"{_where(source)}: the listing names {twice[:3]} more than once")
    return remotes
