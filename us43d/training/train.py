"""The training loop: UltraSam's recipe on plain PyTorch, one process per GPU via torchrun.

Run state (model, optimiser, step, configuration) is saved atomically; the learning rate
and the data stream are pure functions of the step, so `--resume` continues exactly.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
import torch.distributed as dist
import yaml
from pydantic import BeforeValidator, Field, TypeAdapter, ValidationError

from us43d.errors import Us43dError
from us43d.training import engine
from us43d.training.checkpoints import CheckpointError, Weights, atomic_save, load_into, load_untrusted, read_weights
from us43d.training.data import InfiniteBatchSampler, TrainDataset, collate, load_selection
from us43d.training.losses import LossParts, mask_losses
from us43d.training.sam import DECODER_NAMES, build_model, model_config


def _names(value: Any) -> Any:
    """A YAML `exclude: breast,ovary` means two names, not the letters of one string."""
    return tuple(part.strip() for part in value.split(",") if part.strip()) if isinstance(value, str) else value


# Constraints checked where settings come in (flags, YAML); code that builds a TrainConfig
# directly is trusted.
Count = Annotated[int, Field(ge=1)]
NonNegative = Annotated[int, Field(ge=0)]
Rate = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Names = Annotated[tuple[str, ...], BeforeValidator(_names)]


@dataclass
class TrainConfig:
    """Defaults are the paper's recipe (ViT-B, 1024, 8 images per GPU, 30,000 iterations)."""

    model: str = "vit_b"
    image_size: Count | None = None  # None: the model's own (1024 for ViT models)
    iters: Count = 30_000
    batch_size: Count = 8
    lr: Rate = 1e-4
    weight_decay: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 1e-4
    warmup_iters: NonNegative = 500
    warmup_factor: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] = 0.001
    milestones: tuple[Count, ...] = (20_000, 28_888)
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
    bf16: bool = True  # autocast on GPU only
    seed: NonNegative = 0
    workers: NonNegative = 2
    checkpoint_every: Count = 2_000
    log_every: Count = 10
    exclude: Names = ()
    datasets: Names = ()
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
# weights nor the data stream.
RESUMABLE = ("iters", "workers", "checkpoint_every", "log_every")


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
    # runs saved before the decoder setting existed ran segment_anything's decoder
    own = TrainConfig.from_dict({"decoder": "sam", **saved}, run / "checkpoint.pt")
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


def lr_factor(step: int, config: TrainConfig) -> float:
    """Linear warm-up from warmup_factor to 1 over the first iterations, then x gamma at each milestone."""
    warm = 1.0
    if step < config.warmup_iters:
        warm = config.warmup_factor + (1 - config.warmup_factor) * step / config.warmup_iters
    decay = config.gamma ** sum(step >= m for m in config.milestones)
    return warm * decay


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
    """Both passes for every image of the batch; losses over all instances of the batch."""
    embeddings = sam.image_encoder(batch["image"].to(device))
    passes: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[], []]
    targets = []
    for i in range(len(embeddings)):
        points, boxes, is_box = batch["points"][i].to(device), batch["boxes"][i].to(device), batch["is_box"][i].to(device)
        if len(points) == 0:
            continue
        targets.append(batch["targets"][i].to(device))
        embedding = embeddings[i : i + 1]
        if config.refine:
            first = engine.decode(sam, embedding, points, boxes, is_box, multimask=False)
            second = engine.decode(sam, embedding, points, boxes, is_box, multimask=True, mask_input=first[0])
            passes[0].append(first)
            passes[1].append(second)
        else:
            passes[0].append(engine.decode(sam, embedding, points, boxes, is_box, multimask=True))
    if not targets:
        zero = embeddings.sum() * 0
        return LossParts(zero, zero, zero)
    target = torch.cat(targets)
    total: LossParts | None = None
    for outputs in passes:
        if not outputs:
            continue
        parts = mask_losses(
            torch.cat([o[0] for o in outputs]), torch.cat([o[1] for o in outputs]), target, config.selection, config.iou_loss
        )
        total = parts if total is None else LossParts(total.focal + parts.focal, total.dice + parts.dice, total.iou + parts.iou)
    assert total is not None
    return total


def _save(run: Path, sam: torch.nn.Module, optimizer: torch.optim.Optimizer, step: int, config: TrainConfig) -> None:
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
            "sampler": {"seed": config.seed, "next_step": step, "batch_size": config.batch_size},
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
    return state


RUN_FILES = ("checkpoint.pt", "model.pth", "metrics.jsonl", "run.json", "losses.png")


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
    return _launch(corpus, run, config, None, console)


def resume(corpus: Path, run: Path, changes: Mapping[str, Any] | None = None, console: Any = None) -> dict[str, Any]:
    """Continue the run in `run` exactly where its last checkpoint stopped.

    It keeps the run's own settings; `changes` may set those in `RESUMABLE` (a larger `iters`
    extends the run) and repeat the others unchanged."""
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
    return _launch(corpus, run, config, state, console)


