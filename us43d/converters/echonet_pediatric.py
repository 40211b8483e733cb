"""EchoNet-Pediatric: `{A4C,PSAX}/Videos/<name>.avi` with `{A4C,PSAX}/VolumeTracings.csv`
(FileName, X, Y, Frame): every row is one outline point. Frame is a 0-based index, as the
release's own loader and independent public loaders read it; rows whose Frame is `No Systolic`
/ `No Diastolic` carry no tracing. Names are `<patient>-<accession>-<instance>.avi`: the patient
(first token) is the group, shared by a child's A4C and PSAX videos."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from us43d.converters.base import Item, Sample, find_folder, relative
from us43d.converters.echonet_dynamic import traced_samples, video_name, video_problem
from us43d.converters.readers import read_csv
from us43d.registry.schema import DatasetEntry

VIEWS = ("A4C", "PSAX")


def list_items(raw: Path, entry: DatasetEntry) -> Iterator[Item]:
    for view in VIEWS:
        root = find_folder(raw, view)
        tracings = read_csv(root / "VolumeTracings.csv", ("FileName", "X", "Y", "Frame"))
        numeric = tracings[tracings["Frame"].astype(str).str.strip().str.isdigit()]
        for name, rows in numeric.groupby(numeric["FileName"].map(video_name), sort=True):
            video = root / "Videos" / name
            outlines = {
                int(frame): np.stack([block["X"].to_numpy(float), block["Y"].to_numpy(float)], axis=1).ravel().tolist()
                for frame, block in rows.groupby(rows["Frame"].astype(int), sort=True)
            }
            stem = name.removesuffix(".avi")
            source = relative(raw, video) if video.is_file() else f"{relative(raw, root)}/Videos/{name}"
            yield Item(
                f"{view}/{stem}",
                (source, relative(raw, root / "VolumeTracings.csv")),
                group=stem.split("-")[0],
                meta={"outlines": outlines},
                problem=video_problem(name, video),
            )


def read_item(raw: Path, item: Item, entry: DatasetEntry) -> Iterator[Sample]:
    yield from traced_samples(raw, item, entry, item.meta["outlines"])
