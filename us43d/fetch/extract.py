"""Safe extraction of downloaded archives.

Archives are untrusted input. Entries with absolute paths or `..`, symbolic links, hard links to
anything but an earlier member of the same archive, device files, and archive bombs are refused
before anything is written. A bomb is an archive that inflates beyond a sane ratio as a whole
(one member may: a label volume of zeros deflates a thousandfold), or beyond one byte budget
that every archive nested in a download shares; the bytes actually written are counted too, so
a lying header cannot slip past. Symbolic links are
refused outright: no dataset needs one, and a link checked when it is made can point elsewhere
once a later link exists (`y -> p/p/../..`, then `p -> .`), so that a file written through it
lands outside the target. Every file is opened without following links, in a folder whose real
path is checked to lie inside the target. zip and tar (gz, bz2, xz) are read with Python; 7z and
spanned zips need 7-Zip (`7z`, `7zz` or `7za`) on the PATH; rar needs a 7-Zip that reads RAR,
RARLAB's `unrar`, or `unrar-free`. Multi-volume archives (X.zip with X.z01..., and X.part1.rar
with X.part2.rar...) are extracted as one. Nested archives are extracted in place, a few levels
deep.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import stat
import subprocess
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from us43d.errors import Us43dError
from us43d.fetch.names import UnsafeName, safe_relative_path

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".7z", ".rar", ".gz")


class ExtractionError(Us43dError):
    """An archive is unsafe, corrupt, or needs a tool that is not installed."""


@dataclass(frozen=True)
class Limits:
    max_total_bytes: int = 500 * 2**30  # the largest US-43d release is a few tens of GB
    max_ratio: float = 200.0  # uncompressed / compressed, per archive and per download, above min_ratio_bytes
    min_ratio_bytes: int = 1 << 20
    max_members: int = 2_000_000
    max_depth: int = 3

    def ratio_bound(self, compressed: int) -> int:
        """The most bytes `compressed` bytes of archive may inflate to."""
        return int(self.max_ratio * max(compressed, self.min_ratio_bytes))


class Budget:
    """Bytes one download may still write. Every archive nested in it draws on the same budget,
    so a bomb spread over many nested archives is caught like one spread over many members."""

    def __init__(self, remaining: int) -> None:
        self.remaining = remaining

    def spend(self, count: int, name: str) -> None:
        self.remaining -= count
        if self.remaining < 0:
            raise ExtractionError(f"{name}: the bytes written exceed the limit (archive bomb?)")


def is_archive(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(ARCHIVE_SUFFIXES) and not name.endswith(".nii.gz")


def _safe_name(name: str, archive: Path) -> PurePosixPath:
    try:
        return safe_relative_path(name, archive.name)
    except UnsafeName as exc:
        raise ExtractionError(str(exc)) from None


def _new_file(target: Path, path: Path, archive: Path) -> BinaryIO:
    """Open `path` for writing, refusing a folder whose real path is outside the target and a
    path that is itself a link: nothing an archive writes may go through a link."""
    path.parent.mkdir(parents=True, exist_ok=True)
    real_target, parent = target.resolve(), path.parent.resolve()
    if parent != real_target and real_target not in parent.parents:
        raise ExtractionError(f"{archive.name}: refusing to write {path.name} outside the target")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    return os.fdopen(os.open(path, flags, 0o644), "wb")


def _copy_limited(source, out: BinaryIO, declared: int, name: str, budget: Budget) -> None:
    written = 0
    with out:
        for block in iter(lambda: source.read(1 << 20), b""):
            written += len(block)
            if written > declared:
                raise ExtractionError(f"{name}: inflates beyond its declared size (archive bomb?)")
            budget.spend(len(block), name)
            out.write(block)


def _archive_size(archive: Path) -> int:
    """Compressed bytes of an archive with all its volumes."""
    volumes = sorted(archive.parent.glob(glob_escape(archive.stem) + ".z[0-9][0-9]")) if _is_spanned(archive) else []
    return sum(p.stat().st_size for p in (*rar_volumes(archive), *volumes))


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def _check_totals(archive: Path, members: int, total: int, limits: Limits, budget: Budget) -> None:
    """Refuse, before writing anything, an archive with too many entries, or more bytes than
    its own size allows (the whole archive's ratio) or than the download has left."""
    if members > limits.max_members:
        raise ExtractionError(f"{archive.name}: {members} entries exceed the limit")
    allowed = min(budget.remaining, limits.ratio_bound(_archive_size(archive)))
    if total > allowed:
        raise ExtractionError(f"{archive.name}: {total} bytes uncompressed exceed the limit of {allowed} (archive bomb?)")


def _refuse_link(archive: Path, name: str, link: str) -> None:
    raise ExtractionError(
        f"{archive.name}: refusing symbolic link {name} -> {link} (datasets need none, and a link can lead a later "
        "write outside the target)"
    )


def _extract_zip(archive: Path, target: Path, limits: Limits, budget: Budget) -> None:
    try:
        with zipfile.ZipFile(archive) as bundle:
            members = bundle.infolist()
            _check_totals(archive, len(members), sum(m.file_size for m in members), limits, budget)
            for member in members:
                _safe_name(member.filename, archive)
                if stat.S_ISLNK(member.external_attr >> 16):
                    _refuse_link(archive, member.filename, bundle.read(member).decode(errors="replace"))
            for member in members:
                path = target / _safe_name(member.filename, archive)
                if member.is_dir():
                    _make_folder(target, path, archive)
                    continue
                with bundle.open(member) as source:
                    out = _new_file(target, path, archive)
                    _copy_limited(source, out, member.file_size, f"{archive.name}: {member.filename}", budget)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, UnicodeDecodeError) as exc:
        raise ExtractionError(f"{archive.name}: corrupt or truncated zip ({exc})") from exc


