"""The training loop: UltraSam's recipe on plain PyTorch, one process per GPU via torchrun.

Run state (model, optimiser, step, configuration, validation bookkeeping) is saved
atomically; the learning rate and the data stream are pure functions of the step, so
`--resume` continues exactly.

The recipe is written for 4 GPUs and 30,000 iterations. On other hardware and lengths it is
kept, not truncated: gradient accumulation makes up the global batch of 32 images, and the
warm-up, the decays and the validation cadence scale with `--iters` unless they are set.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields, replace
from functools import partial
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
import yaml
from pydantic import AfterValidator, BeforeValidator, Field, TypeAdapter, ValidationError

from us43d.errors import Us43dError
from us43d.training import engine
from us43d.training.boundary_loss import BOUNDARY_LOSS_WEIGHT, click_heatmaps
from us43d.training.checkpoints import CheckpointError, Weights, atomic_save, load_into, load_untrusted, read_weights
from us43d.training.click_growth import click_images, grown_clicks
from us43d.training.data import InfiniteBatchSampler, TrainDataset, collate, load_selection
from us43d.training.losses import LossParts, mask_losses
from us43d.training.memory import (
    PRESETS,
    autocast_dtype,
    describe_memory,
    encoder_is_trained,
    freeze_image_encoder,
    use_activation_checkpointing,
)
from us43d.training.prompts import RECIPE_PROMPT, canonical_prompt, uses_boundary
from us43d.training.sam import DECODER_NAMES, build_model, model_config
from us43d.training.validation import Validator, ValState, read_val_files, summary_map

# The recipe (recipe sheet, section 5): 8 images on each of 4 GPUs, 30,000 iterations with a
# 500-iteration warm-up, decays at 20,000 and 28,888, validation every 5,000.
RECIPE_ITERS = 30_000
RECIPE_GLOBAL_BATCH = 32
RECIPE_BATCH_SIZE = 8
RECIPE_WARMUP = 500
RECIPE_MILESTONES = (20_000, 28_888)
RECIPE_VAL_EVERY = 5_000


def _names(value: Any) -> Any:
    """A YAML `exclude: breast,ovary` means two names, not the letters of one string."""
    return tuple(part.strip() for part in value.split(",") if part.strip()) if isinstance(value, str) else value


# Constraints checked where settings come in (flags, YAML); code that builds a TrainConfig
# directly is trusted.
Count = Annotated[int, Field(ge=1)]
NonNegative = Annotated[int, Field(ge=0)]
Rate = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Names = Annotated[tuple[str, ...], BeforeValidator(_names)]


def _prompt(value: Any) -> str:
    try:
        return canonical_prompt(value)
    except Us43dError as exc:  # pydantic reports ValueErrors with the setting's name and value
        raise ValueError(str(exc).removeprefix("prompt: ")) from None


PromptMix = Annotated[str, AfterValidator(_prompt)]


@dataclass
class TrainConfig:
    """Defaults are the paper's recipe (ViT-B, 1024, 32 images per iteration, 30,000 iterations).

    A None means "derived": the batch size from the preset (else 8), the accumulation from the
    global batch, the warm-up, decays and validation cadence from `iters` at the recipe's
    fractions. A new run stores the derived values (except the accumulation, which depends on
    the number of processes), so a resumed or extended run keeps its schedule.
    """

    model: str = "vit_b"
    image_size: Count | None = None  # None: the model's own (1024 for ViT models)
    iters: Count = RECIPE_ITERS
    batch_size: Count | None = None  # images per step and process; None: the preset's, else 8
    global_batch: Count | None = RECIPE_GLOBAL_BATCH  # images per iteration; None: no target, no accumulation
    accumulation: Count | None = None  # steps per iteration; None: global_batch / (batch_size x processes)
    lr: Rate = 1e-4
    weight_decay: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 1e-4
    warmup_iters: NonNegative | None = None  # None: 500/30,000 of iters
    warmup_factor: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] = 0.001
    milestones: tuple[Count, ...] | None = None  # None: 20,000/30,000 and 28,888/30,000 of iters
    gamma: Rate = 0.1
    grad_clip: Rate = 0.1
    refine: bool = True  # one refinement pass with the previous mask logits as mask prompt
    selection: Literal["iou", "loss"] = "iou"  # "iou" (authors' code) or "loss" (paper's wording)
    iou_loss: Literal["mse", "l1"] = "mse"  # "mse" (authors' code) or "l1" (paper's wording)
    flip: bool = True
    efficient_attention: bool = True
    # "authors": the UltraSam code's decoder, norm3(2q + MLP(q)) with dropout 0.1 in its MLPs,
    # which their training and their SAM row ran; "sam": segment_anything's (sam.DECODERS).
    decoder: Literal["authors", "sam"] = "authors"
    precision: Literal["fp32", "bf16"] = "fp32"  # the authors train in fp32; bf16 autocast is faster
    activation_checkpointing: bool | None = None  # image encoder blocks; None: the preset's, else off
    freeze_encoder: bool = False  # train the prompt encoder and mask decoder only
    preset: Literal["24gb", "40gb", "80gb"] | None = None  # batch size and checkpointing for a GPU's memory
    seed: NonNegative = 0
    workers: NonNegative = 2
    checkpoint_every: Count = 2_000
    log_every: Count = 10
    val_every: NonNegative | None = None  # 0: no validation; None: 5,000/30,000 of iters
    val_max_images: Count | None = None  # per dataset; None: the whole val split
    tensorboard: bool = False  # event files in RUN/tensorboard beside metrics.jsonl
    exclude: Names = ()
    datasets: Names = ()
    # Prompt kinds with their probabilities per instance (prompts.py): the recipe's point or
    # box, or SAMUSA's boundary clicks, e.g. "boundary" or "point=0.25,box=0.25,boundary=0.5".
    prompt: PromptMix = RECIPE_PROMPT
    boundary_click_images: NonNegative = 2  # images per step whose boundary clicks grow one by one (SAMUSA: 2)
    boundary_max_clicks: Annotated[int, Field(ge=2)] = 10  # those images get 2..this many clicks (one draw per batch)
    # SAMUSA's lambda; None: 2 with boundary prompts, else 0
    boundary_loss_weight: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    boundary_loss_form: Literal["edge", "literal"] = "edge"  # boundary_loss.BOUNDARY_LOSS_FORMS
    init: str | None = None  # a checkpoint, or "none" for random weights; None (not given) is refused

    @classmethod
    def from_file(cls, path: Path, **overrides: Any) -> TrainConfig:
        return cls.from_dict({**read_settings_file(path), **{k: v for k, v in overrides.items() if v is not None}})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: Path | None = None) -> TrainConfig:
        """Checked settings: one line per problem, naming the setting, the value and (for a
        YAML file) the file, so a bad value never surfaces as a traceback mid-run."""
        where = f" in {source}" if source else ""
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise Us43dError(f"unknown training settings{where}: {unknown}")
        try:
            return _CHECK.validate_python(dict(data))
        except ValidationError as exc:
            problems = "; ".join(_describe(error) for error in exc.errors())
            raise Us43dError(f"invalid training setting{where}: {problems}") from None


_CHECK = TypeAdapter(TrainConfig)


def _describe(error: Any) -> str:
    """`batch_size = 0: input should be greater than or equal to 1`"""
    name = ".".join(str(part) for part in error["loc"])
    return f"{name} = {error.get('input')!r}: {error['msg'][:1].lower()}{error['msg'][1:]}"


# Settings a resumed run may change: the total length, and those that touch neither the
# weights nor the data stream (the accumulation changes only the order of float sums: the
# samples of an iteration and their mean loss stay the same).
RESUMABLE = ("iters", "workers", "checkpoint_every", "log_every", "accumulation", "tensorboard")


def read_settings_file(path: Path) -> dict[str, Any]:
    """The mapping of training settings in a YAML file, or a clear error naming the file."""
    if not path.is_file():
        raise Us43dError(f"settings file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise Us43dError(f"cannot read settings file {path} (not valid YAML?): {reason}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise Us43dError(f"settings file {path} must hold a mapping of setting: value, not a {type(data).__name__}")
    TrainConfig.from_dict(data, path)  # checked on its own, so a bad value is reported with the file's name
    return data


def continued_config(saved: Mapping[str, Any], given: Mapping[str, Any], run: Path) -> TrainConfig:
    """The run's own settings, with the `RESUMABLE` ones taken from `given`.

    Any other given setting that differs from the run's is refused: continuing a run with
    another learning rate or batch size would silently be neither the old run nor a new one.
    """
    own = TrainConfig.from_dict(_upgrade_saved(saved), run / "checkpoint.pt")
    asked = TrainConfig.from_dict({**asdict(own), **given})
    differ = [
        f"{name} {getattr(asked, name)!r} (the run's: {getattr(own, name)!r})"
        for name in sorted(given)
        if name not in RESUMABLE and getattr(asked, name) != getattr(own, name)
    ]
    if differ:
        raise Us43dError(
            f"--resume continues {run} with its own settings, and these differ from them: {', '.join(differ)}; "
            "drop them, or start a new run in another --out"
        )
    return asked


def _upgrade_saved(saved: Mapping[str, Any]) -> dict[str, Any]:
    """Settings of a run started before accumulation, validation and --precision existed,
    read so that it continues as it ran: bf16 autocast on GPU only, the batch of its
    processes without accumulation, no validation."""
    data = dict(saved)
    data.setdefault("decoder", "sam")  # runs saved before the decoder setting ran segment_anything's
    if "bf16" in data:
        legacy = data.pop("bf16")
        data.setdefault("precision", "bf16" if legacy and torch.cuda.is_available() else "fp32")
    data.setdefault("global_batch", None)
    data.setdefault("val_every", 0)
    data.setdefault("prompt", RECIPE_PROMPT)  # runs saved before boundary prompts trained on points and boxes
    data.setdefault("boundary_loss_weight", 0.0)
    return data


def scaled(iters: int, recipe_value: int) -> int:
    """`recipe_value` of the recipe's 30,000 iterations at the same fraction of `iters`."""
    return int(iters * recipe_value / RECIPE_ITERS + 0.5)


