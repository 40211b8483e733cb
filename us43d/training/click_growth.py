"""SAMUSA's simulated annotator during training: boundary clicks that grow one by one.

On a few images per batch (SAMUSA: 2) the boundary clicks of every instance grow from 2 up to
a count drawn once per batch (2..10), each new click at the ground-truth boundary point furthest
from the boundary of what the model predicts with the clicks so far (`next_boundary_point`).
The predictions are no-grad passes on the image embeddings the step has already computed;
the instances of all growing images share one decoder call per added click, on the single
mask only (`engine.single_mask_logits`), which is what keeps the growth cheap next to the step.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from us43d.training import engine
from us43d.training.boundary import next_boundary_point


def click_images(batch: Mapping[str, Any], count: int) -> list[int]:
    """The images of a batch whose boundary clicks grow, lowest rank first: the `count` with
    the lowest rank drawn by their samples among those with boundary instances (so the choice
    is a function of the samples, like every other draw, and a resumed run makes the same)."""
    if not count or "click_rank" not in batch:
        return []
    candidates = [i for i, flags in enumerate(batch["is_boundary"]) if bool(flags.any())]
    return sorted(candidates, key=lambda i: (float(batch["click_rank"][i]), i))[:count]


def grown_clicks(
    sam: torch.nn.Module, embeddings: torch.Tensor, batch: Mapping[str, Any], images: list[int], device: torch.device
) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Clicks (n, total, 2) and labels (n, total) of the boundary instances of each image in
    `images`; `embeddings` (B, C, h, w) are the batch's.

    The batch grows all of them to one total, the click count drawn by the first image of
    `images` (2..max): one draw per batch, as iterative click training draws its number of
    rounds, so every round is one decoder call for all growing instances and a batch costs as
    many calls as its draw asks for, not as many as its largest of several draws."""
    if not images:
        return {}
    order = sorted(images)
    picked = [batch["is_boundary"][i].to(device) for i in order]
    counts = [int(flags.sum()) for flags in picked]
    coords = torch.cat([batch["clicks"][i].to(device)[flags] for i, flags in zip(order, picked)])
    truth = torch.cat([batch["targets"][i].to(device)[flags] for i, flags in zip(order, picked)])
    labels = torch.full(coords.shape[:2], engine.BOUNDARY_LABEL, dtype=torch.int, device=device)
    image_of = torch.repeat_interleave(torch.tensor(order, device=device), torch.tensor(counts, device=device))
    total = int(batch["click_count"][images[0]])
    coords, labels = grow_clicks(sam, embeddings, image_of, coords, labels, truth, total)
    grown, start = {}, 0
    for i, count in zip(order, counts):
        grown[i] = (coords[start : start + count], labels[start : start + count])
        start += count
    return grown


def grow_clicks(
    sam: torch.nn.Module,
    embeddings: torch.Tensor,
    image_of: torch.Tensor,
    coords: torch.Tensor,
    labels: torch.Tensor,
    truth: torch.Tensor,
    total: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Add boundary clicks one at a time until every instance has `total` (at least its K).

    `coords` (N, K, 2) and `labels` (N, K) are the clicks so far of N instances, instance n on
    image `image_of[n]` of `embeddings`; `truth` (N, low, low) their low-resolution masks.
    Returns (N, total, 2) and (N, total). The model predicts without gradients and without
    dropout (what a user would see); the search runs on the low-resolution truth and prediction
    and the click goes to the centre of that low-res pixel in the input frame. An instance with
    no boundary point left gets a padding slot instead, so all keep the same number of tokens."""
    scale = sam.prompt_encoder.input_image_size[0] / truth.shape[-1]
    masks = truth.detach().cpu().numpy() > 0.5
    chosen = [list(c) for c in np.round((coords.detach().cpu().numpy() + 0.5) / scale - 0.5)]
    start = coords.shape[1]
    total = max(total, start)
    coords = torch.cat([coords.detach(), coords.new_zeros(len(coords), total - start, 2)], dim=1)
    labels = torch.cat([labels, labels.new_full((len(labels), total - start), engine.PADDING_LABEL)], dim=1)
    with _annotator_mode(coords.device.type):
        dense_pe = sam.prompt_encoder.get_dense_pe()
    for slot in range(start, total):
        with _annotator_mode(coords.device.type):
            sparse = engine.boundary_click_tokens(sam, coords[:, :slot], labels[:, :slot])
            predicted = (engine.single_mask_logits(sam, embeddings, image_of, sparse, dense_pe) > 0).cpu().numpy()
        points = [next_boundary_point(mask, seen, np.array(c)) for mask, seen, c in zip(masks, predicted, chosen)]
        found = [n for n, point in enumerate(points) if point is not None]
        if found:
            for n in found:
                chosen[n].append(points[n])
            rows = torch.tensor(found, device=coords.device)
            coords[rows, slot] = torch.from_numpy((np.stack([points[n] for n in found]) + 0.5) * scale - 0.5).to(coords)
            labels[rows, slot] = engine.BOUNDARY_LABEL
    return coords, labels


@contextmanager
def _annotator_mode(device_type: str) -> Iterator[None]:
    """No gradients, and no autocast weight cache: autocast keeps the low-precision copies of
    the weights it casts for the rest of its region, and copies made here, in inference mode,
    would be reused by the step's training passes that follow (PyTorch before 2.10 lets them be:
    the step then fails to save them for backward). Casting afresh costs nothing measurable."""
    autocast = torch.autocast(
        device_type,
        dtype=torch.get_autocast_dtype(device_type),
        enabled=torch.is_autocast_enabled(device_type),
        cache_enabled=False,
    )
    with torch.inference_mode(), autocast:
        yield
