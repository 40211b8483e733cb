"""Fast U-Net fetal biometry: the repository's RAR archives extracted under `Dataset/AC/` and
`Dataset/HC/`; files under a folder named like `mask` are masks. AC masks share the image's
name; HC masks are `<stem>_Annotation.png` (HC18 naming). Masks are thresholded at half range
(the numbered AC masks carry lossy grey noise; the `fa_` ones are 1-bit) and filled as ellipse
outlines, closed along the border where they run out of the image (HC masks may be outlines).
HC images of one examination share the number before the first underscore."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from us43d.converters.base import Item, Sample, find_folder, one_class_sample, pair_files
from us43d.converters.readers import filled_outline, read_binary_mask, read_image
from us43d.registry.schema import DatasetEntry


def list_items(raw: Path, entry: DatasetEntry) -> Iterator[Item]:
    root = find_folder(raw, "Dataset")
    for part in ("AC", "HC"):
        images: dict[str, Path] = {}
        masks: dict[str, Path] = {}
        for path in sorted((root / part).rglob("*.png")):
            if "mask" in path.relative_to(root / part).parent.as_posix().lower():
                masks[path.stem.removesuffix("_Annotation")] = path
            else:
                images[path.stem] = path
        for key, files, problem in pair_files(raw, images, masks):
            group = f"HC_{key.split('_')[0]}" if part == "HC" else f"AC_{key}"
            yield Item(f"{part}/{key}", files, group=group, problem=problem)


def read_item(raw: Path, item: Item, entry: DatasetEntry) -> Iterator[Sample]:
    image = read_image(raw / item.files[0])
    mask = read_binary_mask(raw / item.files[1], image.pixels.shape[:2])
    yield one_class_sample(item, image, filled_outline(mask, close_at_border=True), entry.categories[0])
