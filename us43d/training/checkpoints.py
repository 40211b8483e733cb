"""Checkpoint formats: segment_anything, MedSAM, our training state, and MMDetection (UltraSam).

Everything is loaded with `torch.load(weights_only=True)`: a checkpoint is untrusted input.

The MMDetection names are those of the UltraSam release (mapping facts: the recipe sheet,
section 7). One conversion step is numerical, not a rename: the authors' decoder MLP block
adds its input twice, norm3(2q + MLP(q)) = norm3(q + MLP(q) / 2) up to LayerNorm's eps, so
reproducing their outputs in segment_anything's decoder needs the second MLP layer (`lin2`,
weight and bias) of both decoder layers multiplied by 0.5; going the other way multiplies by
2, so a round trip is exact.
"""

from __future__ import annotations

import os
import re
import warnings
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from us43d.errors import Us43dError, os_error_text

MMDET_MLP_FACTOR = 0.5  # segment_anything lin2 = MMDetection mlp.layers.1 * this
_MODULE = r"^(layers\.\d+\.(?:self_attn|cross_attn_token_to_image|cross_attn_image_to_token)|final_attn_token_to_image)"
# Row order of prompt_encoder.label_encoder.label_embedding.weight in the MMDetection model.
LABEL_TABLE = (
    ("prompt_encoder.no_mask_embed.weight", 1),
    ("prompt_encoder.point_embeddings.0.weight", 1),
    ("prompt_encoder.point_embeddings.1.weight", 1),
    ("prompt_encoder.point_embeddings.2.weight", 1),
    ("prompt_encoder.point_embeddings.3.weight", 1),
    ("prompt_encoder.not_a_point_embed.weight", 1),
    ("mask_decoder.mask_tokens.weight", 4),
    ("mask_decoder.iou_token.weight", 1),
)
LABEL_KEY = "prompt_encoder.label_encoder.label_embedding.weight"


class CheckpointError(Us43dError):
    """A checkpoint file is unreadable, of an unknown format or of the wrong shape."""


StateDict = dict[str, torch.Tensor]

_ENCODER_RULES: list[tuple[str, str]] = [
    (r"^image_encoder\.patch_embed\.proj\.", "backbone.patch_embed.projection."),
    (r"^image_encoder\.blocks\.(\d+)\.norm([12])\.", r"backbone.layers.\1.ln\2."),
    (r"^image_encoder\.blocks\.(\d+)\.mlp\.lin1\.", r"backbone.layers.\1.ffn.layers.0.0."),
    (r"^image_encoder\.blocks\.(\d+)\.mlp\.lin2\.", r"backbone.layers.\1.ffn.layers.1."),
    (r"^image_encoder\.blocks\.(\d+)\.attn\.", r"backbone.layers.\1.attn."),
    (r"^image_encoder\.neck\.", "backbone.channel_reduction."),
    (r"^image_encoder\.", "backbone."),
]
_ENCODER_REVERSE: list[tuple[str, str]] = [
    (r"^backbone\.patch_embed\.projection\.", "image_encoder.patch_embed.proj."),
    (r"^backbone\.layers\.(\d+)\.ln([12])\.", r"image_encoder.blocks.\1.norm\2."),
    (r"^backbone\.layers\.(\d+)\.ffn\.layers\.0\.0\.", r"image_encoder.blocks.\1.mlp.lin1."),
    (r"^backbone\.layers\.(\d+)\.ffn\.layers\.1\.", r"image_encoder.blocks.\1.mlp.lin2."),
    (r"^backbone\.layers\.(\d+)\.attn\.", r"image_encoder.blocks.\1.attn."),
    (r"^backbone\.channel_reduction\.", "image_encoder.neck."),
    (r"^backbone\.", "image_encoder."),
]


def _rename(key: str, rules: list[tuple[str, str]]) -> str | None:
    for pattern, replacement in rules:
        if re.match(pattern, key):
            return re.sub(pattern, replacement, key, count=1)
    return None


def is_mmdet(state: Mapping[str, Any]) -> bool:
    return any(k.startswith(("backbone.", "bbox_head.", "decoder.")) for k in state) or LABEL_KEY in state


