from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from us43d.training.attention import use_efficient_attention
from us43d.training.checkpoints import (
    MMDET_MLP_FACTOR,
    CheckpointError,
    load_into,
    mmdet_to_sam,
    read_state_dict,
    sam_to_mmdet,
)
from us43d.training.sam import build_model, model_config, sam_package


def random_model(name: str = "tiny", seed: int = 0, efficient: bool = True):
    torch.manual_seed(seed)
    model = build_model(model_config(name), efficient_attention=efficient)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)  # rel-pos tables start at zero: make them matter
    return model.eval()


def test_sam_imports_without_torchvision_or_says_so() -> None:
    package = sam_package()
    assert "vit_b" in package.sam_model_registry
    if "torchvision" not in sys.modules:
        with pytest.raises(ModuleNotFoundError, match="torchvision"):
            from segment_anything.predictor import SamPredictor  # noqa: F401


def test_efficient_attention_matches_segment_anything_forward_and_backward() -> None:
    reference = random_model(efficient=False)
    efficient = copy.deepcopy(reference)
    assert use_efficient_attention(efficient) == 2
    images = torch.randn(2, 3, 128, 128)
    out_ref = reference.image_encoder(images)
    out_eff = efficient.image_encoder(images)
    torch.testing.assert_close(out_eff, out_ref, rtol=1e-5, atol=1e-5)
    out_ref.square().sum().backward()
    out_eff.square().sum().backward()
    for (name, a), (_, b) in zip(reference.named_parameters(), efficient.named_parameters()):
        if a.grad is not None:
            # float32 with another summation order: compare against the gradient's own scale
            assert (b.grad - a.grad).abs().max() <= 1e-5 * a.grad.abs().max() + 1e-7, name
    use_efficient_attention(efficient, enabled=False)  # and back
    torch.testing.assert_close(efficient.image_encoder(images), out_ref)


def test_vit_b_key_mapping_round_trip_and_counts() -> None:
    state = build_model(model_config("vit_b")).state_dict()
    assert len(state) == 314
    mmdet = sam_to_mmdet(state)
    assert len(mmdet) == 293
    assert mmdet["prompt_encoder.label_encoder.label_embedding.weight"].shape == (11, 256)
    assert mmdet["decoder.layers.0.self_attn.attn.in_proj_bias"].shape == (768,)
    assert mmdet["decoder.layers.1.cross_attn_token_to_image.attn.in_proj_bias"].shape == (384,)
    assert "backbone.layers.11.ffn.layers.1.weight" in mmdet and "backbone.channel_reduction.3.weight" in mmdet
    back = mmdet_to_sam(mmdet)
    assert back.keys() == state.keys()
    for key in state:
        torch.testing.assert_close(back[key], state[key], rtol=0, atol=0, msg=key)


def _doubled_residual(model: torch.nn.Module) -> None:
    """The authors' decoder layer: norm3(2q + MLP(q)) instead of norm3(q + MLP(q))."""

    class PlusInput(torch.nn.Module):
        def __init__(self, mlp: torch.nn.Module) -> None:
            super().__init__()
            self.mlp = mlp

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.mlp(x) + x

    for layer in model.mask_decoder.transformer.layers:
        layer.mlp = PlusInput(layer.mlp)


def test_mmdet_checkpoint_reproduces_the_authors_decoder(tmp_path: Path) -> None:
    weights = random_model(seed=1).state_dict()  # what the authors' file holds, renamed plainly
    plain = sam_to_mmdet(weights)
    for key in plain:
        if ".mlp.layers.1." in key and key.startswith("decoder.layers."):
            plain[key] = plain[key] * MMDET_MLP_FACTOR  # undo our function-preserving x2: the raw file
    torch.save({"state_dict": plain, "meta": {"note": "mmengine"}}, tmp_path / "UltraSam.pth")

    authors = build_model(model_config("tiny")).eval()
    authors.load_state_dict(weights)
    _doubled_residual(authors)
    ours = build_model(model_config("tiny")).eval()
    load_into(ours, read_state_dict(tmp_path / "UltraSam.pth"))

    from us43d.training import engine

    images = torch.randn(1, 3, 128, 128)
    points, boxes = torch.tensor([[40.0, 50.0], [10.0, 90.0]]), torch.tensor([[20.0, 30.0, 80.0, 90.0], [5.0, 5.0, 60.0, 40.0]])
    with torch.no_grad():
        for is_box in (torch.tensor([False, True]), torch.tensor([True, True])):
            for multimask in (False, True):
                a = engine.decode(authors, authors.image_encoder(images), points, boxes, is_box, multimask)
                b = engine.decode(ours, ours.image_encoder(images), points, boxes, is_box, multimask)
                torch.testing.assert_close(b[0], a[0], rtol=1e-3, atol=1e-4)
                torch.testing.assert_close(b[1], a[1], rtol=1e-3, atol=1e-4)
    # without the 0.5 factor the outputs differ: the test can fail
    naive = build_model(model_config("tiny")).eval()
    naive.load_state_dict(weights)
    with torch.no_grad():
        a = engine.decode(authors, authors.image_encoder(images), points, boxes, torch.tensor([True, True]), True)
        c = engine.decode(naive, naive.image_encoder(images), points, boxes, torch.tensor([True, True]), True)
    assert not torch.allclose(c[0], a[0], rtol=1e-3, atol=1e-4)


def test_vit_b_weights_load_with_segment_anything(tmp_path: Path) -> None:
    model = build_model(model_config("vit_b"))
    torch.save(model.state_dict(), tmp_path / "model.pth")
    loaded = sam_package().sam_model_registry["vit_b"](checkpoint=str(tmp_path / "model.pth"))
    key = "mask_decoder.iou_prediction_head.layers.0.weight"
    torch.testing.assert_close(loaded.state_dict()[key], model.state_dict()[key])


def test_bad_checkpoints_are_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        read_state_dict(tmp_path / "none.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        read_state_dict(tmp_path / "junk.pth")
    torch.save({"model": np.dtype("float32")}, tmp_path / "pickled.pth")  # needs full unpickling
    with pytest.raises(CheckpointError):
        read_state_dict(tmp_path / "pickled.pth")
    small = build_model(model_config("tiny")).state_dict()
    other = build_model(model_config("tiny", image_size=160))
    with pytest.raises(CheckpointError, match="wrong --model"):
        load_into(other, small)
    with pytest.raises(CheckpointError, match="missing keys"):
        load_into(other, {k: v for k, v in small.items() if "iou" not in k})


def test_decomposed_bias_attention_gradients_are_exact() -> None:
    from us43d.training.attention import DecomposedBiasAttention

    torch.manual_seed(0)
    shapes = [(2, 36, 8), (2, 36, 8), (2, 36, 8), (2, 36, 6), (2, 36, 6)]
    inputs = [torch.randn(*s, dtype=torch.float64, requires_grad=True) for s in shapes]
    assert torch.autograd.gradcheck(lambda *a: DecomposedBiasAttention.apply(*a, 0.3, 16), inputs)
