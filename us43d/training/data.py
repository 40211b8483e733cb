"""Training data: the corpus index, image and mask preparation, prompt simulation, sampling.

Every random choice for a sample (flip, instance subset, point or box, jitter) is drawn from a
generator seeded by the sample's position in the seeded stream, never from global state, so
a run resumed at step k sees exactly the batches the uninterrupted run saw.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image
from pycocotools import mask as mask_utils

from us43d.errors import CorpusError, Us43dError
from us43d.training.boundary import first_boundary_points
from us43d.training.prompts import BOUNDARY, BOX, RECIPE_PROMPT, draw_kinds, parse_prompt_mix
from us43d.training.sources import INDEX, FolderImages, ImageSource, ShardImages, is_webdataset, shard_places

PIXEL_MEAN = np.array([123.675, 116.28, 103.53], dtype=np.float32)
PIXEL_STD = np.array([58.395, 57.12, 57.375], dtype=np.float32)
MAX_INSTANCES = 20  # the recipe's per-image limit; a random subset is taken above it
BOX_JITTER = 0.05


@dataclass(frozen=True)
class ImageEntry:
    image_id: int
    dataset: str
    file_name: str
    width: int
    height: int
    rles: tuple[str, ...]
    boxes: tuple[tuple[int, int, int, int], ...]


@dataclass(frozen=True)
class CorpusSelection:
    entries: list[ImageEntry]
    counts: dict[str, int]  # images per dataset actually used
    excluded: dict[str, int]  # images per dataset left out by --exclude
    images: ImageSource  # where the entries' pixels are read from


IMAGE_COLUMNS = ["image_id", "dataset", "organ", "split", "file_name", "width", "height"]
INSTANCE_COLUMNS = ["image_id", "rle_counts", "bbox_x", "bbox_y", "bbox_w", "bbox_h"]
PLACE_COLUMNS = ["shard", "offset", "size"]


def load_selection(
    corpus: Path, split: str, exclude: Sequence[str] = (), datasets: Sequence[str] | None = None
) -> CorpusSelection:
    """Images of one split with their instances, from a built corpus's Parquet tables or from
    the index of a webdataset export (`us43d export --format webdataset`)."""
    shards = is_webdataset(corpus)
    images, annotations = _webdataset_tables(corpus) if shards else _corpus_tables(corpus)
    known_organs = sorted(images["organ"].unique())
    unknown = sorted({o.lower() for o in exclude} - set(_registry_organs()) - set(known_organs))
    if unknown:
        raise Us43dError(
            f"unknown organ group(s) {unknown} for --exclude "
            f"(known: {', '.join(sorted(set(_registry_organs()) | set(known_organs)))})"
        )
    chosen = images[images["split"] == split]
    if datasets:
        wanted = {d.lower() for d in datasets}
        chosen = chosen[chosen["dataset"].str.lower().isin(wanted)]
    left_out = chosen[chosen["organ"].isin({o.lower() for o in exclude})]
    chosen = chosen[~chosen["organ"].isin({o.lower() for o in exclude})].sort_values(["dataset", "file_name"])
    annotations = annotations[annotations["image_id"].isin(set(chosen["image_id"]))]
    grouped: dict[int, list[tuple[str, tuple[int, int, int, int]]]] = {}
    for row in annotations.itertuples(index=False):
        grouped.setdefault(row.image_id, []).append((row.rle_counts, (row.bbox_x, row.bbox_y, row.bbox_w, row.bbox_h)))
    entries = []
    for row in chosen.itertuples(index=False):
        instances = grouped.get(row.image_id, [])
        if instances:
            entries.append(
                ImageEntry(
                    row.image_id,
                    row.dataset,
                    row.file_name,
                    int(row.width),
                    int(row.height),
                    tuple(r for r, _ in instances),
                    tuple(b for _, b in instances),
                )
            )
    counts = pd.Series([e.dataset for e in entries]).value_counts().sort_index().to_dict() if entries else {}
    excluded = left_out["dataset"].value_counts().sort_index().to_dict()
    source: ImageSource
    if shards:
        used = chosen[chosen["image_id"].isin({e.image_id for e in entries})]
        source = _shard_images(corpus, used)
    else:
        source = FolderImages(corpus / "images")
    return CorpusSelection(
        entries, {str(k): int(v) for k, v in counts.items()}, {str(k): int(v) for k, v in excluded.items()}, source
    )


def webdataset_documents(folder: Path, split: str, datasets: Sequence[str]) -> tuple[dict[str, dict], ImageSource]:
    """{dataset: COCO document} of one split of a webdataset export, built from its index (an
    export holds no COCO files), and where their images lie; datasets without images in the
    split are absent."""
    images, annotations = _webdataset_tables(folder)
    wanted = {d.lower() for d in datasets}
    images = images[(images["split"] == split) & images["dataset"].str.lower().isin(wanted)]
    annotations = annotations[annotations["image_id"].isin(set(images["image_id"]))]
    documents: dict[str, dict] = {}
    sizes = {int(r.image_id): (int(r.height), int(r.width)) for r in images.itertuples(index=False)}
    for dataset, rows in images.groupby("dataset", sort=True):
        ids = set(rows["image_id"])
        instances = annotations[annotations["image_id"].isin(ids)]
        documents[str(dataset)] = {
            "images": [
                {"id": int(r.image_id), "file_name": r.file_name, "width": int(r.width), "height": int(r.height)}
                for r in rows.itertuples(index=False)
            ],
            "annotations": [
                {
                    "id": n + 1,
                    "image_id": int(a.image_id),
                    "category_id": int(a.category_id),
                    "bbox": [int(a.bbox_x), int(a.bbox_y), int(a.bbox_w), int(a.bbox_h)],
                    "area": int(a.area),
                    "iscrowd": 0,
                    "segmentation": {"size": [sizes[a.image_id][0], sizes[a.image_id][1]], "counts": a.rle_counts},
                }
                for n, a in enumerate(instances.itertuples(index=False))
            ],
            "categories": [{"id": int(c), "name": str(c)} for c in sorted(set(instances["category_id"]))],
        }
    return documents, _shard_images(folder, images)


def _shard_images(folder: Path, images: pd.DataFrame) -> ShardImages:
    rows = images[["file_name", *PLACE_COLUMNS, "width", "height"]].itertuples(index=False)
    return ShardImages(folder, shard_places(folder, rows))


def _corpus_tables(corpus: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    folder = corpus / "parquet"
    images_path, annotations_path = folder / "images.parquet", folder / "annotations.parquet"
    if not images_path.is_file() or not annotations_path.is_file():
        raise CorpusError(
            f"{corpus} has no Parquet tables (parquet/images.parquet, parquet/annotations.parquet) and is no webdataset "
            "export (index.parquet); run `us43d build`"
        )
    return pd.read_parquet(images_path, columns=IMAGE_COLUMNS), pd.read_parquet(annotations_path, columns=INSTANCE_COLUMNS)


def _webdataset_tables(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The export's index as the two tables a built corpus has: one row per image (with where
    its bytes lie) and one per instance, in the index's order of instances."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    path = folder / INDEX
    try:
        table = pq.read_table(path, columns=[*IMAGE_COLUMNS, *PLACE_COLUMNS, "objects"])
        objects = table.column("objects")
        flat = pc.list_flatten(objects)
        parents = pc.list_parent_indices(objects)
        instances = flat.combine_chunks() if isinstance(flat, pa.ChunkedArray) else flat
        missing = [name for name in ("rle", "bbox", "category_id", "area") if instances.field(name).null_count]
        if missing or table.column("image_id").null_count:
            raise CorpusError(f"{path}: an instance lacks {', '.join(missing) or 'its image id'}")
        lengths = pc.list_value_length(instances.field("bbox")).to_numpy(zero_copy_only=False)
        if (lengths != 4).any():
            raise CorpusError(f"{path}: an instance's bbox does not hold 4 numbers")
        xywh = np.asarray(pc.list_flatten(instances.field("bbox")).to_numpy(zero_copy_only=False), dtype=np.int64).reshape(-1, 4)
        images = table.drop_columns(["objects"]).to_pandas()
        annotations = pd.DataFrame(
            {
                "image_id": np.asarray(table.column("image_id").take(parents).to_numpy(), dtype=np.int64),
                "rle_counts": instances.field("rle").to_pylist(),
                "bbox_x": xywh[:, 0],
                "bbox_y": xywh[:, 1],
                "bbox_w": xywh[:, 2],
                "bbox_h": xywh[:, 3],
                "category_id": np.asarray(instances.field("category_id").to_numpy(zero_copy_only=False), dtype=np.int64),
                "area": np.asarray(instances.field("area").to_numpy(zero_copy_only=False), dtype=np.int64),
            }
        )
    except (OSError, KeyError, TypeError, ValueError, pa.ArrowException) as exc:
        raise CorpusError(f"cannot read the webdataset index {path}: {exc}") from None
    return images, annotations


def _registry_organs() -> list[str]:
    from us43d.registry import Registry

    return Registry.load().organs()


def read_rgb(path: Path, what: str = "corpus image") -> np.ndarray:
    """8-bit RGB as SAM expects: grey replicated, 16-bit scaled to 8 bits."""
    try:
        with Image.open(path) as image:
            image.load()
            return rgb_from_image(image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise CorpusError(f"cannot read {what} {path}: {exc}") from exc


def rgb_from_image(image: Image.Image) -> np.ndarray:
    if image.mode.startswith("I;16"):
        array = (np.asarray(image).astype(np.float32) / 257.0).round().astype(np.uint8)
        return np.repeat(array[..., None], 3, axis=2)
    return np.asarray(image.convert("RGB"))


def resized_shape(height: int, width: int, size: int) -> tuple[int, int]:
    scale = size / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


_MEAN = torch.from_numpy(PIXEL_MEAN).view(3, 1, 1)
_STD = torch.from_numpy(PIXEL_STD).view(3, 1, 1)


def prepare_image(rgb: np.ndarray, size: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Longest side to `size` (bilinear), SAM normalisation, zero padding bottom/right."""
    new_h, new_w = resized_shape(rgb.shape[0], rgb.shape[1], size)
    resized = np.array(Image.fromarray(rgb).resize((new_w, new_h), Image.Resampling.BILINEAR))  # writable for torch
    tensor = torch.zeros(3, size, size)
    view = tensor[:, :new_h, :new_w]
    view.copy_(torch.from_numpy(resized).permute(2, 0, 1))  # uint8 to float in one strided copy
    view.sub_(_MEAN).div_(_STD)
    return tensor, (new_h, new_w)


