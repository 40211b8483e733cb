"""The corpus build: raw folders in, validated corpus out.

The build holds a lock on OUT from start to end (a second build into it stops at once), and
works only in a folder that is its own (see output.py). Per dataset: list items (cheap),
convert them in worker processes (each writes its PNGs into a staging folder and sends back only
a small record), then commit: write the new state file under a temporary name, swap the staging
folder in, and rename the state into place. The state file is the one and only mark of "done",
and its records name every file with its size; a rerun skips a dataset only when its raw files,
converter code and registry entry are unchanged and every recorded file is still there at its
size. Until the commit the previous images and state stay untouched, so a build killed or
stopped by a full disk keeps the previous version of the dataset.

When every requested dataset is done, splits are drawn and the COCO and Parquet files and
build.json are written, all to temporary names first, for every dataset the output folder holds.
An I/O fault anywhere (a full disk) stops the build with an OutputWriteError; it is never
counted as a failed item.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import multiprocessing
import os
import platform
import shutil
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

import us43d
from us43d.converters.base import DatasetProblem, Item, load_converter, reported_path
from us43d.corpus import process
from us43d.corpus.output import (
    IMAGES_MARK,
    STATE_DIR,
    OutputWriteError,
    StagedFiles,
    changed_files,
    check_folders,
    corpus_lock,
    prepare,
    remove_temporaries,
)
from us43d.corpus.records import STATE_VERSION, ImageRecord, ItemError, ItemResult
from us43d.corpus.split import split_rows
from us43d.corpus.writers import DatasetInfo, check_unique_ids, dump_json, write_coco, write_parquet
from us43d.errors import ConversionError, CorpusError, RegistryError, Us43dError, os_error_text
from us43d.registry.loader import Registry
from us43d.registry.schema import DatasetEntry

_CODE_FILES = (
    "converters/base.py",
    "converters/readers.py",
    "corpus/field_of_view.py",
    "corpus/instances.py",
    "corpus/process.py",
    "corpus/records.py",
)


@dataclass
class BuildOptions:
    workers: int = 1
    strict: bool = False
    seed: int = 0
    force: bool = False
    progress: bool = True


@dataclass
class DatasetReport:
    dataset: str
    items: int = 0  # listed in the raw folder: converted, failed or unannotated
    found: int = 0  # images read (kept, empty or unannotated), or sequences listed: compared with `expected`
    expected: int | None = None  # what the registry expects the raw folder to hold
    expected_unit: str = "images"  # or "sequences" (videos, volumes)
    unannotated: int = 0  # images the release leaves without annotation (not errors)
    items_converted: int = 0
    items_failed: int = 0
    samples: int = 0
    images: int = 0
    instances: int = 0
    dropped_without_instances: int = 0
    small_instances_dropped: int = 0
    cleaned_pixels: int = 0
    cleaned_instances: int = 0
    seconds: float = 0.0
    reused: bool = False
    errors: list[dict[str, str]] = field(default_factory=list)  # items that could not be converted
    problems: list[dict[str, str]] = field(default_factory=list)  # the dataset as a whole


@dataclass
class BuildResult:
    out: Path
    reports: dict[str, DatasetReport]
    problems: list[dict[str, str]]  # datasets missing, yielding nothing or far less than expected
    item_errors: list[dict[str, str]]  # single items that could not be converted
    split_counts: dict[str, dict[str, int]]

    @property
    def errors(self) -> list[dict[str, str]]:
        """Everything reported, dataset problems first."""
        return self.problems + self.item_errors

    @property
    def ok(self) -> bool:
        return not self.errors


class StrictStop(Us43dError):
    """Raised in --strict mode at the first problem; the output keeps its last good state."""


def state_dir(out: Path) -> Path:
    return out / STATE_DIR


def _raw_folder(raw: Path, dataset_id: str) -> Path | None:
    exact = raw / dataset_id
    if exact.is_dir():
        return exact
    for child in raw.iterdir():
        if child.is_dir() and child.name.lower() == dataset_id.lower():
            return child
    return None


def _walk_files(root: Path) -> Iterator[os.DirEntry[str]]:
    stack = [root]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for e in entries:
                if e.is_dir(follow_symlinks=False):
                    stack.append(Path(e.path))
                elif e.is_file():
                    yield e


def _converter_files(name: str) -> list[Path]:
    """The converter's module and every us43d module it takes names from (a shared reader, a
    sibling converter), so a change in any of them rebuilds the dataset and nothing else."""
    module = load_converter(name).module
    names = {module.__name__}
    for value in vars(module).values():
        owner = value.__name__ if inspect.ismodule(value) else getattr(value, "__module__", None)
        if isinstance(owner, str) and owner.startswith(("us43d.", module.__name__.split(".")[0] + ".")):
            names.add(owner)
    return [Path(sys.modules[n].__file__) for n in sorted(names) if getattr(sys.modules.get(n), "__file__", None)]


def fingerprint(entry: DatasetEntry, raw_dir: Path, seedless_options: dict[str, Any]) -> str:
    """Hash of everything a dataset's output depends on: raw files (path, size, mtime), the
    converter and shared reader code, the registry entry, and the package version."""
    digest = hashlib.sha256()
    digest.update(f"{us43d.__version__}\n{STATE_VERSION}\n".encode())
    digest.update(json.dumps(entry.model_dump(mode="json"), sort_keys=True).encode())
    digest.update(json.dumps(seedless_options, sort_keys=True).encode())
    package = Path(us43d.__file__).parent
    for path in [package / rel for rel in _CODE_FILES] + _converter_files(entry.converter):
        digest.update(path.read_bytes())
    listing = sorted(
        (Path(e.path).relative_to(raw_dir).as_posix(), e.stat().st_size, e.stat().st_mtime_ns) for e in _walk_files(raw_dir)
    )
    digest.update(json.dumps(listing).encode())
    return digest.hexdigest()


def _load_state(path: Path) -> dict[str, Any] | None:
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) and state.get("version") == STATE_VERSION else None


def _read_state(out: Path, dataset_id: str) -> dict[str, Any] | None:
    path = state_dir(out) / f"{dataset_id}.json"
    if not path.is_file() or not (out / "images" / dataset_id).is_dir():
        return None
    return _load_state(path)


def _state_records(state: dict[str, Any]) -> list[ImageRecord] | None:
    try:
        return [ImageRecord.from_json(r) for r in state["records"]]
    except (KeyError, TypeError, ValueError):
        return None


def _intact(out: Path, state: dict[str, Any]) -> bool:
    """Every file the state records is there at its recorded size: a state is never trusted
    over files deleted or cut short since (by hand, or by a build that went wrong)."""
    records = _state_records(state)
    return records is not None and not changed_files(out / "images", records)


def _executor(workers: int) -> Executor | None:
    if workers <= 1:
        return None
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    if method == "forkserver":
        context.set_forkserver_preload(["us43d.corpus.process"])
    return ProcessPoolExecutor(max_workers=workers, mp_context=context)


def _run_items(executor: Executor | None, task: process.Task, items: Sequence[Item], workers: int) -> Iterator[ItemResult]:
    work = partial(process.process_item, task)
    if executor is None:
        return map(work, items)
    chunk = max(1, min(64, len(items) // (workers * 8) or 1))
    return executor.map(work, items, chunksize=chunk)


def _list_items(entry: DatasetEntry, raw_dir: Path) -> tuple[list[Item], list[ItemError], list[ItemError]]:
    """The dataset's items, the items listed twice, and problems of the dataset as a whole."""
    converter = load_converter(entry.converter)
    items: list[Item] = []
    duplicates: list[ItemError] = []
    problems: list[ItemError] = []
    seen: set[str] = set()
    try:
        listed = list(converter.list_items(raw_dir, entry))
    except ConversionError as exc:
        return [], [], [ItemError(entry.id, reported_path(raw_dir, exc.source_file or raw_dir), exc.reason)]
    for item in listed:
        if isinstance(item, DatasetProblem):
            problems.append(ItemError(entry.id, item.file, item.reason))
        elif item.key in seen:
            duplicates.append(ItemError(entry.id, item.source_file, f"duplicate sample key '{item.key}'"))
        else:
            seen.add(item.key)
            items.append(item)
    items.sort(key=lambda i: i.key)
    return items, duplicates, problems


