"""Which prompt each training instance gets: UltraSam's point or box, or SAMUSA's boundary clicks.

A training setting `prompt` names the kinds with their probabilities, e.g. `point=0.5,box=0.5`
(the recipe), `boundary` (SAMUSA) or `point=0.25,box=0.25,boundary=0.5`. The stored form is
canonical (kinds in the order below, probabilities as Python writes floats), so two spellings
of one mix compare equal when a run is resumed.
"""

from __future__ import annotations

import math

import numpy as np

from us43d.errors import Us43dError

PROMPT_KINDS = ("point", "box", "boundary")
RECIPE_PROMPT = "point=0.5,box=0.5"  # recipe sheet, section 2.3: point or box per instance, p = 0.5 each


def parse_prompt_mix(text: str) -> dict[str, float]:
    """`point=0.25,box=0.25,boundary=0.5` -> probabilities per kind (kinds left out get 0).

    Kinds named without a number share the probability equally (`point,box` is the recipe);
    numbers, when given, are given for every kind named and sum to 1."""
    if not isinstance(text, str) or not text.strip():
        raise Us43dError(f"prompt: give kinds from {', '.join(PROMPT_KINDS)}, e.g. point=0.5,box=0.5 (got {text!r})")
    parts = [part.strip() for part in text.split(",") if part.strip()]
    names, numbers = [], []
    for part in parts:
        name, sep, number = part.partition("=")
        name = name.strip().lower()
        if name not in PROMPT_KINDS:
            raise Us43dError(f"prompt: unknown kind {name!r} in {text!r} (choose from {', '.join(PROMPT_KINDS)})")
        if name in names:
            raise Us43dError(f"prompt: {name} is named twice in {text!r}")
        names.append(name)
        if sep:
            try:
                value = float(number)
            except ValueError:
                raise Us43dError(f"prompt: {name}={number.strip()!r} in {text!r} is not a number") from None
            if not math.isfinite(value) or value < 0 or value > 1:
                raise Us43dError(f"prompt: {name}={number.strip()} in {text!r} is not a probability between 0 and 1")
            numbers.append(value)
    if numbers and len(numbers) != len(names):
        raise Us43dError(f"prompt: give a probability for every kind or for none in {text!r}")
    if not numbers:
        numbers = [1.0 / len(names)] * len(names)
    if abs(sum(numbers) - 1.0) > 1e-6:
        raise Us43dError(f"prompt: the probabilities in {text!r} sum to {sum(numbers):g}, not 1")
    mix = {kind: 0.0 for kind in PROMPT_KINDS}
    mix.update(zip(names, numbers))
    if all(value == 0 for value in mix.values()):
        raise Us43dError(f"prompt: {text!r} gives every kind probability 0")
    return mix


def canonical_prompt(text: str) -> str:
    """The stored spelling of a mix: kinds in PROMPT_KINDS order, zero ones left out."""
    mix = parse_prompt_mix(text)
    return ",".join(f"{kind}={mix[kind]!r}" for kind in PROMPT_KINDS if mix[kind] > 0)


def uses_boundary(text: str) -> bool:
    return parse_prompt_mix(text)["boundary"] > 0


# Instance kinds as drawn for a sample.
POINT, BOX, BOUNDARY = 0, 1, 2


def draw_kinds(mix: dict[str, float], count: int, rng: np.random.Generator) -> np.ndarray:
    """One kind per instance (POINT, BOX or BOUNDARY) from a single uniform draw each.

    The thresholds put box first, then point, then boundary: with the recipe's mix this is
    exactly the recipe's `rng.random(n) < 0.5` for "box", so runs without boundary prompts
    draw the very numbers they drew before boundary prompts existed."""
    draws = rng.random(count)
    kinds = np.full(count, BOUNDARY, dtype=np.int64)
    # without boundary prompts nothing may fall past point + box, however the floats round
    kinds[draws < (mix["box"] + mix["point"] if mix["boundary"] > 0 else np.inf)] = POINT
    kinds[draws < mix["box"]] = BOX
    return kinds
