"""The authors' form of SAM's mask decoder, on segment_anything's modules.

The UltraSam code builds its decoder layers from mmcv bricks. Two things make them compute
something other than segment_anything's layers (recipe sheet, section 3.2): mmcv's FFN returns
input + MLP(input) and the layer adds the input once more, so the block is norm3(2q + MLP(q));
and the FFN drops out 10 % after its activation and after its second layer while training.
Every other part of their decoder is numerically segment_anything's, so swapping the MLP block
is the whole difference.
"""

from __future__ import annotations

import torch
from torch import nn

AUTHORS_MLP_DROPOUT = 0.1


class AuthorsDecoderMLP(nn.Module):
    """Returns x + MLP(x), so segment_anything's `queries + mlp(queries)` becomes 2q + MLP(q).

    The parameters keep segment_anything's names (`mlp.lin1`, `mlp.lin2`): a state dict is the
    same in both forms, only what its numbers compute differs."""

    def __init__(self, block: nn.Module, dropout: float = AUTHORS_MLP_DROPOUT) -> None:
        super().__init__()
        self.lin1, self.lin2, self.act = block.lin1, block.lin2, block.act
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop(self.lin2(self.drop(self.act(self.lin1(x)))))


def use_authors_decoder(sam: nn.Module, dropout: float = AUTHORS_MLP_DROPOUT) -> nn.Module:
    for layer in sam.mask_decoder.transformer.layers:
        if not isinstance(layer.mlp, AuthorsDecoderMLP):
            layer.mlp = AuthorsDecoderMLP(layer.mlp, dropout)
    return sam


def decoder_of(sam: nn.Module) -> str:
    """Which decoder form `sam` runs: "authors" or "sam"."""
    return "authors" if isinstance(sam.mask_decoder.transformer.layers[0].mlp, AuthorsDecoderMLP) else "sam"
