"""`us43d classify`: image classification from a SAM checkpoint's encoder, the paper's Table 2.

The authors' setup (their MMPretrain configs, downstream/classification): the ViT image encoder
of a checkpoint without its neck, every output token averaged into one vector (768 values for
ViT-B), a linear head, sigmoid focal loss on one-hot targets, AdamW (lr 1e-4, weight decay 1e-4,
gradient norm clipped at 0.1), batch 8, 2000 iterations with a linear warm-up over the first
quarter (from 0.001 of the rate) and the rate cut tenfold at 80 %, random horizontal flips, the
image resized to the model's side and zero-padded. The whole encoder is trained with the head
("finetune"); a frozen encoder under the same head ("probe") is the cheap variant, and its
features are computed once and kept on disk.

The prompted variant (the journal version): the object's prompt, here the ground-truth box of
the image's largest instance, and the image embedding are decoded jointly by SAM's prompt encoder
and two-way transformer, and the mean of the decoder's output tokens (its IoU token and its four
mask tokens, after the transformer) is what the linear head classifies.

Training uses the corpus's train split, the val split (when it has labelled images) picks the
iteration whose macro F1 is best, and the official test split is scored (us43d.training.class_metrics).
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from us43d.corpus.output import STATE_DIR
from us43d.corpus.records import STATE_VERSION
from us43d.corpus.writers import atomic_write_bytes
from us43d.errors import CorpusError, Us43dError, os_error_text
from us43d.registry.schema import ID_PATTERN
from us43d.training import engine
from us43d.training.class_metrics import macro_scores
from us43d.training.data import prepare_image, read_rgb
from us43d.training.evaluate import read_ground_truth
from us43d.training.losses import focal_map
from us43d.training.train import RUN_FILES, warmup_decay

PAPER_DATASETS = ("BUS-BRA", "MMOTU-2D", "GIST514-DB")
MODES = ("probe", "finetune")
VARIANTS = ("image", "prompted")
CLASSIFIED = {
    "image": "the mean of the image encoder's output tokens (before its neck)",
    "prompted": "the mean of the mask decoder's output tokens (IoU token and 4 mask tokens) after its two-way "
    "transformer, decoding the image embedding with the ground-truth box of the image's largest instance",
}
# Bump when what a cached feature holds changes: older files are then never read.
FEATURE_VERSION = 1
RUN_MARKER = ".us43d-classify"  # in a folder a classify run made: only there does a rerun write
RUN_OUTPUTS = ("scores.json", "features")
# The recipe's schedule at 2000 iterations, kept in proportion at any length.
WARMUP_SHARE, MILESTONE_SHARE, WARMUP_START, DECAY = 500 / 2000, 1600 / 2000, 0.001, 0.1


@dataclass(frozen=True)
class ClassifyConfig:
    mode: str = "finetune"
    variant: str = "image"
    iters: int = 2000
    batch_size: int = 8
    lr: float = 1e-4
    weight_decay: float = 1e-4
    clip_grad: float = 0.1
    flip: bool = True  # fine-tuning only: cached probe features are of the unflipped image
    val_every: int = 0  # 0: four model-selection checks per run
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise Us43dError(f"unknown mode '{self.mode}' (choose from {', '.join(MODES)})")
        if self.variant not in VARIANTS:
            raise Us43dError(f"unknown variant '{self.variant}' (choose from {', '.join(VARIANTS)})")
        for name in ("iters", "batch_size"):
            if getattr(self, name) < 1:
                raise Us43dError(f"--{name.replace('_', '-')} must be at least 1")
        for name in ("lr", "weight_decay", "clip_grad"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0 or (name == "lr" and value == 0):
                raise Us43dError(f"--{name.replace('_', '-')} must be a finite number above 0 (lr) or at least 0")
        if self.val_every < 0 or self.seed < 0:
            raise Us43dError("--val-every and --seed must be at least 0")

    @property
    def checks_every(self) -> int:
        return self.val_every or max(1, self.iters // 4)


@dataclass(frozen=True)
class LabelledImage:
    image_id: int
    path: Path
    label: int
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 of the largest instance, original pixels


@dataclass
class SplitImages:
    images: list[LabelledImage]
    unlabelled: int  # images of the split whose release gives no class: left out


# --- the corpus side -------------------------------------------------------------------------


def resolve_datasets(corpus: Path, names: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """Each named dataset with the image-level classes its build recorded; refuses a dataset
    that is unknown, not built, built by another us43d, or without classes."""
    from us43d.registry import Registry

    registry = Registry.load()
    resolved: dict[str, tuple[str, ...]] = {}
    for name in names:
        dataset = registry.get(name).id if name in registry else name
        if not ID_PATTERN.match(dataset):  # it names files under the corpus and the run folder
            raise Us43dError(f"unknown dataset {name!r}: not a dataset id")
        state = corpus / STATE_DIR / f"{dataset}.json"
        if not state.is_file():
            if name not in registry:
                raise Us43dError(f"unknown dataset '{name}': not in the registry nor in {corpus}")
            if not registry.get(name).classes:
                raise Us43dError(f"{dataset} has no image-level classes (the registry names none): nothing to classify")
            raise CorpusError(f"{dataset} is not in the corpus {corpus} (no {STATE_DIR}/{dataset}.json): build it first")
        try:
            data = json.loads(state.read_text(encoding="utf-8"))
            version = data.get("version") if isinstance(data, dict) else None
            classes = tuple(str(c) for c in data["info"]["classes"]) if version == STATE_VERSION else None
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CorpusError(f"cannot read the build state {state} ({exc}); rebuild {dataset}") from None
        if classes is None:
            raise CorpusError(f"{state} was written by another version of us43d (no image-level labels); rebuild {dataset}")
        if not classes:
            raise Us43dError(f"{dataset} has no image-level classes (its registry entry names none): nothing to classify")
        resolved[dataset] = classes
    return resolved


def labelled_split(corpus: Path, dataset: str, split: str, classes: Sequence[str]) -> SplitImages:
    """The split's images that carry a label, with the box of their largest instance; an empty
    result when the split has no file. A label outside the classes is the file's fault."""
    path = corpus / "coco" / dataset / f"{split}.json"
    if not path.is_file():
        return SplitImages([], 0)
    document = read_ground_truth(path)
    largest: dict[int, tuple[float, list[float]]] = {}
    for annotation in document["annotations"]:
        area = float(annotation.get("area", 0))
        if annotation["image_id"] not in largest or area > largest[annotation["image_id"]][0]:
            largest[annotation["image_id"]] = (area, annotation["bbox"])
    images, unlabelled = [], 0
    for image in document["images"]:
        if "label" not in image:
            raise CorpusError(f"{path} has no image-level labels (built by an older us43d); rebuild {dataset}")
        label = image["label"]
        if label is None:
            unlabelled += 1
            continue
        if label not in classes:
            raise CorpusError(f"{path}: image {image['id']} has label {label!r}, not one of {list(classes)}")
        if image["id"] not in largest:
            raise CorpusError(f"{path}: image {image['id']} has no annotation to prompt with")
        x, y, w, h = (float(v) for v in largest[image["id"]][1])
        images.append(
            LabelledImage(int(image["id"]), corpus / "images" / image["file_name"], classes.index(label), (x, y, x + w, y + h))
        )
    return SplitImages(images, unlabelled)


