"""Checkpoint formats: segment_anything, MedSAM, our training state, and MMDetection (UltraSam).

Everything is loaded with `torch.load(weights_only=True)`: a checkpoint is untrusted input.
MMEngine checkpoints (the UltraSam release) also carry metadata objects, a message hub of
MMEngine HistoryBuffers holding NumPy arrays, possibly ConfigDicts; torch's safe loader refuses
those. The globals a file names are listed first (torch's own static reading of the pickle),
and when every one that torch does not allow is MMEngine's or NumPy's, each gets an inert
stand-in (an OrderedDict for MMEngine's ConfigDict, whose items come after it is built): the file
loads without MMEngine, and nothing it names is imported or run. Any other global refuses
the file.

The MMDetection names are those of the UltraSam release (mapping facts: the recipe sheet,
section 7). One conversion step is numerical, not a rename: the authors' decoder MLP block
adds its input twice, norm3(2q + MLP(q)) = norm3(q + MLP(q) / 2) up to LayerNorm's eps, so
reproducing their outputs in segment_anything's decoder needs the second MLP layer (`lin2`,
weight and bias) of both decoder layers multiplied by 0.5; going the other way multiplies by
2, so a round trip is exact.
"""

from __future__ import annotations

import json
import os
import re
import warnings
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import partial
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


def sam_to_mmdet(state: Mapping[str, torch.Tensor], form: str = "sam") -> StateDict:
    """segment_anything names -> the UltraSam MMDetection names, for the authors' decoder
    (function-preserving: tensors in segment_anything's `form` get the doubled lin2)."""
    out: StateDict = {}
    table: dict[str, torch.Tensor] = {}
    decoder = "mask_decoder.transformer."
    for key, value in in_decoder_form(state, form, "authors").items():
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
            rest = re.sub(r"^(layers\.\d+)\.mlp\.lin2\.", r"\1.mlp.layers.1.", rest)
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


def mmdet_to_sam(state: Mapping[str, torch.Tensor], form: str = "sam") -> StateDict:
    """UltraSam MMDetection names -> segment_anything names, ready for a strict load into a
    model running the `form` decoder (segment_anything's by default: lin2 halved)."""
    return in_decoder_form(_mmdet_names_to_sam(state), "authors", form)


def _mmdet_names_to_sam(state: Mapping[str, torch.Tensor]) -> StateDict:
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
            rest = re.sub(r"^(layers\.\d+)\.mlp\.layers\.1\.", r"\1.mlp.lin2.", rest)
            rest = re.sub(r"^post_norm\.", "norm_final_attn.", rest)
            out[f"mask_decoder.transformer.{rest}"] = value
        elif key.startswith("bbox_head."):
            out["mask_decoder." + key[len("bbox_head.") :]] = value
        else:
            out[key] = value
    return out


# Packages whose objects may appear in a checkpoint's metadata and are replaced by stand-ins.
STAND_IN_PACKAGES = ("mmengine", "numpy")
MAX_LEGACY_STAND_INS = 32
# Listing a file's globals, and allowing an object under a name of the file's choosing, came
# with PyTorch 2.6; without them the loader cannot tell a damaged file from a foreign one.
SAFE_LOADER_TOOLS = ("get_unsafe_globals_in_checkpoint", "safe_globals")
SAFE_LOADER_TORCH = "2.6"


class MetadataStandIn:
    """Built by the safe loader in place of an MMEngine or NumPy class or function that a
    checkpoint's metadata names. It keeps the plain data the file passes (arguments, state)
    and does nothing else; the metadata is never used, only the tensors beside it."""

    def __new__(cls, *args: Any, **kwargs: Any) -> MetadataStandIn:
        return super().__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.state = state


class MappingStandIn:
    """Built by the safe loader in place of MMEngine's ConfigDict: an empty OrderedDict.

    MMEngine's ConfigDict is a dict subclass whose items the pickle sets after building it, and
    torch's safe loader sets items only on plain dicts, OrderedDicts and Counters; it gives an
    OrderedDict's state (a ConfigDict's is itself) to its attributes. So an OrderedDict takes a
    ConfigDict whole, and nothing of MMEngine is imported or run."""

    def __new__(cls, *args: Any, **kwargs: Any) -> OrderedDict:  # type: ignore[misc]
        return OrderedDict()


# MMEngine's dict subclasses (their items come after they are built); every other MMEngine or
# NumPy name gets MetadataStandIn, which takes any state (a Config's tuple, __slots__ pairs)
DICT_STAND_INS = frozenset({"mmengine.config.config.ConfigDict", "mmengine.config.ConfigDict"})


def _stand_in_for(name: str) -> type:
    return MappingStandIn if name in DICT_STAND_INS else MetadataStandIn


def _stands_in(name: str) -> bool:
    return name.split(".", 1)[0] in STAND_IN_PACKAGES and "." in name


