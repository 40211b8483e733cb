"""Safe extraction of downloaded archives.

Archives are untrusted input. Entries with absolute paths or `..`, links that lead outside the
target, device files, and archive bombs (too many bytes in all, or a member that inflates
beyond a sane ratio) are refused before anything is written; the bytes actually written are
counted too, so a lying header cannot slip past. zip and tar (gz, bz2, xz) are read with
Python; 7z and spanned zips need 7-Zip (`7z`, `7zz` or `7za`) on the PATH; rar needs a 7-Zip
that reads RAR, RARLAB's `unrar`, or `unrar-free`. Multi-volume archives (X.zip with X.z01..., and
X.part1.rar with X.part2.rar...) are extracted as one. Nested archives are extracted in place, a
few levels deep.
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

from us43d.errors import Us43dError

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".7z", ".rar", ".gz")


class ExtractionError(Us43dError):
    """An archive is unsafe, corrupt, or needs a tool that is not installed."""


@dataclass(frozen=True)
class Limits:
    max_total_bytes: int = 500 * 2**30  # the largest US-43d release is a few tens of GB
    max_ratio: float = 200.0  # uncompressed / compressed, per member above min_ratio_bytes
    min_ratio_bytes: int = 1 << 20
    max_members: int = 2_000_000
    max_depth: int = 3


def is_archive(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(ARCHIVE_SUFFIXES) and not name.endswith(".nii.gz")


def _safe_name(name: str, archive: Path) -> PurePosixPath:
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise ExtractionError(f"{archive.name}: refusing entry with an absolute path: {name!r}")
    if ".." in path.parts:
        raise ExtractionError(f"{archive.name}: refusing entry that climbs out of the target: {name!r}")
    return path


def _inside(target: Path, link_parent: Path, link_target: str) -> bool:
    resolved = (link_parent / link_target).resolve() if not os.path.isabs(link_target) else Path(link_target).resolve()
    return resolved == target.resolve() or target.resolve() in resolved.parents


def _copy_limited(source, destination: Path, declared: int, name: str, budget: list[int]) -> None:
    written = 0
    with destination.open("wb") as out:
        for block in iter(lambda: source.read(1 << 20), b""):
            written += len(block)
            budget[0] -= len(block)
            if written > declared or budget[0] < 0:
                raise ExtractionError(f"{name}: inflates beyond its declared size or the total limit (archive bomb?)")
            out.write(block)


def _check_totals(archive: Path, members: int, total: int, max_bytes: float, limits: Limits) -> None:
    """Refuse, before writing anything, an archive with too many entries or too many bytes."""
    if members > limits.max_members:
        raise ExtractionError(f"{archive.name}: {members} entries exceed the limit")
    if total > max_bytes:
        raise ExtractionError(f"{archive.name}: {total} bytes uncompressed exceed the limit (archive bomb?)")


def _extract_zip(archive: Path, target: Path, limits: Limits) -> None:
    try:
        with zipfile.ZipFile(archive) as bundle:
            members = bundle.infolist()
            _check_totals(archive, len(members), sum(m.file_size for m in members), limits.max_total_bytes, limits)
            for member in members:
                _safe_name(member.filename, archive)
                if member.file_size > limits.min_ratio_bytes and member.file_size > limits.max_ratio * max(
                    member.compress_size, 1
                ):
                    ratio = member.file_size // max(member.compress_size, 1)
                    raise ExtractionError(f"{archive.name}: {member.filename} inflates {ratio}x (archive bomb?)")
            budget = [limits.max_total_bytes]
            for member in members:
                path = target / _safe_name(member.filename, archive)
                mode = member.external_attr >> 16
                if member.is_dir():
                    path.mkdir(parents=True, exist_ok=True)
                    continue
                path.parent.mkdir(parents=True, exist_ok=True)
                if stat.S_ISLNK(mode):
                    link = bundle.read(member).decode()
                    if not _inside(target, path.parent, link):
                        raise ExtractionError(f"{archive.name}: refusing link {member.filename} -> {link} outside the target")
                    os.symlink(link, path)
                    continue
                with bundle.open(member) as source:
                    _copy_limited(source, path, member.file_size, f"{archive.name}: {member.filename}", budget)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as exc:
        raise ExtractionError(f"{archive.name}: corrupt or truncated zip ({exc})") from exc


def _extract_tar(archive: Path, target: Path, limits: Limits) -> None:
    try:
        with tarfile.open(archive) as bundle:
            members = bundle.getmembers()
            # a tar declares no compressed sizes: the whole archive's ratio bounds it instead
            ratio_bound = limits.max_ratio * max(archive.stat().st_size, limits.min_ratio_bytes)
            total = sum(m.size for m in members if m.isfile())
            _check_totals(archive, len(members), total, min(limits.max_total_bytes, ratio_bound), limits)
            for member in members:
                path = target / _safe_name(member.name, archive)
                if member.issym() or member.islnk():
                    base = path.parent if member.issym() else target
                    if not _inside(target, base, member.linkname):
                        raise ExtractionError(
                            f"{archive.name}: refusing link {member.name} -> {member.linkname} outside the target"
                        )
                elif not (member.isfile() or member.isdir()):
                    raise ExtractionError(f"{archive.name}: refusing special file {member.name}")
            budget = [limits.max_total_bytes]
            for member in members:
                path = target / _safe_name(member.name, archive)
                if member.isdir():
                    path.mkdir(parents=True, exist_ok=True)
                elif member.issym():
                    path.parent.mkdir(parents=True, exist_ok=True)
                    os.symlink(member.linkname, path)
                elif member.islnk():
                    path.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(target / _safe_name(member.linkname, archive), path)
                else:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    source = bundle.extractfile(member)
                    if source is None:
                        raise ExtractionError(f"{archive.name}: cannot read {member.name}")
                    _copy_limited(source, path, member.size, f"{archive.name}: {member.name}", budget)
    except (tarfile.TarError, EOFError, OSError, gzip.BadGzipFile) as exc:
        raise ExtractionError(f"{archive.name}: corrupt or truncated archive ({exc})") from exc


def _extract_gz(archive: Path, target: Path, limits: Limits) -> None:
    path = target / archive.name[: -len(".gz")]
    try:
        with gzip.open(archive, "rb") as source:
            budget = [min(limits.max_total_bytes, int(limits.max_ratio * max(archive.stat().st_size, limits.min_ratio_bytes)))]
            _copy_limited(source, path, budget[0], archive.name, budget)
    except (OSError, EOFError) as exc:
        raise ExtractionError(f"{archive.name}: corrupt or truncated gzip ({exc})") from exc


def seven_zip() -> str:
    for tool in ("7z", "7zz", "7za"):
        if shutil.which(tool):
            return tool
    raise ExtractionError("this archive needs 7-Zip: install it (Debian: apt install 7zip; macOS: brew install sevenzip)")


def _extract_7z(archive: Path, target: Path, limits: Limits) -> None:
    tool = seven_zip()
    listing = subprocess.run([tool, "l", "-slt", "-ba", str(archive)], capture_output=True, text=True)
    if listing.returncode != 0:
        raise ExtractionError(f"{archive.name}: 7-Zip cannot read it ({listing.stderr.strip()[:200]})")
    total = count = 0
    for line in listing.stdout.splitlines():
        if line.startswith("Path = "):
            _safe_name(line[len("Path = ") :], archive)
            count += 1
        elif line.startswith("Size = ") and line[7:].strip().isdigit():
            total += int(line[7:])
    _check_totals(archive, count, total, limits.max_total_bytes, limits)
    result = subprocess.run([tool, "x", "-y", "-snl-", f"-o{target}", str(archive)], capture_output=True, text=True)
    if result.returncode != 0:
        raise ExtractionError(f"{archive.name}: 7-Zip failed ({result.stderr.strip()[:200]})")
    for path in target.rglob("*"):
        if path.is_symlink() and not _inside(target, path.parent, os.readlink(path)):
            raise ExtractionError(f"{archive.name}: refusing link {path.name} outside the target")


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


def _extract_rar(archive: Path, target: Path, limits: Limits) -> None:
    volumes = rar_volumes(archive)
    if _seven_zip_reads_rar():
        _extract_7z(archive, target, limits)
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
    _check_totals(archive, len(names), 0, limits.max_total_bytes, limits)
    command = [tool, "x", "-o+", "-y", "-ol-", str(archive.resolve())] if rarlab else [tool, "-x", "-f", str(archive.resolve())]
    result = subprocess.run(command, cwd=target, capture_output=True, text=True)
    if result.returncode != 0 or (not rarlab and "All OK" not in result.stdout):
        raise ExtractionError(f"{archive.name}: extraction failed ({(result.stderr or result.stdout).strip()[-200:]})")
    _check_written(archive, target, limits)


def _unrar_free_names(listing: str) -> list[str]:
    """Entry names from `unrar-free -t`: after the dashed rule, each entry is a line with its
    name (indented by one space) followed by a line of size, date and attributes."""
    lines = listing.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("---")), len(lines))
    return [line[1:] for line in lines[start + 1 :: 2] if line.startswith(" ") and not line.startswith("  ")]


def _check_written(archive: Path, target: Path, limits: Limits) -> None:
    """After an external tool: no link out of the target, and no more bytes than allowed."""
    total = 0
    for path in target.rglob("*"):
        if path.is_symlink():
            if not _inside(target, path.parent, os.readlink(path)):
                raise ExtractionError(f"{archive.name}: refusing link {path.name} outside the target")
        elif path.is_file():
            total += path.stat().st_size
    if total > limits.max_total_bytes:
        raise ExtractionError(f"{archive.name}: {total} bytes written exceed the limit (archive bomb?)")


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


def extract(archive: Path, target: Path, limits: Limits = Limits(), depth: int = 0) -> None:
    """Extract `archive` into `target`, then any archive found inside, in its own folder."""
    target.mkdir(parents=True, exist_ok=True)
    name = archive.name.lower()
    if name.endswith(".zip") and not _is_spanned(archive):
        _extract_zip(archive, target, limits)
    elif name.endswith(".rar"):
        _extract_rar(archive, target, limits)
    elif name.endswith((".7z", ".zip")):
        _extract_7z(archive, target, limits)
    elif name.endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")):
        _extract_tar(archive, target, limits)
    elif name.endswith(".gz"):
        _extract_gz(archive, target, limits)
    else:
        raise ExtractionError(f"{archive.name}: not an archive this tool extracts")
    if depth + 1 >= limits.max_depth:
        return
    for renamed in sorted(target.rglob("*.change2zip*")):
        # CardiacUDC and EchoCP ship the last volume of a split zip renamed to .change2zip
        renamed.rename(renamed.with_name(renamed.name.split(".change2zip")[0] + ".zip"))
    for inner in sorted(p for p in target.rglob("*") if p.is_file() and is_archive(p) and not is_split_part(p)):
        folder = inner.with_name(inner.name.split(".")[0])
        if folder.exists():
            folder = inner.with_name(inner.name + ".d")
        parts = sorted(inner.parent.glob(inner.stem + ".z[0-9][0-9]")) if _is_spanned(inner) else rar_volumes(inner)[1:]
        extract(inner, folder, limits, depth + 1)
        for done in (inner, *parts):
            done.unlink()


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