# --- the model side --------------------------------------------------------------------------


def averaged_tokens(encoder: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The ViT's output tokens, averaged, without the neck (the authors' out_type avg_featmap)."""
    x = encoder.patch_embed(images)
    if encoder.pos_embed is not None:
        x = x + encoder.pos_embed
    for block in encoder.blocks:
        x = block(x)
    return x.mean(dim=(1, 2))


def prompted_tokens(sam: nn.Module, images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """The decoder's output tokens for one box per image, averaged (see the module's docstring)."""
    embedding = sam.image_encoder(images)
    count = images.shape[0]
    is_box = torch.ones(count, dtype=torch.bool, device=images.device)
    sparse, dense = engine.sparse_and_dense(sam, boxes.new_zeros(count, 2), boxes, is_box)
    decoder = sam.mask_decoder
    outputs = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
    tokens = torch.cat([outputs.unsqueeze(0).expand(count, -1, -1), sparse], dim=1)
    position = sam.prompt_encoder.get_dense_pe().expand(count, -1, -1, -1)
    hs, _ = decoder.transformer(embedding + dense, position, tokens)
    return hs[:, : 1 + decoder.num_mask_tokens].mean(dim=1)


class Features(nn.Module):
    """What the head sees, for either variant."""

    def __init__(self, sam: nn.Module, variant: str) -> None:
        super().__init__()
        self.sam, self.variant = sam, variant

    @property
    def dim(self) -> int:
        if self.variant == "image":
            return int(self.sam.image_encoder.patch_embed.proj.out_channels)
        return int(self.sam.mask_decoder.iou_token.weight.shape[1])

    def forward(self, images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        if self.variant == "image":
            return averaged_tokens(self.sam.image_encoder, images)
        return prompted_tokens(self.sam, images, boxes)


def model_inputs(
    items: Sequence[LabelledImage], size: int, flips: Sequence[bool] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images prepared as the encoder takes them, and their boxes in the same frame."""
    tensors, boxes = [], []
    for index, item in enumerate(items):
        rgb = read_rgb(item.path)
        x0, y0, x1, y1 = item.box
        if flips is not None and flips[index]:
            rgb = np.ascontiguousarray(rgb[:, ::-1])
            x0, x1 = rgb.shape[1] - x1, rgb.shape[1] - x0
        tensor, resized = prepare_image(rgb, size)
        sx, sy = resized[1] / rgb.shape[1], resized[0] / rgb.shape[0]
        tensors.append(tensor)
        boxes.append([x0 * sx, y0 * sy, x1 * sx, y1 * sy])
    return torch.stack(tensors), torch.tensor(boxes, dtype=torch.float32)


