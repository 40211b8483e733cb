"""The converter contract.

A converter is a pure reader. `list_items` walks a dataset's raw folder and names its samples
cheaply (paths and small metadata only), so the build can index a dataset without decoding it;
`read_item` decodes one item into one or more samples (a volume or video yields many). Neither
knows about ids, output formats, splits or cleaning: those belong to the corpus build.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from us43d.errors import ConversionError, RegistryError
from us43d.registry.schema import CONVERTER_PATTERN, DatasetEntry

TEST = "test"


@dataclass(frozen=True)
class Item:
    """One unit of work: usually an image and its mask, or one volume."""

    key: str
    files: tuple[str, ...]  # relative to the raw folder; the first is reported as the source file
    group: str | None = None
    split: str | None = None  # "test" for an official test split, else None
    meta: Mapping[str, Any] = field(default_factory=dict)
    # A problem found while listing (an image without its mask, a mask without its image): the
    # item is reported as failed with this reason and never read, so one orphan file does not
    # stop the listing of a whole dataset.
    problem: str | None = None
    # An image the release leaves without annotation (it annotates only some): not an error,
    # counted by the build and never read.
    unannotated: bool = False
    # The image-level class the release gives the item (one of the registry entry's `classes`),
    # for every sample it yields; None when it gives none.
    label: str | None = None

    @property
    def source_file(self) -> str:
        return self.files[0]


@dataclass(frozen=True)
class DatasetProblem:
    """Something wrong with a dataset as a whole, found while listing (a missing official split
    list), that does not stop the build: `list_items` yields it and the build reports it."""

    file: str  # relative to the raw folder
    reason: str


@dataclass
class Sample:
    """One 2D image and its annotation, as the source defines it.

    Exactly one of `label_map` (an integer map whose values `label_names` names; every
    connected component of a value becomes an instance) or `instances` (category name and
    boolean mask, each already one instance) is set.
    """

    key: str
    image: np.ndarray
    source_file: str
    label_map: np.ndarray | None = None
    label_names: Mapping[int, str] = field(default_factory=dict)
    instances: list[tuple[str, np.ndarray]] | None = None
    group: str | None = None
    split: str | None = None
    frame: int | None = None
    lossy: bool = False  # decoded from a lossy format: background is "near zero", not zero
    # The scan region of the sequence this frame or slice belongs to (bool, the image's shape),
    # estimated from all its frames (us43d.corpus.field_of_view); None for single images.
    field_of_view: np.ndarray | None = None
    label: str | None = None  # image-level class; None takes the item's

    def __post_init__(self) -> None:
        if (self.label_map is None) == (self.instances is None):
            raise ValueError("a Sample carries either a label_map or instances, not both or neither")


ListItems = Callable[[Path, DatasetEntry], Iterable[Item | DatasetProblem]]
ReadItem = Callable[[Path, Item, DatasetEntry], Iterable[Sample]]


@dataclass(frozen=True)
class Converter:
    name: str
    module: ModuleType
    list_items: ListItems
    read_item: ReadItem


TRUSTED_ENV = "US43D_TRUSTED_CONVERTERS"


def trusted_packages() -> set[str]:
    """Packages whose converters a user has said may run (`US43D_TRUSTED_CONVERTERS=pkg1,pkg2`)."""
    return {name.strip() for name in os.environ.get(TRUSTED_ENV, "").replace(os.pathsep, ",").split(",") if name.strip()}


def load_converter(name: str) -> Converter:
    """Built-in converters are named by module (`bus_bra`); private ones by dotted path.

    Importing a module runs its code, and a registry entry is only a YAML file that anyone can
    hand over: a converter outside us43d is imported only when the user has named its package in
    US43D_TRUSTED_CONVERTERS. A registry directory with converters is code, not data.
    """
    if not re.fullmatch(CONVERTER_PATTERN, name):
        raise RegistryError(f"converter '{name}' is not a module name")
    module_name = name if "." in name else f"us43d.converters.{name}"
    package = module_name.split(".")[0]
    if package != "us43d" and package not in trusted_packages():
        raise RegistryError(
            f"converter '{name}' is code outside us43d: importing it would run it. If you trust it, set {TRUSTED_ENV}={package}"
        )
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise RegistryError(f"converter '{name}' not found (no module {module_name})") from exc
    missing = [attr for attr in ("list_items", "read_item") if not callable(getattr(module, attr, None))]
    if missing:
        raise RegistryError(f"converter '{name}' ({module_name}) lacks {', '.join(missing)}")
    return Converter(name, module, module.list_items, module.read_item)


def locate_root(raw: Path, marker: str) -> Path:
    """The folder holding `marker`: the raw folder itself, or the one folder wrapping it.

    Archives often wrap everything in a single top folder (a repository archive, a title
    folder); one such level is tolerated so users can extract archives as they come.
    """
    if (raw / marker).exists():
        return raw
    children = _subfolders(raw) if raw.is_dir() else []
    if len(children) == 1 and (children[0] / marker).exists():
        return children[0]
    raise ConversionError(f"expected '{marker}' in the raw folder (or in its single top folder)", source_file=str(raw))


def relative(raw: Path, path: Path) -> str:
    return path.relative_to(raw).as_posix()


def reported_path(raw: Path, source: str | Path) -> str:
    """A file named in an error, relative to the raw folder when it lies inside it."""
    try:
        return Path(source).resolve().relative_to(raw.resolve()).as_posix() or "."
    except ValueError:
        return str(source)


def pair_files(
    raw: Path, images: Mapping[str, Path], masks: Mapping[str, Path], partly_annotated: bool = False
) -> Iterator[tuple[str, tuple[str, ...], str | None]]:
    """Pair images and masks that share a key: (key, files relative to raw, problem).

    An image without a mask, or a mask without an image, comes out with a problem instead of
    being dropped silently, so the build reports it. In a release that annotates only some of
    its images (`partly_annotated`), an image without a mask is no problem: it comes out with
    the problem UNANNOTATED, which `paired_items` turns into an unannotated item.
    """
    for key in sorted(images.keys() | masks.keys()):
        if key not in images:
            yield key, (relative(raw, masks[key]),), "mask has no matching image"
        elif key not in masks:
            yield key, (relative(raw, images[key]),), UNANNOTATED if partly_annotated else "image has no matching mask"
        else:
            yield key, (relative(raw, images[key]), relative(raw, masks[key])), None


def pair_claimed_files(
    raw: Path, images: Mapping[str, Sequence[Path]], masks: Mapping[str, Sequence[Path]], clash: str
) -> Iterator[tuple[str, tuple[str, ...], str | None]]:
    """`pair_files` where several files may claim one key: a key with more than one image or
    more than one mask comes out once, with all its files and the problem `clash`, instead of
    being paired with whichever file came last."""
    clashes = sorted(key for key in images.keys() | masks.keys() if len(images.get(key, ())) > 1 or len(masks.get(key, ())) > 1)
    for key in clashes:
        yield key, tuple(relative(raw, p) for p in [*images.get(key, ()), *masks.get(key, ())]), clash
    single_images = {key: paths[0] for key, paths in images.items() if key not in clashes}
    single_masks = {key: paths[0] for key, paths in masks.items() if key not in clashes}
    yield from pair_files(raw, single_images, single_masks)


UNANNOTATED = "image without annotation in the release"


def paired_item(key: str, files: tuple[str, ...], problem: str | None, **fields: Any) -> Item:
    """An item from one `pair_files` row."""
    if problem == UNANNOTATED:
        return Item(key, files, unannotated=True, **fields)
    return Item(key, files, problem=problem, **fields)


def one_class_sample(item: Item, image: Any, mask: np.ndarray, category: str) -> Sample:
    """The common case: one decoded image (`readers.DecodedImage`) and one mask of one category,
    whose connected components become the instances."""
    return _decoded_sample(item, image, mask.astype(np.uint8), {1: category})


def find_folder(raw: Path, marker: str, max_depth: int = 5) -> Path:
    folder = find_optional_folder(raw, marker, max_depth)
    if folder is None:
        raise ConversionError(f"expected a folder '{marker}' in the raw folder", source_file=str(raw))
    return folder


def find_optional_folder(raw: Path, marker: str, max_depth: int = 5) -> Path | None:
    """The folder whose path ends with `marker` ("tn3k", "2_preprocessed_data/stage1"),
    searched a few levels below `raw`: releases nest their data under title folders, and
    combined archives (one download serving several datasets) nest them deeper. A folder that
    holds nothing but a folder of its own name (`TNSCUI2020_train/TNSCUI2020_train/`, an archive
    extracted into a folder named after it) stands for that inner folder. None when there is no
    such folder (`find_folder` refuses that); several matches, or a folder that cannot be
    listed, are refused either way."""
    parts = tuple(Path(marker).parts)
    found: list[Path] = []
    frontier = [raw]
    for _ in range(max_depth + 1):
        following = []
        for folder in frontier:
            if folder.parts[-len(parts) :] == parts and folder != raw:
                found.append(folder)
                continue
            following.extend(_subfolders(folder))
        if found:
            break
        frontier = following
    if not found:
        return None
    if len(found) > 1:
        raise ConversionError(f"several folders match '{marker}': {[relative(raw, f) for f in found[:3]]}", source_file=str(raw))
    folder = found[0]
    while True:
        inside = [p for p in _entries(folder) if not p.name.startswith((".", "__MACOSX"))]
        if len(inside) != 1 or inside[0].name != folder.name or not inside[0].is_dir():
            return folder
        folder = inside[0]


def _entries(folder: Path) -> list[Path]:
    try:
        return sorted(folder.iterdir())
    except OSError as exc:
        raise ConversionError(f"cannot list folder ({exc})", source_file=str(folder)) from exc


def _subfolders(folder: Path) -> list[Path]:
    return [p for p in _entries(folder) if p.is_dir() and not p.name.startswith((".", "__MACOSX"))]


def files_by_stem(folder: Path, suffixes: tuple[str, ...], required: bool = True) -> dict[str, Path]:
    """Files of `folder` with one of `suffixes` (case-insensitive), keyed by stem.
    A missing folder is an error, or nothing at all when it is optional (`required=False`)."""
    if not folder.is_dir():
        if not required:
            return {}
        raise ConversionError("folder is missing", source_file=str(folder))
    lowered = tuple(s.lower() for s in suffixes)
    return {p.stem: p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in lowered}


def label_map_sample(item: Item, image: Any, labels: np.ndarray, entry: DatasetEntry) -> Sample:
    """A decoded image (`readers.DecodedImage`) with a label map whose values 1..n are the
    registry's categories in order."""
    return _decoded_sample(item, image, labels, dict(enumerate(entry.categories, start=1)))


def _decoded_sample(item: Item, image: Any, labels: np.ndarray, names: Mapping[int, str]) -> Sample:
    return Sample(item.key, image.pixels, item.source_file, label_map=labels, label_names=names, lossy=image.lossy)
