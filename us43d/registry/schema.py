"""The registry entry schema.

Everything about a dataset that is a fact rather than logic lives here, so that a reader of one
YAML file understands the dataset and a converter stays a pure reader of files.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")  # it names folders and files: keep it short
CONVERTER_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$"
WORD_PATTERN = r"^[a-z][a-z0-9-]*$"

Modality = Literal["image", "volume", "video"]
Access = Literal["open", "credentials", "manual"]
SourceKind = Literal[
    "zenodo",
    "mendeley",
    "github",
    "figshare",
    "http",
    "kaggle",
    "kaggle-competition",
    "grand-challenge",
    "tcia",
    "girder",
    "manual",
]
SliceAxis = Literal["sagittal", "coronal", "axial", "frames"]

# Field-of-view cleaning by default: a sequence's field of view is estimated reliably from all its
# frames together; one image's is not (dark anatomy at the edge of a linear scan looks like the
# outside), and the labels of 2D releases were measured not to spill (README, "Cleaning").
MODALITY_CLEANS: dict[str, bool] = {"image": False, "video": True, "volume": True}


class _Strict(BaseModel):
    """Unknown keys are refused: a typo in a YAML file must not be silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Citation(_Strict):
    doi: str | None = None
    bibtex: str | None = None
    text: str | None = None


class SourceFile(_Strict):
    name: str
    size: int | None = Field(default=None, ge=0)
    md5: str | None = Field(default=None, pattern=r"^[0-9a-f]{32}$")
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")


class Source(_Strict):
    """Where one part of a dataset is obtained.

    `location` is read according to `kind`: a Zenodo record id, a Mendeley dataset id,
    `owner/repo` on GitHub, a Kaggle slug, or a URL for `http` and `manual` sources.
    """

    kind: SourceKind
    location: str
    ref: str | None = None
    files: tuple[SourceFile, ...] = ()
    # Glob patterns the extracted download must match, for sources without a stable checksum
    # (archives assembled on the fly): checked before the dataset is installed.
    contents: tuple[str, ...] = ()
    instructions: str | None = None
    note: str | None = None

    @field_validator("contents")
    @classmethod
    def _contents_are_relative(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in value:
            parts = pattern.replace("\\", "/").split("/")
            if not pattern.strip() or pattern.startswith(("/", "\\")) or ".." in parts or re.match(r"^[A-Za-z]:", pattern):
                raise ValueError(f"contents patterns are relative to the extracted download: {pattern!r}")
        return value


class Cleaning(_Strict):
    # Remove mask pixels that lie outside the scan's field of view (us43d/corpus/field_of_view.py).
    # None takes the modality's default (MODALITY_CLEANS): on for videos and volumes, whose
    # field of view is estimated from all their frames, off for single images.
    background_overlap: bool | None = None
    # Grey level up to which a pixel counts as "no signal" when the field of view is estimated;
    # None picks 0 for lossless sources and a small tolerance for lossy (JPEG) ones.
    background_threshold: int | None = Field(default=None, ge=0, le=255)
    # Why this dataset departs from its modality's default, or what was measured on real files.
    note: str | None = None


class Expected(_Strict):
    """What a complete release holds, so that a partial download or an unknown layout shows."""

    images: int | None = Field(default=None, ge=0)  # images in the release (annotated or not)
    sequences: int | None = Field(default=None, ge=0)  # videos or volumes, for sequence datasets
    instances: int | None = Field(default=None, ge=0)
    note: str | None = None


class Verification(_Strict):
    """How far an entry is known to match the release: what was checked on real files (which
    files, from where, with what result) and what still rests on documentation alone."""

    real_files: str | None = None
    documentation_only: str | None = None

    @property
    def level(self) -> str:
        if self.real_files and not self.documentation_only:
            return "real files"
        return "partly" if self.real_files else "documentation"


class TestSplit(_Strict):
    kind: Literal["official", "none"]
    how: str | None = None

    @model_validator(mode="after")
    def _official_says_how(self) -> TestSplit:
        if self.kind == "official" and not self.how:
            raise ValueError("an official test split must say how it is defined ('how')")
        return self


class DatasetEntry(_Strict):
    id: str
    name: str
    description: str
    organ: str = Field(pattern=WORD_PATTERN, description="organ group, the word --exclude takes")
    application: str
    modality: Modality
    categories: tuple[str, ...] = Field(min_length=1)
    # The image-level classes a release gives (pathology, tumour type), in the order `us43d
    # classify` numbers them; every image of the corpus carries one of them as its `label`, or
    # null when the release gives it none. Empty: the dataset has no image-level class.
    classes: tuple[str, ...] = Field(default=(), description="image-level classes, e.g. [benign, malignant]")
    homepage: str | None = None
    citation: Citation = Citation()
    licence: str
    access: Access
    sources: tuple[Source, ...] = ()
    converter: str = Field(
        pattern=CONVERTER_PATTERN,
        description="a built-in converter module (bus_bra), or a dotted module of your own (mypackage.reader)",
    )
    slicing_axis: SliceAxis | None = None
    slicing_note: str | None = None
    cleaning: Cleaning = Cleaning()
    min_area: int = Field(default=16, ge=0, description="instances smaller than this (pixels) are dropped")
    expected: Expected = Expected()
    test_split: TestSplit
    group_by: str | None = Field(default=None, description="what identifies a group (patient, video, volume)")
    verified: Verification = Verification()
    notes: str | None = None

    @field_validator("id")
    @classmethod
    def _id_is_safe(cls, value: str) -> str:
        if not ID_PATTERN.match(value):
            raise ValueError("ids hold 1 to 64 letters, digits, '-' and '_', and start with a letter or digit")
        return value

    @field_validator("categories")
    @classmethod
    def _categories_unique(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError("categories must be unique")
        return value

    @field_validator("classes")
    @classmethod
    def _classes_unique(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError("classes must be unique")
        if len(value) == 1:
            raise ValueError("one class is no classification: give at least two, or none")
        if any(not name.strip() for name in value):
            raise ValueError("a class name is empty")
        return value

    @field_validator("homepage")
    @classmethod
    def _homepage_is_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError("homepage must be an http(s) URL")
        return value

    @model_validator(mode="after")
    def _slicing_for_sequences(self) -> DatasetEntry:
        if self.modality in ("volume", "video") and self.slicing_axis is None:
            raise ValueError(f"a {self.modality} dataset must name its slicing_axis")
        return self

    @property
    def redistribution(self) -> str:
        """What the licence says of passing the data on: "allowed" (CC BY, CC BY-SA, CC0, MIT),
        "non-commercial" (CC BY-NC...), or "not granted" (unknown, unconfirmed, or a data use
        agreement): an export of the corpus must not be shared in that case."""
        licence = self.licence.strip()
        if re.fullmatch(r"(CC BY(-SA)?( [0-9.]+)?|CC0( [0-9.]+)?|MIT|Apache[- ]2\.0)", licence):
            return "allowed"
        if re.fullmatch(r"CC BY-NC(-SA|-ND)?( [0-9.]+)?", licence):
            return "non-commercial"
        return "not granted"

    @property
    def cleans_background(self) -> bool:
        """Whether annotation pixels outside the field of view are removed for this dataset."""
        configured = self.cleaning.background_overlap
        return MODALITY_CLEANS[self.modality] if configured is None else configured

    def category_id(self, name: str) -> int:
        """COCO category ids are 1-based positions in the registry's category list."""
        return self.categories.index(name) + 1