def _encode(features: Features, images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """One forward pass of the frozen model (a seam the tests watch to see the cache used)."""
    with torch.no_grad():
        return features(images, boxes)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise Us43dError(f"cannot read {path}: {os_error_text(exc)}") from None
    return digest.hexdigest()


class FeatureCache:
    """Probe features on disk, one .npy per image, named by a hash of everything they depend on:
    the checkpoint's bytes, the model's shape and decoder form, the variant, the image's bytes
    and (prompted) its box. A file that does not hold what it should is computed again."""

    def __init__(self, folder: Path, model_key: str, dim: int, with_box: bool) -> None:
        self.folder, self.model_key, self.dim, self.with_box = folder, model_key, dim, with_box

    def path(self, item: LabelledImage) -> Path:
        box = item.box if self.with_box else None
        key = hashlib.sha256(f"{self.model_key}|{file_sha256(item.path)}|{box}".encode()).hexdigest()
        return self.folder / key[:2] / f"{key}.npy"

    def load(self, path: Path) -> np.ndarray | None:
        try:
            value = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return None
        if value.dtype != np.float32 or value.shape != (self.dim,) or not np.isfinite(value).all():
            return None
        return value

    def store(self, path: Path, value: np.ndarray) -> None:
        buffer = io.BytesIO()
        np.save(buffer, value.astype(np.float32), allow_pickle=False)
        try:
            atomic_write_bytes(path, buffer.getvalue())
        except OSError as exc:
            raise Us43dError(f"cannot write the feature cache {path}: {os_error_text(exc)}") from None


def cached_features(
    features: Features, items: Sequence[LabelledImage], cache: FeatureCache, size: int, batch: int, device: torch.device
) -> tuple[torch.Tensor, int]:
    """(N, dim) features of `items` and how many had to be computed."""
    rows: list[np.ndarray | None] = []
    paths = [cache.path(item) for item in items]
    rows = [cache.load(p) if p.is_file() else None for p in paths]
    missing = [i for i, row in enumerate(rows) if row is None]
    for start in range(0, len(missing), batch):
        chunk = missing[start : start + batch]
        images, boxes = model_inputs([items[i] for i in chunk], size)
        values = _encode(features, images.to(device), boxes.to(device)).float().cpu().numpy()
        for i, value in zip(chunk, values):
            cache.store(paths[i], value)
            rows[i] = value
    return torch.from_numpy(np.stack(rows)) if rows else torch.zeros(0, cache.dim), len(missing)


# --- training ---------------------------------------------------------------------------------


def lr_factor(step: int, iters: int) -> float:
    """The recipe's schedule, scaled to `iters`: linear warm-up, then one tenfold cut."""
    warmup, milestone = round(iters * WARMUP_SHARE), round(iters * MILESTONE_SHARE)
    return warmup_decay(step, warmup, (milestone,), WARMUP_START, DECAY)


def focal_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sigmoid focal loss on one-hot targets, averaged over every element (MMPretrain's FocalLoss
    under the authors' multi-label linear head: gamma 2, alpha 0.25)."""
    targets = torch.nn.functional.one_hot(labels, logits.shape[1]).to(logits.dtype)
    return focal_map(logits, targets).mean()


class ProbeHead(nn.Module):
    """The linear head of the probe, on features standardised with the training set's mean and
    spread (MAE's linear probe does the same with a BatchNorm without affine parameters): frozen
    features vary little around a large common part, which a plain linear head at the recipe's
    rate would take thousands of steps to see past."""

    def __init__(self, head: nn.Linear, train_features: torch.Tensor) -> None:
        super().__init__()
        self.head = head
        self.register_buffer("mean", train_features.mean(dim=0))
        self.register_buffer("std", train_features.std(dim=0, unbiased=False).clamp_min(1e-6))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head((features - self.mean) / self.std)


class Batches:
    """Shuffled epochs of indices from a seeded generator, as an infinite sampler gives."""

    def __init__(self, count: int, size: int, generator: torch.Generator) -> None:
        self.count, self.size, self.generator = count, size, generator
        self.order: list[int] = []

    def next(self) -> list[int]:
        chosen: list[int] = []
        while len(chosen) < self.size:
            if not self.order:
                self.order = torch.randperm(self.count, generator=self.generator).tolist()
            chosen.append(self.order.pop(0))
        return chosen


@dataclass
class Fitted:
    predictions: list[int]
    selected_iter: int
    val_f1: float | None


def _fit(
    model: nn.Module,
    forward: Callable[[list[int], torch.Generator], torch.Tensor],
    predict: Callable[[str], list[int]],
    train_labels: torch.Tensor,
    val_labels: list[int],
    classes: Sequence[str],
    config: ClassifyConfig,
    device: torch.device,
) -> Fitted:
    """The shared loop: AdamW on `model`'s trainable parameters, the recipe's schedule and
    clipping, model selection on val by macro F1 (the last iteration without val)."""
    generator = torch.Generator().manual_seed(config.seed)
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    batches = Batches(len(train_labels), config.batch_size, generator)
    best: tuple[float, int, dict[str, torch.Tensor]] | None = None
    for step in range(config.iters):
        for group in optimizer.param_groups:
            group["lr"] = config.lr * lr_factor(step, config.iters)
        model.train()
        chosen = batches.next()
        loss = focal_loss(forward(chosen, generator), train_labels[chosen].to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.clip_grad > 0:
            torch.nn.utils.clip_grad_norm_(parameters, config.clip_grad)
        optimizer.step()
        done = step + 1
        if val_labels and (done % config.checks_every == 0 or done == config.iters):
            model.eval()
            f1 = macro_scores(val_labels, predict("val"), classes).f1
            if best is None or f1 > best[0]:
                best = (f1, done, copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()}))
    if best is not None:
        model.load_state_dict(best[2])
    model.eval()
    return Fitted(predict("test"), best[1] if best else config.iters, best[0] if best else None)


def _logits_in_batches(run: Callable[[list[int]], torch.Tensor], count: int, batch: int) -> list[int]:
    predictions: list[int] = []
    with torch.no_grad():
        for start in range(0, count, batch):
            predictions.extend(run(list(range(start, min(start + batch, count)))).argmax(dim=1).tolist())
    return predictions


@dataclass
class DatasetRun:
    dataset: str
    classes: tuple[str, ...]
    splits: dict[str, SplitImages]


def _classify_dataset(
    job: DatasetRun,
    sam: nn.Module,
    image_size: int,
    config: ClassifyConfig,
    device: torch.device,
    cache_folder: Path,
    model_key: str,
    report: Callable[[str], Any],
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    torch.manual_seed(config.seed)
    features = Features(sam, config.variant).to(device)
    head = nn.Linear(features.dim, len(job.classes)).to(device)
    items = {split: job.splits[split].images for split in ("train", "val", "test")}
    labels = {split: [item.label for item in items[split]] for split in items}
    train_labels = torch.tensor(labels["train"], dtype=torch.long)
    computed = 0
    if config.mode == "probe":
        features.eval().requires_grad_(False)
        cache = FeatureCache(cache_folder, model_key, features.dim, config.variant == "prompted")
        stored: dict[str, torch.Tensor] = {}
        for split, chosen in items.items():
            stored[split], made = cached_features(features, chosen, cache, image_size, config.batch_size, device)
            computed += made
        report(f"{job.dataset}: {computed} feature vectors computed, {sum(map(len, items.values())) - computed} from the cache")

        probe = ProbeHead(head, stored["train"]).to(device)

        def forward(chosen: list[int], _generator: torch.Generator) -> torch.Tensor:
            return probe(stored["train"][chosen].to(device))

        def predict(split: str) -> list[int]:
            return _logits_in_batches(lambda idx: probe(stored[split][idx].to(device)), len(items[split]), 256)

        model: nn.Module = probe
    else:
        model = nn.ModuleDict({"features": features, "head": head})

        def forward(chosen: list[int], generator: torch.Generator) -> torch.Tensor:
            flips = (torch.rand(len(chosen), generator=generator) < 0.5).tolist() if config.flip else None
            images, boxes = model_inputs([items["train"][i] for i in chosen], image_size, flips)
            return head(features(images.to(device), boxes.to(device)))

        def predict(split: str) -> list[int]:
            def run(idx: list[int]) -> torch.Tensor:
                images, boxes = model_inputs([items[split][i] for i in idx], image_size)
                return head(features(images.to(device), boxes.to(device)))

            return _logits_in_batches(run, len(items[split]), config.batch_size)

    fitted = _fit(model, forward, predict, train_labels, labels["val"], job.classes, config, device)
    scores = macro_scores(labels["test"], fitted.predictions, job.classes)
    result = {
        **scores.as_dict(),
        "classes": list(job.classes),
        "images": {split: len(items[split]) for split in items},
        "unlabelled_left_out": {split: job.splits[split].unlabelled for split in items},
        "selected_iter": fitted.selected_iter,
        "val_f1": fitted.val_f1,
        "features_computed": computed if config.mode == "probe" else None,
    }
    weights = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return result, weights


# --- the run folder ---------------------------------------------------------------------------


def check_run_folder(run: Path) -> None:
    """A classify run writes only into a new or empty folder, or one an earlier classify run
    marked as its own (whose feature cache it then reuses); never over a training run or a
    folder of the user's. Checked before the model is loaded, so a refusal costs nothing."""
    if run.exists() and not run.is_dir():
        raise Us43dError(f"--out {run} is a file, not a run folder")
    if run.is_dir() and not (run / RUN_MARKER).is_file():
        if any((run / name).exists() for name in RUN_FILES):
            raise Us43dError(f"--out {run} holds a training run: classify into another folder")
        if any(run.iterdir()):
            raise Us43dError(f"--out {run} is not empty and was not made by `us43d classify`: give a new or empty folder")
    if (run / "features").is_symlink():
        raise Us43dError(f"{run / 'features'} is a link: the classify run writes only into folders of its own")


def claim_run_folder(run: Path) -> None:
    check_run_folder(run)
    try:
        run.mkdir(parents=True, exist_ok=True)
        (run / RUN_MARKER).write_text(
            "Made by `us43d classify`; a rerun with --out here reuses features/ and replaces its results.\n"
        )
    except OSError as exc:
        raise Us43dError(f"cannot write the run folder {run}: {os_error_text(exc)}") from None


def classify(
    corpus: Path,
    run: Path,
    checkpoint: Path,
    datasets: Sequence[str],
    config: ClassifyConfig,
    model: str | None = None,
    image_size: int | None = None,
    decoder: str | None = None,
    device: str | None = None,
    report: Callable[[str], Any] = lambda _line: None,
) -> dict[str, Any]:
    """Train and score one classifier per dataset; returns the run's record (also scores.json)."""
    from us43d.training.checkpoints import atomic_save
    from us43d.training.model_shape import load_model

    if not datasets:
        raise Us43dError("--datasets is empty: name datasets with image-level classes, comma-separated")
    jobs = []
    for dataset, classes in resolve_datasets(corpus, datasets).items():
        splits = {split: labelled_split(corpus, dataset, split, classes) for split in ("train", "val", "test")}
        for split in ("train", "test"):
            if not splits[split].images:
                raise CorpusError(f"{dataset} has no labelled images in its {split} split in {corpus}: nothing to classify")
        jobs.append(DatasetRun(dataset, classes, splits))
    if not Path(checkpoint).is_file():
        raise Us43dError(f"checkpoint {checkpoint} does not exist")
    check_run_folder(run)
    sam, shape = load_model(checkpoint, model, image_size, decoder, report)
    claim_run_folder(run)
    target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    sam = sam.to(target)
    checkpoint_hash = file_sha256(checkpoint)
    from us43d.training.decoder import decoder_of

    form = decoder_of(sam) if config.variant == "prompted" else "-"
    model_key = f"v{FEATURE_VERSION}|{checkpoint_hash}|{shape.name}|{shape.image_size}|{config.variant}|{form}"
    cache_folder = run / "features" / hashlib.sha256(model_key.encode()).hexdigest()[:16]
    pristine = {k: v.detach().clone() for k, v in sam.state_dict().items()} if config.mode == "finetune" else None
    scores: dict[str, Any] = {}
    for job in jobs:
        if pristine is not None:
            sam.load_state_dict(pristine)  # every dataset fine-tunes from the checkpoint
        scores[job.dataset], weights = _classify_dataset(
            job, sam, shape.image_size, config, target, cache_folder, model_key, report
        )
        try:
            atomic_save(weights, run / f"{job.dataset}.pt")
        except OSError as exc:
            raise Us43dError(f"cannot write {run / f'{job.dataset}.pt'}: {os_error_text(exc)}") from None
    document = {
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": checkpoint_hash,
        "model": shape.name,
        "image_size": shape.image_size,
        "decoder": form if form != "-" else None,
        "classified": CLASSIFIED[config.variant],
        "settings": asdict(config),
        "scores": scores,
    }
    from us43d.corpus.writers import atomic_write_bytes

    try:
        atomic_write_bytes(run / "scores.json", (json.dumps(document, indent=2) + "\n").encode())
    except OSError as exc:
        raise Us43dError(f"cannot write {run / 'scores.json'}: {os_error_text(exc)}") from None
    return document


__all__ = [
    "CLASSIFIED",
    "ClassifyConfig",
    "FeatureCache",
    "PAPER_DATASETS",
    "averaged_tokens",
    "classify",
    "labelled_split",
    "lr_factor",
    "prompted_tokens",
    "resolve_datasets",
]