def _make_folder(target: Path, path: Path, archive: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    real_target, real = target.resolve(), path.resolve()
    if real != real_target and real_target not in real.parents:
        raise ExtractionError(f"{archive.name}: refusing to write {path.name} outside the target")


def _extract_tar(archive: Path, target: Path, limits: Limits, budget: Budget) -> None:
    try:
        with tarfile.open(archive) as bundle:
            members = bundle.getmembers()
            # a tar declares no compressed sizes: the whole archive's ratio bounds it instead
            _check_totals(archive, len(members), sum(m.size for m in members if m.isfile()), limits, budget)
            sizes: dict[PurePosixPath, int] = {}  # the files met so far, which a hard link may stand for
            for member in members:
                name = _safe_name(member.name, archive)
                if member.issym():
                    _refuse_link(archive, member.name, member.linkname)
                elif member.islnk():
                    # a hard link stands for an earlier member: its bytes come from the archive, not the disk
                    if _tar_link_name(member.linkname, archive) not in sizes:
                        raise ExtractionError(
                            f"{archive.name}: refusing hard link {member.name} -> {member.linkname}, which is no earlier "
                            "file of the archive"
                        )
                elif not (member.isfile() or member.isdir()):
                    raise ExtractionError(f"{archive.name}: refusing special file {member.name}")
                if member.isfile():
                    sizes[name] = member.size
                elif member.islnk():
                    sizes[name] = sizes[_tar_link_name(member.linkname, archive)]
            for member in members:
                path = target / _safe_name(member.name, archive)
                if member.isdir():
                    _make_folder(target, path, archive)
                    continue
                source = bundle.extractfile(member)
                if source is None:
                    raise ExtractionError(f"{archive.name}: cannot read {member.name}")
                size = sizes[_safe_name(member.name, archive)] if member.islnk() else member.size
                with source:
                    _copy_limited(source, _new_file(target, path, archive), size, f"{archive.name}: {member.name}", budget)
    except (tarfile.TarError, EOFError, OSError, gzip.BadGzipFile) as exc:
        raise ExtractionError(f"{archive.name}: corrupt or truncated archive ({exc})") from exc


def _tar_link_name(linkname: str, archive: Path) -> PurePosixPath | None:
    try:
        return _safe_name(linkname, archive)
    except ExtractionError:
        return None


def _extract_gz(archive: Path, target: Path, limits: Limits, budget: Budget) -> None:
    path = target / archive.name[: -len(".gz")]
    try:
        with gzip.open(archive, "rb") as source:
            allowed = min(budget.remaining, limits.ratio_bound(archive.stat().st_size))
            _copy_limited(source, _new_file(target, path, archive), allowed, archive.name, budget)
    except (OSError, EOFError) as exc:
        raise ExtractionError(f"{archive.name}: corrupt or truncated gzip ({exc})") from exc


def seven_zip() -> str:
    for tool in ("7z", "7zz", "7za"):
        if shutil.which(tool):
            return tool
    raise ExtractionError("this archive needs 7-Zip: install it (Debian: apt install 7zip; macOS: brew install sevenzip)")


def _extract_7z(archive: Path, target: Path, limits: Limits, budget: Budget) -> None:
    tool = seven_zip()
    listing = subprocess.run([tool, "l", "-slt", "-ba", str(archive)], capture_output=True, text=True)
    if listing.returncode != 0:
        raise ExtractionError(f"{archive.name}: 7-Zip cannot read it ({listing.stderr.strip()[:200]})")
    total = count = 0
    name = ""
    for line in listing.stdout.splitlines():
        if line.startswith("Path = "):
            name = line[len("Path = ") :]
            _safe_name(name, archive)
            count += 1
        elif line.startswith("Size = ") and line[7:].strip().isdigit():
            total += int(line[7:])
        elif line.startswith("Attributes = ") and " l" in line:  # a Unix mode lrwxrwxrwx
            _refuse_link(archive, name, "?")
    _check_totals(archive, count, total, limits, budget)
    before = _sizes(target)
    result = subprocess.run([tool, "x", "-y", "-snl-", f"-o{target}", str(archive)], capture_output=True, text=True)
    if result.returncode != 0:
        raise ExtractionError(f"{archive.name}: 7-Zip failed ({result.stderr.strip()[:200]})")
    _check_written(archive, target, limits, budget, before)


def _seven_zip_reads_rar() -> str | None:
    try:
        tool = seven_zip()
    except ExtractionError:
        return None
    formats = subprocess.run([tool, "i"], capture_output=True, text=True).stdout
    return tool if re.search(r"\bRar5?\b", formats) else None


def _unrar() -> tuple[str, bool] | None:
    """An unrar on the PATH, and whether it is RARLAB's (which reads multi-volume archives)."""
    for tool in ("unrar", "unrar-free"):
        path = shutil.which(tool)
        if path is None:
            continue
        banner = subprocess.run([path], capture_output=True, text=True)
        rarlab = "Alexander Roshal" in banner.stdout + banner.stderr
        if rarlab or tool == "unrar-free" or "unrar-free" in os.path.realpath(path):
            return path, rarlab
    return None


def _extract_rar(archive: Path, target: Path, limits: Limits, budget: Budget) -> None:
    volumes = rar_volumes(archive)
    if _seven_zip_reads_rar():
        _extract_7z(archive, target, limits, budget)
        return
    found = _unrar()
    if found is None:
        raise ExtractionError(
            f"{archive.name}: this archive needs a RAR reader: 7-Zip with RAR support, unrar or unrar-free "
            "(Debian: apt install unrar-free)"
        )
    tool, rarlab = found
    if len(volumes) > 1 and not rarlab:
        raise ExtractionError(
            f"{archive.name}: a {len(volumes)}-volume RAR archive needs RARLAB's unrar or a 7-Zip with RAR support; "
            f"{os.path.basename(tool)} reads one volume at a time"
        )
    listing = subprocess.run([tool, "lb", str(archive)] if rarlab else [tool, "-t", str(archive)], capture_output=True, text=True)
    if listing.returncode != 0:
        raise ExtractionError(f"{archive.name}: cannot read it ({(listing.stderr or listing.stdout).strip()[:200]})")
    names = listing.stdout.splitlines() if rarlab else _unrar_free_names(listing.stdout)
    for name in names:
        _safe_name(name, archive)
    _check_totals(archive, len(names), 0, limits, budget)
    command = [tool, "x", "-o+", "-y", "-ol-", str(archive.resolve())] if rarlab else [tool, "-x", "-f", str(archive.resolve())]
    before = _sizes(target)
    result = subprocess.run(command, cwd=target, capture_output=True, text=True)
    if result.returncode != 0 or (not rarlab and "All OK" not in result.stdout):
        raise ExtractionError(f"{archive.name}: extraction failed ({(result.stderr or result.stdout).strip()[-200:]})")
    _check_written(archive, target, limits, budget, before)


def _unrar_free_names(listing: str) -> list[str]:
    """Entry names from `unrar-free -t`: after the dashed rule, each entry is a line with its
    name (indented by one space) followed by a line of size, date and attributes."""
    lines = listing.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("---")), len(lines))
    return [line[1:] for line in lines[start + 1 :: 2] if line.startswith(" ") and not line.startswith("  ")]