# A dataset whose raw folder holds fewer than this share of the images its registry entry
# expects is reported: an incomplete download or a layout the converter does not know.
MIN_EXPECTED_SHARE = 0.5


def _coverage(entry: DatasetEntry, report: DatasetReport) -> None:
    """What to compare with the registry: the sequences listed, for a video or volume dataset
    whose entry counts them, else the images actually read (written, empty or unannotated; a
    mask without its image, or an image that cannot be decoded, does not count)."""
    if entry.expected.sequences:
        report.found, report.expected, report.expected_unit = report.items, entry.expected.sequences, "sequences"
    else:
        report.found = report.images + report.dropped_without_instances + report.unannotated
        report.expected, report.expected_unit = entry.expected.images, "images"


def _coverage_problems(entry: DatasetEntry, raw_dir: Path, report: DatasetReport) -> list[ItemError]:
    """A dataset that yields nothing, or far less than expected, never passes silently."""
    where = reported_path(raw_dir, raw_dir)
    if report.items == 0:
        return [ItemError(entry.id, where, "no images found: is this the release's layout (see `us43d info`)?")]
    if report.images == 0:
        return [ItemError(entry.id, where, f"none of the {report.items} items listed gave an annotated image")]
    if report.expected and report.found < MIN_EXPECTED_SHARE * report.expected:
        return [
            ItemError(
                entry.id,
                where,
                f"found {report.found} {report.expected_unit} where the registry expects {report.expected}: "
                "incomplete download or unknown layout?",
            )
        ]
    return []


