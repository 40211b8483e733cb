"""`us43d stats`: counts per dataset, split and organ, read from the Parquet tables."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from us43d.corpus.records import SPLITS
from us43d.errors import CorpusError


@dataclass(frozen=True)
class CorpusStats:
    by_dataset: pd.DataFrame  # index: dataset; columns: organ, <split>_images, <split>_instances, images, instances
    by_organ: pd.DataFrame  # index: organ; columns: datasets, images, instances
    # index: dataset; what the build reported: found, expected (in expected_unit), unannotated,
    # cleaned_pixels, cleaned_instances, problems (from build.json; empty when there is none)
    build: pd.DataFrame


BUILD_COLUMNS = ("found", "expected", "expected_unit", "unannotated", "cleaned_pixels", "cleaned_instances")


def build_reports(out: Path) -> pd.DataFrame:
    """Per dataset, the build's own counts and its problems, read from OUT/build.json."""
    path = out / "build.json"
    if not path.is_file():
        return pd.DataFrame(columns=[*BUILD_COLUMNS, "problems"])
    try:
        datasets = json.loads(path.read_text()).get("datasets", {})
    except (OSError, ValueError) as exc:
        raise CorpusError(f"{path} cannot be read ({exc})") from exc
    rows = {
        name: {**{c: report.get(c) for c in BUILD_COLUMNS}, "problems": [p["reason"] for p in report.get("problems", [])]}
        for name, report in datasets.items()
    }
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=[*BUILD_COLUMNS, "problems"])
    frame["expected"] = frame["expected"].astype(object).where(frame["expected"].notna(), None)  # not NaN
    return frame


def read_tables(out: Path, columns_images: list[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    folder = out / "parquet"
    images_path, annotations_path = folder / "images.parquet", folder / "annotations.parquet"
    for path in (images_path, annotations_path):
        if not path.is_file():
            raise CorpusError(f"{path} is missing; run `us43d build` first")
    images = pd.read_parquet(images_path, columns=columns_images)
    annotations = pd.read_parquet(annotations_path, columns=["image_id", "dataset", "split", "category"])
    return images, annotations


def corpus_stats(out: Path) -> CorpusStats:
    images, annotations = read_tables(out, ["image_id", "dataset", "organ", "split"])
    organ = images.groupby("dataset")["organ"].first()
    n_images = images.groupby(["dataset", "split"]).size().unstack(fill_value=0)
    n_instances = annotations.groupby(["dataset", "split"]).size().unstack(fill_value=0)
    table = pd.DataFrame({"organ": organ})
    for split in SPLITS:
        table[f"{split}_images"] = n_images[split] if split in n_images else 0
        table[f"{split}_instances"] = n_instances[split] if split in n_instances else 0
    table = table.fillna(0)
    for column in table.columns[1:]:
        table[column] = table[column].astype(int)
    table["images"] = sum(table[f"{s}_images"] for s in SPLITS)
    table["instances"] = sum(table[f"{s}_instances"] for s in SPLITS)
    by_organ = table.groupby("organ").agg(datasets=("images", "size"), images=("images", "sum"), instances=("instances", "sum"))
    return CorpusStats(table.sort_index(key=lambda idx: idx.str.lower()), by_organ, build_reports(out))
