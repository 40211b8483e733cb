"""Interactive evaluation: mean Dice and IoU against the number of clicks of a simulated user.

One prompt per instance (the mAP evaluation) measures how good a first guess is; an annotator
cares about how fast the mask becomes right when they keep clicking. A simulated user clicks,
looks at the prediction and clicks again where it is wrong, as in the interactive-segmentation
benchmarks (largest error region, point furthest from its edge) and in SAMUSA's Table 4 and
Fig. 2, whose user clicks on the structure's boundary (us43d.training.boundary).

Each round feeds the model every click so far and the previous round's low-resolution logits
as mask prompt, as SAM was trained to be used interactively. The first round has one click,
which is ambiguous, so it asks for SAM's three masks and keeps the one with the highest
predicted IoU; later rounds have several clicks and a mask prompt and ask for one mask, as
SAM's authors advise for unambiguous prompts. The image is embedded once for all rounds and
all instances of an image are decoded together.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from us43d.errors import Us43dError
from us43d.training import engine
from us43d.training.boundary import first_boundary_points, next_boundary_point
from us43d.training.evaluate import Predictor, _gt_mask, annotated_images, split_ground_truths, to_original
from us43d.training.protocol import Protocol

CLICK_MODES = ("region", "boundary")
MAX_CLICKS = 20  # the usual budget of interactive benchmarks (NoC@20); each click is one decoder pass
CLICK_SEED = 0  # seeds the one random choice: the first boundary point
POSITIVE, NEGATIVE = 1, 0  # segment_anything's point labels
# 8-connectivity: pixels touching at a corner belong to one error region, as a person sees it
_EIGHT = np.ones((3, 3), dtype=bool)

CLICK_RULES = {
    "region": "click 1: the pixel of the mask furthest from its edge (distance-transform maximum, always inside the "
    "mask); each next click: in the largest connected error region (8-connected, by pixel count; a missed region wins "
    "a tie), positive in a missed region, negative in a false one, at that region's pixel furthest from its edge",
    "boundary": "SAMUSA: click 1 a random point of the mask's boundary (seeded), click 2 the boundary point furthest "
    "from it, each next click the boundary point furthest from the predicted mask's boundary",
}
ROUND_RULE = (
    "every click so far plus the previous round's low-resolution logits as mask prompt; round 1 three masks, the one "
    "with the highest predicted IoU kept; later rounds one mask; the user stops once the mask is exactly right and "
    "the mask is kept for the remaining clicks (boundary mode also stops when every boundary point has been clicked)"
)

# (coords (N, K, 2) original pixels, labels (N, K), previous logits (N, 1, h, w) or None, multimask)
# -> (masks (N, H, W) bool at the original size, the kept logits (N, 1, h, w))
Decide = Callable[[np.ndarray, np.ndarray, "torch.Tensor | None", bool], tuple[np.ndarray, "torch.Tensor"]]


def parse_clicks(text: str) -> int:
    """`--clicks N` or `--clicks 1..N`: rounds 1 to N."""
    match = re.fullmatch(r"\s*(?:1\s*\.\.\s*)?(\d+)\s*", text)
    count = int(match.group(1)) if match else 0
    if not 1 <= count <= MAX_CLICKS:
        raise Us43dError(f"--clicks takes N or 1..N with N from 1 to {MAX_CLICKS} (clicks 1 to N are scored), got '{text}'")
    return count


def check_mode(mode: str) -> str:
    if mode not in CLICK_MODES:
        raise Us43dError(f"--click-mode takes {' or '.join(CLICK_MODES)}, got '{mode}'")
    return mode


def interior_point(region: np.ndarray) -> np.ndarray:
    """(x, y) of the region's pixel furthest from its edge; the image border counts as edge
    (a region cut by the border is clicked away from it); ties go to the first in row-major order."""
    distance = ndimage.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]
    row, col = np.unravel_index(int(np.argmax(distance)), distance.shape)
    return np.array([col, row], dtype=np.float64)


def first_region_click(truth: np.ndarray) -> np.ndarray:
    """The mask's centre for a user: its distance-transform maximum. Unlike the centroid it is
    always inside the mask (a crescent's centroid is not), and it is what the next-click rule
    gives for an empty prediction, so the first click is not a special case of the user."""
    if not truth.any():
        raise ValueError("an empty mask has no centre to click on")
    return interior_point(truth)


def next_region_click(truth: np.ndarray, predicted: np.ndarray) -> tuple[np.ndarray, int] | None:
    """((x, y), label) in the largest error region, or None when the prediction is exactly right.

    The largest region is the largest 8-connected component of the missed pixels (a positive
    click) or of the false pixels (a negative click), by pixel count; a tie goes to the missed
    region, then to the component met first in row-major order."""
    candidates: list[tuple[int, int, np.ndarray]] = []
    for label, error in ((POSITIVE, truth & ~predicted), (NEGATIVE, predicted & ~truth)):
        components, count = ndimage.label(error, structure=_EIGHT)
        if count:
            sizes = np.bincount(components.ravel())[1:]
            biggest = int(np.argmax(sizes))
            candidates.append((int(sizes[biggest]), label, components == biggest + 1))
    if not candidates:
        return None
    _, label, region = max(candidates, key=lambda c: (c[0], c[1]))
    return interior_point(region), label


def dice_iou(truth: np.ndarray, predicted: np.ndarray) -> tuple[float, float]:
    """Dice and IoU of two boolean masks; 1 for two empty masks (nothing to find, nothing found)."""
    overlap = float(np.logical_and(truth, predicted).sum())
    total = float(truth.sum() + predicted.sum())
    if total == 0:
        return 1.0, 1.0
    return 2 * overlap / total, overlap / (total - overlap)


@dataclass
class _User:
    """One instance's simulated annotator: the clicks so far and the latest answer."""

    truth: np.ndarray
    rng: np.random.Generator
    points: list[np.ndarray]
    labels: list[int]
    mask: np.ndarray
    logits: torch.Tensor | None = None
    done: bool = False
    pending: np.ndarray | None = None  # boundary mode: the second point, given in round 2


def _next_click(user: _User, round_: int, mode: str, boundary_label: int) -> tuple[np.ndarray, int] | None:
    if round_ > 1 and np.array_equal(user.mask, user.truth):
        return None  # the mask is right: a user stops clicking
    if mode == "region":
        return (first_region_click(user.truth), POSITIVE) if round_ == 1 else next_region_click(user.truth, user.mask)
    if round_ == 1:
        first, user.pending = first_boundary_points(user.truth, user.rng)
        return first, boundary_label
    if round_ == 2:
        return user.pending, boundary_label
    point = next_boundary_point(user.truth, user.mask, np.stack(user.points))
    return None if point is None else (point, boundary_label)


def simulate(
    truths: Sequence[np.ndarray], rounds: int, mode: str, decide: Decide, rngs: Sequence[np.random.Generator], boundary_label: int
) -> tuple[np.ndarray, np.ndarray]:
    """Dice and IoU (instances, rounds) of one image's instances after each click.

    All instances still clicking are decoded together each round; one whose user stopped
    keeps its last mask (and scores) for the remaining rounds."""
    check_mode(mode)
    users = [_User(t, r, [], [], np.zeros_like(t)) for t, r in zip(truths, rngs)]
    dice = np.zeros((len(users), rounds))
    iou = np.zeros((len(users), rounds))
    for round_ in range(1, rounds + 1):
        active = []
        for user in users:
            click = None if user.done else _next_click(user, round_, mode, boundary_label)
            if click is None:
                user.done = True
                continue
            user.points.append(np.asarray(click[0], dtype=np.float64))
            user.labels.append(int(click[1]))
            active.append(user)
        if active:
            coords = np.stack([np.stack(u.points) for u in active])
            labels = np.array([u.labels for u in active], dtype=np.int64)
            previous = None if round_ == 1 else torch.cat([u.logits for u in active])
            masks, logits = decide(coords, labels, previous, round_ == 1)
            for index, user in enumerate(active):
                user.mask, user.logits = masks[index], logits[index : index + 1]
        for index, user in enumerate(users):
            dice[index, round_ - 1], iou[index, round_ - 1] = dice_iou(user.truth, user.mask)
    return dice, iou


def model_decide(predictor: Predictor, rgb: np.ndarray, postprocess: str) -> Decide:
    """The model's answers on one image, embedded here once for every round and instance."""
    embedding, resized = predictor.embed(rgb)
    original = rgb.shape[:2]
    scale = np.array([resized[1] / original[1], resized[0] / original[0]])

    @torch.no_grad()
    def decide(
        coords: np.ndarray, labels: np.ndarray, previous: torch.Tensor | None, multimask: bool
    ) -> tuple[np.ndarray, torch.Tensor]:
        points = torch.as_tensor(coords * scale, dtype=torch.float32, device=predictor.device)
        kinds = torch.as_tensor(labels, dtype=torch.int64, device=predictor.device)
        logits, ious = engine.decode_clicks(predictor.sam, embedding, points, kinds, multimask, previous)
        best = ious.argmax(dim=1)
        kept = logits[torch.arange(len(best), device=logits.device), best]
        masks = to_original(kept, predictor.image_size, resized, original, postprocess)
        return masks, kept[:, None].float()

    return decide


def boundary_label_of(sam: torch.nn.Module) -> tuple[int, str]:
    """(label, in words) that boundary clicks are fed to `sam` as.

    A model trained with boundary prompts has its own embedding for them (point label
    engine.BOUNDARY_LABEL). Official SAM, MedSAM and UltraSam have none, and segment_anything's
    encoder would give an unknown label no type embedding at all, so boundary clicks reach them
    as positive points: they lie on the mask's inner contour, so inside the object."""
    if engine.has_boundary_embedding(sam):
        return engine.BOUNDARY_LABEL, f"boundary points (label {engine.BOUNDARY_LABEL}, the model's boundary-click embedding)"
    return POSITIVE, "positive points (label 1: the model has no boundary-click embedding)"


@dataclass
class ClickCurve:
    """One dataset's means over its instances after clicks 1..N, in percent."""

    instances: int
    skipped_empty: int  # instances whose mask is empty at the image's size: nothing to click on
    dice: list[float]
    iou: list[float]

    def as_dict(self) -> dict[str, Any]:
        return {"instances": self.instances, "skipped_empty": self.skipped_empty, "dice": self.dice, "iou": self.iou}


def score_clicks(
    ground_truth: dict[str, Any],
    image_root: Path,
    open_image: Callable[[np.ndarray], Decide],
    rounds: int,
    mode: str,
    boundary_label: int = POSITIVE,
    seed: int = CLICK_SEED,
) -> ClickCurve:
    """The click curve of one COCO document; `open_image(rgb)` gives the model's answers on an image.

    The first boundary point of each instance comes from a generator seeded with (seed, image
    position, instance position), so an instance gets the same clicks whatever else is scored."""
    dice_rows, iou_rows, skipped = [], [], 0
    for position, _, instances, rgb in annotated_images(ground_truth, image_root):
        height, width = rgb.shape[:2]
        truths, rngs = [], []
        for index, annotation in enumerate(instances):
            truth = _gt_mask(annotation, height, width)
            if not truth.any():
                skipped += 1
                continue
            truths.append(truth)
            rngs.append(np.random.default_rng([seed, position, index]))
        if not truths:
            continue
        dice, iou = simulate(truths, rounds, mode, open_image(rgb), rngs, boundary_label)
        dice_rows.append(dice)
        iou_rows.append(iou)
    if not dice_rows:
        return ClickCurve(0, skipped, [], [])
    dice_all, iou_all = np.concatenate(dice_rows), np.concatenate(iou_rows)
    return ClickCurve(
        instances=len(dice_all),
        skipped_empty=skipped,
        dice=[round(100 * float(v), 2) for v in dice_all.mean(axis=0)],
        iou=[round(100 * float(v), 2) for v in iou_all.mean(axis=0)],
    )


def evaluate_clicks(
    predictor: Predictor,
    corpus: Path,
    datasets: Sequence[str],
    rounds: int,
    mode: str,
    protocol: Protocol,
    split: str = "test",
    max_images: int | None = None,
) -> dict[str, ClickCurve]:
    """{dataset: curve} on one split. The protocol decides the ground truth (MMOTU-2D's test
    file cut to its largest instances or not) and how logits become masks; its refinement
    and class-agnostic scoring belong to the mAP measurement and do not apply here."""
    check_mode(mode)
    if not 1 <= rounds <= MAX_CLICKS:
        raise Us43dError(f"the number of clicks must be from 1 to {MAX_CLICKS}, got {rounds}")
    truths = split_ground_truths(corpus, datasets, split, protocol, max_images)
    label, _ = boundary_label_of(predictor.sam)

    def open_image(rgb: np.ndarray) -> Decide:
        return model_decide(predictor, rgb, protocol.postprocess)

    return {d: score_clicks(truth, corpus / "images", open_image, rounds, mode, label) for d, truth in truths.items()}


def describe_clicks(mode: str, rounds: int, boundary_words: str) -> list[tuple[str, str]]:
    """(setting, what it does) lines for the printed table."""
    lines = [
        ("clicks", f"1 to {rounds}, one simulated user per instance"),
        ("click mode", f"{mode}: {CLICK_RULES[mode]}"),
        ("each round", ROUND_RULE),
    ]
    if mode == "boundary":
        lines.append(("boundary clicks fed as", boundary_words))
        lines.append(("seed", f"{CLICK_SEED} (with the image's and the instance's position in the file)"))
    lines.append(("scores", "Dice and IoU of each instance's mask at the image's size, averaged over instances (%)"))
    return lines


def clicks_document(
    mode: str, rounds: int, boundary_words: str, protocol: Protocol, curves: dict[str, ClickCurve]
) -> dict[str, Any]:
    """The `interactive` section of `--json`."""
    return {
        "mode": mode,
        "clicks": rounds,
        "click_rule": CLICK_RULES[mode],
        "round_rule": ROUND_RULE,
        "boundary_clicks_as": boundary_words if mode == "boundary" else None,
        "seed": CLICK_SEED,
        "postprocess": protocol.postprocess,
        "mmotu_2d_largest_only": protocol.mmotu_largest,
        "scores": {name: curve.as_dict() for name, curve in curves.items()},
    }


__all__ = [
    "CLICK_MODES",
    "ClickCurve",
    "dice_iou",
    "evaluate_clicks",
    "first_region_click",
    "next_region_click",
    "parse_clicks",
    "score_clicks",
    "simulate",
]