def schedule(config: TrainConfig) -> tuple[int, tuple[int, ...]]:
    """Warm-up length and decay points: as set, else the recipe's scaled to `iters`."""
    warmup = config.warmup_iters if config.warmup_iters is not None else scaled(config.iters, RECIPE_WARMUP)
    milestones = config.milestones if config.milestones is not None else tuple(scaled(config.iters, m) for m in RECIPE_MILESTONES)
    return warmup, milestones


def val_every(config: TrainConfig) -> int:
    if config.val_every is not None:
        return config.val_every
    return max(1, scaled(config.iters, RECIPE_VAL_EVERY))


def lr_factor(step: int, config: TrainConfig) -> float:
    warmup, milestones = schedule(config)
    return warmup_decay(step, warmup, milestones, config.warmup_factor, config.gamma)


def warmup_decay(step: int, warmup: int, milestones: Sequence[int], warmup_factor: float, gamma: float) -> float:
    """Linear warm-up from warmup_factor to 1 over the first iterations, then x gamma at each
    milestone: the schedule of the segmentation recipe and of the classification one."""
    warm = 1.0
    if step < warmup:
        warm = warmup_factor + (1 - warmup_factor) * step / warmup
    return warm * gamma ** sum(step >= m for m in milestones)


def boundary_weight(config: TrainConfig) -> float:
    """The boundary loss's weight: as set, else SAMUSA's lambda with boundary prompts, 0 without."""
    if config.boundary_loss_weight is not None:
        return config.boundary_loss_weight
    return BOUNDARY_LOSS_WEIGHT if uses_boundary(config.prompt) else 0.0


