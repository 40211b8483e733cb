"""Validation during training: per-dataset, class-agnostic mAP on the corpus's val split.

The authors validate every 5,000 of 30,000 iterations and keep the checkpoint with the best
validation segm mAP (recipe sheet, section 5). Scoring goes through `evaluate.score_truths`, the
same code as `us43d eval`, under the authors' protocol, on the val ground truth read once at
the start (class-agnostic, optionally a fixed seeded subset of images). The refinement pass
follows the run: the authors' refinement configs validate with it, their one-pass configs
without it (a --no-refine run never trains the mask-prompt path that pass goes through).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from us43d.errors import CorpusError
from us43d.training.evaluate import PROMPTS, merge_categories
from us43d.training.protocol import DEFAULT_PROTOCOL, Protocol
from us43d.training.sources import FolderImages, ImageSource, is_webdataset


@dataclass
class ValState:
    """What must survive `--resume`: the best score so far and where it was reached."""

    best_step: int | None = None
    best_map: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"best_step": self.best_step, "best_mAP": self.best_map}

    @classmethod
    def from_dict(cls, data: Any) -> ValState:
        if not isinstance(data, dict):
            return cls()
        step, score = data.get("best_step"), data.get("best_mAP")
        if isinstance(step, int) and isinstance(score, (int, float)):
            return cls(step, float(score))
        return cls()

    def improves(self, score: float) -> bool:
        return self.best_map is None or score > self.best_map


def _order_key(seed: int, file_name: str) -> bytes:
    return hashlib.sha256(f"{seed}:{file_name}".encode()).digest()


def agnostic_subset(ground_truth: dict[str, Any], max_images: int | None, seed: int) -> dict[str, Any]:
    """The images that have instances (others cannot change mAP), at most `max_images` of them
    in a seeded order that does not depend on file order, every category mapped to one."""
    annotated = {a["image_id"] for a in ground_truth["annotations"]}
    images = [i for i in ground_truth["images"] if i["id"] in annotated]
    if max_images is not None and len(images) > max_images:
        images = sorted(images, key=lambda i: _order_key(seed, str(i["file_name"])))[:max_images]
        images.sort(key=lambda i: str(i["file_name"]))
    kept = {i["id"] for i in images}
    annotations = [a for a in ground_truth["annotations"] if a["image_id"] in kept]
    return merge_categories({"images": images, "annotations": annotations, "categories": ground_truth["categories"]})


def read_val_files(
    corpus: Path, datasets: Sequence[str], max_images: int | None, seed: int
) -> tuple[dict[str, dict[str, Any]], ImageSource]:
    """{dataset: class-agnostic val ground truth} for the datasets that have val images, and
    where their images are read from (a built corpus or a webdataset export)."""
    from us43d.training.data import webdataset_documents
    from us43d.training.evaluate import read_ground_truth

    documents: dict[str, dict[str, Any]] = {}
    source: ImageSource = FolderImages(corpus / "images")
    if is_webdataset(corpus):
        documents, source = webdataset_documents(corpus, "val", datasets)
    else:
        for dataset in datasets:
            path = corpus / "coco" / dataset / "val.json"
            if path.is_file():
                documents[dataset] = read_ground_truth(path)
    truths: dict[str, dict[str, Any]] = {}
    for dataset, document in documents.items():
        try:
            subset = agnostic_subset(document, max_images, seed)
        except (KeyError, TypeError) as exc:
            raise CorpusError(f"cannot read the val split of {dataset} in {corpus}: {exc}") from None
        if subset["images"]:
            truths[dataset] = subset
    return truths, source


@dataclass
class Validator:
    """Scores a model on the val view; one per training process."""

    images: ImageSource
    truths: dict[str, dict[str, Any]]
    image_size: int
    rank: int = 0
    world: int = 1
    protocol: Protocol = DEFAULT_PROTOCOL

    @classmethod
    def for_run(
        cls, images: ImageSource, truths: dict[str, dict[str, Any]], image_size: int, refine: bool, rank: int, world: int
    ) -> Validator:
        """The validator of a run: the authors' protocol, with refinement as the run trains."""
        return cls(images, truths, image_size, rank, world, DEFAULT_PROTOCOL.with_settings(refine=refine))

    @property
    def datasets(self) -> list[str]:
        return sorted(self.truths)

    @property
    def image_counts(self) -> dict[str, int]:
        return {d: len(self.truths[d]["images"]) for d in self.datasets}

    def _my_datasets(self) -> list[str]:
        """Datasets shared out over the processes, largest first onto the least loaded."""
        loads = [0] * self.world
        mine = []
        for dataset in sorted(self.datasets, key=lambda d: (-self.image_counts[d], d)):
            rank = loads.index(min(loads))
            loads[rank] += self.image_counts[dataset]
            if rank == self.rank:
                mine.append(dataset)
        return mine

    def score(self, sam: torch.nn.Module, device: torch.device) -> dict[str, dict[str, dict[str, float]]]:
        """{dataset: {prompt: {"mAP", "mAP50"}}} over all datasets; every process must call it."""
        from us43d.training.evaluate import Predictor, score_truths

        mine = self._my_datasets()
        table: dict[str, dict[str, dict[str, float]]] = {}
        was_training = sam.training
        sam.eval()
        try:
            if mine:
                predictor = Predictor(sam=sam, image_size=self.image_size, device=device)
                truths = {d: self.truths[d] for d in mine}
                table = score_truths(predictor, self.images, truths, PROMPTS, self.protocol)
        finally:
            sam.train(was_training)
        if self.world > 1:
            import torch.distributed as dist

            gathered: list[Any] = [None] * self.world
            dist.all_gather_object(gathered, table)
            table = {k: v for part in gathered for k, v in part.items()}
        return {dataset: table[dataset] for dataset in self.datasets}


def summary_map(table: dict[str, dict[str, dict[str, float]]]) -> float:
    """The score the best checkpoint is chosen by: the mean over datasets and prompts of mAP,
    so each dataset counts once whatever its size."""
    values = [scores["mAP"] for prompts in table.values() for scores in prompts.values()]
    return round(sum(values) / len(values), 4) if values else 0.0
