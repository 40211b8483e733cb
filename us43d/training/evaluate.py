"""Prompt-based COCO evaluation on any split of the corpus (the paper's Table 1 on the test sets).

For every instance: one prompt (the mask centroid, or the ground-truth box), one predicted mask
(the highest predicted IoU, which is also the score), scored with pycocotools' COCOeval on
segmentation masks. How the masks are made and scored follows a `Protocol`
(us43d.training.protocol): by default the authors' (refinement pass, masks binarised before
upsampling, class-agnostic scoring, MMOTU-2D's test file cut to its largest instances), so
numbers compare with the paper; `PROTOCOLS["sam"]` is segment_anything's own inference.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from us43d.corpus.writers import AGNOSTIC_CATEGORY
from us43d.errors import CorpusError, Us43dError
from us43d.training import engine
from us43d.training.data import prepare_image, resized_shape
from us43d.training.protocol import DEFAULT_PROTOCOL, LARGEST_SHARE, POSTPROCESSING, Protocol
from us43d.training.sources import FolderImages, ImageSource

PAPER_TEST_SETS = ("BUS-BRA", "MMOTU-2D", "GIST514-DB")
PROMPTS = ("point", "box")
SPLITS = ("train", "val", "test")


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
        postprocess: str = "logits",
    ) -> tuple[np.ndarray, np.ndarray]:
        """Binary masks (N, H, W) at the original size and their scores (predicted IoU).

        With `refine`, the authors' test-time refinement: a single-mask pass, then a multimask
        pass with its logits as mask prompt; a box prompt is kept, a point prompt is replaced by
        the box of the first mask after post-processing (recipe sheet, section 3.6)."""
        count = len(points) if not use_box else len(boxes)
        scale = np.array([resized[1] / original[1], resized[0] / original[0]])
        pts = torch.as_tensor(points * scale if len(points) else np.zeros((count, 2)), dtype=torch.float32, device=self.device)
        bxs = torch.as_tensor(
            boxes * np.tile(scale, 2) if len(boxes) else np.zeros((count, 4)), dtype=torch.float32, device=self.device
        )
        is_box = torch.full((count,), use_box, dtype=torch.bool, device=self.device)
        mask_input = None
        if refine:
            first, _ = engine.decode(self.sam, embedding, pts, bxs, is_box, multimask=False)
            if not use_box:
                first_masks = to_original(first[:, 0], self.image_size, resized, original, postprocess)
                # the authors scale the mask's box into the input frame and add nothing;
                # segment_anything's prompt encoder adds 0.5 itself, hence the -0.5
                derived = np.stack([mask_box(m) for m in first_masks]) * np.tile(scale, 2) - 0.5
                bxs = torch.as_tensor(derived, dtype=torch.float32, device=self.device)
                is_box = torch.ones_like(is_box)
            mask_input = first
        logits, ious = engine.decode(self.sam, embedding, pts, bxs, is_box, multimask=True, mask_input=mask_input)
        best = ious.argmax(dim=1)
        rows = torch.arange(count, device=self.device)
        masks = to_original(logits[rows, best], self.image_size, resized, original, postprocess)
        return masks, ious[rows, best].float().cpu().numpy()


def to_original(
    low_res: torch.Tensor, image_size: int, resized: tuple[int, int], original: tuple[int, int], postprocess: str
) -> np.ndarray:
    """Low-resolution logits (N, h, w) to boolean masks (N, H, W) at the original size.

    "logits" is segment_anything's: logits to the padded input, crop, to the original, > 0.
    "binary" is the authors': > 0 first, then the 0/1 mask through the same resizes, and every
    value above 0 is foreground, which widens a mask by about half a low-resolution pixel on
    each side (2 pixels at 1024) plus up to a pixel from the last resize (recipe sheet, 6.3)."""
    if postprocess not in POSTPROCESSING:
        raise Us43dError(f"unknown post-processing '{postprocess}' (choose from {', '.join(POSTPROCESSING)})")
    maps = low_res[:, None].float()
    if postprocess == "binary":
        maps = (maps > 0).float()
    up = F.interpolate(maps, (image_size, image_size), mode="bilinear", align_corners=False)
    up = up[..., : resized[0], : resized[1]]
    up = F.interpolate(up, original, mode="bilinear", align_corners=False)
    return (up[:, 0] > 0).cpu().numpy()


def mask_box(mask: np.ndarray) -> np.ndarray:
    """Tight box [x0, y0, x1, y1] with exclusive right and bottom edges; zeros for an empty mask."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if len(cols) == 0:
        return np.zeros(4)
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=np.float64)