def resolve_new_run(config: TrainConfig) -> tuple[TrainConfig, frozenset[str]]:
    """The settings a new run stores, every derived value made explicit (except the
    accumulation), and the names of those derived from the recipe rather than given."""
    if config.boundary_loss_weight and not uses_boundary(config.prompt):
        raise Us43dError(
            f"--boundary-loss-weight {config.boundary_loss_weight:g} needs boundary clicks, and --prompt "
            f"{config.prompt} has none: add boundary to --prompt (e.g. point=0.25,box=0.25,boundary=0.5) or leave it out"
        )
    derived = {
        name
        for name in ("batch_size", "activation_checkpointing", "warmup_iters", "milestones", "val_every")
        if getattr(config, name) is None
    }
    preset = PRESETS[config.preset] if config.preset else None
    warmup, milestones = schedule(config)
    resolved = replace(
        config,
        batch_size=config.batch_size or (preset.batch_size if preset else RECIPE_BATCH_SIZE),
        activation_checkpointing=(
            config.activation_checkpointing
            if config.activation_checkpointing is not None
            else bool(preset and preset.activation_checkpointing)
        ),
        warmup_iters=warmup,
        milestones=milestones,
        val_every=val_every(config),
        prompt=canonical_prompt(config.prompt),
        boundary_loss_weight=boundary_weight(config),
    )
    return resolved, frozenset(derived)


@dataclass(frozen=True)
class BatchPlan:
    """Images per step and process x steps per iteration x processes = images per iteration."""

    batch_size: int
    accumulation: int
    world: int

    @property
    def per_iteration(self) -> int:
        return self.batch_size * self.accumulation * self.world

    def describe(self, target: int | None) -> str:
        processes = f"{self.world} process{'es' if self.world > 1 else ''}"
        text = (
            f"batch: {self.batch_size} images per step x {self.accumulation} accumulation step"
            f"{'s' if self.accumulation > 1 else ''} x {processes} = {self.per_iteration} images per iteration"
        )
        if target is None:
            return text + " (no global batch set)"
        return text + (" (the recipe's global batch)" if target == RECIPE_GLOBAL_BATCH else f" (global batch {target})")


