"""Names from outside that become paths: archive entries, server listings, registry files.

A name is joined to a folder we own, so it must stay inside it whatever it holds: no absolute
path, no drive letter, no `..`, no NUL, and no part longer than a file system takes. Every such
name goes through this one check, so no platform or archive format can be the one that forgets.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from us43d.errors import Us43dError

MAX_PART_BYTES = 255  # the longest file name ext4, APFS and NTFS take


class UnsafeName(Us43dError):
    """A name from outside would lead out of the folder it is meant for, or cannot be a file name."""


def safe_relative_path(name: object, where: str) -> PurePosixPath:
    """`name` as a relative path that stays inside the folder it is joined to. `where` says
    whose name it is (an archive, a listing, a registry entry) for the error message."""
    if not isinstance(name, str) or not name.strip():
        raise UnsafeName(f"{where}: refusing an empty or missing file name ({name!r})")
    if "\x00" in name:
        raise UnsafeName(f"{where}: refusing a file name holding a NUL character: {name!r}")
    text = name.replace("\\", "/")
    if text.startswith("/") or re.match(r"^[A-Za-z]:", text):
        raise UnsafeName(f"{where}: refusing entry with an absolute path: {name!r}")
    parts = [part for part in text.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise UnsafeName(f"{where}: refusing entry that climbs out of the target: {name!r}")
    if not parts:
        raise UnsafeName(f"{where}: refusing a name that names no file: {name!r}")
    for part in parts:
        if len(part.encode("utf-8", "surrogateescape")) > MAX_PART_BYTES:
            raise UnsafeName(f"{where}: refusing a name longer than {MAX_PART_BYTES} bytes: {part[:60]!r}...")
    return PurePosixPath(*parts)


def safe_file_name(name: object, where: str) -> str:
    """A single file or folder name (no folders in it)."""
    path = safe_relative_path(name, where)
    if len(path.parts) != 1:
        raise UnsafeName(f"{where}: refusing a name with folders in it where one name is expected: {name!r}")
    return path.parts[0]
