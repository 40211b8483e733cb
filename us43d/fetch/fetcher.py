"""`us43d fetch` and `us43d status`: download what is open, guide through what is not,
verify, then extract atomically into RAW/<ID>/ (the layout `us43d build` reads)."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import requests

from us43d.errors import Us43dError
from us43d.fetch.extract import ExtractionError, Limits, extract, is_archive, is_split_part
from us43d.fetch.http import DownloadError, RemoteFile, RetryPolicy, download, session, verify
from us43d.fetch.sources import CredentialsMissing, ManualStep, resolve
from us43d.registry.schema import DatasetEntry, Source

MANIFEST = ".us43d-fetch.json"
DEFAULT_LIMITS = Limits()
DEFAULT_POLICY = RetryPolicy()


@dataclass
class FetchOutcome:
    dataset: str
    state: str  # fetched | manual | failed
    messages: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)


def source_folder(downloads: Path, source: Source) -> Path:
    """Downloads are kept per source, so two datasets sharing one release download it once."""
    location = re.sub(r"[^A-Za-z0-9._-]+", "_", source.location.split("://")[-1]).strip("_")[:120]
    return downloads / source.kind / location


def _import_files(entry: DatasetEntry, files: Sequence[Path], downloads: Path) -> list[Path]:
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
        kept.append(target)
    return kept


def install(entry: DatasetEntry, files: Sequence[Path], raw: Path, limits: Limits = DEFAULT_LIMITS) -> Path:
    """Extract (or copy) the files into RAW/<ID>/ atomically: a staging folder is filled, then
    swapped in; an interrupted install leaves the previous RAW/<ID>/ (or nothing) in place."""
    staging = raw / f".incoming-{entry.id}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        for path in files:
            if is_archive(path) and not is_split_part(path):
                extract(path, staging, limits)
            elif not is_split_part(path):
                shutil.copy2(path, staging / path.name)
        parts = [p for p in files if is_split_part(p)]
        for part in parts:  # the volumes of a spanned zip travel with its .zip
            shutil.copy2(part, staging / part.name)
        for pattern in (p for source in entry.sources for p in source.contents):
            if next(staging.rglob(pattern), None) is None:
                raise ExtractionError(
                    f"{entry.id}: the download holds nothing matching '{pattern}' (incomplete or changed release)"
                )
        manifest = {"dataset": entry.id, "files": [{"name": p.name, "size": p.stat().st_size} for p in files]}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        final = raw / entry.id
        if final.exists():
            old = raw / f".replaced-{entry.id}"
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


def plan(entry: DatasetEntry, http: requests.Session) -> tuple[list[tuple[Source, RemoteFile]], list[str]]:
    """What to download for one dataset, and the manual steps its other sources need."""
    jobs: list[tuple[Source, RemoteFile]] = []
    steps: list[str] = []
    for source in entry.sources:
        try:
            remotes = resolve(source, http)
            if not remotes:
                raise DownloadError(f"{source.kind} {source.location}: the listing holds no files")
            jobs.extend((source, remote) for remote in remotes)
        except (ManualStep, CredentialsMissing) as exc:
            steps.append(str(exc))
    if not entry.sources:
        steps.append("the registry names no source for this dataset")
    return jobs, steps


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
    outcomes: list[FetchOutcome] = []
    if imported:
        if len(entries) != 1:
            raise Us43dError("--from imports files for exactly one dataset")
        entry = entries[0]
        files = _import_files(entry, imported, downloads)
        # files the automatic sources of this dataset already brought (kidneyUS: the labels
        # come from GitHub, the images by hand) are installed together with the import
        automatic = [
            p
            for s in entry.sources
            if s.kind != "manual" and source_folder(downloads, s).is_dir()
            for p in sorted(source_folder(downloads, s).iterdir())
            if p.is_file() and not p.name.endswith(".part")
        ]
        files = automatic + files
        install(entry, files, raw)
        return [FetchOutcome(entry.id, "fetched", [f"imported {len(files)} file(s)"], [str(f) for f in files])]
    planned: dict[str, tuple[list[tuple[Source, RemoteFile]], list[str]]] = {}
    for entry in entries:
        try:
            planned[entry.id] = plan(entry, http)
        except DownloadError as exc:
            planned[entry.id] = ([], [f"error: {exc}"])
    results: dict[tuple[str, str], Path | Exception] = {}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {}
        for entry in entries:
            for source, remote in planned[entry.id][0]:
                folder = source_folder(downloads, source)
                callback = (lambda done, total, name=remote.name: progress(name, done, total)) if progress else None
                futures[pool.submit(download, remote, folder, http, policy, callback)] = (entry.id, remote.name)
        for future in as_completed(futures):
            try:
                results[futures[future]] = future.result()
            except (DownloadError, OSError) as exc:
                results[futures[future]] = exc
    for entry in entries:
        jobs, steps = planned[entry.id]
        outcome = FetchOutcome(entry.id, "fetched")
        errors = [str(r) for (d, _), r in results.items() if d == entry.id and isinstance(r, Exception)]
        errors += [s[len("error: ") :] for s in steps if s.startswith("error: ")]
        manual = [s for s in steps if not s.startswith("error: ")]
        files = [r for (d, _), r in sorted(results.items(), key=lambda kv: kv[0]) if d == entry.id and isinstance(r, Path)]
        if errors:
            outcome.state, outcome.messages = "failed", errors
        elif manual:
            outcome.state, outcome.messages = "manual", manual + ([f"downloaded {len(files)} file(s) meanwhile"] if files else [])
            outcome.files = [str(f) for f in files]
        else:
            try:
                install(entry, files, raw)
                outcome.files = [str(f) for f in files]
            except Us43dError as exc:
                outcome.state, outcome.messages = "failed", [str(exc)]
        outcomes.append(outcome)
    return outcomes


def dataset_status(entry: DatasetEntry, downloads: Path, raw: Path, out: Path | None) -> str:
    """not fetched | partial | fetched | built."""
    if out is not None and (out / ".state" / f"{entry.id}.json").is_file():
        return "built"
    if (raw / entry.id / MANIFEST).is_file() or (raw / entry.id).is_dir():
        return "fetched"
    folders = [source_folder(downloads, s) for s in entry.sources] + [downloads / "imported" / entry.id]
    if any(f.is_dir() and any(f.iterdir()) for f in folders):
        return "partial"
    return "not fetched"
