"""The training loop: UltraSam's recipe on plain PyTorch, one process per GPU via torchrun.

Run state (model, optimiser, step, configuration) is saved atomically; the learning rate
and the data stream are pure functions of the step, so `--resume` continues exactly.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import yaml

from us43d.errors import Us43dError
from us43d.training import engine
from us43d.training.checkpoints import atomic_save, load_into, load_untrusted, read_state_dict
from us43d.training.data import InfiniteBatchSampler, TrainDataset, collate, load_selection
from us43d.training.losses import LossParts, mask_losses
from us43d.training.sam import build_model, model_config


@dataclass
class TrainConfig:
    """Defaults are the paper's recipe (ViT-B, 1024, 8 images per GPU, 30,000 iterations)."""

    model: str = "vit_b"
    image_size: int | None = None  # None: the model's own (1024 for ViT models)
    iters: int = 30_000
    batch_size: int = 8
    lr: float = 1e-4
    weight_decay: float = 1e-4
    warmup_iters: int = 500
    warmup_factor: float = 0.001
    milestones: tuple[int, ...] = (20_000, 28_888)
    gamma: float = 0.1
    grad_clip: float = 0.1
    refine: bool = True  # one refinement pass with the previous mask logits as mask prompt
    selection: str = "iou"  # "iou" (authors' code) or "loss" (paper's wording)
    iou_loss: str = "mse"  # "mse" (authors' code) or "l1" (paper's wording)
    flip: bool = True
    efficient_attention: bool = True
    bf16: bool = True  # autocast on GPU only
    seed: int = 0
    workers: int = 2
    checkpoint_every: int = 2_000
    log_every: int = 10
    exclude: tuple[str, ...] = ()
    datasets: tuple[str, ...] = ()
    init: str | None = None

    @classmethod
    def from_file(cls, path: Path, **overrides: Any) -> TrainConfig:
        data = yaml.safe_load(path.read_text()) if path else {}
        return cls.from_dict({**(data or {}), **{k: v for k, v in overrides.items() if v is not None}})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise Us43dError(f"unknown training settings: {unknown}")
        for key in ("milestones", "exclude", "datasets"):
            if key in data and data[key] is not None:
                data[key] = tuple(data[key])
        config = cls(**data)
        if config.selection not in ("iou", "loss") or config.iou_loss not in ("mse", "l1"):
            raise Us43dError("selection must be iou|loss and iou_loss mse|l1")
        return config


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
    return load_untrusted(run / "checkpoint.pt", f"{run} has no checkpoint.pt to resume from")


def train(corpus: Path, run: Path, config: TrainConfig, resume: bool = False, console: Any = None) -> dict[str, Any]:
    """Train and return a summary; with `resume`, continue the run in `run` exactly."""
    state = None
    if resume:
        state = read_run_state(run)
        config = TrainConfig.from_dict(dict(state["config"]))
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
    sam = build_model(shape, efficient_attention=config.efficient_attention)
    if state is not None:
        load_into(sam, state["model"], "the run's checkpoint")
    elif config.init:
        kept = load_into(sam, read_state_dict(Path(config.init)), config.init)
        if kept and ctx.main and console:
            console.print(f"note: {config.init} has no mask_downscaling weights; kept the fresh ones")
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
        if "rng" in state:
            torch.set_rng_state(state["rng"]["torch"])
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
    if state is None and ctx.main:
        metrics_path.unlink(missing_ok=True)
    progress = _progress(console if ctx.main else None, config.iters, start)
    started, seen = time.perf_counter(), 0
    batches = iter(loader)
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
