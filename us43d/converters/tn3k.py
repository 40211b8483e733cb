"""TN3K: `{trainval,test}-image/<nnnn>.jpg` with `{trainval,test}-mask/<nnnn>.jpg` (1-channel JPEG
masks, thresholded at half range). The test folders are the official test set; both parts number
from 0000, so the part is in the key. The four folders are found wherever the download puts them:
side by side under `Thyroid Dataset/tn3k/` (the combined Drive archive), or each inside a folder
named after its archive under `picture/` (the repository's RARs, `test-mask/test-mask/`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from us43d.converters.base import TEST, DatasetProblem, Item, files_by_stem, find_folder, pair_files, relative
from us43d.converters.pairs import read_binary_pair as read_item  # noqa: F401
from us43d.errors import ConversionError

PARTS = {"trainval": None, "test": TEST}
SUFFIXES = (".jpg", ".jpeg")


def list_items(raw: Path, entry) -> Iterator[Item | DatasetProblem]:
    missing = []
    for part, split in PARTS.items():
        try:
            folder = find_folder(raw, f"{part}-image")
            images, masks = files_by_stem(folder, SUFFIXES), files_by_stem(find_folder(raw, f"{part}-mask"), SUFFIXES)
            if not images and not masks:
                raise ConversionError(f"no images in {relative(raw, folder)}")
        except ConversionError as exc:  # one part may be missing from a partial download
            missing.append(exc)
            yield DatasetProblem(".", f"{exc.reason}: the {part} part is not built")
            continue
        for key, files, problem in pair_files(raw, images, masks):
            yield Item(f"{part}/{key}", files, split=split, problem=problem)
    if len(missing) == len(PARTS):
        raise missing[0]