def _launch(corpus: Path, run: Path, config: TrainConfig, state: dict[str, Any] | None, console: Any) -> dict[str, Any]:
    ctx = setup_distributed()
    try:
        return _train(corpus, run, config, state, ctx, console)
    finally:
        if ctx.world > 1:
            dist.destroy_process_group()


def _train(
    corpus: Path, run: Path, config: TrainConfig, state: dict[str, Any] | None, ctx: Distributed, console: Any
) -> dict[str, Any]:
    torch.manual_seed(config.seed)
    shape = model_config(config.model, config.image_size)
    selection = load_selection(corpus, "train", config.exclude, config.datasets or None)
    if not selection.entries:
        raise Us43dError("no training images left after --exclude / --datasets")
    init = None if state is not None or starts_from_random(config.init) else _read_init(shape, config)
    sam = build_model(shape, efficient_attention=config.efficient_attention, decoder=config.decoder)
    if state is not None:
        load_into(sam, state["model"], "the run's checkpoint")
    elif init is not None:
        _load_init(sam, init, config, console if ctx.main else None)
    sam.to(ctx.device).train()
    model: torch.nn.Module = TrainStep(sam, config, ctx.device)
    if ctx.world > 1:
        # Unused parameters are normal here (no box prompt in a batch leaves the corner
        # embeddings idle), so DDP must look for them.
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[ctx.local_rank] if ctx.device.type == "cuda" else None, find_unused_parameters=True
        )
    optimizer = torch.optim.AdamW(sam.parameters(), lr=config.lr, weight_decay=config.weight_decay, betas=(0.9, 0.999), eps=1e-8)
    start = 0
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        start = int(state["step"])
    dataset = TrainDataset(corpus, selection.entries, shape.image_size, shape.low_res_size, flip=config.flip)
    sampler = InfiniteBatchSampler(len(dataset), config.batch_size, config.seed, ctx.rank, ctx.world, start_step=start)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=config.workers,
        collate_fn=collate,
        persistent_workers=config.workers > 0,
        prefetch_factor=2 if config.workers > 0 else None,
    )
    run.mkdir(parents=True, exist_ok=True)
    if ctx.main:
        summary = {
            "config": asdict(config),
            "world_size": ctx.world,
            "device": str(ctx.device),
            "datasets_used": selection.counts,
            "datasets_excluded": selection.excluded,
            "images": len(selection.entries),
            "resumed_at": start,
        }
        (run / "run.json").write_text(json.dumps(summary, indent=2) + "\n")
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
    autocast = ctx.device.type == "cuda" and config.bf16
    metrics_path = run / "metrics.jsonl"
    if ctx.main:
        _keep_metrics_until(metrics_path, start)
    progress = _progress(console if ctx.main else None, config.iters, start)
    started, seen = time.perf_counter(), 0
    batches = iter(loader)
    if state is not None and "rng" in state:
        # after the loader drew its seed, as a run that never stopped had done by then: the
        # authors' decoder draws its dropout from this generator at every step
        torch.set_rng_state(state["rng"]["torch"])
    for step in range(start, config.iters):
        batch = next(batches)
        for group in optimizer.param_groups:
            group["lr"] = config.lr * lr_factor(step, config)
        with torch.autocast(ctx.device.type, dtype=torch.bfloat16, enabled=autocast):
            parts = LossParts(*model(batch))
        optimizer.zero_grad(set_to_none=True)
        parts.total.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(sam.parameters(), config.grad_clip)
        optimizer.step()
        seen += len(batch["image"]) * ctx.world
        done = step + 1
        if ctx.main and (done % config.log_every == 0 or done == config.iters):
            record = {
                "step": done,
                "loss": parts.total.item(),
                "focal": parts.focal.item(),
                "dice": parts.dice.item(),
                "iou": parts.iou.item(),
                "lr": optimizer.param_groups[0]["lr"],
                "grad_norm": float(grad_norm),
                "images_per_s": seen / (time.perf_counter() - started),
            }
            with metrics_path.open("a") as handle:
                handle.write(json.dumps(record) + "\n")
        if progress is not None:
            progress[0].update(progress[1], advance=1, description=f"loss {parts.total.item():.3f}")
        if ctx.main and (done % config.checkpoint_every == 0 or done == config.iters):
            _save(run, sam, optimizer, done, config)
    if progress is not None:
        progress[0].stop()
    if ctx.world > 1:
        dist.barrier()
    if ctx.main:
        from us43d.training.plot import plot_losses

        plot_losses(metrics_path, run / "losses.png")
    return {"run": str(run), "steps": config.iters, "images": len(selection.entries), "datasets": selection.counts}


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
    """The --init weights in the run's decoder form (converted when the file says its own)."""
    kept = load_into(sam, weights.for_decoder(config.decoder), str(config.init))
    if console:
        for note in weights.notes:
            console.print(f"note: {note}")
        if weights.form is not None and weights.form != config.decoder:
            console.print(f"note: {config.init} holds weights for {DECODER_NAMES[weights.form]}: converted for the run's")
        if kept:
            console.print(f"note: {config.init} has no mask_downscaling weights; kept the fresh ones")


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

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        parts = step_losses(self.sam, batch, self.config, self.device)
        return parts.focal, parts.dice, parts.iou


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
