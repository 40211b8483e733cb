"""Where training and validation read an image's pixels from: the corpus's PNG folder, or the
tar shards of `us43d export --format webdataset` (read in place through its index, so a corpus
streamed to many nodes is never unpacked).

The index of an export is a file from outside like any other: a shard name, offset or size in
it is checked before a byte is read, so a damaged or hostile index names itself instead of
reading another file or the wrong bytes.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from us43d.corpus.export import INDEX, MARK
from us43d.corpus.records import SPLITS
from us43d.errors import CorpusError

SHARD_NAME = re.compile(rf"({'|'.join(SPLITS)})-\d{{6}}\.tar")  # as export.shard_name writes them


class ImageSource(Protocol):
    def read(self, file_name: str) -> np.ndarray:
        """The image as 8-bit RGB (H, W, 3), as SAM expects."""
        ...


@dataclass(frozen=True)
class FolderImages:
    """A built corpus: `<corpus>/images/<file_name>`."""

    root: Path

    def read(self, file_name: str) -> np.ndarray:
        from us43d.training.data import read_rgb

        path = self.root / file_name
        if not path.is_file():
            raise CorpusError(f"image {path} is missing")
        return read_rgb(path)


@dataclass(frozen=True)
class ShardPlace:
    shard: str
    offset: int
    size: int
    width: int
    height: int


@dataclass(frozen=True)
class ShardImages:
    """A webdataset export: each image's PNG bytes at (shard, offset, size), from its index."""

    folder: Path
    places: dict[str, ShardPlace]

    def read(self, file_name: str) -> np.ndarray:
        from us43d.training.data import rgb_from_image

        place = self.places.get(file_name)
        if place is None:
            raise CorpusError(f"{file_name} is not in {self.folder / INDEX}")
        where = f"{self.folder / place.shard} (bytes {place.offset}-{place.offset + place.size} for {file_name})"
        try:
            with (self.folder / place.shard).open("rb") as handle:
                handle.seek(place.offset)
                data = handle.read(place.size)
            if len(data) != place.size:
                raise CorpusError(f"{where}: the shard ends early; export again")
            with Image.open(io.BytesIO(data)) as image:
                if image.format != "PNG":
                    raise CorpusError(f"{where}: not a PNG ({image.format}); the index does not match the shard")
                image.load()
                rgb = rgb_from_image(image)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise CorpusError(f"cannot read {where}: {exc}") from None
        if rgb.shape[:2] != (place.height, place.width):
            raise CorpusError(
                f"{where}: the image is {rgb.shape[1]}x{rgb.shape[0]}, the index says {place.width}x{place.height}; export again"
            )
        return rgb


def is_webdataset(folder: Path) -> bool:
    """An export folder of ours (its mark and index), rather than a built corpus."""
    return (folder / INDEX).is_file() and (folder / MARK).is_file() and not (folder / "parquet").is_dir()


def shard_places(folder: Path, rows: Iterable[tuple[str, str, int, int, int, int]]) -> dict[str, ShardPlace]:
    """{file_name: place} from index rows (file_name, shard, offset, size, width, height), every
    row checked against the shards on disk: a plain tar file of this folder named as the export
    names its shards, and bytes inside it."""
    sizes: dict[str, int] = {}
    places: dict[str, ShardPlace] = {}
    index = folder / INDEX
    for file_name, shard, offset, size, width, height in rows:
        if not isinstance(shard, str) or not SHARD_NAME.fullmatch(shard):
            raise CorpusError(f"{index}: {file_name} names the shard {shard!r}, not one of an export's <split>-NNNNNN.tar")
        if shard not in sizes:
            path = folder / shard
            try:
                info = path.lstat()
            except OSError:
                raise CorpusError(f"{index}: the shard {path} is missing") from None
            if not os.path.isfile(path) or path.is_symlink():
                raise CorpusError(f"{index}: the shard {path} is not a plain file")
            sizes[shard] = info.st_size
        if not (0 <= offset and 0 < size and offset + size <= sizes[shard]):
            raise CorpusError(
                f"{index}: {file_name} lies at bytes {offset}-{offset + size} of {shard}, which holds {sizes[shard]} bytes"
            )
        if width < 1 or height < 1:
            raise CorpusError(f"{index}: {file_name} has the size {width}x{height}")
        if file_name in places:
            raise CorpusError(f"{index}: {file_name} is listed twice")
        places[file_name] = ShardPlace(shard, int(offset), int(size), int(width), int(height))
    return places
