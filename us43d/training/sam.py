"""segment_anything's model, loaded without torchvision, plus our model configurations.

`import segment_anything` runs the package `__init__`, which imports the automatic mask
generator and with it torchvision. The modelling code itself needs only torch. When
torchvision is missing we register the package without running its `__init__` and import
`segment_anything.modeling` and `segment_anything.build_sam` directly, so
`sam_model_registry["vit_b"](checkpoint=...)` still works; `SamPredictor` and the automatic mask
generator are then genuinely unavailable, and importing them raises torchvision's own error.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from dataclasses import dataclass
from functools import partial
from typing import Any

from us43d.errors import Us43dError


class MissingDependency(Us43dError):
    """A training dependency is not installed."""


def _require_torch() -> Any:
    try:
        import torch
    except ModuleNotFoundError as exc:
        raise MissingDependency(
            "PyTorch is not installed: install the build for your machine, then `pip install us43d[train]`"
        ) from exc
    return torch


def sam_package() -> types.ModuleType:
    """`segment_anything`, importable on machines without torchvision."""
    _require_torch()
    try:
        import segment_anything

        return segment_anything
    except ModuleNotFoundError as exc:
        if exc.name != "torchvision":
            if exc.name == "segment_anything":
                raise MissingDependency("segment-anything is not installed: `pip install us43d[train]`") from exc
            raise
    spec = importlib.util.find_spec("segment_anything")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependency("segment-anything is not installed: `pip install us43d[train]`")
    package = types.ModuleType("segment_anything")
    package.__path__ = list(spec.submodule_search_locations)
    package.__spec__ = spec
    package.__file__ = spec.origin
    package.__doc__ = "segment_anything without its torchvision-dependent predictor and mask generator (see us43d.training.sam)"
    sys.modules["segment_anything"] = package
    build_sam = importlib.import_module("segment_anything.build_sam")
    for name in ("build_sam", "build_sam_vit_h", "build_sam_vit_l", "build_sam_vit_b", "sam_model_registry"):
        setattr(package, name, getattr(build_sam, name))
    package.modeling = importlib.import_module("segment_anything.modeling")
    return package


@dataclass(frozen=True)
class ModelConfig:
    """Shape of a SAM model; `vit_b`/`vit_l`/`vit_h` are segment_anything's, `tiny` is for tests."""

    name: str
    image_size: int = 1024
    patch_size: int = 16
    encoder_dim: int = 768
    encoder_depth: int = 12
    encoder_heads: int = 12
    global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)
    window_size: int = 14
    prompt_dim: int = 256
    decoder_mlp_dim: int = 2048
    decoder_heads: int = 8
    mask_in_chans: int = 16
    iou_hidden_dim: int = 256

    @property
    def embedding_size(self) -> int:
        return self.image_size // self.patch_size

    @property
    def low_res_size(self) -> int:
        """Side of the decoder's mask logits (256 for a 1024 input)."""
        return 4 * self.embedding_size


MODEL_CONFIGS = {
    "vit_b": ModelConfig("vit_b"),
    "vit_l": ModelConfig("vit_l", encoder_dim=1024, encoder_depth=24, encoder_heads=16, global_attn_indexes=(5, 11, 17, 23)),
    "vit_h": ModelConfig("vit_h", encoder_dim=1280, encoder_depth=32, encoder_heads=16, global_attn_indexes=(7, 15, 23, 31)),
    "tiny": ModelConfig(
        "tiny",
        image_size=128,
        encoder_dim=64,
        encoder_depth=2,
        encoder_heads=2,
        global_attn_indexes=(1,),
        window_size=4,
        prompt_dim=32,
        decoder_mlp_dim=64,
        decoder_heads=2,
        # segment_anything's mask path narrows to mask_in_chans // 4 channels and normalises
        # them with LayerNorm2d; one channel would normalise to zero and silence the mask
        # prompt, so the tiny model keeps the real width (4 channels there).
        mask_in_chans=16,
        iou_hidden_dim=32,
    ),
}


def model_config(name: str, image_size: int | None = None) -> ModelConfig:
    try:
        config = MODEL_CONFIGS[name]
    except KeyError:
        raise Us43dError(f"unknown model '{name}' (choose from {', '.join(MODEL_CONFIGS)})") from None
    if image_size is not None and image_size != config.image_size:
        if image_size <= 0 or image_size % config.patch_size:
            raise Us43dError(f"--image-size must be a positive multiple of {config.patch_size}, got {image_size}")
        config = ModelConfig(**{**config.__dict__, "image_size": image_size})
    return config


# The decoder forms a model can run (recipe sheet, section 3.2): "sam" is segment_anything's
# two-way transformer; "authors" is the UltraSam code's, whose MLP block adds its input twice,
# norm3(2q + MLP(q)), with dropout 0.1 in the MLP while training. The authors' code runs every
# checkpoint through its own form, official SAM included, so reproducing their SAM and UltraSam
# rows, and their training, needs that form: it is the default.
DECODERS = ("authors", "sam")
DEFAULT_DECODER = "authors"
DECODER_NAMES = {"authors": "the authors' decoder", "sam": "segment_anything's decoder"}


def build_model(config: ModelConfig, efficient_attention: bool = True, decoder: str = "sam") -> Any:
    """A freshly initialised `segment_anything.modeling.Sam` of the given shape, running the
    given decoder form (segment_anything's own unless asked otherwise)."""
    torch = _require_torch()
    modeling = sam_package().modeling
    sam = modeling.Sam(
        image_encoder=modeling.ImageEncoderViT(
            depth=config.encoder_depth,
            embed_dim=config.encoder_dim,
            img_size=config.image_size,
            mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=config.encoder_heads,
            patch_size=config.patch_size,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=config.global_attn_indexes,
            window_size=config.window_size,
            out_chans=config.prompt_dim,
        ),
        prompt_encoder=modeling.PromptEncoder(
            embed_dim=config.prompt_dim,
            image_embedding_size=(config.embedding_size, config.embedding_size),
            input_image_size=(config.image_size, config.image_size),
            mask_in_chans=config.mask_in_chans,
        ),
        mask_decoder=modeling.MaskDecoder(
            num_multimask_outputs=3,
            transformer=modeling.TwoWayTransformer(
                depth=2, embedding_dim=config.prompt_dim, mlp_dim=config.decoder_mlp_dim, num_heads=config.decoder_heads
            ),
            transformer_dim=config.prompt_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=config.iou_hidden_dim,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    if efficient_attention:
        from us43d.training.attention import use_efficient_attention

        use_efficient_attention(sam)
    if decoder not in DECODERS:
        raise Us43dError(f"unknown decoder '{decoder}' (choose from {', '.join(DECODERS)})")
    if decoder == "authors":
        from us43d.training.decoder import use_authors_decoder

        use_authors_decoder(sam)
    return sam