def centroid(mask: np.ndarray) -> np.ndarray:
    """Mean of the foreground pixel coordinates (x, y), used as is even outside the mask."""
    ys, xs = np.nonzero(mask)
    return np.array([xs.mean(), ys.mean()])


def merge_categories(ground_truth: dict[str, Any]) -> dict[str, Any]:
    """The same file with every category merged into one (id 1), as the authors score."""
    annotations = [{**a, "category_id": 1} for a in ground_truth["annotations"]]
    return {**ground_truth, "annotations": annotations, "categories": [dict(AGNOSTIC_CATEGORY)]}


def coco_map(
    ground_truth: dict[str, Any], predictions: Sequence[dict[str, Any]], class_agnostic: bool = True
) -> dict[str, float]:
    """mAP (0.50:0.95) and mAP@50 in percent, pycocotools segm, maxDets 100/300/1000.

    Class-agnostic by default: a per-dataset file keeps the dataset's categories, and COCOeval
    would otherwise average AP over them, which is not what the paper reports and moves mAP by
    several points on identical predictions."""
    gt = COCO()
    gt.dataset = merge_categories(ground_truth) if class_agnostic else ground_truth
    keys = ("image_id", "category_id", "segmentation", "score")
    # loadRes adds fields to the dicts it gets: give it copies so predictions can be reused
    detections = [{k: p[k] for k in keys} for p in predictions]
    if class_agnostic:
        for detection in detections:
            detection["category_id"] = 1
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        if not detections:
            return {"mAP": 0.0, "mAP50": 0.0}
        evaluator = COCOeval(gt, gt.loadRes(detections), iouType="segm")
        evaluator.params.maxDets = [100, 300, 1000]
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {
        "mAP": round(100 * max(float(evaluator.stats[0]), 0.0), 2),
        "mAP50": round(100 * max(float(evaluator.stats[1]), 0.0), 2),
    }


def largest_instances(ground_truth: dict[str, Any], share: float = LARGEST_SHARE) -> dict[str, Any]:
    """Per image, only the instances whose area is at least `share` of the image's largest:
    the authors' filter of the MMOTU-2D test file (in practice the largest instance)."""
    largest: dict[Any, float] = {}
    for annotation in ground_truth["annotations"]:
        largest[annotation["image_id"]] = max(largest.get(annotation["image_id"], 0.0), float(annotation["area"]))
    kept = [a for a in ground_truth["annotations"] if float(a["area"]) >= share * largest[a["image_id"]]]
    return {**ground_truth, "annotations": kept}


def first_images(ground_truth: dict[str, Any], count: int) -> dict[str, Any]:
    """The first `count` images holding an instance (file order) and their instances: a fast,
    deterministic subset for validation during training."""
    holding = {a["image_id"] for a in ground_truth["annotations"]}
    images = [i for i in ground_truth["images"] if i["id"] in holding][:count]
    ids = {i["id"] for i in images}
    return {**ground_truth, "images": images, "annotations": [a for a in ground_truth["annotations"] if a["image_id"] in ids]}


