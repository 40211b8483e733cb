"""The output folder: whose it is, who writes it, and how its files change.

A build writes into a folder a user named and deletes inside it (staging folders, a dataset's
previous images). So it checks first that the folder is its own (a us43d corpus, or new, or
empty) and lies outside the raw data, and it never runs twice at once on one folder: two
builds would delete each other's staging. Files are written under temporary names and renamed
into place, so a failure while writing (a full disk) leaves the previous files, never a mix.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from us43d.corpus.records import ImageRecord
from us43d.errors import CorpusError, os_error_text

try:
    import fcntl
except ImportError:  # Windows: no flock; concurrent builds are not detected there
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".lock"
STATE_DIR = ".state"
# The mark a build leaves in every OUT/images/<ID> it makes: it may replace only such folders.
IMAGES_MARK = ".us43d-images"
# What marks a folder as a us43d corpus: a build creates .state/ before writing anything else.
CORPUS_MARKERS = ("build.json", STATE_DIR)
_TEMPORARY = re.compile(r"^\..+\.tmp\d+$")


class OutputWriteError(CorpusError):
    """Writing the corpus failed (a full disk, an I/O error). Never an item error: every item
    after it would fail the same way, and a build that lost them must not pass."""


def write_failure(path: Path, exc: OSError) -> OutputWriteError:
    return OutputWriteError(f"cannot write {path}: {os_error_text(exc)}")


def is_corpus(out: Path) -> bool:
    return any((out / marker).exists() for marker in CORPUS_MARKERS)


def check_folders(raw: Path, out: Path) -> None:
    """Refuse an OUT that would put the build's writes and deletes where they do not belong."""
    raw_real, out_real = raw.resolve(), out.resolve()
    if raw_real == out_real or raw_real.is_relative_to(out_real) or out_real.is_relative_to(raw_real):
        raise CorpusError(
            f"RAW {raw} and OUT {out} are the same folder or one is inside the other; the build replaces "
            "folders in OUT and would destroy raw data: choose an OUT outside RAW"
        )
    for parent in [out, *out.parents]:
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                raise CorpusError(f"OUT {out} is not a folder ({parent} exists and is not a folder)")
            break
    if out.is_dir() and not is_corpus(out) and any(out.iterdir()):
        raise CorpusError(
            f"OUT {out} is not empty and is not a us43d corpus (it has no build.json or {STATE_DIR}/); "
            "the build writes and deletes in its output folder: choose a new or empty folder"
        )


def prepare(out: Path) -> None:
    """Create OUT and its state folder first: from then on the folder is marked as a corpus, so a
    build killed at any later moment can be rerun into it."""
    (out / STATE_DIR).mkdir(parents=True, exist_ok=True)


def _holder(path: Path) -> str:
    try:
        text = path.read_text().strip()
    except OSError:
        return "unknown"
    return text if text.isdigit() else "unknown"


@contextmanager
def corpus_lock(out: Path) -> Iterator[None]:
    """Hold an exclusive lock on OUT for the whole build. The kernel releases it when the process
    ends, however it ends, so a killed build never leaves a stale lock behind."""
    path = out / LOCK_NAME
    # Never through a link: the pid is written over the file's content.
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
    with os.fdopen(descriptor, "r+") as handle:
        if fcntl is not None:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                raise CorpusError(
                    f"another us43d build (pid {_holder(path)}) is writing {out}; "
                    "wait for it to finish, or build into another folder"
                ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield  # closing the handle releases the lock


def build_in_progress(out: Path) -> str | None:
    """The pid of a build holding OUT's lock now, if any (without creating the lock file)."""
    path = out / LOCK_NAME
    if fcntl is None or not path.is_file():
        return None
    try:
        with open(path, "rb") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return _holder(path)
    return None


def remove_temporaries(folders: Sequence[Path]) -> None:
    """Temporary files of writes a killed build did not finish (names only we give: '.NAME.tmpPID')."""
    for folder in folders:
        if folder.is_dir():
            for path in folder.iterdir():
                if _TEMPORARY.match(path.name) and path.is_file() and not path.is_symlink():
                    path.unlink(missing_ok=True)


def changed_files(images: Path, records: Sequence[ImageRecord]) -> list[str]:
    """File names of records whose PNG is missing or no longer of the size the build wrote.

    A stat per file: cheap enough to run before every reuse of a dataset."""
    changed = []
    for record in records:
        try:
            size = (images / record.file_name).stat().st_size
        except OSError:
            changed.append(record.file_name)
            continue
        if size != record.size:
            changed.append(record.file_name)
    return changed


class StagedFiles:
    """A set of files replaced together: each is written under a temporary name, and only when
    all are written are they renamed into place (renames need no space). A failure while
    writing leaves every previous file as it was."""

    def __init__(self) -> None:
        self._written: list[tuple[Path, Path]] = []
        self._removed: list[Path] = []

    def write(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        self._written.append((tmp, path))
        tmp.write_bytes(data)

    def remove(self, path: Path) -> None:
        self._removed.append(path)

    def commit(self) -> None:
        for tmp, path in self._written:
            os.replace(tmp, path)
        self._written = []
        for path in self._removed:
            path.unlink(missing_ok=True)

    def discard(self) -> None:
        for tmp, _ in self._written:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
        self._written = []