def _sizes(target: Path) -> dict[Path, int]:
    return {path: path.lstat().st_size for path in target.rglob("*") if path.is_file() or path.is_symlink()}


def _check_written(archive: Path, target: Path, limits: Limits, budget: Budget, before: dict[Path, int]) -> None:
    """After an external tool: no link at all (as for zip and tar), and no more bytes than the
    archive's own ratio and the download's budget allow. Only what the tool wrote counts
    (`before` is what the target already held: other archives of the same download)."""
    total = 0
    for path, size in _sizes(target).items():
        if path.is_symlink():
            _refuse_link(archive, path.relative_to(target).as_posix(), os.readlink(path))
        elif before.get(path) != size:
            total += size
    if total > limits.ratio_bound(_archive_size(archive)):
        raise ExtractionError(f"{archive.name}: {total} bytes written exceed the limit (archive bomb?)")
    budget.spend(total, archive.name)


_RAR_VOLUME = re.compile(r"^(?P<stem>.+)\.part(?P<number>\d+)\.rar$", re.IGNORECASE)


def rar_volumes(archive: Path) -> list[Path]:
    """X.part1.rar and its siblings X.part2.rar, ... in order; a plain X.rar alone."""
    match = _RAR_VOLUME.match(archive.name)
    if match is None:
        return [archive]
    volumes = []
    for sibling in archive.parent.iterdir():
        other = _RAR_VOLUME.match(sibling.name)
        if other and other["stem"] == match["stem"]:
            volumes.append((int(other["number"]), sibling))
    return [path for _, path in sorted(volumes)]