def decode_rle(rle: str, height: int, width: int) -> np.ndarray:
    return mask_utils.decode({"size": [height, width], "counts": rle.encode()}).astype(bool)


def low_res_targets(masks: np.ndarray, size: int, low: int) -> torch.Tensor:
    """The recipe's target: resized masks zero-padded to size x size, bilinear to low x low
    (align_corners False), rounded. For a 4x reduction that is exactly "at least 3 of the 4
    central pixels of each 4 x 4 block" (a mean of 0.5 rounds to 0), computed here by slicing
    instead of building float maps at full resolution."""
    if size != 4 * low:
        padded = torch.zeros(masks.shape[0], 1, size, size)
        padded[:, 0, : masks.shape[1], : masks.shape[2]] = torch.from_numpy(masks.astype(np.float32))
        return F.interpolate(padded, size=(low, low), mode="bilinear", align_corners=False).round()[:, 0]
    padded = np.zeros((masks.shape[0], size, size), dtype=np.uint8)
    padded[:, : masks.shape[1], : masks.shape[2]] = masks
    votes = padded[:, 1::4, 1::4] + padded[:, 1::4, 2::4] + padded[:, 2::4, 1::4] + padded[:, 2::4, 2::4]
    return torch.from_numpy((votes >= 3).astype(np.float32))


