"""CardiacUDC: `cardiacUDC_dataset/<site folder>/<video>_image.nii[.gz]` with `<video>_label.nii[.gz]`.
Videos are named `patient1-4`, `patient-1-4` or `normal-23-4`: the last number is the view and the
rest the patient, whose numbers restart in every site folder (the group is site plus patient).
Label values mean different structures per view (the authors' own code): views 1 and 3 hold
1 = LV, 2 = RV; view 2 holds 1 = pulmonary artery; view 4 holds 1 = LV, 2 = LA, 3 = RA, 4 = RV.
About a third of the videos have no label file (Site_R_73 has none): they are unannotated, not
errors. Some label sets hold contours only, so every label is hole-filled; frames whose labelled
area is below 2.5 % of the frame are annotation slips and are dropped; the clips are turned 180
degrees as the anchor script does."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from us43d.converters.base import Item, Sample, find_folder, pair_files, paired_item
from us43d.converters.readers import filled_outline, read_volume
from us43d.converters.volumes import slice_samples
from us43d.errors import ConversionError
from us43d.registry.schema import DatasetEntry

MIN_LABELLED_SHARE = 0.025
VIEW_LABELS = {
    "1": {1: "left ventricle", 2: "right ventricle"},
    "2": {1: "pulmonary artery"},
    "3": {1: "left ventricle", 2: "right ventricle"},
    "4": {1: "left ventricle", 2: "left atrium", 3: "right atrium", 4: "right ventricle"},
}
_NAME = re.compile(r"^(?P<video>.+)_(?P<kind>image|label)\.nii(\.gz)?$")
_VIEW = re.compile(r"^(?P<patient>.+)-(?P<view>\d+)$")


def list_items(raw: Path, entry: DatasetEntry) -> Iterator[Item]:
    root = find_folder(raw, "cardiacUDC_dataset")
    for site in sorted(p for p in root.iterdir() if p.is_dir()):
        files: dict[str, dict[str, Path]] = {"image": {}, "label": {}}
        for path in sorted(site.iterdir()):
            match = _NAME.match(path.name)
            if match and path.is_file():
                files[match["kind"]][match["video"]] = path
        for video, paired, problem in pair_files(raw, files["image"], files["label"], partly_annotated=True):
            view = _VIEW.match(video)
            patient = view["patient"] if view else video
            yield paired_item(f"{site.name}/{video}", paired, problem, group=f"{site.name}/{patient}")


def read_item(raw: Path, item: Item, entry: DatasetEntry) -> Iterator[Sample]:
    view = _VIEW.match(item.key.rsplit("/", 1)[-1])
    names = VIEW_LABELS.get(view["view"]) if view else None
    if names is None:
        raise ConversionError("no view number (1-4) at the end of the name", item.source_file)
    image, labels = read_volume(raw / item.files[0]), read_volume(raw / item.files[1])
    for sample in slice_samples(item, entry, image, labels, names, rotate_180=True):
        filled = np.zeros_like(sample.label_map)
        for value in np.unique(sample.label_map[sample.label_map > 0]):
            filled[filled_outline(sample.label_map == value) & (filled == 0)] = value
        if np.count_nonzero(filled) < MIN_LABELLED_SHARE * filled.size:
            continue
        sample.label_map = filled
        yield sample