def evaluation_ground_truth(
    ground_truth: dict[str, Any], dataset: str, split: str, protocol: Protocol, max_images: int | None = None
) -> dict[str, Any]:
    """What the protocol scores against; the corpus file itself is never changed."""
    if protocol.applies_mmotu_filter(dataset, split):
        ground_truth = largest_instances(ground_truth)
    if max_images is not None:
        ground_truth = first_images(ground_truth, max_images)
    return ground_truth


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


def annotated_images(
    ground_truth: dict[str, Any], images: Path | ImageSource, progress: Callable[[], None] | None = None
) -> Iterator[tuple[int, dict[str, Any], list[dict[str, Any]], np.ndarray]]:
    """(position in the file, image entry, its annotations, its pixels) for each image that has
    instances, each image read once; `progress` is called for every image of the file."""
    source = FolderImages(images) if isinstance(images, Path) else images
    by_image: dict[Any, list[dict[str, Any]]] = {}
    for annotation in ground_truth["annotations"]:
        by_image.setdefault(annotation["image_id"], []).append(annotation)
    for position, image in enumerate(ground_truth["images"]):
        annotations = by_image.get(image["id"], [])
        if progress:
            progress()
        if annotations:
            yield position, image, annotations, source.read(image["file_name"])


def predict_dataset(
    ground_truth: dict[str, Any],
    images: Path | ImageSource,
    predict: Predict,
    prompts: Sequence[str],
    progress: Callable[[], None] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """One prediction per ground-truth instance and prompt type, each image read once.

    `predict(rgb, points, boxes, prompts)` returns {prompt: (masks, scores)} at the original size.
    """
    results: dict[str, list[dict[str, Any]]] = {prompt: [] for prompt in prompts}
    for _, image, instances, rgb in annotated_images(ground_truth, images, progress):
        height, width = rgb.shape[:2]
        truth = [_gt_mask(a, height, width) for a in instances]
        points = np.stack([centroid(m) for m in truth])
        boxes = np.array(
            [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]] for a in instances],
            dtype=np.float64,
        )
        for prompt, (masks, scores) in predict(rgb, points, boxes, prompts).items():
            for annotation, mask, score in zip(instances, masks, scores):
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


def split_file(corpus: Path, dataset: str, split: str = "test") -> Path:
    if split not in SPLITS:
        raise Us43dError(f"unknown split '{split}' (choose from {', '.join(SPLITS)})")
    path = corpus / "coco" / dataset / f"{split}.json"
    if not path.is_file():
        raise CorpusError(
            f"the {split} set of {dataset} is absent from {corpus} (no coco/{dataset}/{split}.json); build {dataset} first"
        )
    return path


def corpus_datasets(corpus: Path, split: str = "test") -> list[str]:
    """Every dataset of the corpus that has images in `split` (it has coco/DATASET/SPLIT.json)."""
    if split not in SPLITS:
        raise Us43dError(f"unknown split '{split}' (choose from {', '.join(SPLITS)})")
    folder = corpus / "coco"
    names = sorted(d.name for d in folder.iterdir() if d.is_dir() and (d / f"{split}.json").is_file()) if folder.is_dir() else []
    if not names:
        raise CorpusError(f"{corpus} holds no dataset with a {split} split (no coco/*/{split}.json); run `us43d build`")
    return names


