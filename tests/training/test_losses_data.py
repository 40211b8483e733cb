from __future__ import annotations

from pathlib import Path

import pytest
import torch

from us43d.errors import CorpusError, Us43dError
from us43d.training.data import InfiniteBatchSampler, TrainDataset, load_selection
from us43d.training.losses import dice_per_instance, focal_map, mask_losses, true_iou
from us43d.training.train import TrainConfig, lr_factor


def test_focal_and_dice_by_hand() -> None:
    logits = torch.tensor([[[2.0, -1.0]]])
    targets = torch.tensor([[[1.0, 0.0]]])
    p = torch.sigmoid(logits)
    expected = torch.stack(
        [
            -torch.log(p[0, 0, 0]) * 0.25 * (1 - p[0, 0, 0]) ** 2,
            -torch.log(1 - p[0, 0, 1]) * 0.75 * p[0, 0, 1] ** 2,
        ]
    )
    torch.testing.assert_close(focal_map(logits, targets).flatten(), expected)
    dice = 1 - 2 * p[0, 0, 0] / (p.square().sum() + 1 + 1 + 1)
    torch.testing.assert_close(dice_per_instance(logits, targets)[0], dice)


def test_mask_selection_and_iou_loss_variants() -> None:
    targets = torch.zeros(1, 4, 4)
    targets[0, :2, :2] = 1
    good = torch.where(targets[0] > 0, 5.0, -5.0)
    half = good.clone()
    half[0, 0] = -5.0
    logits = torch.stack([half, good, -good])[None]  # second mask is right
    iou_pred = torch.tensor([[0.9, 0.5, 0.1]])
    assert true_iou(logits, targets[:, None].expand_as(logits)).argmax().item() == 1
    by_iou = mask_losses(logits, iou_pred, targets, "iou", "mse")
    torch.testing.assert_close(by_iou.iou, torch.tensor((0.5 - 1.0) ** 2))
    by_loss = mask_losses(logits, iou_pred, targets, "loss", "l1")
    torch.testing.assert_close(by_loss.iou, torch.tensor(0.5))
    assert by_iou.total > 0


def test_schedule_is_the_recipe() -> None:
    config = TrainConfig()
    assert lr_factor(0, config) == pytest.approx(0.001)
    assert lr_factor(250, config) == pytest.approx(0.001 + 0.999 * 0.5)
    assert lr_factor(500, config) == 1.0
    assert lr_factor(20_000, config) == pytest.approx(0.1)
    assert lr_factor(28_888, config) == pytest.approx(0.01)


def test_sampler_is_a_pure_function_of_the_step_and_shards_ranks() -> None:
    full = iter(InfiniteBatchSampler(10, 3, seed=7))
    batches = [next(full) for _ in range(8)]
    resumed = iter(InfiniteBatchSampler(10, 3, seed=7, start_step=5))
    assert [next(resumed) for _ in range(3)] == batches[5:]
    seen = [i for b in batches for i, _ in b]
    assert sorted(seen[:10]) == list(range(10))
    assert sorted(seen[10:20]) == list(range(10))  # one epoch visits every image once
    rank0 = next(iter(InfiniteBatchSampler(10, 2, seed=1, rank=0, world=2)))
    rank1 = next(iter(InfiniteBatchSampler(10, 2, seed=1, rank=1, world=2)))
    assert not {i for i, _ in rank0} & {i for i, _ in rank1}


def test_dataset_sample_shapes_and_prompts(demo_corpus: Path) -> None:
    selection = load_selection(demo_corpus, "train")
    dataset = TrainDataset(selection.images, selection.entries, 128, 32)
    for seed in range(6):
        sample = dataset[(0, seed)]
        n = len(sample["points"])
        assert sample["image"].shape == (3, 128, 128)
        assert sample["targets"].shape == (n, 32, 32) and set(sample["targets"].unique().tolist()) <= {0.0, 1.0}
        assert sample["boxes"].shape == (n, 4) and sample["is_box"].shape == (n,)
        for point, target in zip(sample["points"], sample["targets"]):
            x, y = ((point + 0.5) / 4).long().tolist()  # back to the low-res grid
            assert target[max(0, y - 1) : y + 2, max(0, x - 1) : x + 2].any()
    assert torch.equal(dataset[(1, 42)]["boxes"], dataset[(1, 42)]["boxes"])  # seeded


def test_exclude_and_bad_corpora(demo_corpus: Path, tmp_path: Path) -> None:
    assert load_selection(demo_corpus, "train", exclude=("breast",)).entries == []
    assert load_selection(demo_corpus, "train", exclude=("breast",)).excluded["BUS-BRA"] > 0
    assert load_selection(demo_corpus, "train", exclude=("ovary",)).entries
    with pytest.raises(Us43dError, match="unknown organ group"):
        load_selection(demo_corpus, "train", exclude=("elbow",))
    with pytest.raises(CorpusError, match="no Parquet tables"):
        load_selection(tmp_path, "train")


def test_config_file_and_unknown_settings(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("model: tiny\niters: 7\nmilestones: [3]\n")
    config = TrainConfig.from_file(tmp_path / "c.yaml", iters=9)
    assert (config.model, config.iters, config.milestones) == ("tiny", 9, (3,))
    with pytest.raises(Us43dError, match="unknown training settings"):
        TrainConfig.from_dict({"colour": 1})
