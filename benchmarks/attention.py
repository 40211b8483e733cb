"""The image encoder's global attention at 64 x 64 tokens (a 1024 input), forward and backward:
segment_anything's attention against the SDPA attention (same weights, same outputs).

    python benchmarks/attention.py [--model vit_b] [--repeats 3]

Each variant runs in its own process so its peak memory (CPU: peak RSS; GPU: max allocated)
is its own. Goal on CPU: at least 1.5x faster and 2x less memory.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def one(variant: str, model: str, repeats: int) -> dict[str, float]:
    import torch

    from us43d.training.attention import use_efficient_attention
    from us43d.training.sam import model_config, sam_package

    config = model_config(model)
    attention_type = sam_package().modeling.image_encoder.Attention
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    torch.manual_seed(0)
    side = config.embedding_size
    block = attention_type(config.encoder_dim, config.encoder_heads, use_rel_pos=True, input_size=(side, side)).to(device)
    if variant == "sdpa":
        use_efficient_attention(block)
    x = torch.randn(1, side, side, config.encoder_dim, device=device, requires_grad=True)
    block(x).sum().backward()  # warm up
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        block(x).sum().backward()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return {"seconds": min(times), "peak_gib": peak, "device": "cuda" if cuda else "cpu"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vit_b")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(one(args.variant, args.model, args.repeats)))
        return
    results = {}
    for variant in ("reference", "sdpa"):
        command = [sys.executable, __file__, "--variant", variant, "--model", args.model, "--repeats", str(args.repeats)]
        results[variant] = json.loads(
            subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        )
    ref, new = results["reference"], results["sdpa"]
    print(f"global attention block of {args.model} at 64 x 64 tokens, forward + backward, {new['device']}")
    print(f"  segment_anything attention {ref['seconds']:6.2f} s   peak {ref['peak_gib']:.2f} GiB")
    print(f"  SDPA attention             {new['seconds']:6.2f} s   peak {new['peak_gib']:.2f} GiB")
    print(
        f"  x{ref['seconds'] / new['seconds']:.2f} faster, x{ref['peak_gib'] / new['peak_gib']:.2f} less memory (goal on CPU: x1.5 and x2)"
    )


if __name__ == "__main__":
    main()
