"""The build's index: what is known of each written image, without its pixels."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any

SPLITS = ("train", "val", "test")
# Version of the per-dataset state files (OUT/.state/<ID>.json). A state of another version is
# never trusted: its dataset is rebuilt.
STATE_VERSION = 5  # 5: image-level labels (records) and the entry's classes (info)


@dataclass(frozen=True)
class AnnotationRecord:
    category: str
    rle_counts: str
    bbox: tuple[int, int, int, int]
    area: int


@dataclass(frozen=True)
class ImageRecord:
    dataset: str
    key: str
    file_name: str  # relative to OUT/images
    width: int
    height: int
    source_file: str  # relative to RAW/<ID>
    frame: int | None
    group: str
    official_split: str | None
    annotations: tuple[AnnotationRecord, ...]
    # The written PNG as the build left it: a rerun reuses a dataset only while every file still
    # has its size, and `us43d validate --deep` compares the bytes with the hash.
    size: int = 0
    sha256: str = ""
    # The annotation pixels the build removed as lying outside the field of view (COCO RLE of
    # their union), so `us43d show` can draw what cleaning took; None when it took nothing.
    cleaned_rle: str | None = None
    # The image-level class (one of the registry entry's `classes`), None when the release gives none.
    label: str | None = None

    @property
    def image_id(self) -> int:
        return stable_id(f"{self.dataset}/{self.key}")

    def annotation_id(self, index: int) -> int:
        return stable_id(f"{self.dataset}/{self.key}#{index}")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ImageRecord:
        annotations = tuple(
            AnnotationRecord(a["category"], a["rle_counts"], tuple(a["bbox"]), a["area"]) for a in data["annotations"]
        )
        return cls(**{**data, "annotations": annotations})


@dataclass(frozen=True)
class ItemError:
    dataset: str
    file: str
    reason: str


@dataclass
class ItemResult:
    """What a worker sends back for one item: records of written images and what went wrong."""

    records: list[ImageRecord] = field(default_factory=list)
    errors: list[ItemError] = field(default_factory=list)
    samples: int = 0
    dropped_empty: int = 0
    small_instances: int = 0
    cleaned_pixels: int = 0
    cleaned_instances: int = 0


def stable_id(text: str) -> int:
    """A 52-bit id from a stable key: the same key gets the same id in every build.

    52 bits stay exact in JavaScript and in float64 columns; the writer checks uniqueness.
    """
    return int(hashlib.sha1(text.encode()).hexdigest()[:13], 16)
