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
import torch.nn.functional as F
from torch import nn

from us43d.training.decoder import AuthorsDecoderMLP


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


def boundary_click_tokens(sam: nn.Module, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """`click_embeddings` for clicks that are all BOUNDARY_LABEL or PADDING_LABEL (the
    annotator's while clicks grow), computed directly: the positional encoding of each click
    plus the boundary embedding, or the not-a-point embedding for padding; the same tokens
    (tested) in a fraction of the prompt encoder's general path."""
    encoder = sam.prompt_encoder
    if not has_boundary_embedding(sam):
        raise ValueError("boundary clicks need the boundary embedding: add_boundary_embedding(sam) first")
    if not ((labels == BOUNDARY_LABEL) | (labels == PADDING_LABEL)).all():
        raise ValueError(f"boundary_click_tokens takes boundary ({BOUNDARY_LABEL}) and padding ({PADDING_LABEL}) clicks only")
    positional = encoder.pe_layer.forward_with_coords(coords + 0.5, encoder.input_image_size)
    boundary = getattr(encoder, BOUNDARY_EMBED).weight
    padding = encoder.not_a_point_embed.weight
    tokens = torch.where((labels == BOUNDARY_LABEL)[..., None], positional + boundary, padding)
    return torch.cat([tokens, padding.expand(len(coords), 1, -1)], dim=1)


def single_mask_logits(
    sam: nn.Module, embeddings: torch.Tensor, image_of: torch.Tensor, sparse: torch.Tensor, dense_pe: torch.Tensor | None = None
) -> torch.Tensor:
    """(N, low, low) logits of the decoder's single-mask output (`multimask=False`) for N
    instances of several images, for passes without gradients: instance n is decoded on
    `embeddings[image_of[n]]` with its sparse tokens `sparse[n]` and no mask prompt.

    This is the simulated annotator's view while clicks grow in training: many small passes
    without gradients, where segment_anything's decoder would cost one call per image (it
    repeats one image's embedding for every prompt) and would compute the three multimask
    outputs and the IoU head as well. Here the same two-way transformer runs on the decoder's
    own weights through fused attention, for every instance at once, and only the first mask
    token is turned into a mask. The numbers are `decode_clicks`' (`multimask=False`) up to
    float rounding, in both decoder forms, as the model predicts in eval mode: the authors'
    decoder's dropout is left out whatever the module's mode (tested). `dense_pe`, the prompt
    encoder's `get_dense_pe()`, can be given by a caller that decodes many times."""
    decoder, encoder = sam.mask_decoder, sam.prompt_encoder
    transformer = decoder.transformer
    count = len(sparse)
    output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight])
    prompt = torch.cat([output_tokens.expand(count, -1, -1), sparse], dim=1)  # the queries' positional term
    source = embeddings[image_of] + encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
    channels, height, width = source.shape[1:]
    keys = source.flatten(2).transpose(1, 2)
    key_pe = (encoder.get_dense_pe() if dense_pe is None else dense_pe).flatten(2).transpose(1, 2)
    queries = prompt
    for layer in transformer.layers:
        if layer.skip_first_layer_pe:
            queries = _attend(layer.self_attn, queries, queries, queries)
        else:
            with_pe = queries + prompt
            queries = queries + _attend(layer.self_attn, with_pe, with_pe, queries)
        queries = _norm(layer.norm1, queries)
        keys_pe = keys + key_pe
        queries = _norm(layer.norm2, queries + _attend(layer.cross_attn_token_to_image, queries + prompt, keys_pe, keys))
        queries = _norm(layer.norm3, queries + _mlp(layer.mlp, queries))
        keys = _norm(layer.norm4, keys + _attend(layer.cross_attn_image_to_token, keys_pe, queries + prompt, queries))
    final = _attend(transformer.final_attn_token_to_image, queries + prompt, keys + key_pe, keys)
    queries = _norm(transformer.norm_final_attn, queries + final)
    upscaled = decoder.output_upscaling(keys.transpose(1, 2).reshape(count, channels, height, width))
    weights = decoder.output_hypernetworks_mlps[0](queries[:, 1])  # token 0 of the mask tokens: the single mask
    return torch.einsum("nc,nchw->nhw", weights, upscaled)


def _attend(attention: nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """segment_anything's `Attention` (projections, heads, softmax(q k^T / sqrt(d)) v, output
    projection) on its weights, through `scaled_dot_product_attention`."""
    heads = attention.num_heads

    def split(x: torch.Tensor, projection: nn.Linear) -> torch.Tensor:
        return F.linear(x, projection.weight, projection.bias).unflatten(-1, (heads, -1)).transpose(1, 2)

    mixed = F.scaled_dot_product_attention(split(q, attention.q_proj), split(k, attention.k_proj), split(v, attention.v_proj))
    return F.linear(mixed.transpose(1, 2).flatten(2), attention.out_proj.weight, attention.out_proj.bias)


def _mlp(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The decoder layer's MLP term without dropout: MLP(x), or x + MLP(x) in the authors' form."""
    inner = block.lin2(block.act(block.lin1(x)))
    return x + inner if isinstance(block, AuthorsDecoderMLP) else inner


def _norm(norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)
