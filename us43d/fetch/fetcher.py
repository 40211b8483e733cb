"""`us43d fetch` and `us43d status`: download what is open, guide through what is not,
verify, then extract atomically into RAW/<ID>/ (the layout `us43d build` reads), and check
that the dataset's converter can read what was installed."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import requests

from us43d.errors import Us43dError, os_error_text
from us43d.fetch.extract import ExtractionError, Limits, extract, is_archive, is_split_part
from us43d.fetch.http import DownloadError, RemoteFile, RetryPolicy, download, session, verify
from us43d.fetch.sources import CredentialsMissing, ManualStep, resolve
from us43d.registry.schema import DatasetEntry, Source

MANIFEST = ".us43d-fetch.json"
DEFAULT_LIMITS = Limits()
DEFAULT_POLICY = RetryPolicy()

# What `us43d fetch` exits with: 0 only when every dataset asked for is fetched and readable.
EXIT_OK, EXIT_FAILED, EXIT_WAITING = 0, 1, 3
STATES = ("fetched", "unreadable", "failed", "credentials", "manual")  # the last two wait for the user


class ForeignFolder(Us43dError):
    """RAW/<ID>/ holds files that `us43d fetch` did not write: it is not ours to replace."""


@dataclass
class FetchOutcome:
    dataset: str
    state: str  # one of STATES
    messages: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Fetched:
    """A verified file and its name inside the dataset (a listing's folders are kept)."""

    path: Path
    name: PurePosixPath


def exit_code(outcomes: Sequence[FetchOutcome]) -> int:
    """1 when a dataset failed or cannot be read, else 3 when one waits for a manual step or
    credentials, else 0."""
    states = {outcome.state for outcome in outcomes}
    if states & {"failed", "unreadable"}:
        return EXIT_FAILED
    if states & {"manual", "credentials"}:
        return EXIT_WAITING
    return EXIT_OK


def source_folder(downloads: Path, source: Source) -> Path:
    """Downloads are kept per source, so two datasets sharing one release download it once."""
    location = re.sub(r"[^A-Za-z0-9._-]+", "_", source.location.split("://")[-1]).strip("_")[:120]
    return downloads / source.kind / location


def _import_files(entry: DatasetEntry, files: Sequence[Path], downloads: Path) -> list[Fetched]:
    """Files the user downloaded by hand, checked against the registry where it pins them."""
    pinned = {f.name: f for s in entry.sources for f in s.files}
    folder = downloads / "imported" / entry.id
    folder.mkdir(parents=True, exist_ok=True)
    kept = []
    for path in files:
        if not path.is_file():
            raise DownloadError(f"{entry.id}: {path} does not exist")
        if path.name in pinned:
            spec = pinned[path.name]
            verify(path, RemoteFile(path.name, "", spec.size, spec.md5, spec.sha256))
        target = folder / path.name
        if target.resolve() != path.resolve():
            shutil.copy2(path, target)
        kept.append(Fetched(target, PurePosixPath(path.name)))
    return kept


def _tree(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file below `folder` (links included, never followed) by relative path, with its
    size and modification time (which a rename keeps): what tells our files from the user's."""
    found = {}
    for parent, folders, names in os.walk(folder):
        for name in names + [f for f in folders if os.path.islink(os.path.join(parent, f))]:
            path = Path(parent, name)
            info = path.lstat()
            found[path.relative_to(folder).as_posix()] = (info.st_size, info.st_mtime_ns)
    return found


def foreign_files(folder: Path) -> list[str] | None:
    """Files of an existing RAW/<ID>/ that this tool did not write (added by hand, or changed
    since), or None when the folder has no manifest of ours at all."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        installed = {item["path"]: (item["size"], item["mtime_ns"]) for item in manifest["installed"]}
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return sorted(path for path, stamp in _tree(folder).items() if path != MANIFEST and installed.get(path) != stamp)


def check_ours(entry: DatasetEntry, raw: Path) -> None:
    """Refuse to replace a RAW/<ID>/ that holds the user's own files: never delete them."""
    final = raw / entry.id
    if not final.exists() and not final.is_symlink():
        return
    if final.is_symlink() or not final.is_dir():
        raise ForeignFolder(f"{entry.id}: {final} exists and is not a folder fetch made; move it away, then fetch again")
    foreign = foreign_files(final)
    if foreign is None:
        raise ForeignFolder(
            f"{entry.id}: {final} exists without a record of the files fetch wrote in it (made by hand, or by an older "
            "us43d), so it may hold your own files; fetch does not replace it. Move it away (or delete it if it holds "
            f"nothing you need) and fetch again, or import files you downloaded with `us43d fetch {entry.id} --from FILE`"
        )
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise ForeignFolder(
            f"{entry.id}: {final} holds {len(foreign)} file(s) that fetch did not write or that changed since ({shown}); "
            "fetch does not replace it. Move those files out of the way (or delete the folder) and fetch again"
        )


def _scratch(raw: Path, kind: str, entry: DatasetEntry) -> Path:
    """A work folder beside RAW/<ID>/, named by a digest so a long id still fits a file name."""
    return raw / f".{kind}-{hashlib.sha256(entry.id.encode()).hexdigest()[:16]}"


def install(entry: DatasetEntry, files: Sequence[Fetched], raw: Path, limits: Limits = DEFAULT_LIMITS) -> Path:
    """Extract (or copy) the files into RAW/<ID>/ atomically: a staging folder is filled, then
    swapped in; an interrupted install leaves the previous RAW/<ID>/ (or nothing) in place. A
    RAW/<ID>/ holding files fetch did not write is never replaced (ForeignFolder)."""
    check_ours(entry, raw)
    names = [f.name for f in files if not is_archive(f.path) or is_split_part(f.path)]
    if len(set(names)) != len(names):
        twice = sorted({n.as_posix() for n in names if names.count(n) > 1})
        raise DownloadError(f"{entry.id}: two sources give a file of the same name ({', '.join(twice[:3])})")
    raw.mkdir(parents=True, exist_ok=True)
    staging = _scratch(raw, "incoming", entry)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        for fetched in files:
            if is_archive(fetched.path) and not is_split_part(fetched.path):
                extract(fetched.path, staging / fetched.name.parent, limits)
            else:  # a plain file, or a later volume of a spanned zip, which travels with its .zip
                (staging / fetched.name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(fetched.path, staging / fetched.name)
        for pattern in (p for source in entry.sources for p in source.contents):
            if next(staging.rglob(pattern), None) is None:
                raise ExtractionError(
                    f"{entry.id}: the download holds nothing matching '{pattern}' (incomplete or changed release)"
                )
        manifest = {
            "dataset": entry.id,
            "files": [{"name": f.name.as_posix(), "size": f.path.stat().st_size} for f in files],
            "installed": [
                {"path": path, "size": size, "mtime_ns": mtime} for path, (size, mtime) in sorted(_tree(staging).items())
            ],
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        final = raw / entry.id
        check_ours(entry, raw)  # again: the user may have added files while we downloaded
        if final.exists():
            old = _scratch(raw, "replaced", entry)
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(staging, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, final)
        return final
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def unreadable(entry: DatasetEntry, folder: Path) -> str | None:
    """Why the dataset's converter cannot read `folder`, or None when it lists at least one
    annotated item without a problem. A landing page saved as the data, or a release whose
    layout changed, installs fine and is caught only here."""
    from us43d.converters.base import Item, load_converter

    try:
        converter = load_converter(entry.converter)
        items = [item for item in converter.list_items(folder, entry) if isinstance(item, Item)]
    except Exception as exc:  # noqa: BLE001 - any failure of the converter means the files cannot be read
        return f"the converter '{entry.converter}' cannot read {folder}: {exc}"
    usable = [item for item in items if item.problem is None and not item.unannotated]
    if not usable:
        return (
            f"the converter '{entry.converter}' finds no annotated item in {folder} ({len(items)} item(s) listed, "
            "none readable): the download is not the release the registry describes"
        )
    return None


def _installed(entry: DatasetEntry, files: Sequence[Fetched], raw: Path) -> FetchOutcome:
    outcome = FetchOutcome(entry.id, "fetched", files=[str(f.path) for f in files])
    try:
        folder = install(entry, files, raw)
    except (Us43dError, OSError) as exc:
        outcome.state, outcome.messages = "failed", [_message(exc)]
        return outcome
    problem = unreadable(entry, folder)
    if problem:
        outcome.state, outcome.messages = "unreadable", [f"fetched into {folder}, but {problem}"]
    else:
        outcome.messages = [f"installed in {folder}"]
    return outcome


def _message(exc: BaseException) -> str:
    if isinstance(exc, OSError) and not isinstance(exc, Us43dError):
        return f"cannot write: {os_error_text(exc)}"
    return str(exc)


def plan(entry: DatasetEntry, http: requests.Session) -> tuple[list[tuple[Source, RemoteFile]], list[tuple[str, str]]]:
    """What to download for one dataset, and what stands in the way of its other sources:
    (state, message) with state failed, credentials or manual."""
    jobs: list[tuple[Source, RemoteFile]] = []
    blocked: list[tuple[str, str]] = []
    for source in entry.sources:
        try:
            remotes = resolve(source, http)
            if not remotes:
                raise DownloadError(f"{source.kind} {source.location}: the listing holds no files")
            jobs.extend((source, remote) for remote in remotes)
        except ManualStep as exc:
            blocked.append(("manual", str(exc)))
        except CredentialsMissing as exc:
            blocked.append(("credentials", str(exc)))
        except Us43dError as exc:
            blocked.append(("failed", str(exc)))
    if not entry.sources:
        blocked.append(("manual", "the registry names no source for this dataset"))
    return jobs, blocked


def fetch(
    entries: Sequence[DatasetEntry],
    downloads: Path,
    raw: Path,
    workers: int = 4,
    imported: Sequence[Path] = (),
    policy: RetryPolicy = DEFAULT_POLICY,
    progress: Callable[[str, int, int | None], None] | None = None,
    http: requests.Session | None = None,
) -> list[FetchOutcome]:
    """Fetch every dataset; one dataset's failure is reported and does not stop the others."""
    http = http or session()
    if imported:
        if len(entries) != 1:
            raise Us43dError("--from imports files for exactly one dataset")
        entry = entries[0]
        try:
            check_ours(entry, raw)
            files = _import_files(entry, imported, downloads)
        except (Us43dError, OSError) as exc:
            return [FetchOutcome(entry.id, "failed", [_message(exc)])]
        # files the automatic sources of this dataset already brought (kidneyUS: the labels
        # come from GitHub, the images by hand) are installed together with the import
        automatic = [
            Fetched(p, PurePosixPath(p.relative_to(source_folder(downloads, s)).as_posix()))
            for s in entry.sources
            if s.kind != "manual" and source_folder(downloads, s).is_dir()
            for p in sorted(source_folder(downloads, s).rglob("*"))
            if p.is_file() and not p.name.endswith(".part")
        ]
        outcome = _installed(entry, automatic + files, raw)
        outcome.messages.insert(0, f"imported {len(files)} file(s)")
        return [outcome]
    planned = {}
    for entry in entries:
        try:
            check_ours(entry, raw)  # before downloading gigabytes: is RAW/<ID>/ ours to replace?
            planned[entry.id] = plan(entry, http)
        except (ForeignFolder, OSError) as exc:
            planned[entry.id] = ([], [("failed", _message(exc))])
    pending: dict[Path, Future[Path]] = {}  # one download per destination, shared by the datasets that need it
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for entry in entries:
            for source, remote in planned[entry.id][0]:
                folder = source_folder(downloads, source)
                destination = folder / remote.name
                if destination not in pending:
                    callback = (lambda done, total, name=remote.name: progress(name, done, total)) if progress else None
                    pending[destination] = pool.submit(download, remote, folder, http, policy, callback)
        outcomes = []
        for entry in entries:
            jobs, blocked = planned[entry.id]
            files: list[Fetched] = []
            errors = [message for state, message in blocked if state == "failed"]
            for source, remote in jobs:
                try:
                    files.append(
                        Fetched(pending[source_folder(downloads, source) / remote.name].result(), PurePosixPath(remote.name))
                    )
                except (Us43dError, OSError) as exc:
                    errors.append(_message(exc))
            waiting = [(state, message) for state, message in blocked if state != "failed"]
            if errors:
                outcomes.append(FetchOutcome(entry.id, "failed", errors))
            elif waiting:
                state = "credentials" if any(s == "credentials" for s, _ in waiting) else "manual"
                meanwhile = [f"downloaded {len(files)} file(s) meanwhile"] if files else []
                outcomes.append(FetchOutcome(entry.id, state, [m for _, m in waiting] + meanwhile, [str(f.path) for f in files]))
            else:
                outcomes.append(_installed(entry, files, raw))
    return outcomes


def dataset_status(entry: DatasetEntry, downloads: Path, raw: Path, out: Path | None) -> str:
    """not fetched | partial | fetched | unreadable | built. A RAW folder its converter cannot
    read is not "fetched": it would build to nothing."""
    if out is not None and (out / ".state" / f"{entry.id}.json").is_file():
        return "built"
    if (raw / entry.id / MANIFEST).is_file() or (raw / entry.id).is_dir():
        return "unreadable" if unreadable(entry, raw / entry.id) else "fetched"
    folders = [source_folder(downloads, s) for s in entry.sources] + [downloads / "imported" / entry.id]
    if any(f.is_dir() and any(f.iterdir()) for f in folders):
        return "partial"
    return "not fetched"
