"""The image encoder's attention through `scaled_dot_product_attention`.

segment_anything materialises every (tokens x tokens) attention matrix and then adds the
decomposed relative-position bias to it: at 64 x 64 tokens that is 16.8 M entries per head,
kept for the backward pass. The bias has a low-rank form,

    bias[q, k] = rel_h[q, row(k)] + rel_w[q, col(k)],

which is a dot product between [rel_h[q], rel_w[q]] and the one-hot row and column of k. On
GPU we append those to the (pre-scaled) queries and keys and hand everything to a fused SDPA
kernel with scale 1: the same function, computed without the big matrix (values are padded
to the query width, as the fused kernels need equal widths, and the padding is dropped after).
On CPU, where the extra width costs more than it saves, `DecomposedBiasAttention` computes
the same function a block of queries at a time and recomputes the blocks in the backward
pass: no (tokens x tokens) matrix is kept either way.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

QUERY_CHUNK = 128  # queries per block on CPU: the (chunk x tokens) logits stay cache-sized


class DecomposedBiasAttention(torch.autograd.Function):
    """softmax(scale q k^T + rel_h[q, row(k)] + rel_w[q, col(k)]) v, a block of queries at a
    time, without keeping any (tokens x tokens) matrix: the backward pass recomputes each
    block's probabilities from the saved log-sum-exp, as flash attention does. On CPU this
    beats both the reference and the fused kernels, which have no decomposed bias.

    Shapes: q, k, v (N, T, D); rel_h (N, T, H); rel_w (N, T, W); T = H * W.
    """

    @staticmethod
    def _logits(
        q: torch.Tensor, kt: torch.Tensor, rel_h: torch.Tensor, rel_w: torch.Tensor, s: int, e: int, scale: float
    ) -> torch.Tensor:
        n, tokens = q.shape[0], kt.shape[-1]
        bias = (rel_h[:, s:e, :, None] + rel_w[:, s:e, None, :]).reshape(n, e - s, tokens)
        return torch.baddbmm(bias, q[:, s:e], kt, alpha=scale)

    @staticmethod
    def forward(
        ctx: Any,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        rel_h: torch.Tensor,
        rel_w: torch.Tensor,
        scale: float,
        chunk: int,
    ) -> torch.Tensor:
        tokens = q.shape[1]
        out = torch.empty_like(v)
        lse = torch.empty(q.shape[:2], dtype=q.dtype, device=q.device)
        kt = k.transpose(1, 2)
        for s in range(0, tokens, chunk):
            e = min(tokens, s + chunk)
            p = DecomposedBiasAttention._logits(q, kt, rel_h, rel_w, s, e, scale)
            top = p.amax(-1, keepdim=True)
            p.sub_(top).exp_()
            total = p.sum(-1, keepdim=True)
            p.div_(total)
            out[:, s:e] = torch.bmm(p, v)
            lse[:, s:e] = (top + total.log()).squeeze(-1)
        ctx.save_for_backward(q, k, v, rel_h, rel_w, out, lse)
        ctx.scale, ctx.chunk = scale, chunk
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        q, k, v, rel_h, rel_w, out, lse = ctx.saved_tensors
        scale, chunk = ctx.scale, ctx.chunk
        n, tokens, _ = q.shape
        height, width = rel_h.shape[-1], rel_w.shape[-1]
        grad_out = grad_out.contiguous()
        dq, dk, dv = torch.empty_like(q), torch.zeros_like(k), torch.zeros_like(v)
        d_rel_h, d_rel_w = torch.empty_like(rel_h), torch.empty_like(rel_w)
        delta = (grad_out * out).sum(-1)
        kt, vt = k.transpose(1, 2), v.transpose(1, 2)
        for s in range(0, tokens, chunk):
            e = min(tokens, s + chunk)
            p = DecomposedBiasAttention._logits(q, kt, rel_h, rel_w, s, e, scale)
            p.sub_(lse[:, s:e, None]).exp_()
            dv.baddbmm_(p.transpose(1, 2), grad_out[:, s:e])
            ds = torch.bmm(grad_out[:, s:e], vt).sub_(delta[:, s:e, None]).mul_(p)
            dq[:, s:e] = torch.bmm(ds, k).mul_(scale)
            dk.baddbmm_(ds.transpose(1, 2), q[:, s:e], alpha=scale)
            blocks = ds.view(n, e - s, height, width)
            d_rel_h[:, s:e] = blocks.sum(-1)
            d_rel_w[:, s:e] = blocks.sum(-2)
        return dq, dk, dv, d_rel_h, d_rel_w, None, None


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
        if x.device.type == "cpu":
            flat = (batch * self.num_heads, tokens)
            out = DecomposedBiasAttention.apply(
                q.reshape(*flat, head_dim),
                k.reshape(*flat, head_dim),
                v.reshape(*flat, head_dim),
                rel_h.reshape(*flat, height),
                rel_w.reshape(*flat, width),
                self.scale,
                QUERY_CHUNK,
            ).reshape(batch, self.num_heads, tokens, head_dim)
            out = (
                out.reshape(batch, self.num_heads, height, width, head_dim)
                .permute(0, 2, 3, 1, 4)
                .reshape(batch, height, width, -1)
            )
            return self.proj(out)
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
