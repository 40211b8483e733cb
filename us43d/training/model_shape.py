"""Which model a checkpoint holds, read from its tensors (and a run's record), so `eval` and
`predict` need no `--model`, and a `--model` that does not fit is named with the file's shape.

segment_anything's modules fix every width and count in their parameter shapes: the patch
embedding gives the encoder width and patch size, the absolute position table the input size,
the relative position tables of each block its head width and whether it attends globally or
in windows, the neck, decoder MLP, mask path and IoU head their widths. Only the decoder's head
count leaves no trace; the named configurations settle it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from us43d.training.checkpoints import CheckpointError, Weights, load_into, read_weights
from us43d.training.engine import BOUNDARY_EMBED_KEY, BOUNDARY_LABEL, add_boundary_embedding
from us43d.training.sam import DECODER_NAMES, DECODERS, DEFAULT_DECODER, MODEL_CONFIGS, ModelConfig, build_model, model_config

# ModelConfig fields the tensors determine; a named configuration fits when all agree.
_COMPARED = (
    "patch_size",
    "encoder_dim",
    "encoder_depth",
    "encoder_heads",
    "global_attn_indexes",
    "window_size",
    "prompt_dim",
    "decoder_mlp_dim",
    "mask_in_chans",
    "iou_hidden_dim",
)


@dataclass(frozen=True)
class FoundShape:
    """What a state dict's tensors say about the model; `mask_in_chans` is None when the file
    has no mask path (MMDetection models trained without refinement)."""

    image_size: int
    patch_size: int
    encoder_dim: int
    encoder_depth: int
    encoder_heads: int
    global_attn_indexes: tuple[int, ...]
    window_size: int | None
    prompt_dim: int
    decoder_mlp_dim: int
    mask_in_chans: int | None
    iou_hidden_dim: int

    def differences(self, config: ModelConfig) -> list[str]:
        """Where the tensors and `config` disagree, as "setting file's-value (not config's)"."""
        grid = self.image_size // self.patch_size
        if self.window_size is None and config.window_size == grid:
            # windows as large as the whole grid leave every block's table global-sized
            return replace(self, global_attn_indexes=config.global_attn_indexes, window_size=grid).differences(config)
        return [
            f"{name} {getattr(self, name)} (not {getattr(config, name)})"
            for name in _COMPARED
            if getattr(self, name) is not None and getattr(self, name) != getattr(config, name)  # None: not in the file
        ]

    def fits(self, config: ModelConfig) -> bool:
        return not self.differences(config)

    def describe(self) -> str:
        names = fitting(self)
        known = f"a {names[0]} model" if names else "a model"
        return (
            f"{known} for {self.image_size}-pixel inputs (image encoder of {self.encoder_dim} dims, "
            f"{self.encoder_depth} blocks, {self.encoder_heads} heads, patch {self.patch_size})"
        )


def _dims(state: Mapping[str, torch.Tensor], key: str, ndim: int) -> tuple[int, ...]:
    value = state.get(key)
    if not isinstance(value, torch.Tensor) or value.ndim != ndim:
        raise KeyError(key)
    return tuple(value.shape)


def found_shape(state: Mapping[str, torch.Tensor]) -> FoundShape | None:
    """The shape the tensors describe, or None when they are not a whole SAM model."""
    try:
        dim, channels, patch, patch_w = _dims(state, "image_encoder.patch_embed.proj.weight", 4)
        _, grid_h, grid_w, pos_dim = _dims(state, "image_encoder.pos_embed", 4)
        blocks = sorted({int(m.group(1)) for k in state if (m := re.match(r"^image_encoder\.blocks\.(\d+)\.", k))})
        if channels != 3 or patch != patch_w or grid_h != grid_w or pos_dim != dim or blocks != list(range(len(blocks))):
            return None
        rel_rows, head_dim = _dims(state, "image_encoder.blocks.0.attn.rel_pos_h", 2)
        global_blocks, window = [], None
        for block in blocks:
            rows = _dims(state, f"image_encoder.blocks.{block}.attn.rel_pos_h", 2)[0]
            if rows == 2 * grid_h - 1:
                global_blocks.append(block)
            else:
                window = (rows + 1) // 2
        mask_in_chans = None
        if "prompt_encoder.mask_downscaling.3.weight" in state:
            mask_in_chans = _dims(state, "prompt_encoder.mask_downscaling.3.weight", 4)[0]
        if not head_dim or dim % head_dim or not blocks:
            return None
        return FoundShape(
            image_size=grid_h * patch,
            patch_size=patch,
            encoder_dim=dim,
            encoder_depth=len(blocks),
            encoder_heads=dim // head_dim,
            global_attn_indexes=tuple(global_blocks),
            window_size=window,
            prompt_dim=_dims(state, "image_encoder.neck.0.weight", 4)[0],
            decoder_mlp_dim=_dims(state, "mask_decoder.transformer.layers.0.mlp.lin1.weight", 2)[0],
            mask_in_chans=mask_in_chans,
            iou_hidden_dim=_dims(state, "mask_decoder.iou_prediction_head.layers.0.weight", 2)[0],
        )
    except (KeyError, ValueError):
        return None


def fitting(shape: FoundShape) -> list[str]:
    """Names of the configurations (sam.MODEL_CONFIGS) the shape fits, at any input size."""
    return [name for name, config in MODEL_CONFIGS.items() if shape.fits(config)]


def unknown_shape(shape: FoundShape) -> str:
    """Why no configuration fits: the nearest one and where the file differs from it."""
    nearest = min(MODEL_CONFIGS.values(), key=lambda config: len(shape.differences(config)))
    return (
        f"which is none of the models us43d builds ({', '.join(MODEL_CONFIGS)}); the nearest, {nearest.name}, "
        f"differs in {', '.join(shape.differences(nearest))}"
    )


@dataclass(frozen=True)
class Choice:
    """The model to build for a checkpoint, the decoder form to run, and how both were chosen."""

    config: ModelConfig
    decoder: str
    notes: tuple[str, ...]


def choose(
    weights: Weights | None, source: str, model: str | None, image_size: int | None, decoder: str | None
) -> tuple[Choice, Weights | None]:
    """The model for `weights` (None: random weights): `model` and `image_size` when given and
    fitting the tensors, else what the tensors (and the run's record) say. Returns the weights
    too, without their record when it describes another model than the tensors."""
    if decoder is not None and decoder not in DECODERS:
        raise CheckpointError(f"unknown decoder '{decoder}' (choose from {', '.join(DECODERS)})")
    asked = model_config(model or "vit_b", image_size) if model or image_size else None  # checks the flags first
    shape = found_shape(weights.state) if weights is not None else None
    if weights is not None and shape is not None and weights.record is not None:
        recorded = model_config(weights.record["model"])
        if not shape.fits(recorded) or (weights.record["image_size"] or recorded.image_size) != shape.image_size:
            weights = weights.without_record(f"ignored {weights.record_source}: it records another model than this file holds")
    record = (weights.record if weights is not None else None) or {}
    if shape is None:
        name = model or record.get("model") or "vit_b"
        config = asked if model else model_config(name, image_size)
        how = "--model" if model else ("the run's record" if record else "the default")
    else:
        names = fitting(shape)
        if not names:
            raise CheckpointError(f"{source} holds {shape.describe()}, {unknown_shape(shape)}")
        if model is not None and model not in names:
            raise CheckpointError(
                f"{source} holds {shape.describe()}; --model {model} does not fit it "
                f"(leave --model out, or give --model {names[0]})"
            )
        if image_size is not None and image_size != shape.image_size:
            raise CheckpointError(
                f"{source} holds {shape.describe()}; --image-size {image_size} does not fit it "
                f"(its position table is for {shape.image_size}-pixel inputs: leave --image-size out)"
            )
        name = model or (record["model"] if record.get("model") in names else names[0])
        config = model_config(name, shape.image_size)
        how = "--model" if model else ("the run's record" if record else "the checkpoint's tensors")
    chosen = decoder or record.get("decoder") or DEFAULT_DECODER
    why = "--decoder" if decoder else ("the run's record" if record else "the default")
    notes = [f"model: {config.name} at {config.image_size} px (from {how}); decoder: {chosen} (from {why})"]
    if weights is not None and weights.form is not None and weights.form != chosen:
        notes.append(f"{source} holds weights for {DECODER_NAMES[weights.form]}: converted for {DECODER_NAMES[chosen]}")
    if weights is not None:
        notes += weights.notes
    return Choice(config, chosen, tuple(notes)), weights


def check_fits(weights: Weights, config: ModelConfig, source: str) -> None:
    """Refuse, with the file's shape, a checkpoint that does not fit `config` (train --init)."""
    shape = found_shape(weights.state)
    if shape is None:
        return  # load_into names the keys that do not fit
    names = fitting(shape)
    if config.name in names and shape.image_size == config.image_size:
        return
    if not names:
        hint = unknown_shape(shape)
    elif config.name not in names:
        hint = f"give --model {names[0]}"
    else:
        hint = f"give --image-size {shape.image_size}"
    raise CheckpointError(
        f"{source} holds {shape.describe()}; --model {config.name} at {config.image_size} px does not fit it ({hint})"
    )


def load_model(
    checkpoint: Path | None,
    model: str | None = None,
    image_size: int | None = None,
    decoder: str | None = None,
    report: Callable[[str], Any] | None = None,
) -> tuple[Any, ModelConfig]:
    """The SAM model a checkpoint holds (random weights for None), built in its shape and run
    in the chosen decoder form; `report` gets one line per choice made for the user."""
    weights = read_weights(checkpoint) if checkpoint is not None else None
    choice, weights = choose(weights, str(checkpoint), model, image_size, decoder)
    sam = build_model(choice.config, decoder=choice.decoder)
    notes = list(choice.notes)
    if weights is not None:
        if BOUNDARY_EMBED_KEY in weights.state:  # trained with boundary clicks (SAMUSA): a fifth point type
            add_boundary_embedding(sam)
            notes.append(f"{checkpoint} has a boundary-click embedding (point label {BOUNDARY_LABEL}): kept")
        load_into(sam, weights.for_decoder(choice.decoder), str(checkpoint))
    if report is not None:
        for note in notes:
            report(note)
    return sam, choice.config


__all__ = ["Choice", "FoundShape", "check_fits", "choose", "found_shape", "fitting", "load_model"]
