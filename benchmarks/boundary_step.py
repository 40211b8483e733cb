"""What SAMUSA's boundary prompts cost a training step: the tiny model on CPU, the recipe's
point/box prompts against boundary clicks (first clicks drawn in the loader, clicks grown on
2 images per step to a count of 2..10 drawn per batch, the boundary loss).

    python benchmarks/boundary_step.py [--steps 12] [--rounds 5] [--batch-size 8] [--threads N]
    python benchmarks/boundary_step.py --model vit_b --image-size 256 --batch-size 2   # the real model's proportions

Both modes train the same model from the same weights on the same images of a synthetic
BUS-BRA-like corpus (us43d.demo), batch 8 as the recipe, refinement pass on. It times the
trainer's own step (prompt encoder and decoder passes, losses, backward, gradient clip,
AdamW: train.accumulate_gradients on train.TrainStep), alternating the modes step by step
so that a machine's load hits both, and the loader's sample preparation per image. Printed:
median seconds per step and per sample in each mode and the overhead in %.

Goal: boundary prompts and loss add at most 10 % to a training step.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from us43d.corpus.build import BuildOptions, build_corpus
from us43d.demo import make_bus_bra_like
from us43d.registry import Registry
from us43d.training.click_growth import click_images
from us43d.training.data import TrainDataset, collate, load_selection
from us43d.training.engine import add_boundary_embedding
from us43d.training.sam import build_model, model_config
from us43d.training.train import TrainConfig, TrainStep, accumulate_gradients, boundary_weight

MODES = {"recipe": "point=0.5,box=0.5", "boundary": "boundary", "no-growth": "boundary"}  # no-growth: clicks stay at 2


def batches(dataset: TrainDataset, count: int, size: int) -> tuple[list[dict], float]:
    """`count` batches of `size` samples, and the median seconds to prepare one sample."""
    made, seconds = [], []
    for step in range(count):
        samples = []
        for slot in range(size):
            index = (step * size + slot) % len(dataset)
            started = time.perf_counter()
            samples.append(dataset[(index, 1000 + step * size + slot)])
            seconds.append(time.perf_counter() - started)
        made.append(collate(samples))
    return made, statistics.median(seconds)


class Trainer:
    """The trainer's step (train.accumulate_gradients on train.TrainStep, clip, AdamW) for one mode."""

    def __init__(self, config: TrainConfig, initial: dict) -> None:
        torch.manual_seed(0)
        self.sam = build_model(model_config(config.model, config.image_size))
        if "boundary" in config.prompt:
            add_boundary_embedding(self.sam)  # starts as the positive click, as in a run
        self.sam.load_state_dict(initial, strict=False)
        self.sam.train()
        self.config = config
        self.step_module = TrainStep(self.sam, config, torch.device("cpu"))
        self.optimizer = torch.optim.AdamW(self.sam.parameters(), lr=1e-4, weight_decay=1e-4)
        self.weight = boundary_weight(config)

    def step(self, batch: dict) -> float:
        started = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        accumulate_gradients(self.step_module, [batch], 1, "cpu", None, self.weight)
        torch.nn.utils.clip_grad_norm_(self.sam.parameters(), self.config.grad_clip)
        self.optimizer.step()
        return time.perf_counter() - started


def timed_growth() -> list[float | None]:
    """Times the trainer's click growth (train.grown_clicks) from now on: seconds per call that
    grew clicks, None for calls with nothing to grow."""
    import us43d.training.train as train_module

    seconds: list[float | None] = []
    grow = train_module.grown_clicks

    def timed(sam, embeddings, batch, images, device):  # noqa: ANN001, ANN202 - the trainer's own signature
        started = time.perf_counter()
        grown = grow(sam, embeddings, batch, images, device)
        seconds.append(time.perf_counter() - started if grown else None)
        return grown

    train_module.grown_clicks = timed
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=12, help="steps per mode and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--model", default="tiny", help="tiny (the goal's configuration) or vit_b, vit_l, vit_h")
    parser.add_argument("--image-size", type=int, default=None, help="input side (default: the model's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="us43d-boundary-"))
    try:
        make_bus_bra_like(work / "raw" / "BUS-BRA", patients=20, seed=3)
        build_corpus(Registry.load(), work / "raw", work / "corpus", ["BUS-BRA"], BuildOptions(workers=1, progress=False))
        selection = load_selection(work / "corpus", "train")
        entries = selection.entries
        shape = model_config(args.model, args.image_size)
        configs = {
            name: TrainConfig(
                model=args.model,
                image_size=args.image_size,
                prompt=prompt,
                refine=True,
                boundary_click_images=0 if name == "no-growth" else 2,
            )
            for name, prompt in MODES.items()
        }
        prepared, per_sample = {}, {}
        for name, config in configs.items():
            dataset = TrainDataset(
                selection.images, entries, shape.image_size, shape.low_res_size, prompt=config.prompt, max_clicks=10
            )
            prepared[name], per_sample[name] = batches(dataset, args.steps, args.batch_size)
        torch.manual_seed(0)
        initial = build_model(shape).state_dict()
        trainers = {name: Trainer(config, initial) for name, config in configs.items()}
        for name, trainer in trainers.items():  # warm-up
            trainer.step(prepared[name][0])
        times: dict[str, list[float]] = {name: [] for name in configs}
        growth = timed_growth()
        for _ in range(args.rounds):
            for index in range(args.steps):  # the modes step by step, so that load on the machine hits both
                for name, trainer in trainers.items():
                    times[name].append(trainer.step(prepared[name][index]))
        step = {name: statistics.median(values) for name, values in times.items()}
        growing = [click_images(b, configs["boundary"].boundary_click_images) for b in prepared["boundary"]]
        added = [int(b["click_count"][images[0]]) - 2 if images else 0 for b, images in zip(prepared["boundary"], growing)]
        print(
            f"{args.model} model ({shape.image_size} px, {shape.low_res_size} x {shape.low_res_size} logits), CPU, "
            f"{torch.get_num_threads()} threads, batch {args.batch_size}, refinement on, "
            f"{args.rounds} rounds x {args.steps} steps per mode"
        )
        print(
            f"  boundary mode: every instance on boundary clicks; 2 images per step grow to 2..10 clicks, one draw per "
            f"batch ({statistics.mean(added):.1f} clicks added per step on average: as many decoder calls), "
            "boundary loss weight 2"
        )
        for name in configs:
            print(f"  {name:9s} step {step[name] * 1000:8.1f} ms   sample {per_sample[name] * 1000:6.2f} ms")
        overhead = 100 * (step["boundary"] / step["recipe"] - 1)
        without_growth = 100 * (step["no-growth"] / step["recipe"] - 1)
        loader = 100 * (per_sample["boundary"] / per_sample["recipe"] - 1)
        print(f"  training step overhead: {overhead:+.1f} % (goal <= 10 %); without growing clicks: {without_growth:+.1f} %")
        print(f"  sample preparation overhead: {loader:+.1f} % (in the loader's worker processes)")
        grown = [seconds for seconds in growth if seconds is not None]
        print(
            f"  inside the boundary step, growing the clicks took {statistics.median(grown) * 1000:.1f} ms "
            f"(median of {len(grown)} steps): {100 * statistics.median(grown) / step['recipe']:.1f} % of a recipe step"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