def read_ground_truth(path: Path) -> dict[str, Any]:
    """A COCO file of the corpus, checked for the fields evaluation reads, so a damaged file is
    named instead of failing deep inside pycocotools."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorpusError(f"cannot read {path}: {exc}") from None
    problem = _coco_problem(document)
    if problem:
        raise CorpusError(f"{path} is not a usable COCO file: {problem}; rebuild the dataset")
    return document


def _coco_problem(document: Any) -> str | None:
    if not isinstance(document, dict):
        return "not a JSON object"
    for key in ("images", "annotations", "categories"):
        if not isinstance(document.get(key), list):
            return f"'{key}' is not a list"
    for image in document["images"]:
        if not isinstance(image, dict) or not {"id", "file_name"} <= image.keys() or not isinstance(image["file_name"], str):
            return f"an image entry lacks id or file_name: {str(image)[:80]}"
    for annotation in document["annotations"]:
        if (
            not isinstance(annotation, dict)
            or not {"image_id", "category_id", "bbox", "segmentation", "area"} <= annotation.keys()
        ):
            return f"an annotation lacks image_id, category_id, bbox, segmentation or area: {str(annotation)[:80]}"
        bbox, area = annotation["bbox"], annotation["area"]
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)):
            return f"annotation {annotation.get('id')} has a bad bbox {str(bbox)[:40]}"
        if not isinstance(area, (int, float)) or isinstance(area, bool):
            return f"annotation {annotation.get('id')} has a bad area {str(area)[:40]}"
    return None


def evaluate(
    predictor: Predictor,
    corpus: Path,
    datasets: Sequence[str] = PAPER_TEST_SETS,
    prompts: Sequence[str] = PROMPTS,
    refine: bool | None = None,
    progress: Callable[[str, int], Callable[[], None]] | None = None,
    *,
    protocol: Protocol = DEFAULT_PROTOCOL,
    split: str = "test",
    max_images: int | None = None,
) -> dict[str, dict[str, dict[str, float]]]:
    """{dataset: {prompt: {"mAP": x, "mAP50": y}}} in percent, on one split of each dataset.

    `protocol` defaults to the authors' (Table 1); `refine`, when given, overrides its
    refinement setting. `max_images` scores only the first images of each file that hold an
    instance (a fast subset; the number is then not the split's)."""
    if refine is not None:
        protocol = protocol.with_settings(refine=refine)
    truths = split_ground_truths(corpus, datasets, split, protocol, max_images)
    return score_truths(predictor, corpus / "images", truths, prompts, protocol, progress)


def split_ground_truths(
    corpus: Path, datasets: Sequence[str], split: str, protocol: Protocol, max_images: int | None
) -> dict[str, dict[str, Any]]:
    """{dataset: what the protocol scores against} on one split; every file is found before any is read."""
    if max_images is not None and max_images < 1:
        raise Us43dError(f"max_images must be at least 1, got {max_images}")
    paths = {d: split_file(corpus, d, split) for d in datasets}
    return {d: evaluation_ground_truth(read_ground_truth(path), d, split, protocol, max_images) for d, path in paths.items()}


def score_truths(
    predictor: Predictor,
    images: Path | ImageSource,
    truths: dict[str, dict[str, Any]],
    prompts: Sequence[str] = PROMPTS,
    protocol: Protocol = DEFAULT_PROTOCOL,
    progress: Callable[[str, int], Callable[[], None]] | None = None,
) -> dict[str, dict[str, dict[str, float]]]:
    """`evaluate` on ground truth already in memory ({dataset: COCO document}): validation
    during training scores its own subsets of the val split this way."""

    def predict(
        rgb: np.ndarray, points: np.ndarray, boxes: np.ndarray, wanted: Sequence[str]
    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        embedding, resized = predictor.embed(rgb)
        return {
            p: predictor.masks(
                embedding, resized, rgb.shape[:2], points, boxes, p == "box", protocol.refine, protocol.postprocess
            )
            for p in wanted
        }

    table: dict[str, dict[str, dict[str, float]]] = {}
    for dataset, ground_truth in truths.items():
        tick = progress(dataset, len(ground_truth["images"])) if progress else None
        predictions = predict_dataset(ground_truth, images, predict, prompts, tick)
        table[dataset] = {prompt: coco_map(ground_truth, predictions[prompt], protocol.class_agnostic) for prompt in prompts}
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


__all__ = [
    "Predictor",
    "coco_map",
    "corpus_datasets",
    "evaluate",
    "evaluation_ground_truth",
    "load_predictor",
    "predict_dataset",
    "resized_shape",
    "score_truths",
    "to_original",
]
