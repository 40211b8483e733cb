"""EchoNet-Dynamic: `Videos/<name>.avi` with `VolumeTracings.csv` (FileName, X1, Y1, X2, Y2,
Frame). Each traced (video, frame) block is a long axis (first row, dropped) and chords across
the ventricle; the outline is the X1/Y1 ends in order, then the X2/Y2 ends in reverse. Frame is
a 0-based index. FileName comes with `.avi` (VolumeTracings.csv, the 2020 FileList.csv) and
without it (the current FileList.csv). `FileList.csv` Split == TEST is the official test set; one
video per patient. The videos are MJPEG: frames are lossy."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from us43d.converters.base import TEST, Item, Sample, find_folder, relative
from us43d.converters.readers import polygons_to_mask, read_csv
from us43d.converters.volumes import video_frames
from us43d.errors import ConversionError
from us43d.registry.schema import DatasetEntry


def video_name(file_name: object) -> str:
    """`<id>.avi` from a CSV's FileName, which releases write with and without the suffix."""
    name = str(file_name).strip()
    return name if name.lower().endswith(".avi") else f"{name}.avi"


def list_items(raw: Path, entry: DatasetEntry) -> Iterator[Item]:
    root = find_folder(raw, "Videos").parent
    tracings = read_csv(root / "VolumeTracings.csv", ("FileName", "X1", "Y1", "X2", "Y2", "Frame"))
    splits: dict[str, str] = {}
    if (root / "FileList.csv").is_file():
        files = read_csv(root / "FileList.csv", ("FileName", "Split"))
        splits = {video_name(n).removesuffix(".avi"): str(s).upper() for n, s in zip(files["FileName"], files["Split"])}
    for name, rows in tracings.groupby(tracings["FileName"].map(video_name), sort=True):
        video = root / "Videos" / name
        stem = name.removesuffix(".avi")
        outlines = {}
        for frame, block in rows.groupby("Frame", sort=True):
            chords = block.iloc[1:]
            xs = np.concatenate([chords["X1"].to_numpy(), chords["X2"].to_numpy()[::-1]])
            ys = np.concatenate([chords["Y1"].to_numpy(), chords["Y2"].to_numpy()[::-1]])
            outlines[int(frame)] = np.stack([xs, ys], axis=1).ravel().tolist()
        source = relative(raw, video) if video.is_file() else f"{relative(raw, root)}/Videos/{name}"
        yield Item(
            stem,
            (source, relative(raw, root / "VolumeTracings.csv")),
            group=stem,
            split=TEST if splits.get(stem) == "TEST" else None,
            meta={"outlines": outlines},
            problem=video_problem(name, video),
        )


def video_problem(name: str, video: Path) -> str | None:
    """Why a video named in a CSV cannot be read: a name that is not a plain file name (it could
    lead out of the raw folder) or a missing file."""
    if Path(name).name != name or name.startswith("."):
        return f"FileName {name!r} is not a plain file name"
    return None if video.is_file() else "video named in VolumeTracings.csv is missing"


def traced_samples(raw: Path, item: Item, entry: DatasetEntry, outlines: dict[int, list[float]]) -> Iterator[Sample]:
    """Frames of the item's video that carry an outline, each with the filled outline."""
    frames, field_of_view = video_frames(raw / item.files[0], set(outlines), entry)
    missing = sorted(set(outlines) - frames.keys())
    if missing:
        raise ConversionError(f"traced frames {missing[:5]} are beyond the end of the video", item.source_file)
    for index, frame in sorted(frames.items()):
        mask = polygons_to_mask([outlines[index]], frame.shape[0], frame.shape[1], item.files[1], "centres")
        yield Sample(
            f"{item.key}/{index:04d}",
            frame,
            item.source_file,
            label_map=mask.astype(np.uint8),
            label_names={1: entry.categories[0]},
            group=item.group,
            split=item.split,
            frame=index,
            lossy=True,
            field_of_view=field_of_view,
        )


def read_item(raw: Path, item: Item, entry: DatasetEntry) -> Iterator[Sample]:
    yield from traced_samples(raw, item, entry, item.meta["outlines"])
