"""Training-step throughput and peak memory, with and without the SDPA attention.

    python benchmarks/train_step.py                 # GPU: ViT-B, 1024, batch 8, bf16; CPU: a smaller shape
    python benchmarks/train_step.py --model vit_b --image-size 512 --batch-size 2 --steps 3

Each variant runs in its own process so its peak memory is its own (CUDA: max allocated;
CPU: peak resident set size). The step is the full recipe step: image encoder, two decoder
passes (refinement), losses, backward, AdamW. Goal on a GPU: 3x the paper's 4.2 images/s.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

PAPER_IMAGES_PER_S = 4.2


def one_variant(args: argparse.Namespace) -> dict[str, float]:
    import torch

    from us43d.training.sam import build_model, model_config
    from us43d.training.train import TrainConfig, step_losses

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    shape = model_config(args.model, args.image_size)
    sam = build_model(shape, efficient_attention=args.efficient).to(device).train()
    optimizer = torch.optim.AdamW(sam.parameters(), lr=1e-4, weight_decay=1e-4)
    config = TrainConfig(model=args.model, refine=True)
    generator = torch.Generator().manual_seed(0)
    low = shape.low_res_size
    instances = 3
    batch = {
        "image": torch.randn(args.batch_size, 3, shape.image_size, shape.image_size, generator=generator),
        "targets": [(torch.rand(instances, low, low, generator=generator) > 0.7).float() for _ in range(args.batch_size)],
        "points": [torch.rand(instances, 2, generator=generator) * shape.image_size for _ in range(args.batch_size)],
        "boxes": [
            torch.tensor([[10.0, 10.0, shape.image_size * 0.6, shape.image_size * 0.5]] * instances)
            for _ in range(args.batch_size)
        ],
        "is_box": [torch.tensor([True, False, True]) for _ in range(args.batch_size)],
    }

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            loss = step_losses(sam, batch, config, device).total
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(sam.parameters(), 0.1)
        optimizer.step()

    for _ in range(args.warmup):
        step()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    for _ in range(args.steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return {
        "images_per_s": args.batch_size * args.steps / seconds,
        "peak_gib": peak,
        "device": torch.cuda.get_device_name() if cuda else "cpu",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None)
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--variant", choices=["sdpa", "reference"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    import torch

    cuda = torch.cuda.is_available()
    args.model = args.model or "vit_b"
    args.image_size = args.image_size or (1024 if cuda else 256)
    args.batch_size = args.batch_size or (8 if cuda else 2)
    args.steps = args.steps or (10 if cuda else 3)
    if args.variant:
        args.efficient = args.variant == "sdpa"
        print(json.dumps(one_variant(args)))
        return
    results = {}
    for variant in ("reference", "sdpa"):
        command = [
            sys.executable,
            __file__,
            "--variant",
            variant,
            "--model",
            args.model,
            "--image-size",
            str(args.image_size),
            "--batch-size",
            str(args.batch_size),
            "--steps",
            str(args.steps),
            "--warmup",
            str(args.warmup),
        ]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        results[variant] = json.loads(output)
    print(
        f"training step, {args.model} at {args.image_size}, batch {args.batch_size}, {'bf16' if cuda else 'fp32'}, "
        f"device {results['sdpa']['device']}"
    )
    for variant, label in (("reference", "segment_anything attention"), ("sdpa", "SDPA attention (default)")):
        r = results[variant]
        print(f"  {label:28s} {r['images_per_s']:7.2f} images/s   peak {'GPU' if cuda else 'RSS'} {r['peak_gib']:.2f} GiB")
    ref, new = results["reference"], results["sdpa"]
    print(f"  speed-up x{new['images_per_s'] / ref['images_per_s']:.2f}, memory x{ref['peak_gib'] / new['peak_gib']:.2f} less")
    if cuda:
        print(
            f"  against the paper's {PAPER_IMAGES_PER_S} images/s per GPU: x{new['images_per_s'] / PAPER_IMAGES_PER_S:.2f} (goal x3)"
        )


if __name__ == "__main__":
    main()
