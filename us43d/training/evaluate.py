"""Prompt-based COCO evaluation on the official test sets (the paper's Table 1).

For every test instance: one prompt (the mask centroid, or the ground-truth box), one
predicted mask (the highest predicted IoU, which is also the score), scored with pycocotools'
COCOeval on segmentation masks. `refine=True` reproduces the authors' test-time refinement:
a single-mask first pass, then a multimask pass with the first logits as mask prompt, where
point prompts are replaced by the box of the first mask (recipe sheet, section 3.6).
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from us43d.errors import CorpusError
from us43d.training import engine
from us43d.training.data import prepare_image, read_rgb, resized_shape

PAPER_TEST_SETS = ("BUS-BRA", "MMOTU-2D", "GIST514-DB")
PROMPTS = ("point", "box")


@dataclass(frozen=True)
class Predictor:
    """A SAM model and the input size it was built for."""

    sam: torch.nn.Module
    image_size: int
    device: torch.device

    @torch.no_grad()
    def embed(self, rgb: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
        image, resized = prepare_image(rgb, self.image_size)
        return self.sam.image_encoder(image[None].to(self.device)), resized

    @torch.no_grad()
    def masks(
        self,
        embedding: torch.Tensor,
        resized: tuple[int, int],
        original: tuple[int, int],
        points: np.ndarray,
        boxes: np.ndarray,
        use_box: bool,
        refine: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Binary masks (N, H, W) at the original size and their scores (predicted IoU)."""
        count = len(points) if not use_box else len(boxes)
        scale = np.array([resized[1] / original[1], resized[0] / original[0]])
        pts = torch.as_tensor(points * scale if len(points) else np.zeros((count, 2)), dtype=torch.float32, device=self.device)
        bxs = torch.as_tensor(
            boxes * np.tile(scale, 2) if len(boxes) else np.zeros((count, 4)), dtype=torch.float32, device=self.device
        )
        is_box = torch.full((count,), use_box, dtype=torch.bool, device=self.device)
        if refine:
            first, _ = engine.decode(self.sam, embedding, pts, bxs, is_box, multimask=False)
            if not use_box:
                # as the authors' test pipeline does: the point becomes the box of the first mask
                first_masks = self._upsample(first[:, 0], resized, resized)
                bxs = torch.as_tensor(np.stack([_box_xyxy(m) for m in first_masks]), dtype=torch.float32, device=self.device)
                is_box = torch.ones_like(is_box)
            logits, ious = engine.decode(self.sam, embedding, pts, bxs, is_box, multimask=True, mask_input=first)
        else:
            logits, ious = engine.decode(self.sam, embedding, pts, bxs, is_box, multimask=True)
        best = ious.argmax(dim=1)
        rows = torch.arange(count, device=self.device)
        return self._upsample(logits[rows, best], resized, original), ious[rows, best].float().cpu().numpy()

    def _upsample(self, low_res: torch.Tensor, resized: tuple[int, int], original: tuple[int, int]) -> np.ndarray:
        """segment_anything's post-processing: logits to the padded input, crop, to the original, > 0."""
        up = F.interpolate(low_res[:, None].float(), (self.image_size, self.image_size), mode="bilinear", align_corners=False)
        up = up[..., : resized[0], : resized[1]]
        up = F.interpolate(up, original, mode="bilinear", align_corners=False)
        return (up[:, 0] > 0).cpu().numpy()


def _box_xyxy(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return np.zeros(4)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float64)


def centroid(mask: np.ndarray) -> np.ndarray:
    """Mean of the foreground pixel coordinates (x, y), used as is even outside the mask."""
    ys, xs = np.nonzero(mask)
    return np.array([xs.mean(), ys.mean()])


def coco_map(ground_truth: dict[str, Any], predictions: Sequence[dict[str, Any]]) -> dict[str, float]:
    """mAP (0.50:0.95) and mAP@50 in percent, pycocotools segm, maxDets 100/300/1000."""
    gt = COCO()
    gt.dataset = ground_truth
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        if not predictions:
            return {"mAP": 0.0, "mAP50": 0.0}
        # loadRes adds fields to the dicts it gets: give it copies so predictions can be reused
        keys = ("image_id", "category_id", "segmentation", "score")
        detections = gt.loadRes([{k: p[k] for k in keys} for p in predictions])
        evaluator = COCOeval(gt, detections, iouType="segm")
        evaluator.params.maxDets = [100, 300, 1000]
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {
        "mAP": round(100 * max(float(evaluator.stats[0]), 0.0), 2),
        "mAP50": round(100 * max(float(evaluator.stats[1]), 0.0), 2),
    }


