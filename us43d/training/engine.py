"""Running SAM's prompt encoder and mask decoder on many instances of one image at once.

Point and box prompts both become two sparse tokens in segment_anything (a point is padded
with the not-a-point token), so instances of one image with mixed prompt types share a single
decoder call: each subset is encoded separately and the tokens are put back in order.
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


def decode_points(
    sam: nn.Module,
    embedding: torch.Tensor,
    points: torch.Tensor,
    labels: torch.Tensor,
    multimask: bool,
    mask_input: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`decode` for N instances prompted with K clicks each: points (N, K, 2) in the model's
    input frame, labels (N, K) as the prompt encoder reads them (1 positive, 0 negative).

    With points only, segment_anything's encoder appends one not-a-point token, as its own
    predictor does for clicks; `mask_input` (N, 1, low, low) is a previous round's logits."""
    sparse, dense = sam.prompt_encoder(points=(points, labels), boxes=None, masks=mask_input)
    return sam.mask_decoder(
        image_embeddings=embedding,
        image_pe=sam.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=multimask,
    )
