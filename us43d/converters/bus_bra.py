"""BUS-BRA: `Images/bus_<id>.png`, `Masks/mask_<id>.png`, and the CSV files that carry
pathology, the official folds and the patient (case) of each image.

Fold 1 of `5-fold-cv.csv` is the official test set (patient-level folds). The Pathology column
gives both the lesion's category and the image-level class (benign, malignant). An image missing
from the CSV, or with a Pathology or kFold value other than those, is reported, never given a
neighbour's pathology or fold.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from us43d.converters.base import (
    TEST,
    Item,
    Sample,
    locate_root,
    one_class_sample,
    pair_files,
)
from us43d.converters.readers import read_binary_mask, read_csv, read_image
from us43d.registry.schema import DatasetEntry

TEST_FOLD = 1


def _case_of(image_id: str) -> str:
    """bus_0001-l -> 0001: the number shared by the views of one case."""
    return image_id.removeprefix("bus_").split("-")[0]


def list_items(raw: Path, entry: DatasetEntry) -> Iterator[Item]:
    root = locate_root(raw, "Images")
    folds = read_csv(root / "5-fold-cv.csv", ("ID", "Pathology", "kFold"), as_text=True).set_index("ID")
    cases: dict[str, str] = {}
    if (root / "bus_data.csv").is_file():
        data = read_csv(root / "bus_data.csv", ("ID", "Case"), as_text=True)
        cases = dict(zip(data["ID"].str.strip(), data["Case"].str.strip()))
    images = {p.stem: p for p in (root / "Images").glob("*.png")}
    masks = {"bus_" + p.stem.removeprefix("mask_"): p for p in (root / "Masks").glob("mask_*.png")}
    for key, files, problem in pair_files(raw, images, masks):
        if problem or key not in folds.index:
            yield Item(key, files, problem=problem or f"{key} has no row in 5-fold-cv.csv")
            continue
        row = folds.loc[key]
        pathology = str(row["Pathology"]).strip().lower()
        fold = str(row["kFold"]).strip()
        if pathology not in ("benign", "malignant") or not fold.isdigit():
            yield Item(key, files, problem=f"5-fold-cv.csv row {key}: unexpected Pathology/kFold {pathology!r}/{fold!r}")
            continue
        yield Item(
            key,
            files,
            group=cases.get(key, _case_of(key)),
            split=TEST if int(fold) == TEST_FOLD else None,
            meta={"category": f"breast lesion {pathology}"},
            label=pathology,
        )


def read_item(raw: Path, item: Item, entry: DatasetEntry) -> Iterator[Sample]:
    image = read_image(raw / item.files[0])
    mask = read_binary_mask(raw / item.files[1], image.pixels.shape[:2])
    yield one_class_sample(item, image, mask, item.meta["category"])
