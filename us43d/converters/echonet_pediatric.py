"""EchoNet-Pediatric: `{A4C,PSAX}/Videos/<name>.avi` with `{A4C,PSAX}/VolumeTracings.csv`
(FileName, X, Y, Frame): every row is one outline point. Frame is taken as 1-based, as the
anchor script does (an assumption of theirs, recorded in the registry); rows whose Frame is
`No Systolic` / `No Diastolic` carry no tracing. Group: the video with its view."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from us43d.converters.base import Item, Sample, find_folder, relative
from us43d.converters.echonet_dynamic import traced_samples
from us43d.converters.readers import read_csv
from us43d.registry.schema import DatasetEntry

VIEWS = ("A4C", "PSAX")


def list_items(raw: Path, entry: DatasetEntry) -> Iterator[Item]:
    for view in VIEWS:
        root = find_folder(raw, view)
        tracings = read_csv(root / "VolumeTracings.csv", ("FileName", "X", "Y", "Frame"))
        numeric = tracings[tracings["Frame"].astype(str).str.strip().str.isdigit()]
        for name, rows in numeric.groupby("FileName", sort=True):
            video = root / "Videos" / str(name)
            outlines = {
                int(frame) - 1: np.stack([block["X"].to_numpy(float), block["Y"].to_numpy(float)], axis=1).ravel().tolist()
                for frame, block in rows.groupby(rows["Frame"].astype(int), sort=True)
            }
            key = f"{view}/{Path(str(name)).stem}"
            source = relative(raw, video) if video.is_file() else f"{relative(raw, root)}/Videos/{name}"
            yield Item(
                key,
                (source, relative(raw, root / "VolumeTracings.csv")),
                group=key,
                meta={"outlines": outlines},
                problem=None if video.is_file() else "video named in VolumeTracings.csv is missing",
            )


def read_item(raw: Path, item: Item, entry: DatasetEntry) -> Iterator[Sample]:
    yield from traced_samples(raw, item, entry, item.meta["outlines"])