def sample_seed(seed: int, position: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{position}".encode()).digest()[:8], "little")


class TrainDataset(torch.utils.data.Dataset):
    """Indexed by (entry index, sample seed) pairs from `InfiniteBatchSampler`.

    `prompt` is the mix of prompt kinds (prompts.parse_prompt_mix); with boundary prompts a
    sample also carries each boundary instance's first two clicks and, for the image, a rank
    and a click count that decide whether the trainer adds clicks to it (train.step_losses).
    """

    def __init__(
        self,
        images: ImageSource,
        entries: Sequence[ImageEntry],
        image_size: int,
        low_res: int,
        flip: bool = True,
        prompt: str = RECIPE_PROMPT,
        max_clicks: int = 10,
    ) -> None:
        self.images = images
        self.entries = list(entries)
        self.image_size = image_size
        self.low_res = low_res
        self.flip = flip
        self.mix = parse_prompt_mix(prompt)
        self.max_clicks = max_clicks

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        index, seed = key
        entry = self.entries[index]
        rng = np.random.default_rng(seed)
        rgb = self.images.read(entry.file_name)
        order = np.arange(len(entry.rles))
        if len(order) > MAX_INSTANCES:
            order = np.sort(rng.choice(order, MAX_INSTANCES, replace=False))
        masks = np.stack([decode_rle(entry.rles[i], entry.height, entry.width) for i in order])
        boxes = np.array([entry.boxes[i] for i in order], dtype=np.float64)
        boxes[:, 2:] += boxes[:, :2]  # xywh -> xyxy (exclusive right/bottom edge)
        if self.flip and rng.random() < 0.5:
            rgb = rgb[:, ::-1]
            masks = masks[:, :, ::-1]
            boxes[:, [0, 2]] = entry.width - boxes[:, [2, 0]]
        image, (new_h, new_w) = prepare_image(np.ascontiguousarray(rgb), self.image_size)
        resized = np.stack(
            [np.asarray(Image.fromarray(m).resize((new_w, new_h), Image.Resampling.NEAREST)) for m in masks.view(np.uint8)]
        ).astype(bool)
        keep = resized.reshape(len(resized), -1).any(axis=1)  # an instance can vanish when shrunk
        resized, boxes = resized[keep], boxes[keep]
        scale = np.array([new_w / entry.width, new_h / entry.height] * 2)
        boxes = boxes * scale
        kinds = draw_kinds(self.mix, len(resized), rng)
        is_box = kinds == BOX
        points = np.zeros((len(resized), 2))
        for i, mask in enumerate(resized):
            rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
            top, left = rows[0], cols[0]  # look for pixels inside the mask's box only
            ys, xs = np.nonzero(mask[top : rows[-1] + 1, left : cols[-1] + 1])
            ys, xs = ys + top, xs + left
            pick = rng.integers(len(xs))
            u = rng.random()
            # one uniform draw inside the pixel, shared by x and y, as in the recipe; SAM's
            # prompt encoder adds its own +0.5, hence the -0.5 here.
            points[i] = (xs[pick] + u - 0.5, ys[pick] + u - 0.5)
        # each corner moves by up to 5 % of the un-jittered box's width or height
        wh = boxes[:, 2:] - boxes[:, :2]
        boxes = boxes + rng.uniform(-BOX_JITTER, BOX_JITTER, size=boxes.shape) * np.concatenate([wh, wh], axis=1)
        # Boundary draws come last, and only with boundary prompts, so that every other draw
        # (and so every recipe run) is what it was before they existed.
        clicks = np.zeros((len(resized), 2, 2))
        rank, count = 0.0, 2
        if self.mix["boundary"] > 0:
            for i in np.flatnonzero(kinds == BOUNDARY):
                clicks[i] = first_boundary_points(resized[i], rng)
            # the batch grows its chosen images to the count of the lowest-ranked one (click_growth)
            rank, count = rng.random(), int(rng.integers(2, self.max_clicks + 1))
        return {
            "image": image,
            "targets": low_res_targets(resized, self.image_size, self.low_res),
            "points": torch.from_numpy(points).float(),
            "boxes": torch.from_numpy(boxes).float(),
            "is_box": torch.from_numpy(is_box),
            "is_boundary": torch.from_numpy(kinds == BOUNDARY),
            "clicks": torch.from_numpy(clicks).float(),
            "click_rank": torch.tensor(rank),
            "click_count": torch.tensor(count),
            "image_id": torch.tensor(entry.image_id),
        }


def collate(batch: list[dict[str, torch.Tensor]]) -> dict[str, object]:
    return {
        "image": torch.stack([b["image"] for b in batch]),
        "targets": [b["targets"] for b in batch],
        "points": [b["points"] for b in batch],
        "boxes": [b["boxes"] for b in batch],
        "is_box": [b["is_box"] for b in batch],
        "is_boundary": [b["is_boundary"] for b in batch],
        "clicks": [b["clicks"] for b in batch],
        "click_rank": torch.stack([b["click_rank"] for b in batch]),
        "click_count": torch.stack([b["click_count"] for b in batch]),
        "image_id": torch.stack([b["image_id"] for b in batch]),
    }


class InfiniteBatchSampler(torch.utils.data.Sampler[list[tuple[int, int]]]):
    """Endless seeded epochs over the data; rank r of w takes every w-th sample.

    The stream is a pure function of (seed, position), so starting at a step reproduces the
    batches an uninterrupted run would have drawn from that step on. With gradient
    accumulation each step yields `accumulation` micro-batches, and micro-batch m of rank r
    reads what rank r * accumulation + m of `world * accumulation` processes would read: one
    GPU accumulating 4 batches of 8 sees exactly the 32 samples of the recipe's 4 GPUs.
    """

    def __init__(
        self, size: int, batch_size: int, seed: int, rank: int = 0, world: int = 1, start_step: int = 0, accumulation: int = 1
    ) -> None:
        if size == 0:
            raise Us43dError("no training images: the selection is empty")
        self.size, self.batch_size, self.seed, self.rank, self.world = size, batch_size, seed, rank, world
        self.start_step, self.accumulation = start_step, accumulation

    def _permutation(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.size, generator=generator)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        step = self.start_step
        streams = self.world * self.accumulation
        cached_epoch, permutation = -1, torch.empty(0, dtype=torch.long)
        while True:
            for micro in range(self.accumulation):
                stream = self.rank * self.accumulation + micro
                batch = []
                for slot in range(self.batch_size):
                    position = (step * self.batch_size + slot) * streams + stream
                    epoch, offset = divmod(position, self.size)
                    if epoch != cached_epoch:
                        cached_epoch, permutation = epoch, self._permutation(epoch)
                    batch.append((int(permutation[offset]), sample_seed(self.seed, position)))
                yield batch
            step += 1
