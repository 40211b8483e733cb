"""Evaluation protocols: the choices that decide what "mAP on the test set" measures.

The paper's Table 1 was measured by the authors' own pipeline, which differs from SAM's stock
inference in ways that each move mAP by several points on identical weights: a refinement pass
(where a point prompt becomes the box of the first mask), masks binarised before upsampling
(which widens them), class-agnostic scoring, and an MMOTU-2D test file cut to the largest
instance per image. A number is only comparable with its protocol, so every table and JSON file
carries these fields. `authors` reproduces Table 1's measurement (recipe sheet, sections 3.6,
6.1-6.3 and 1.1); `sam` is segment_anything's own inference on the corpus as built.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from us43d.errors import Us43dError

POSTPROCESSING = ("binary", "logits")
MMOTU_2D = "MMOTU-2D"
LARGEST_SHARE = 0.95  # the authors' MMOTU-2D filter keeps instances with at least 95 % of the largest's area
PROMPT_RULE = {
    "point": "centroid of the ground-truth mask (kept even when it falls outside the mask)",
    "box": "the ground-truth box, no jitter",
}


@dataclass(frozen=True)
class Protocol:
    """One way of turning prompts into scored masks; `preset` names where it started from."""

    preset: str
    refine: bool
    postprocess: str  # "binary": the authors' (binarise at low resolution, upsample, keep > 0); "logits": SAM's
    class_agnostic: bool
    mmotu_largest: bool  # MMOTU-2D's test ground truth cut to the largest instance per image
    changed: tuple[str, ...] = ()  # settings that differ from the preset

    def with_settings(self, **settings: Any) -> Protocol:
        """This protocol with some settings changed; `changed` lists those that differ from the preset."""
        chosen = replace(self, **settings)
        base = PROTOCOLS[self.preset]
        names = [f.name for f in fields(Protocol) if f.name not in ("preset", "changed")]
        return replace(chosen, changed=tuple(n for n in names if getattr(chosen, n) != getattr(base, n)))

    def applies_mmotu_filter(self, dataset: str, split: str) -> bool:
        """The authors filtered their MMOTU-2D test file only; val and train stay as built."""
        return self.mmotu_largest and split == "test" and dataset.lower() == MMOTU_2D.lower()

    def as_dict(self) -> dict[str, Any]:
        """The machine-readable fields written to `--json`."""
        return {
            "preset": self.preset,
            "changed": list(self.changed),
            "prompt_rule": dict(PROMPT_RULE),
            "refine": self.refine,
            "postprocess": self.postprocess,
            "class_agnostic": self.class_agnostic,
            "mmotu_2d_largest_only": self.mmotu_largest,
            "mask_selection": "highest predicted IoU, which is also the score",
            "metric": "pycocotools COCOeval segm, mAP 0.50:0.95 and mAP@50, maxDets 100/300/1000",
        }

    def summary(self) -> str:
        """One line for small tables (the demo's)."""
        return (
            f"protocol: {self.preset}{'*' if self.changed else ''} (refinement {'on' if self.refine else 'off'}, "
            f"{self.postprocess} post-processing, {'class-agnostic' if self.class_agnostic else 'per class'}, "
            f"MMOTU-2D test {'largest instance only' if self.mmotu_largest else 'every instance'})"
        )

    def describe(self, split: str) -> list[tuple[str, str]]:
        """(setting, what it does) lines for the printed table."""
        preset = self.preset + (f" (changed: {', '.join(self.changed)})" if self.changed else "")
        refinement = (
            "on: pass 1 one mask; pass 2 three masks with pass 1's logits as mask prompt, "
            "the box prompt kept, a point prompt replaced by the box of pass 1's mask"
            if self.refine
            else "off: one pass, three masks"
        )
        postprocess = (
            "binary (authors): logits > 0 at low resolution, the 0/1 mask upsampled bilinearly, every value > 0 kept"
            if self.postprocess == "binary"
            else "logits (SAM): logits upsampled bilinearly, then > 0"
        )
        scoring = (
            "class-agnostic: every category counted as one" if self.class_agnostic else "per class, averaged over categories"
        )
        if not self.mmotu_largest:
            mmotu = "every instance, as built"
        elif split == "test":
            mmotu = f"largest instance per image (area at least {LARGEST_SHARE:.0%} of the largest)"
        else:
            mmotu = f"largest instance per image, on the test split only (this is {split}: every instance)"
        return [
            ("protocol", preset),
            ("prompts", f"one per instance; point: {PROMPT_RULE['point']}; box: {PROMPT_RULE['box']}"),
            ("refinement", refinement),
            ("post-processing", postprocess),
            ("scoring", scoring),
            ("MMOTU-2D test", mmotu),
            ("mask and score", "the mask with the highest predicted IoU; that IoU is the score"),
        ]


PROTOCOLS = {
    "authors": Protocol("authors", refine=True, postprocess="binary", class_agnostic=True, mmotu_largest=True),
    "sam": Protocol("sam", refine=False, postprocess="logits", class_agnostic=True, mmotu_largest=False),
}
DEFAULT_PROTOCOL = PROTOCOLS["authors"]


def resolve_protocol(
    preset: str = "authors",
    refine: bool | None = None,
    postprocess: str | None = None,
    class_agnostic: bool | None = None,
    mmotu_largest: bool | None = None,
) -> Protocol:
    """A preset with some settings overridden (None keeps the preset's); the overridden
    settings that differ from the preset are listed so the table says the run was modified."""
    try:
        base = PROTOCOLS[preset]
    except KeyError:
        raise Us43dError(f"unknown protocol '{preset}' (choose from {', '.join(PROTOCOLS)})") from None
    if postprocess is not None and postprocess not in POSTPROCESSING:
        raise Us43dError(f"unknown post-processing '{postprocess}' (choose from {', '.join(POSTPROCESSING)})")
    wanted = {"refine": refine, "postprocess": postprocess, "class_agnostic": class_agnostic, "mmotu_largest": mmotu_largest}
    return base.with_settings(**{k: v for k, v in wanted.items() if v is not None})
