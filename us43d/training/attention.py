"""The image encoder's attention through `scaled_dot_product_attention`.

segment_anything materialises every (tokens x tokens) attention matrix and then adds the
decomposed relative-position bias to it: at 64 x 64 tokens that is 16.8 M entries per head,
kept for the backward pass. The bias has a low-rank form,

    bias[q, k] = rel_h[q, row(k)] + rel_w[q, col(k)],

which is a dot product between [rel_h[q], rel_w[q]] and the one-hot row and column of k. So
we append those to the (pre-scaled) queries and keys and hand everything to a fused SDPA
kernel with scale 1: the same function, computed without the big matrix. Values are padded
to the query width where a kernel needs equal widths, and the padding is dropped after.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def _image_encoder_module() -> Any:
    from us43d.training.sam import sam_package

    return sam_package().modeling.image_encoder


def _rel_pos(q_size: int, k_size: int, rel_pos: torch.Tensor) -> torch.Tensor:
    return _image_encoder_module().get_rel_pos(q_size, k_size, rel_pos)


def efficient_attention_forward(self: Any, x: torch.Tensor) -> torch.Tensor:
    batch, height, width, _ = x.shape
    tokens = height * width
    qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)  # (B, heads, tokens, head_dim)
    head_dim = q.shape[-1]
    if self.use_rel_pos:
        rh = _rel_pos(height, height, self.rel_pos_h)  # (H, H, head_dim)
        rw = _rel_pos(width, width, self.rel_pos_w)
        r_q = q.reshape(batch, self.num_heads, height, width, head_dim)
        rel_h = torch.einsum("bnhwc,hkc->bnhwk", r_q, rh).reshape(batch, self.num_heads, tokens, height)
        rel_w = torch.einsum("bnhwc,wkc->bnhwk", r_q, rw).reshape(batch, self.num_heads, tokens, width)
        rows = torch.arange(tokens, device=x.device) // width
        cols = torch.arange(tokens, device=x.device) % width
        one_hot_rows = F.one_hot(rows, height).to(q.dtype)
        one_hot_cols = F.one_hot(cols, width).to(q.dtype)
        keys_extra = torch.cat([one_hot_rows, one_hot_cols], dim=-1).expand(batch, self.num_heads, tokens, height + width)
        q = torch.cat([q * self.scale, rel_h, rel_w], dim=-1)
        k = torch.cat([k, keys_extra], dim=-1)
        v = F.pad(v, (0, q.shape[-1] - head_dim))
        out = F.scaled_dot_product_attention(q, k, v, scale=1.0)[..., :head_dim]
    else:
        out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
    out = out.reshape(batch, self.num_heads, height, width, head_dim).permute(0, 2, 3, 1, 4).reshape(batch, height, width, -1)
    return self.proj(out)


def use_efficient_attention(model: nn.Module, enabled: bool = True) -> int:
    """Switch every image-encoder attention of `model` to (or back from) the SDPA path.

    The parameters and their names are untouched, so checkpoints are interchangeable.
    Returns the number of attention modules switched.
    """
    attention_type = _image_encoder_module().Attention
    count = 0
    for module in model.modules():
        if isinstance(module, attention_type):
            if enabled:
                module.forward = efficient_attention_forward.__get__(module)
            elif "forward" in module.__dict__:
                del module.forward
            count += 1
    return count