def named_globals(path: Path) -> list[str] | None:
    """The globals the file's pickle names beyond what torch's safe loader allows, read
    statically (nothing is imported); None when torch cannot list them (not torch.save's zip
    format, or damaged), and the load itself then says what is wrong."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return sorted(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except Exception:  # foreign, legacy or corrupt files: torch.load reports them below
        return None


def load_untrusted(path: Path, missing: str) -> Any:
    """torch.load limited to tensors, plain containers and inert stand-ins for MMEngine and
    NumPy metadata; `missing` is the message for an absent file."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a folder, not a checkpoint file")
    if not path.is_file():
        raise CheckpointError(missing)
    if not all(hasattr(torch.serialization, tool) for tool in SAFE_LOADER_TOOLS):
        raise CheckpointError(
            f"cannot read checkpoint {path}: reading checkpoints safely needs PyTorch {SAFE_LOADER_TORCH} or newer "
            f"(this is {torch.__version__}): upgrade torch"
        )
    listed = named_globals(path)
    named = list(listed or [])
    refused = [name for name in named if not _stands_in(name)]
    if refused:
        raise CheckpointError(f"cannot read checkpoint {path}: {_refusal(refused)}")
    # torch lists the globals of its zip format only; for a legacy file each refusal names the
    # next global, so stand-ins are added one at a time (each try builds only allowed objects).
    for _ in range(1 if listed is not None else MAX_LEGACY_STAND_INS):
        try:
            with warnings.catch_warnings(), torch.serialization.safe_globals([(_stand_in_for(n), n) for n in named]):
                warnings.simplefilter("ignore")  # torch warns about pickle protocols; the reason below says more
                return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises several types for foreign or corrupt files
            failure = exc
            found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
            if listed is not None or not found or not _stands_in(found.group(1)) or found.group(1) in named:
                break
            named.append(found.group(1))
    raise CheckpointError(f"cannot read checkpoint {path}: {_why_unreadable(path, failure)}") from failure


