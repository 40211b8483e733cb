"""Transverse musculoskeletal ultrasound: `Polito-Radboud-DeepLearningUS/{BB,GM,TA}/{Healthy,
Pathological}/{Images,Masks}/<name>.png`; files under a `Masks` folder are masks (any non-zero
pixel is muscle), paired by name within one muscle and group. The same name occurs in Healthy and
Pathological, so both are in the key. One class for the three muscles. When the release's own
split is present (`Segmentation_models/data/MuscleCNN/test/`), images named there are the
official test set; a name the release holds several times (in two muscles or groups) marks each
of them test, so that no official test image can reach training."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from us43d.converters.base import TEST, DatasetProblem, Item, Sample, find_folder, one_class_sample, pair_files, relative
from us43d.converters.readers import nonzero_mask, read_image
from us43d.registry.schema import DatasetEntry

MUSCLES = ("BB", "GM", "TA")
TEST_FOLDER = "Segmentation_models/data/MuscleCNN/test"


def _pairs(root: Path) -> dict[str, tuple[dict[str, Path], dict[str, Path]]]:
    """Per `<muscle>/<group>` folder, its images and masks by name."""
    folders: dict[str, tuple[dict[str, Path], dict[str, Path]]] = {}
    for muscle in MUSCLES:
        for path in sorted((root / muscle).rglob("*.png")):
            inner = path.relative_to(root / muscle).parts[:-1]
            is_mask = "Masks" in inner
            group = "/".join(p for p in inner if p not in ("Images", "Masks"))
            images, masks = folders.setdefault("/".join(filter(None, (muscle, group))), ({}, {}))
            (masks if is_mask else images)[path.stem] = path
    return folders


def list_items(raw: Path, entry: DatasetEntry) -> Iterator[Item | DatasetProblem]:
    root = find_folder(raw, "Polito-Radboud-DeepLearningUS")
    folders = _pairs(root)
    names = Counter(name for images, _ in folders.values() for name in images)
    test: set[str] = set()
    if (root / TEST_FOLDER).is_dir():
        test = {p.stem for p in (root / TEST_FOLDER).glob("*.png")}
        if test and not test & names.keys():
            yield DatasetProblem(relative(raw, root / TEST_FOLDER), "no test image matches an image name of the release")
    for folder, (images, masks) in sorted(folders.items()):
        for key, files, problem in pair_files(raw, images, masks):
            yield Item(f"{folder}/{key}", files, split=TEST if key in test else None, problem=problem)


def read_item(raw: Path, item: Item, entry: DatasetEntry) -> Iterator[Sample]:
    image = read_image(raw / item.files[0])
    yield one_class_sample(item, image, nonzero_mask(raw / item.files[1], image.pixels.shape[:2]), entry.categories[0])