def _check_ours(out: Path, dataset_id: str) -> None:
    """Before building a dataset, check that a folder already at OUT/images/<ID> was made by a
    build (it carries the build's mark, or a state names it): the build replaces that folder,
    and never deletes one it did not make."""
    final = out / "images" / dataset_id
    if not (final.exists() or final.is_symlink()):
        return
    if final.is_dir() and not final.is_symlink() and (final / IMAGES_MARK).is_file():
        return
    if (state_dir(out) / f"{dataset_id}.json").is_file() and not final.is_symlink():
        return  # built before the mark existed
    raise CorpusError(f"{final} was not made by us43d; move it out of the corpus to build {dataset_id}")


def _staging(out: Path, dataset_id: str) -> Path:
    return out / "images" / f".staging-{dataset_id}"


def _previous(out: Path, dataset_id: str) -> Path:
    return out / "images" / f".old-{dataset_id}"


def _build_dataset(
    entry: DatasetEntry,
    raw_dir: Path,
    out: Path,
    options: BuildOptions,
    executor: Executor | None,
    progress: Progress | None,
) -> tuple[DatasetReport, list[ImageRecord]]:
    """Convert a dataset into its staging folder; nothing the corpus holds is touched yet."""
    started = time.perf_counter()
    report = DatasetReport(entry.id)
    staging = _staging(out, entry.id)
    shutil.rmtree(staging, ignore_errors=True)  # a killed build's: the name is ours
    staging.mkdir(parents=True)
    (staging / IMAGES_MARK).write_text(f"{entry.id}\n")  # moves with the folder when it is swapped in
    listed, errors, problems = _list_items(entry, raw_dir)
    if options.strict and (problems or errors):
        first = (problems or errors)[0]
        raise StrictStop(f"{first.dataset}: {first.file}: {first.reason}")
    items = [item for item in listed if not item.unannotated]
    report.unannotated = len(listed) - len(items)
    report.items = len(listed) + len(errors)
    report.items_failed = len(errors)
    task = process.Task(entry, raw_dir, staging, entry.id)
    progress_task = progress.add_task(entry.id, total=len(items)) if progress else None
    records: list[ImageRecord] = []
    for result in _run_items(executor, task, items, options.workers):
        if result.errors:
            report.items_failed += 1
            errors.extend(result.errors)
            if options.strict:
                e = result.errors[0]
                raise StrictStop(f"{e.dataset}: {e.file}: {e.reason}")
        else:
            report.items_converted += 1
        records.extend(result.records)
        report.samples += result.samples
        report.dropped_without_instances += result.dropped_empty
        report.small_instances_dropped += result.small_instances
        report.cleaned_pixels += result.cleaned_pixels
        report.cleaned_instances += result.cleaned_instances
        if progress is not None and progress_task is not None:
            progress.advance(progress_task)
    duplicates = [k for k, n in Counter(r.key for r in records).items() if n > 1]
    if duplicates:
        raise CorpusError(f"{entry.id}: converter '{entry.converter}' produced duplicate keys, e.g. {duplicates[:3]}")
    records.sort(key=lambda r: r.key)
    report.images = len(records)
    report.instances = sum(len(r.annotations) for r in records)
    report.errors = [asdict(e) for e in errors]
    _coverage(entry, report)
    report.problems = [asdict(e) for e in problems or _coverage_problems(entry, raw_dir, report)]
    if options.strict and report.problems:
        first = report.problems[0]
        raise StrictStop(f"{first['dataset']}: {first['file']}: {first['reason']}")
    report.seconds = round(time.perf_counter() - started, 3)
    return report, records