def _refusal(names: list[str]) -> str:
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return (
        f"refused by the safe loader: the file names {shown}, beyond tensors, plain containers and MMEngine or NumPy "
        "metadata; building such objects could run code, so the file is not read"
    )


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
        # torch's own text goes on to suggest loading unsafely or allow-listing the global:
        # advice never to follow for a file from elsewhere, so only the names are kept.
        names = sorted(set(re.findall(r"GLOBAL ([\w.]+)", text)))
        if names:
            return _refusal(names)
        return (
            "refused by the safe loader, which reads only tensors and plain containers as torch.save writes them "
            "(unpickling anything else could run code)"
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
    """A segment_anything state dict from any supported checkpoint file: in segment_anything's
    decoder form where the file says its form (MMDetection files, us43d runs), else as it is."""
    return read_weights(path).for_decoder("sam")


_DECODER_LIN2 = re.compile(r"^mask_decoder\.transformer\.layers\.\d+\.mlp\.lin2\.(weight|bias)$")


def in_decoder_form(state: Mapping[str, torch.Tensor], source: str, target: str) -> StateDict:
    """The same function for another decoder form (sam.DECODERS): the authors' decoder adds
    the MLP input twice, so its `lin2` is twice segment_anything's (exact both ways: x2, x0.5)."""
    if source == target:
        return dict(state)
    factor = MMDET_MLP_FACTOR if (source, target) == ("authors", "sam") else 1 / MMDET_MLP_FACTOR
    return {key: value * factor if _DECODER_LIN2.match(key) else value for key, value in state.items()}


@dataclass(frozen=True)
class Weights:
    """A checkpoint's tensors in segment_anything's names, and what the file says about them.

    `form` is the decoder form (sam.DECODERS) the tensors are for, where the file says so:
    MMDetection files are the authors'; a us43d run's files record the run's decoder
    (checkpoint.pt in itself, model.pth in run.json beside it; runs from before the setting
    existed ran segment_anything's). Other files (official SAM, MedSAM, files written by
    convert-checkpoint) say nothing: None.
    """

    state: StateDict
    form: str | None = None
    record: Mapping[str, Any] | None = None  # the run's settings: model, image_size, decoder
    record_source: str | None = None  # the file that holds `record`
    kind: str = "segment_anything"  # "MMDetection", "us43d run", "segment_anything"
    notes: tuple[str, ...] = ()

    def for_decoder(self, decoder: str) -> StateDict:
        """Tensors for a model running `decoder`: converted when the file says its form, as
        they are when it does not (as the authors' code reads official SAM)."""
        return in_decoder_form(self.state, self.form or decoder, decoder)

    def without_record(self, note: str) -> Weights:
        """The tensors alone, when the record beside them turns out to describe another model."""
        return replace(self, form=None, record=None, record_source=None, kind="segment_anything", notes=(*self.notes, note))


RUN_RECORD = "run.json"  # written by us43d train beside model.pth
MAX_RUN_RECORD_BYTES = 1 << 20


def read_weights(path: Path) -> Weights:
    """The tensors of any supported checkpoint file, with the file's own word on their form."""
    path = Path(path)
    raw = load_untrusted(path, f"checkpoint {path} does not exist")
    if not isinstance(raw, dict):
        raise CheckpointError(f"checkpoint {path} is not a state dict")
    # dict's own methods throughout: a loaded OrderedDict can carry attributes named get or items
    record: Mapping[str, Any] | None = None
    entry = partial(dict.get, raw)
    if isinstance(entry("model"), dict) and isinstance(entry("config"), dict) and "step" in raw:
        record, tensors = raw["config"], raw["model"]  # our checkpoint.pt
    elif isinstance(entry("state_dict"), dict):  # mmengine
        tensors = raw["state_dict"]
    elif isinstance(entry("model"), dict):  # MedSAM
        tensors = raw["model"]
    else:
        tensors = raw
    state = {k.removeprefix("module."): v for k, v in dict.items(tensors) if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not state:
        raise CheckpointError(f"checkpoint {path} holds no tensors")
    if is_mmdet(state):
        return Weights(mmdet_to_sam(state, form="authors"), "authors", kind="MMDetection")
    if record is not None:
        return _recorded(Weights(state, record_source=str(path), kind="us43d run"), record)
    record, note = read_run_record(path.parent / RUN_RECORD)
    if record is None:
        return Weights(state, notes=(note,) if note else ())
    return _recorded(Weights(state, record_source=str(path.parent / RUN_RECORD), kind="us43d run"), record)


def _recorded(weights: Weights, record: Mapping[str, Any]) -> Weights:
    from us43d.training.sam import DECODERS, MODEL_CONFIGS

    model, size, decoder = dict.get(record, "model"), dict.get(record, "image_size"), dict.get(record, "decoder", "sam")
    if model not in MODEL_CONFIGS or not (size is None or (isinstance(size, int) and size > 0)) or decoder not in DECODERS:
        return weights.without_record(f"ignored {weights.record_source}: its model, image_size or decoder is not one us43d knows")
    return replace(weights, form=decoder, record={"model": model, "image_size": size, "decoder": decoder})


def read_run_record(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """The settings a run recorded in run.json, or (None, why it was not used). The file is
    optional context, so a bad one is reported as a note rather than stopping the command."""
    if not path.is_file():
        return None, None
    try:
        if path.stat().st_size > MAX_RUN_RECORD_BYTES:
            return None, f"ignored {path}: too large for a run record"
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return None, f"ignored {path}: not a readable run record ({type(exc).__name__})"
    config = data.get("config") if isinstance(data, dict) else None
    if not isinstance(config, dict):
        return None, f"ignored {path}: no training settings in it"
    return config, None


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


def convert_checkpoint(
    source: Path, target: Path, to: str = "sam", decoder: str | None = None
) -> tuple[int, str, tuple[str, ...]]:
    """Write `source` as a plain segment_anything state dict for segment_anything's decoder, or
    as an MMDetection one for the authors' decoder (the same outputs either way). `decoder`
    says which decoder the source's weights are for when the file does not say (default: the
    authors', as their code reads official SAM). Returns (tensor count, the source's form, the
    keys left out): a boundary-click embedding (engine.BOUNDARY_EMBED_KEY) has no place in either
    format, so it is left out and the output loads strictly into segment_anything's model."""
    from us43d.training.engine import BOUNDARY_EMBED_KEY
    from us43d.training.sam import DECODERS, DEFAULT_DECODER

    if decoder is not None and decoder not in DECODERS:
        raise CheckpointError(f"unknown decoder '{decoder}' (choose from {', '.join(DECODERS)})")
    if target.is_dir():
        raise CheckpointError(f"target {target} is a folder: give the path of the file to write")
    weights = read_weights(source)
    if decoder is not None and weights.form is not None and decoder != weights.form:
        said = "an MMDetection file" if weights.kind == "MMDetection" else f"recorded in {weights.record_source}"
        raise CheckpointError(
            f"{source} holds weights for the {weights.form} decoder ({said}): --decoder {decoder} contradicts it; leave it out"
        )
    form = weights.form or decoder or DEFAULT_DECODER
    plain = in_decoder_form(weights.state, form, "sam")
    dropped = tuple(key for key in (BOUNDARY_EMBED_KEY,) if key in plain)
    plain = {key: value for key, value in plain.items() if key not in dropped}
    result = sam_to_mmdet(plain) if to == "mmdet" else plain
    try:
        atomic_save({"state_dict": result} if to == "mmdet" else result, target)
    except OSError as exc:
        raise CheckpointError(f"cannot write {target}: {os_error_text(exc)}") from None
    return len(result), form, dropped
