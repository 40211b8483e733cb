"""Memory and speed settings applied to a built SAM model at run time.

Nothing here changes parameter names or values, so checkpoints stay interchangeable between
runs with and without these settings: activation checkpointing replaces each image-encoder
block's `forward` on the instance (as `attention.use_efficient_attention` does for attention),
and freezing only turns `requires_grad` off.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from us43d.errors import Us43dError


@dataclass(frozen=True)
class Preset:
    """Per-step batch and checkpointing for ViT-B at 1024 in fp32 with the SDPA attention.

    The accumulation is derived from the global batch, so every preset trains the recipe's 32
    images per iteration. The sizes are estimates (about 5 GiB of fp32 activations per image
    without checkpointing, under 1 GiB with it, plus 1.5 GiB of weights and AdamW state);
    `benchmarks/train_step.py` measures the real peak on a GPU.
    """

    batch_size: int
    activation_checkpointing: bool


PRESETS: dict[str, Preset] = {
    "80gb": Preset(batch_size=8, activation_checkpointing=False),  # the authors' 8 per GPU
    "40gb": Preset(batch_size=4, activation_checkpointing=False),
    "24gb": Preset(batch_size=4, activation_checkpointing=True),
}


def _checkpointed_forward(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    # The class's forward, not the instance's: the instance's is this function.
    if torch.is_grad_enabled() and any(p.requires_grad for p in block.parameters()):
        return checkpoint(type(block).forward, block, x, use_reentrant=False)
    return type(block).forward(block, x)


def use_activation_checkpointing(sam: nn.Module, enabled: bool = True) -> int:
    """Recompute each image-encoder block in the backward pass instead of keeping its
    activations: memory per image drops from every block's intermediates to its input only,
    for about one extra encoder forward. Returns the number of blocks switched."""
    blocks = list(sam.image_encoder.blocks)
    for block in blocks:
        if enabled:
            block.forward = partial(_checkpointed_forward, block)
        elif "forward" in block.__dict__:
            del block.forward
    return len(blocks)


def freeze_image_encoder(sam: nn.Module) -> int:
    """Train the prompt encoder and mask decoder only; returns the number of frozen tensors.
    The encoder then runs without autograd, which saves its activations and its backward."""
    parameters = list(sam.image_encoder.parameters())
    for parameter in parameters:
        parameter.requires_grad_(False)
    return len(parameters)


def encoder_is_trained(sam: nn.Module) -> bool:
    return any(p.requires_grad for p in sam.image_encoder.parameters())


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `precision` on `device` (None: plain fp32), or a clear error
    where the device cannot compute in it, rather than a silent fall-back."""
    if precision == "fp32":
        return None
    if precision != "bf16":
        raise Us43dError(f"unknown precision {precision!r} (choose fp32 or bf16)")
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise Us43dError(
            f"--precision bf16: {torch.cuda.get_device_name(device)} has no bfloat16 support; train with --precision fp32"
        )
    return torch.bfloat16


def describe_memory(settings: Any) -> str:
    """One line for the console: what the memory settings resolved to."""
    parts = [f"precision {settings.precision}"]
    parts.append("activation checkpointing on" if settings.activation_checkpointing else "activation checkpointing off")
    if settings.freeze_encoder:
        parts.append("image encoder frozen")
    if settings.preset:
        parts.append(f"preset {settings.preset}")
    return ", ".join(parts)
