"""Brachial plexus videos: `data/<device>/videos/<vid>.mp4` with per-frame JPEG masks
`data/<device>/ac_masks/<vid>/<vid>_NNN.jpg` and, for some Sonosite videos, needle masks
`data/Sonosite/needle/needle_masks/<vid>/<vid>_NNN.jpg`. Frame i pairs with the mask numbered i.
The video is the group."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from us43d.converters.base import Item, Sample, relative
from us43d.converters.readers import connected_components, read_binary_mask
from us43d.converters.volumes import video_frames
from us43d.errors import ConversionError
from us43d.registry.schema import DatasetEntry

_NUMBER = re.compile(r"_(\d+)$")


def _numbered(folder: Path) -> dict[int, Path]:
    out = {}
    for path in sorted(folder.glob("*.jpg")) if folder.is_dir() else []:
        match = _NUMBER.search(path.stem)
        if match:
            out[int(match.group(1))] = path
    return out


def list_items(raw: Path, entry: DatasetEntry) -> Iterator[Item]:
    for video in sorted(raw.rglob("videos/*.mp4")):
        device = video.parent.parent
        plexus = _numbered(device / "ac_masks" / video.stem)
        needle = _numbered(device / "needle" / "needle_masks" / video.stem)
        meta = {
            "plexus": {i: relative(raw, p) for i, p in plexus.items()},
            "needle": {i: relative(raw, p) for i, p in needle.items()},
        }
        problem = None if plexus or needle else "video has no mask folder"
        yield Item(f"{device.name}/{video.stem}", (relative(raw, video),), group=video.stem, meta=meta, problem=problem)


def read_item(raw: Path, item: Item, entry: DatasetEntry) -> Iterator[Sample]:
    plexus_name, needle_name = entry.categories
    masks = {plexus_name: item.meta["plexus"], needle_name: item.meta["needle"]}
    wanted = set(masks[plexus_name]) | set(masks[needle_name])
    frames, field_of_view = video_frames(raw / item.source_file, wanted, entry)
    missing = sorted(wanted - frames.keys())
    if missing:
        raise ConversionError(f"masks of frames {missing[:5]} are beyond the end of the video", item.source_file)
    for index, frame in sorted(frames.items()):
        instances = []
        for category, numbered in masks.items():
            if index not in numbered:
                continue
            parts = connected_components(read_binary_mask(raw / numbered[index], frame.shape[:2]))
            if category == needle_name:
                # a frame shows one needle, a line a few pixels wide that JPEG can break into
                # pieces: the pieces of needle size are one instance, JPEG's specks are left out
                parts = [p for p in parts if np.count_nonzero(p) >= entry.min_area]
                parts = [np.logical_or.reduce(parts)] if parts else []
            instances.extend((category, part) for part in parts if part.any())
        yield Sample(
            f"{item.key}/{index:04d}",
            frame,
            item.source_file,
            instances=instances,
            group=item.group,
            frame=index,
            lossy=True,
            field_of_view=field_of_view,
        )