def extract(archive: Path, target: Path, limits: Limits = Limits(), depth: int = 0, budget: Budget | None = None) -> None:
    """Extract `archive` into `target`, then any archive found inside, in its own folder. The
    archives nested in one download share its byte budget (`budget`, made here at the top)."""
    target.mkdir(parents=True, exist_ok=True)
    if budget is None:
        budget = Budget(min(limits.max_total_bytes, limits.ratio_bound(_archive_size(archive))))
    name = archive.name.lower()
    if name.endswith(".zip") and not _is_spanned(archive):
        _extract_zip(archive, target, limits, budget)
    elif name.endswith(".rar"):
        _extract_rar(archive, target, limits, budget)
    elif name.endswith((".7z", ".zip")):
        _extract_7z(archive, target, limits, budget)
    elif name.endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")):
        _extract_tar(archive, target, limits, budget)
    elif name.endswith(".gz"):
        _extract_gz(archive, target, limits, budget)
    else:
        raise ExtractionError(f"{archive.name}: not an archive this tool extracts")
    if depth + 1 >= limits.max_depth:
        return
    for renamed in sorted(target.rglob("*.change2zip*")):
        # CardiacUDC and EchoCP ship the last volume of a split zip renamed to .change2zip
        renamed.rename(renamed.with_name(renamed.name.split(".change2zip")[0] + ".zip"))
    for inner in sorted(p for p in target.rglob("*") if p.is_file() and is_archive(p) and not is_split_part(p)):
        folder = _nested_folder(inner)
        parts = (
            sorted(inner.parent.glob(glob_escape(inner.stem) + ".z[0-9][0-9]")) if _is_spanned(inner) else rar_volumes(inner)[1:]
        )
        extract(inner, folder, limits, depth + 1, budget)
        for done in (inner, *parts):
            done.unlink()


def _nested_folder(inner: Path) -> Path:
    """Where a nested archive goes: beside it, named after it without its suffixes (`Benign.zip`
    -> `Benign/`), or after its whole name when that leaves nothing or is taken (`.zip` -> `.zip.d/`)."""
    stem = inner.name.split(".")[0]
    folder = inner.with_name(stem) if stem else inner.with_name(inner.name + ".d")
    return folder if not folder.exists() else inner.with_name(inner.name + ".d")


def _is_spanned(archive: Path) -> bool:
    """An Info-ZIP split archive: X.zip with X.z01, X.z02, ... beside it."""
    return archive.with_suffix(".z01").exists()


def is_split_part(path: Path) -> bool:
    """A later volume of a multi-volume archive, which travels with its first: X.z01, X.z02, ...
    beside X.zip, and X.part2.rar, X.part3.rar, ... beside X.part1.rar."""
    if path.suffix.lower().startswith(".z") and path.suffix[2:].isdigit():
        return True
    volume = _RAR_VOLUME.match(path.name)
    return volume is not None and int(volume["number"]) > 1
