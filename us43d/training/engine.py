"""Running SAM's prompt encoder and mask decoder on many instances of one image at once.

Point and box prompts both become two sparse tokens in segment_anything (a point is padded
with the not-a-point token), so instances of one image with mixed prompt types share a single
decoder call: each subset is encoded separately and the tokens are put back in order.

Boundary clicks (SAMUSA) are points of their own type, label BOUNDARY_LABEL = 4: segment_anything
uses -1 (padding), 0 (negative), 1 (positive), and 2 and 3 are the box corners' embeddings
(`point_embeddings[2]`, `[3]`). segment_anything's encoder gives a label it does not know only
its positional encoding; the boundary type embedding, a parameter added to the prompt encoder
(`add_boundary_embedding`), is added here.
"""

from __future__ import annotations

import torch
from torch import nn


def sparse_and_dense(
    sam: nn.Module,
    points: torch.Tensor,
    boxes: torch.Tensor,
    is_box: torch.Tensor,
    mask_input: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompt embeddings for N instances: points (N, 2) and boxes (N, 4) in the model's input
    frame, `is_box` picking which one each instance uses; `mask_input` (N, 1, low, low) logits."""
    encoder = sam.prompt_encoder
    count = points.shape[0]
    dim = encoder.no_mask_embed.weight.shape[1]
    sparse = points.new_zeros(count, 2, dim)
    if (~is_box).any():
        coords = points[~is_box][:, None, :]
        labels = torch.ones(coords.shape[:2], dtype=torch.int, device=points.device)
        sparse[~is_box] = encoder(points=(coords, labels), boxes=None, masks=None)[0].to(sparse.dtype)
    if is_box.any():
        sparse[is_box] = encoder(points=None, boxes=boxes[is_box], masks=None)[0].to(sparse.dtype)
    if mask_input is None:
        size = encoder.image_embedding_size
        dense = encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(count, -1, size[0], size[1])
    else:
        dense = encoder.mask_downscaling(mask_input)
    return sparse, dense


BOUNDARY_LABEL = 4
PADDING_LABEL = -1
BOUNDARY_EMBED = "boundary_point_embed"
BOUNDARY_EMBED_KEY = f"prompt_encoder.{BOUNDARY_EMBED}.weight"


def add_boundary_embedding(sam: nn.Module) -> nn.Module:
    """Give the prompt encoder the boundary click's type embedding (state-dict key
    BOUNDARY_EMBED_KEY), started as a copy of the positive click's: a boundary click first
    means what SAM knows best, then learns its own meaning. A model that already has one
    keeps it."""
    encoder = sam.prompt_encoder
    if not has_boundary_embedding(sam):
        positive = encoder.point_embeddings[1].weight
        embed = nn.Embedding(1, positive.shape[1]).to(device=positive.device, dtype=positive.dtype)
        with torch.no_grad():
            embed.weight.copy_(positive)
        setattr(encoder, BOUNDARY_EMBED, embed)
    return sam


def has_boundary_embedding(sam: nn.Module) -> bool:
    return isinstance(getattr(sam.prompt_encoder, BOUNDARY_EMBED, None), nn.Embedding)


def click_embeddings(sam: nn.Module, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sparse tokens (N, K + 1, C) for K clicks per instance, labels as in segment_anything plus
    BOUNDARY_LABEL; the last token is segment_anything's not-a-point padding."""
    encoder = sam.prompt_encoder
    sparse = encoder(points=(coords, labels), boxes=None, masks=None)[0]
    boundary = labels == BOUNDARY_LABEL
    if boundary.any():
        if not has_boundary_embedding(sam):
            raise ValueError("boundary clicks need the boundary embedding: add_boundary_embedding(sam) first")
        flags = torch.nn.functional.pad(boundary, (0, 1))[..., None].to(sparse.dtype)  # (N, K + 1, 1): not the padding token
        sparse = sparse + flags * getattr(encoder, BOUNDARY_EMBED).weight.to(sparse.dtype)
    return sparse


def decode_clicks(
    sam: nn.Module,
    embedding: torch.Tensor,
    coords: torch.Tensor,
    labels: torch.Tensor,
    multimask: bool,
    mask_input: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`decode` for instances prompted by K clicks each: coords (N, K, 2) in the model's input
    frame, labels (N, K) (BOUNDARY_LABEL, 1, 0, or PADDING_LABEL for an unused slot)."""
    encoder = sam.prompt_encoder
    sparse = click_embeddings(sam, coords, labels)
    if mask_input is None:
        size = encoder.image_embedding_size
        dense = encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(len(coords), -1, size[0], size[1])
    else:
        dense = encoder.mask_downscaling(mask_input)
    return sam.mask_decoder(
        image_embeddings=embedding,
        image_pe=encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=multimask,
    )


def decode(
    sam: nn.Module,
    embedding: torch.Tensor,
    points: torch.Tensor,
    boxes: torch.Tensor,
    is_box: torch.Tensor,
    multimask: bool,
    mask_input: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Low-res mask logits (N, M, low, low) and IoU predictions (N, M) for one image embedding
    (1, C, h, w); M is 3 with `multimask`, else 1 (the first mask token)."""
    sparse, dense = sparse_and_dense(sam, points, boxes, is_box, mask_input)
    return sam.mask_decoder(
        image_embeddings=embedding,
        image_pe=sam.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=multimask,
    )