def sam_to_mmdet(state: Mapping[str, torch.Tensor]) -> StateDict:
    """segment_anything names -> the UltraSam MMDetection names (function-preserving)."""
    out: StateDict = {}
    table: dict[str, torch.Tensor] = {}
    decoder = "mask_decoder.transformer."
    for key, value in state.items():
        if key.startswith("image_encoder."):
            out[_rename(key, _ENCODER_RULES) or key] = value
        elif key in dict(LABEL_TABLE):
            table[key] = value
        elif key.startswith(decoder):
            rest = key[len(decoder) :]
            match = re.match(_MODULE + r"\.([qkv])_proj\.(weight|bias)$", rest)
            if match:
                module, which, kind = match.groups()
                if kind == "weight":
                    out[f"decoder.{module}.attn.{which}_proj_weight"] = value
                else:  # biases are concatenated q, k, v below
                    table[f"bias::{module}::{which}"] = value
                continue
            rest = re.sub(_MODULE + r"\.out_proj\.", r"\1.attn.out_proj.", rest)
            rest = re.sub(r"^(layers\.\d+)\.mlp\.lin1\.", r"\1.mlp.layers.0.0.", rest)
            if re.match(r"^layers\.\d+\.mlp\.lin2\.", rest):
                rest = re.sub(r"^(layers\.\d+)\.mlp\.lin2\.", r"\1.mlp.layers.1.", rest)
                value = value / MMDET_MLP_FACTOR
            rest = re.sub(r"^norm_final_attn\.", "post_norm.", rest)
            out[f"decoder.{rest}"] = value
        elif key.startswith("mask_decoder."):
            out["bbox_head." + key[len("mask_decoder.") :]] = value
        else:
            out[key] = value
    missing = [name for name, _ in LABEL_TABLE if name not in table]
    if missing:
        raise CheckpointError(f"not a complete segment_anything state dict: missing {missing[:3]}")
    out[LABEL_KEY] = torch.cat([table[name] for name, _ in LABEL_TABLE], dim=0)
    modules = sorted({k.split("::")[1] for k in table if k.startswith("bias::")})
    for module in modules:
        out[f"decoder.{module}.attn.in_proj_bias"] = torch.cat([table[f"bias::{module}::{w}"] for w in "qkv"])
    return out


def mmdet_to_sam(state: Mapping[str, torch.Tensor]) -> StateDict:
    """UltraSam MMDetection names -> segment_anything names, ready for a strict load."""
    out: StateDict = {}
    for key, value in state.items():
        if key.startswith("backbone."):
            out[_rename(key, _ENCODER_REVERSE) or key] = value
        elif key == LABEL_KEY:
            row = 0
            for name, rows in LABEL_TABLE:
                out[name] = value[row : row + rows].clone()
                row += rows
            if row != value.shape[0]:
                raise CheckpointError(f"{LABEL_KEY} has {value.shape[0]} rows, expected {row}")
        elif key.startswith("decoder."):
            rest = key[len("decoder.") :]
            match = re.match(r"^(.*)\.attn\.([qkv])_proj_weight$", rest)
            if match:
                out[f"mask_decoder.transformer.{match.group(1)}.{match.group(2)}_proj.weight"] = value
                continue
            match = re.match(r"^(.*)\.attn\.in_proj_bias$", rest)
            if match:
                for which, part in zip("qkv", value.chunk(3)):
                    out[f"mask_decoder.transformer.{match.group(1)}.{which}_proj.bias"] = part.clone()
                continue
            rest = re.sub(r"\.attn\.out_proj\.", ".out_proj.", rest)
            rest = re.sub(r"^(layers\.\d+)\.mlp\.layers\.0\.0\.", r"\1.mlp.lin1.", rest)
            if re.match(r"^layers\.\d+\.mlp\.layers\.1\.", rest):
                rest = re.sub(r"^(layers\.\d+)\.mlp\.layers\.1\.", r"\1.mlp.lin2.", rest)
                value = value * MMDET_MLP_FACTOR
            rest = re.sub(r"^post_norm\.", "norm_final_attn.", rest)
            out[f"mask_decoder.transformer.{rest}"] = value
        elif key.startswith("bbox_head."):
            out["mask_decoder." + key[len("bbox_head.") :]] = value
        else:
            out[key] = value
    return out