def _commit_dataset(out: Path, entry: DatasetEntry, print_: str, report: DatasetReport, records: list[ImageRecord]) -> None:
    """Swap the finished images in and mark the dataset done, with no moment at which a state
    names files that are not there.

    Everything that needs disk space (the new state file) is written before the previous
    version is touched; then three renames: old images aside, new images in, new state over the
    old one. A failed rename puts the previous images back; a kill between renames leaves either
    no image folder or the old state over new files, and the fingerprint and file checks rebuild
    the dataset in both cases."""
    state = {
        "version": STATE_VERSION,
        "fingerprint": print_,
        "info": {
            "id": entry.id,
            "organ": entry.organ,
            "categories": list(entry.categories),
            "classes": list(entry.classes),
        },
        "report": asdict(report),
        "records": [r.to_json() for r in records],
    }
    state_path = state_dir(out) / f"{entry.id}.json"
    new_state = StagedFiles()
    staging, final, previous = _staging(out, entry.id), out / "images" / entry.id, _previous(out, entry.id)
    try:
        new_state.write(state_path, dump_json(state))
        shutil.rmtree(previous, ignore_errors=True)  # a killed build's: the name is ours
        had_previous = final.exists()
        if had_previous:
            os.replace(final, previous)
        swapped = False
        try:
            os.replace(staging, final)
            swapped = True
            new_state.commit()
        except OSError:
            with contextlib.suppress(OSError):
                if swapped:
                    os.replace(final, staging)
                if had_previous:
                    os.replace(previous, final)
            raise
    finally:
        new_state.discard()
    shutil.rmtree(previous, ignore_errors=True)


def _select(registry: Registry, raw: Path, dataset_ids: Sequence[str] | None) -> list[DatasetEntry]:
    if dataset_ids:
        return registry.resolve(dataset_ids)
    present = [e for e in registry if _raw_folder(raw, e.id) is not None]
    if not present:
        raise CorpusError(f"no dataset folder found in {raw} (expected folders named like registry ids, e.g. {raw}/BUS-BRA)")
    return present