def _gt_mask(annotation: dict[str, Any], height: int, width: int) -> np.ndarray:
    segmentation = annotation["segmentation"]
    if isinstance(segmentation, dict):
        counts = segmentation["counts"]
        rle = {"size": segmentation["size"], "counts": counts.encode() if isinstance(counts, str) else counts}
        if not isinstance(counts, str):
            rle = mask_utils.frPyObjects(rle, height, width)
    else:
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    return mask_utils.decode(rle).astype(bool)


Predict = Callable[[np.ndarray, np.ndarray, np.ndarray, Sequence[str]], dict[str, tuple[np.ndarray, np.ndarray]]]


def predict_dataset(
    ground_truth: dict[str, Any],
    image_root: Path,
    predict: Predict,
    prompts: Sequence[str],
    progress: Callable[[], None] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """One prediction per ground-truth instance and prompt type, each image read once.

    `predict(rgb, points, boxes, prompts)` returns {prompt: (masks, scores)} at the original size.
    """
    by_image: dict[Any, list[dict[str, Any]]] = {}
    for annotation in ground_truth["annotations"]:
        by_image.setdefault(annotation["image_id"], []).append(annotation)
    results: dict[str, list[dict[str, Any]]] = {prompt: [] for prompt in prompts}
    for image in ground_truth["images"]:
        annotations = by_image.get(image["id"], [])
        if progress:
            progress()
        if not annotations:
            continue
        path = image_root / image["file_name"]
        if not path.is_file():
            raise CorpusError(f"test image {path} is missing")
        rgb = read_rgb(path)
        height, width = rgb.shape[:2]
        truth = [_gt_mask(a, height, width) for a in annotations]
        points = np.stack([centroid(m) for m in truth])
        boxes = np.array(
            [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]] for a in annotations],
            dtype=np.float64,
        )
        for prompt, (masks, scores) in predict(rgb, points, boxes, prompts).items():
            for annotation, mask, score in zip(annotations, masks, scores):
                rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
                rle["counts"] = rle["counts"].decode("ascii")
                results[prompt].append(
                    {
                        "image_id": image["id"],
                        "category_id": annotation["category_id"],
                        "segmentation": rle,
                        "score": float(score),
                    }
                )
    return results


def test_file(corpus: Path, dataset: str) -> Path:
    path = corpus / "coco" / dataset / "test.json"
    if not path.is_file():
        raise CorpusError(
            f"the test set of {dataset} is absent from {corpus} (no coco/{dataset}/test.json); build {dataset} first"
        )
    return path


def evaluate(
    predictor: Predictor,
    corpus: Path,
    datasets: Sequence[str] = PAPER_TEST_SETS,
    prompts: Sequence[str] = PROMPTS,
    refine: bool = False,
    progress: Callable[[str, int], Callable[[], None]] | None = None,
) -> dict[str, dict[str, dict[str, float]]]:
    """{dataset: {prompt: {"mAP": x, "mAP50": y}}} in percent."""
    paths = {d: test_file(corpus, d) for d in datasets}

    def predict(
        rgb: np.ndarray, points: np.ndarray, boxes: np.ndarray, wanted: Sequence[str]
    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        embedding, resized = predictor.embed(rgb)
        return {p: predictor.masks(embedding, resized, rgb.shape[:2], points, boxes, p == "box", refine) for p in wanted}

    table: dict[str, dict[str, dict[str, float]]] = {}
    for dataset, path in paths.items():
        ground_truth = json.loads(path.read_text())
        tick = progress(dataset, len(ground_truth["images"])) if progress else None
        predictions = predict_dataset(ground_truth, corpus / "images", predict, prompts, tick)
        table[dataset] = {prompt: coco_map(ground_truth, predictions[prompt]) for prompt in prompts}
    return table


def load_predictor(
    checkpoint: Path | None,
    model: str | None = None,
    image_size: int | None = None,
    device: str | None = None,
    decoder: str | None = None,
    report: Callable[[str], Any] | None = None,
) -> Predictor:
    """The checkpoint's model; shape and decoder form from the file unless given (model_shape.load_model)."""
    from us43d.training.model_shape import load_model

    sam, config = load_model(checkpoint, model, image_size, decoder, report)
    target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return Predictor(sam.to(target).eval(), config.image_size, target)


__all__ = ["Predictor", "coco_map", "evaluate", "load_predictor", "predict_dataset", "resized_shape"]