def load_untrusted(path: Path, missing: str) -> Any:
    """torch.load limited to tensors and plain containers; `missing` is the message for an absent file."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a folder, not a checkpoint file")
    if not path.is_file():
        raise CheckpointError(missing)
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols; the reason below says more
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for foreign or corrupt files
        raise CheckpointError(f"cannot read checkpoint {path}: {_why_unreadable(path, exc)}") from exc


ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since PyTorch 1.6
PICKLE_MAGIC = b"\x80"  # the legacy format and plain pickles start with the PROTO opcode


def _why_unreadable(path: Path, exc: Exception) -> str:
    """One sentence a user can act on, from what the file starts with and what torch said."""
    try:
        with path.open("rb") as handle:
            head = handle.read(4)
    except OSError as error:
        return os_error_text(error)
    if not head:
        return "the file is empty"
    if not head.startswith((ZIP_MAGIC, PICKLE_MAGIC)):
        return "not a PyTorch checkpoint (neither torch.save's zip archive nor a pickle)"
    text = str(exc)
    if "Weights only load failed" in text:
        boilerplate = ("Please file", "Check the documentation", "Re-running", "In PyTorch", "This file can still")
        details = [line.strip().removeprefix("WeightsUnpickler error:").strip() for line in text.splitlines()[1:]]
        detail = next((d for d in details if d and not d.startswith(boilerplate)), "")
        return (
            "refused by the safe loader, which reads only tensors and plain containers as torch.save writes them "
            f"(unpickling anything else could run code){': ' + detail if detail else ''}"
        )
    if head.startswith(ZIP_MAGIC) and not _holds_pickle(path):
        return "a zip archive, but not a PyTorch checkpoint (no data.pkl inside: unpack it first?)"
    return "the file is damaged or truncated (an incomplete download or copy?)"


def _holds_pickle(path: Path) -> bool:
    """Whether a zip file looks like torch.save's archive; a damaged one counts as such."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("data.pkl") for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return True


def read_state_dict(path: Path) -> StateDict:
    """A segment_anything state dict from any supported checkpoint file."""
    raw = load_untrusted(path, f"checkpoint {path} does not exist")
    if not isinstance(raw, dict):
        raise CheckpointError(f"checkpoint {path} is not a state dict")
    for container in ("state_dict", "model"):  # mmengine, MedSAM / our training state
        if container in raw and isinstance(raw[container], dict):
            raw = raw[container]
            break
    state = {k.removeprefix("module."): v for k, v in raw.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise CheckpointError(f"checkpoint {path} holds no tensors")
    return mmdet_to_sam(state) if is_mmdet(state) else state


def load_into(model: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str = "checkpoint") -> list[str]:
    """Strict load with messages that say what does not fit. Returns keys kept from `model`
    (only `prompt_encoder.mask_downscaling.*`, absent from no-refinement MMDetection models)."""
    expected = model.state_dict()
    kept = [k for k in expected if k not in state and k.startswith("prompt_encoder.mask_downscaling.")]
    missing = [k for k in expected if k not in state and k not in kept]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise CheckpointError(
            f"{source} does not match the model: {len(missing)} missing keys (e.g. {missing[:2]}), "
            f"{len(unexpected)} unexpected keys (e.g. {unexpected[:2]})"
        )
    for key, value in state.items():
        if value.shape != expected[key].shape:
            raise CheckpointError(
                f"{source} does not match the model: {key} has shape {tuple(value.shape)}, expected {tuple(expected[key].shape)} "
                "(wrong --model?)"
            )
    merged = {**{k: expected[k] for k in kept}, **state}
    model.load_state_dict(merged, strict=True)
    return kept


def atomic_save(obj: Any, path: Path) -> None:
    """The whole file or the previous one, never half of it; no temporary file is left behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def convert_checkpoint(source: Path, target: Path, to: str = "sam") -> int:
    """Write `source` as a plain segment_anything (or MMDetection) state dict; returns tensor count."""
    if target.is_dir():
        raise CheckpointError(f"target {target} is a folder: give the path of the file to write")
    state = read_state_dict(source)
    converted: Callable[[Mapping[str, torch.Tensor]], StateDict] = sam_to_mmdet if to == "mmdet" else dict
    result = converted(state)
    try:
        atomic_save({"state_dict": result} if to == "mmdet" else result, target)
    except OSError as exc:
        raise CheckpointError(f"cannot write {target}: {os_error_text(exc)}") from None
    return len(result)