def batch_plan(config: TrainConfig, world: int) -> BatchPlan:
    """How the global batch is reached on `world` processes, or a clear error when the given
    settings cannot reach it: a run never trains on another batch than it says."""
    batch = config.batch_size or RECIPE_BATCH_SIZE
    target = config.global_batch
    processes = f"{world} process{'es' if world > 1 else ''}"
    if target is None:
        return BatchPlan(batch, config.accumulation or 1, world)
    if config.accumulation is not None:
        plan = BatchPlan(batch, config.accumulation, world)
        if plan.per_iteration != target:
            raise Us43dError(
                f"--batch-size {batch} x --accumulation {config.accumulation} x {processes} = {plan.per_iteration} "
                f"images per iteration, not the global batch of {target}: leave --accumulation out (it is derived), "
                f"or set --global-batch {plan.per_iteration} to train with that batch on purpose"
            )
        return plan
    per_step = batch * world
    if target % world:
        raise Us43dError(
            f"the global batch of {target} images cannot be shared evenly by {processes}: "
            f"set --global-batch to a multiple of {per_step} (--batch-size {batch} x {processes})"
        )
    if target % per_step:
        raise Us43dError(
            f"the global batch of {target} images is not a whole number of steps of --batch-size {batch} x {processes} "
            f"= {per_step} images: choose a --batch-size that divides {target // world}, "
            f"or set --global-batch to a multiple of {per_step}"
        )
    return BatchPlan(batch, target // per_step, world)


def describe_schedule(config: TrainConfig, derived: frozenset[str]) -> str:
    warmup, milestones = schedule(config)
    applied = [m for m in milestones if m < config.iters]  # iterations run 0 .. iters - 1
    decays = " and ".join(f"{m:,}" for m in applied) if applied else "none"
    ramp = f"warm-up {warmup:,} (lr x{config.warmup_factor:g} -> x1)" if warmup else "no warm-up"
    text = f"schedule: {config.iters:,} iterations, peak lr {config.lr:g}, {ramp}, lr x{config.gamma:g} at {decays}"
    late = [m for m in milestones if m >= config.iters]
    if late:
        text += f" (a decay at {' and '.join(f'{m:,}' for m in late)} falls after the last iteration)"
    scaled_names = [label for name, label in (("warmup_iters", "warm-up"), ("milestones", "decays")) if name in derived]
    if scaled_names and config.iters != RECIPE_ITERS:
        text += f" ({' and '.join(scaled_names)} scaled from the recipe's 500 / 20,000 / 28,888 of 30,000)"
    return text


@dataclass
class Distributed:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed() -> Distributed:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Distributed(device=torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
        dist.init_process_group("nccl")
        return Distributed(rank, world, local, torch.device("cuda", local))
    dist.init_process_group("gloo")
    return Distributed(rank, world, local, torch.device("cpu"))


def step_losses(sam: torch.nn.Module, batch: dict[str, Any], config: TrainConfig, device: torch.device) -> LossParts:
    """Both passes for every image of the batch; losses over all instances of the batch.

    Instances with boundary clicks (SAMUSA) are decoded apart from the point and box ones (their
    prompts have another number of tokens); on the images `click_images` picks, their clicks
    first grow one by one where the prediction's boundary is furthest from the truth's."""
    with torch.set_grad_enabled(torch.is_grad_enabled() and encoder_is_trained(sam)):  # a frozen encoder keeps no graph
        embeddings = sam.image_encoder(batch["image"].to(device))
    image_size = batch["image"].shape[-1]
    passes: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[], []]
    targets: list[torch.Tensor] = []
    boundary_rows: list[torch.Tensor] = []
    clicked: list[tuple[torch.Tensor, torch.Tensor]] = []  # (clicks, labels) of each image's boundary instances
    grown = grown_clicks(sam, embeddings, batch, click_images(batch, config.boundary_click_images), device)

    def run(decoder: Any) -> None:
        if config.refine:
            first = decoder(multimask=False, mask_input=None)
            passes[0].append(first)
            passes[1].append(decoder(multimask=True, mask_input=first[0]))
        else:
            passes[0].append(decoder(multimask=True, mask_input=None))

    for i in range(len(embeddings)):
        points, boxes, is_box = batch["points"][i].to(device), batch["boxes"][i].to(device), batch["is_box"][i].to(device)
        if len(points) == 0:
            continue
        target = batch["targets"][i].to(device)
        embedding = embeddings[i : i + 1]
        on_boundary = batch["is_boundary"][i].to(device) if "is_boundary" in batch else None
        if on_boundary is None or not on_boundary.any():
            targets.append(target)
            run(partial(engine.decode, sam, embedding, points, boxes, is_box))
            continue
        plain = ~on_boundary
        if plain.any():
            targets.append(target[plain])
            run(partial(engine.decode, sam, embedding, points[plain], boxes[plain], is_box[plain]))
        if i in grown:
            coords, labels = grown[i]
        else:
            coords = batch["clicks"][i].to(device)[on_boundary]
            labels = torch.full(coords.shape[:2], engine.BOUNDARY_LABEL, dtype=torch.int, device=device)
        first_row = sum(len(t) for t in targets)
        targets.append(target[on_boundary])
        boundary_rows.append(torch.arange(first_row, first_row + len(coords), device=device))
        clicked.append((coords, labels))
        run(partial(engine.decode_clicks, sam, embedding, coords, labels))
    if not targets:
        zero = sum(p.sum() for p in sam.parameters() if p.requires_grad) * 0  # a loss that backward accepts
        return LossParts(zero, zero, zero)
    target = torch.cat(targets)
    boundary = None
    if boundary_rows:  # one heatmap call for the batch: the images' click lists padded to the longest
        width = max(coords.shape[1] for coords, _ in clicked)
        coords = torch.cat([F.pad(c, (0, 0, 0, width - c.shape[1])) for c, _ in clicked])
        labels = torch.cat([F.pad(k, (0, width - k.shape[1]), value=engine.PADDING_LABEL) for _, k in clicked])
        heatmaps = click_heatmaps(coords, labels == engine.BOUNDARY_LABEL, image_size, target.shape[-1])
        boundary = (torch.cat(boundary_rows), heatmaps)
    total: LossParts | None = None
    for outputs in passes:
        if not outputs:
            continue
        parts = mask_losses(
            torch.cat([o[0] for o in outputs]),
            torch.cat([o[1] for o in outputs]),
            target,
            config.selection,
            config.iou_loss,
            boundary,
            boundary_weight(config),
            config.boundary_loss_form,
        )
        total = parts if total is None else total + parts
    assert total is not None
    return total


def accumulate_gradients(
    model: torch.nn.Module,
    batches: Iterable[dict[str, Any]],
    count: int,
    device_type: str,
    dtype: torch.dtype | None,
    boundary_weight: float = 0.0,
) -> LossParts:
    """Backward of the mean loss over `count` micro-batches, as DDP averages it over GPUs, so
    one GPU accumulating 4 batches of 8 computes the gradient of the recipe's 4 x 8. Returns
    the mean loss parts (detached). Under DDP only the last micro-batch syncs gradients.
    `model` returns the focal, dice, IoU and boundary terms; the last counts `boundary_weight`."""
    sums: list[torch.Tensor] | None = None
    for index, batch in enumerate(batches):
        last = index == count - 1
        sync = model.no_sync() if not last and hasattr(model, "no_sync") else nullcontext()
        with sync:
            with torch.autocast(device_type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
                parts = LossParts(*model(batch), boundary_weight=boundary_weight)
            (parts.total if count == 1 else parts.total / count).backward()
        assert parts.boundary is not None
        values = [parts.focal.detach(), parts.dice.detach(), parts.iou.detach(), parts.boundary.detach()]
        sums = values if sums is None else [a + b for a, b in zip(sums, values)]
    assert sums is not None, "no micro-batch"
    return LossParts(*(v if count == 1 else v / count for v in sums), boundary_weight=boundary_weight)


def _save(
    run: Path,
    sam: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    step: int,
    config: TrainConfig,
    plan: BatchPlan,
    validation: ValState,
) -> None:
    weights = {k: v.detach().cpu() for k, v in sam.state_dict().items()}
    atomic_save(
        {
            "model": weights,
            "optimizer": optimizer.state_dict(),
            "step": step,
            "config": asdict(config),
            # The schedule and the data stream are functions of the step; they are stored so a
            # reader sees the whole state, and checked on resume.
            "scheduler": {"step": step, "lr": optimizer.param_groups[0]["lr"], "factor": lr_factor(step, config)},
            "sampler": {
                "seed": config.seed,
                "next_step": step,
                "batch_size": plan.batch_size,
                "accumulation": plan.accumulation,
                "world_size": plan.world,
            },
            "validation": validation.as_dict(),
            "rng": {"torch": torch.get_rng_state()},
        },
        run / "checkpoint.pt",
    )
    atomic_save(weights, run / "model.pth")  # segment_anything format: sam_model_registry[...](checkpoint=...)


def read_run_state(run: Path) -> dict[str, Any]:
    path = run / "checkpoint.pt"
    state = load_untrusted(path, f"{run} has no checkpoint.pt to resume from")
    if (
        not isinstance(state, dict)
        or not {"model", "optimizer", "step", "config"} <= set(state)
        or not isinstance(state["config"], dict)
    ):
        raise CheckpointError(f"{path} is not a us43d training checkpoint (it lacks the model, optimizer, step or config)")
    # plain dicts from here: a loaded OrderedDict can carry attributes named like dict's methods
    return {**dict(dict.items(state)), "config": dict(dict.items(state["config"]))}


RUN_FILES = ("checkpoint.pt", "model.pth", "best.pth", "metrics.jsonl", "run.json", "losses.png", "tensorboard")


def check_new_run_folder(run: Path) -> None:
    """A new run starts only in a new or empty folder: its first save would replace the
    weights of a run already there, and its metrics start afresh."""
    if run.exists() and not run.is_dir():
        raise Us43dError(f"--out {run} is a file, not a run folder")
    if not run.is_dir() or not any(run.iterdir()):
        return
    if any((run / name).exists() for name in RUN_FILES):
        raise Us43dError(f"{run} already holds a training run: continue it with --resume, or train into another --out")
    raise Us43dError(f"{run} is not empty and holds no training run: train into a new or empty folder (--out)")


def train(corpus: Path, run: Path, config: TrainConfig, console: Any = None) -> dict[str, Any]:
    """Start a new run in `run` (a new or empty folder) and return a summary."""
    require_init(config)
    check_new_run_folder(run)  # before any rank writes: every rank checks before the rendezvous
    if config.tensorboard:
        require_tensorboard()
    resolved, derived = resolve_new_run(config)
    return _launch(corpus, run, resolved, None, console, derived)


def resume(corpus: Path, run: Path, changes: Mapping[str, Any] | None = None, console: Any = None) -> dict[str, Any]:
    """Continue the run in `run` exactly where its last checkpoint stopped.

    It keeps the run's own settings; `changes` may set those in `RESUMABLE` (a larger `iters`
    extends the run, at the run's final learning rate) and repeat the others unchanged."""
    changes = dict(changes or {})
    state = read_run_state(run)
    config = continued_config(state["config"], changes, run)
    step = int(state["step"])
    if config.iters <= step:
        if "iters" in changes:
            raise Us43dError(
                f"{run} is at iteration {step}: --iters {config.iters} does not go beyond it (give more than {step})"
            )
        raise Us43dError(f"{run} already finished its {config.iters} iterations: give --iters above {step} to train further")
    if config.tensorboard:
        require_tensorboard()
    return _launch(corpus, run, config, state, console, frozenset())


def require_tensorboard() -> None:
    """TensorBoard is optional: say so before anything is written, not at the first log line."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise Us43dError(
            "--tensorboard needs the tensorboard package, which is not installed: "
            '`pip install tensorboard` (or `pip install -e ".[tensorboard]"`), or leave --tensorboard out; '
            "RUN/metrics.jsonl holds the same figures"
        ) from None


def _launch(
    corpus: Path, run: Path, config: TrainConfig, state: dict[str, Any] | None, console: Any, derived: frozenset[str]
) -> dict[str, Any]:
    ctx = setup_distributed()
    try:
        return _train(corpus, run, config, state, ctx, console, derived)
    finally:
        if ctx.world > 1:
            dist.destroy_process_group()


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    from us43d.corpus.writers import atomic_write_bytes

    atomic_write_bytes(path, (json.dumps(data, indent=2) + "\n").encode())


class _Log:
    """metrics.jsonl, and TensorBoard beside it when asked for (main process only)."""

    def __init__(self, run: Path, start: int, tensorboard: bool) -> None:
        self.path = run / "metrics.jsonl"
        _keep_metrics_until(self.path, start)
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step drops events a crashed run logged past its checkpoint, as for metrics.jsonl
            self.writer = SummaryWriter(log_dir=str(run / "tensorboard"), purge_step=start)

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.writer is None:
            return
        step = record["step"]
        for name, value in record.items():
            if name != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(("val/" if name.startswith("val_") else "train/") + name, value, step)
        for dataset, prompts in record.get("val", {}).items():
            for prompt, scores in prompts.items():
                for metric, value in scores.items():
                    self.writer.add_scalar(f"val/{dataset}/{prompt}/{metric}", value, step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _train(
    corpus: Path,
    run: Path,
    config: TrainConfig,
    state: dict[str, Any] | None,
    ctx: Distributed,
    console: Any,
    derived: frozenset[str],
) -> dict[str, Any]:
    torch.manual_seed(config.seed)
    shape = model_config(config.model, config.image_size)
    selection = load_selection(corpus, "train", config.exclude, config.datasets or None)
    if not selection.entries:
        raise Us43dError("no training images left after --exclude / --datasets")
    plan = batch_plan(config, ctx.world)
    dtype = autocast_dtype(config.precision, ctx.device)
    truths, val_images = (
        read_val_files(corpus, list(selection.counts), config.val_max_images, config.seed) if config.val_every else ({}, None)
    )
    notes = []
    if config.val_every and not truths:
        if state is None and "val_every" not in derived:
            raise Us43dError(
                f"--val-every {config.val_every}: the datasets trained on have no val images in {corpus}; "
                "leave --val-every out or give 0"
            )
        notes.append("validation: off (the datasets trained on have no val images)")
        config = replace(config, val_every=0)
    init = None if state is not None or starts_from_random(config.init) else _read_init(shape, config)
    sam = build_model(shape, efficient_attention=config.efficient_attention, decoder=config.decoder)
    if uses_boundary(config.prompt):
        engine.add_boundary_embedding(sam)
    if state is not None:
        load_into(sam, state["model"], "the run's checkpoint")
    elif init is not None:
        _load_init(sam, init, config, console if ctx.main else None)
    if config.freeze_encoder:
        freeze_image_encoder(sam)
    if config.activation_checkpointing:
        use_activation_checkpointing(sam)
    sam.to(ctx.device).train()
    model: torch.nn.Module = TrainStep(sam, config, ctx.device)
    if ctx.world > 1:
        # Unused parameters are normal here (no box prompt in a batch leaves the corner
        # embeddings idle), so DDP must look for them.
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[ctx.local_rank] if ctx.device.type == "cuda" else None, find_unused_parameters=True
        )
    trained = [p for p in sam.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=config.lr, weight_decay=config.weight_decay, betas=(0.9, 0.999), eps=1e-8)
    start = 0
    validation = ValState()
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        start = int(state["step"])
        validation = ValState.from_dict(state.get("validation"))
    dataset = TrainDataset(
        selection.images,
        selection.entries,
        shape.image_size,
        shape.low_res_size,
        flip=config.flip,
        prompt=config.prompt,
        max_clicks=config.boundary_max_clicks,
    )
    sampler = InfiniteBatchSampler(
        len(dataset), plan.batch_size, config.seed, ctx.rank, ctx.world, start_step=start, accumulation=plan.accumulation
    )
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=config.workers,
        collate_fn=collate,
        persistent_workers=config.workers > 0,
        prefetch_factor=2 if config.workers > 0 else None,
    )
    validator = (
        Validator.for_run(val_images, truths, shape.image_size, config.refine, ctx.rank, ctx.world)
        if config.val_every and val_images
        else None
    )
    run.mkdir(parents=True, exist_ok=True)
    warmup, milestones = schedule(config)
    summary: dict[str, Any] = {
        "config": asdict(config),
        "world_size": ctx.world,
        "device": str(ctx.device),
        "batch": {
            "per_step": plan.batch_size,
            "accumulation": plan.accumulation,
            "world_size": ctx.world,
            "per_iteration": plan.per_iteration,
        },
        "schedule": {
            "warmup_iters": warmup,
            "milestones": list(milestones),
            "derived_from_iters": sorted({"warmup_iters", "milestones", "val_every"} & derived),
        },
        "validation": (
            {
                "every": config.val_every,
                "images": validator.image_counts,
                "prompts": ["point", "box"],
                "class_agnostic": True,
                "refine": validator.protocol.refine,
                "postprocess": validator.protocol.postprocess,
            }
            if validator
            else None
        ),
        "best": _best_entry(validation),
        "datasets_used": selection.counts,
        "datasets_excluded": selection.excluded,
        "images": len(selection.entries),
        "resumed_at": start,
    }
    if ctx.main:
        _write_json(run / "run.json", summary)
        if console:
            console.print(
                f"training on {len(selection.entries)} images of {len(selection.counts)} datasets "
                f"({', '.join(f'{k} {v}' for k, v in selection.counts.items())})"
            )
            if selection.excluded:
                console.print(
                    f"left out by --exclude {','.join(config.exclude)}: "
                    f"{', '.join(f'{k} {v}' for k, v in selection.excluded.items())}"
                )
            console.print(plan.describe(config.global_batch))
            console.print(describe_schedule(config, derived) + (" (the run's own)" if state is not None else ""))
            console.print(f"memory: {describe_memory(config)}")
            if validator:
                console.print(
                    f"validation: every {'iteration' if config.val_every == 1 else f'{config.val_every:,} iterations'}"
                    " and at the end, on "
                    f"{sum(validator.image_counts.values())} val images of {len(validator.datasets)} "
                    f"dataset{'' if len(validator.datasets) == 1 else 's'} "
                    f"(class-agnostic, point and box prompts, refinement {'on' if validator.protocol.refine else 'off'}); "
                    "the best mean mAP is kept in best.pth"
                )
            for note in notes:
                console.print(note)
    log = _Log(run, start, config.tensorboard) if ctx.main else None
    with_boundary = uses_boundary(config.prompt)
    progress = _progress(console if ctx.main else None, config.iters, start)
    started, seen = time.perf_counter(), 0
    batches = iter(loader)
    if state is not None and "rng" in state:
        # after the loader drew its seed, as a run that never stopped had done by then: the
        # authors' decoder draws its dropout from this generator at every step
        torch.set_rng_state(state["rng"]["torch"])
    try:
        for step in range(start, config.iters):
            for group in optimizer.param_groups:
                group["lr"] = config.lr * lr_factor(step, config)
            optimizer.zero_grad(set_to_none=True)
            micro = (next(batches) for _ in range(plan.accumulation))
            parts = accumulate_gradients(model, micro, plan.accumulation, ctx.device.type, dtype, boundary_weight(config))
            grad_norm = torch.nn.utils.clip_grad_norm_(trained, config.grad_clip)
            optimizer.step()
            seen += plan.per_iteration
            done = step + 1
            if log is not None and (done % config.log_every == 0 or done == config.iters):
                log.write(
                    {
                        "step": done,
                        "loss": parts.total.item(),
                        "focal": parts.focal.item(),
                        "dice": parts.dice.item(),
                        "iou": parts.iou.item(),
                        **({"boundary": parts.boundary.item()} if parts.boundary is not None and with_boundary else {}),
                        "lr": optimizer.param_groups[0]["lr"],
                        "grad_norm": float(grad_norm),
                        "images_per_s": seen / (time.perf_counter() - started),
                    }
                )
            if progress is not None:
                progress[0].update(progress[1], advance=1, description=f"loss {parts.total.item():.3f}")
            if validator and (done % config.val_every == 0 or done == config.iters):
                table = validator.score(sam, ctx.device)
                score = summary_map(table)
                improved = validation.improves(score)
                if improved:
                    validation = ValState(done, score)
                if ctx.main:
                    if improved:
                        atomic_save({k: v.detach().cpu() for k, v in sam.state_dict().items()}, run / "best.pth")
                        summary["best"] = _best_entry(validation)
                        _write_json(run / "run.json", summary)
                    assert log is not None
                    log.write(
                        {
                            "step": done,
                            "val_mAP": score,
                            "val": table,
                            "val_best_step": validation.best_step,
                            "val_protocol": validator.protocol.as_dict(),  # how the figures were measured
                        }
                    )
                    if console:
                        best = f"best {validation.best_map:.2f} at step {validation.best_step}"
                        console.print(f"step {done}: val mAP {score:.2f} ({'best so far: best.pth' if improved else best})")
            if ctx.main and (done % config.checkpoint_every == 0 or done == config.iters):
                _save(run, sam, optimizer, done, config, plan, validation)
    finally:
        if progress is not None:
            progress[0].stop()
        if log is not None:
            log.close()
    if ctx.world > 1:
        dist.barrier()
    if ctx.main:
        from us43d.training.plot import plot_losses

        plot_losses(run / "metrics.jsonl", run / "losses.png")
    return {
        "run": str(run),
        "steps": config.iters,
        "images": len(selection.entries),
        "datasets": selection.counts,
        "batch": summary["batch"],
        "best": _best_entry(validation),
    }


NO_INIT = "none"
SAM_VIT_B_URL = "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth"


def starts_from_random(init: str | None) -> bool:
    return init is None or init.strip().lower() == NO_INIT


def require_init(config: TrainConfig) -> None:
    """The recipe fine-tunes SAM: random weights only when asked for by name."""
    if config.init is None:
        raise Us43dError(
            f"no starting weights: the recipe fine-tunes SAM ViT-B, so give --init sam_vit_b_01ec64.pth (official "
            f"SAM weights, from {SAM_VIT_B_URL}); --init also takes MedSAM and UltraSam checkpoints and a run's "
            f"model.pth; --init {NO_INIT} trains from random weights"
        )


def _read_init(shape: Any, config: TrainConfig) -> Weights:
    """The --init weights, refused before any model is built if they are of another shape."""
    from us43d.training.model_shape import check_fits

    assert config.init is not None
    weights = read_weights(Path(config.init))
    check_fits(weights, shape, config.init)
    return weights


def _load_init(sam: torch.nn.Module, weights: Weights, config: TrainConfig, console: Any) -> None:
    """The --init weights in the run's decoder form (converted when the file says its own).

    A boundary run started from weights without a boundary embedding starts it as a copy of
    their positive click's; a run without boundary prompts leaves out the embedding of weights
    that have one, so its model.pth stays a plain segment_anything file."""
    state = weights.for_decoder(config.decoder)
    notes = []
    if engine.BOUNDARY_EMBED_KEY in state and not engine.has_boundary_embedding(sam):
        state = {k: v for k, v in state.items() if k != engine.BOUNDARY_EMBED_KEY}
        notes.append(f"{config.init} has a boundary-click embedding; left out (--prompt {config.prompt} has no boundary clicks)")
    elif engine.BOUNDARY_EMBED_KEY not in state and engine.has_boundary_embedding(sam):
        positive = state.get("prompt_encoder.point_embeddings.1.weight")
        if positive is not None:
            state = {**state, engine.BOUNDARY_EMBED_KEY: positive.clone()}
        notes.append(f"{config.init} has no boundary-click embedding; it starts as a copy of the positive click's")
    kept = load_into(sam, state, str(config.init))
    if console:
        for note in notes:
            console.print(f"note: {note}")
        for note in weights.notes:
            console.print(f"note: {note}")
        if weights.form is not None and weights.form != config.decoder:
            console.print(f"note: {config.init} holds weights for {DECODER_NAMES[weights.form]}: converted for the run's")
        if kept:
            console.print(f"note: {config.init} has no mask_downscaling weights; kept the fresh ones")


def _best_entry(validation: ValState) -> dict[str, Any] | None:
    if validation.best_step is None:
        return None
    return {"file": "best.pth", "step": validation.best_step, "val_mAP": validation.best_map}


def _keep_metrics_until(path: Path, step: int) -> None:
    """Drop records past the checkpoint a run resumes from (logged before a crash), so the
    metrics hold each step once, as an uninterrupted run's do."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by the crash
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= step:
            kept.append(line + "\n")
    path.write_text("".join(kept))


class TrainStep(torch.nn.Module):
    """The whole loss as one module, so DistributedDataParallel can wrap it: DDP syncs the
    gradients of whatever parameters this forward used."""

    def __init__(self, sam: torch.nn.Module, config: TrainConfig, device: torch.device) -> None:
        super().__init__()
        self.sam, self.config, self.device = sam, config, device

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        parts = step_losses(self.sam, batch, self.config, self.device)
        boundary = parts.boundary if parts.boundary is not None else parts.focal.new_zeros(())  # DDP returns tensors
        return parts.focal, parts.dice, parts.iou, boundary


def _progress(console: Any, total: int, start: int):
    if console is None:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )
    progress.start()
    return progress, progress.add_task("training", total=total, completed=start)
