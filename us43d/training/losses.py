"""The UltraSam losses: focal x 20 + dice on the chosen mask, plus the IoU-prediction loss.

Defaults follow the authors' code (recipe sheet, sections 3.4 and 4): the mask trained is the
one with the highest true IoU, and the IoU head is trained with a squared error. The paper's
wording (lowest-loss mask, L1 IoU loss) is available through `selection="loss"` and
`iou_loss="l1"`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from us43d.training.boundary_loss import boundary_loss

FOCAL_WEIGHT = 20.0


def focal_map(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    q = torch.where(targets > 0.5, 1 - p, p)
    weight = alpha * targets + (1 - alpha) * (1 - targets)
    return ce * weight * q**gamma


def dice_per_instance(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """V-Net form: 1 - 2 sum(pg) / (sum(p^2) + 1 + sum(g^2) + 1), over the last two dims."""
    p = torch.sigmoid(logits).flatten(-2)
    g = targets.flatten(-2)
    return 1 - 2 * (p * g).sum(-1) / ((p * p).sum(-1) + 1 + (g * g).sum(-1) + 1)


def true_iou(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    predicted = (logits > 0).flatten(-2).float()
    g = targets.flatten(-2)
    intersection = (predicted * g).sum(-1)
    union = (predicted + g - predicted * g).sum(-1).clamp_min(1e-6)
    return intersection / union


@dataclass
class LossParts:
    """The loss terms; `boundary` (SAMUSA's boundary loss, boundary_loss.py) counts with
    `boundary_weight` and is None when no instance had boundary clicks."""

    focal: torch.Tensor
    dice: torch.Tensor
    iou: torch.Tensor
    boundary: torch.Tensor | None = None
    boundary_weight: float = 0.0

    @property
    def total(self) -> torch.Tensor:
        total = FOCAL_WEIGHT * self.focal + self.dice + self.iou
        if self.boundary is not None and self.boundary_weight:
            total = total + self.boundary_weight * self.boundary
        return total

    def __add__(self, other: LossParts) -> LossParts:
        if self.boundary is None or other.boundary is None:
            boundary = self.boundary if other.boundary is None else other.boundary
        else:
            boundary = self.boundary + other.boundary
        return LossParts(
            self.focal + other.focal,
            self.dice + other.dice,
            self.iou + other.iou,
            boundary,
            self.boundary_weight or other.boundary_weight,
        )


def mask_losses(
    logits: torch.Tensor,
    iou_predictions: torch.Tensor,
    targets: torch.Tensor,
    selection: str = "iou",
    iou_loss: str = "mse",
    boundary: tuple[torch.Tensor, torch.Tensor] | None = None,
    boundary_weight: float = 0.0,
    boundary_form: str = "edge",
) -> LossParts:
    """`logits` (N, M, h, w), `iou_predictions` (N, M), `targets` (N, h, w) in {0, 1};
    `boundary`, when given, is (rows, heatmaps): the instances with boundary clicks and their
    click heatmaps, whose boundary loss is taken on the same chosen mask as the others."""
    logits = logits.float()
    iou_predictions = iou_predictions.float()
    expanded = targets[:, None].expand_as(logits)
    with torch.no_grad():
        ious = true_iou(logits, expanded)  # (N, M), a constant target
        if logits.shape[1] == 1:
            chosen = torch.zeros(len(logits), dtype=torch.long, device=logits.device)
        elif selection == "loss":
            per_mask = FOCAL_WEIGHT * focal_map(logits, expanded).flatten(-2).mean(-1) + dice_per_instance(logits, expanded)
            chosen = per_mask.argmin(dim=1)
        else:
            chosen = ious.argmax(dim=1)  # ties go to the first, as argmax does
    rows = torch.arange(len(logits), device=logits.device)
    best = logits[rows, chosen]
    focal = focal_map(best, targets).mean()
    dice = dice_per_instance(best, targets).mean()
    predicted, actual = iou_predictions[rows, chosen], ious[rows, chosen]
    iou = F.l1_loss(predicted, actual) if iou_loss == "l1" else F.mse_loss(predicted, actual)
    edge = None
    if boundary is not None and len(boundary[0]):
        edge = boundary_loss(best[boundary[0]], boundary[1], boundary_form).mean()
    return LossParts(focal, dice, iou, edge, boundary_weight)