def _progress(enabled: bool, console: Console | None) -> Progress | None:
    if not enabled:
        return None
    return Progress(
        TextColumn("[bold]{task.description:<20}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def build_corpus(
    registry: Registry,
    raw: Path,
    out: Path,
    dataset_ids: Sequence[str] | None = None,
    options: BuildOptions | None = None,
    console: Console | None = None,
) -> BuildResult:
    """Build the requested datasets (default: every dataset found in RAW) into OUT.

    Raises CorpusError when the build cannot run (RAW missing, OUT not ours or held by another
    build) and OutputWriteError when an I/O fault stopped it; problems of single datasets are
    reported in the result instead."""
    options = options or BuildOptions()
    if not raw.is_dir():
        raise CorpusError(f"RAW folder {raw} does not exist")
    check_folders(raw, out)
    entries = _select(registry, raw, dataset_ids)
    try:
        prepare(out)
        with corpus_lock(out):
            return _build_locked(registry, raw, out, entries, options, console)
    except OutputWriteError as exc:
        raise OutputWriteError(f"{exc}. {_STOPPED}") from exc
    except OSError as exc:
        raise OutputWriteError(f"I/O error: {os_error_text(exc)}. {_STOPPED}") from exc


_STOPPED = (
    "The build stopped; what it finished is kept and nothing is left half-written (a dataset being rebuilt keeps "
    "its previous version). `us43d validate` shows what is not up to date; fix the cause (e.g. free disk space) "
    "and build again"
)


def _build_locked(
    registry: Registry,
    raw: Path,
    out: Path,
    entries: Sequence[DatasetEntry],
    options: BuildOptions,
    console: Console | None,
) -> BuildResult:
    reports: dict[str, DatasetReport] = {}
    dataset_errors: list[dict[str, str]] = []
    checked: set[str] = set()  # datasets whose files this run wrote or found intact
    started = time.perf_counter()
    executor = None
    progress = _progress(options.progress, console)
    remove_temporaries([state_dir(out)])
    try:
        if progress:
            progress.start()
        for entry in entries:
            raw_dir = _raw_folder(raw, entry.id)
            if raw_dir is None:
                error = {
                    "dataset": entry.id,
                    "file": str(raw / entry.id),
                    "reason": "raw folder is missing (run `us43d fetch` or put the files there)",
                }
                if options.strict:
                    raise StrictStop(f"{entry.id}: {error['file']}: {error['reason']}")
                dataset_errors.append(error)
                continue
            try:
                print_ = fingerprint(entry, raw_dir, {})
            except RegistryError as exc:  # the converter named by the entry is not available
                if options.strict:
                    raise StrictStop(f"{entry.id}: {exc}") from exc
                dataset_errors.append({"dataset": entry.id, "file": str(raw_dir), "reason": str(exc)})
                continue
            state = None if options.force else _read_state(out, entry.id)
            if state is not None and state.get("fingerprint") == print_ and _intact(out, state):
                report = DatasetReport(**{**state["report"], "reused": True})
                reports[entry.id] = report
                checked.add(entry.id)
                if progress:
                    progress.add_task(f"{entry.id} (unchanged)", total=report.items, completed=report.items)
                continue
            _check_ours(out, entry.id)
            if executor is None:
                executor = _executor(options.workers)
            try:
                report, records = _build_dataset(entry, raw_dir, out, options, executor, progress)
                _commit_dataset(out, entry, print_, report, records)
            except BaseException:
                # Workers still running would write into the staging folder: stop them first.
                if executor is not None:
                    executor.shutdown(wait=True, cancel_futures=True)
                    executor = None
                shutil.rmtree(_staging(out, entry.id), ignore_errors=True)
                raise
            reports[entry.id] = report
            checked.add(entry.id)
    finally:
        if progress:
            progress.stop()
        if executor is not None:
            executor.shutdown(cancel_futures=True)
    return _finish(out, reports, dataset_errors, options, time.perf_counter() - started, registry, checked)


def load_states(
    out: Path,
) -> tuple[dict[str, DatasetInfo], dict[str, list[ImageRecord]], dict[str, dict[str, Any]], list[str]]:
    """Every dataset the output folder holds as done, in id order, and the ids of state files
    that cannot be used (unreadable, or written by another version of us43d)."""
    infos: dict[str, DatasetInfo] = {}
    records: dict[str, list[ImageRecord]] = {}
    reports: dict[str, dict[str, Any]] = {}
    unusable: list[str] = []
    folder = state_dir(out)
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        state = _load_state(path)
        dataset_records = None if state is None else _state_records(state)
        try:
            info = state["info"]  # type: ignore[index]
            dataset = DatasetInfo(info["id"], info["organ"], tuple(info["categories"]), tuple(info["classes"]))
            report = dict(state["report"])  # type: ignore[index]
        except (KeyError, TypeError, ValueError):
            dataset_records = None
        if dataset_records is None or dataset.id != path.stem:
            unusable.append(path.stem)
            continue
        infos[dataset.id] = dataset
        records[dataset.id] = dataset_records
        reports[dataset.id] = report
    return infos, records, reports, unusable


def _versions() -> dict[str, str]:
    import numpy
    import PIL
    import pyarrow
    import pycocotools

    return {
        "us43d": us43d.__version__,
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "pillow": PIL.__version__,
        "pyarrow": pyarrow.__version__,
        "pycocotools": getattr(pycocotools, "__version__", "unknown"),
    }


def _finish(
    out: Path,
    this_run: dict[str, DatasetReport],
    dataset_errors: list[dict[str, str]],
    options: BuildOptions,
    seconds: float,
    registry: Registry,
    checked: set[str],
) -> BuildResult:
    started = time.perf_counter()
    infos, records, stored_reports, unusable = load_states(out)
    problems = list(dataset_errors)
    for dataset_id in unusable:
        problems.append(
            {
                "dataset": dataset_id,
                "file": str(state_dir(out) / f"{dataset_id}.json"),
                "reason": "its build state cannot be read or is from another version of us43d; it is left out of the "
                f"tables: run `us43d build {dataset_id}`",
            }
        )
    for dataset_id in [d for d in records if d not in checked]:
        changed = changed_files(out / "images", records[dataset_id])
        if changed:  # a dataset outside this run lost files: no table row may point at them
            problems.append(
                {
                    "dataset": dataset_id,
                    "file": str(out / "images" / dataset_id),
                    "reason": f"{len(changed)} of {len(records[dataset_id])} images are missing or changed since they were "
                    f"built (e.g. {changed[0]}); it is left out of the tables: run `us43d build {dataset_id}`",
                }
            )
            for table in (infos, records, stored_reports):
                del table[dataset_id]
    rows, split_counts = split_rows(records, options.seed)
    check_unique_ids(rows)
    all_reports = {k: DatasetReport(**v) for k, v in stored_reports.items()}
    all_reports.update({k: v for k, v in this_run.items() if k in records})
    errors: list[dict[str, str]] = []
    for _, report in sorted(all_reports.items()):
        problems.extend(report.problems)
        errors.extend(report.errors)
    files = StagedFiles()
    remove_temporaries([out, out / "coco", *(out / "coco" / d for d in infos), out / "parquet"])
    try:
        write_coco(out, infos, rows, files)
        write_parquet(out, infos, rows, files)
        build = {
            "versions": _versions(),
            "registry_hash": registry.digest(),
            "seed": options.seed,
            "datasets": {k: {**asdict(v), "splits": split_counts.get(k, {})} for k, v in sorted(all_reports.items())},
            "problems": problems,
            "errors": errors,
            "totals": {
                "images": sum(len(v) for v in records.values()),
                "instances": sum(len(r.annotations) for v in records.values() for r in v),
                "problems": len(problems),
                "errors": len(errors),
            },
            "timings": {"datasets_seconds": round(seconds, 3), "write_seconds": round(time.perf_counter() - started, 3)},
            "command": " ".join(sys.argv[1:]) if sys.argv else "",
        }
        files.write(out / "build.json", (json.dumps(build, indent=2) + "\n").encode())
        files.commit()
    except OSError as exc:
        raise OutputWriteError(
            f"cannot write the corpus tables ({os_error_text(exc)}); the COCO and Parquet files and build.json "
            "were left as they were, behind the datasets built"
        ) from exc
    finally:
        files.discard()
    for folder in (out / "coco").iterdir() if (out / "coco").is_dir() else []:
        if folder.is_dir() and not folder.is_symlink() and folder.name not in infos:
            with contextlib.suppress(OSError):
                folder.rmdir()  # emptied above; never removes a folder that holds anything
    return BuildResult(out, all_reports, problems, errors, split_counts)
