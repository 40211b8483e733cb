"""Boundary prompts in training (SAMUSA): the prompt mix, the click type, the loss, the runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from training.conftest import tiny_config
from us43d.cli import app
from us43d.errors import Us43dError
from us43d.training import engine
from us43d.training.boundary import boundary_pixels, next_boundary_point
from us43d.training.boundary_loss import blurred, boundary_loss, click_heatmaps
from us43d.training.click_growth import click_images, grow_clicks, grown_clicks
from us43d.training.data import TrainDataset, load_selection
from us43d.training.decoder import use_authors_decoder
from us43d.training.losses import mask_losses
from us43d.training.model_shape import load_model
from us43d.training.prompts import BOUNDARY, BOX, POINT, draw_kinds, parse_prompt_mix
from us43d.training.sam import build_model, model_config
from us43d.training.train import TrainConfig, resolve_new_run, resume, step_losses, train


def tiny_model(seed: int = 0, boundary: bool = True) -> torch.nn.Module:
    torch.manual_seed(seed)
    sam = build_model(model_config("tiny"))
    if boundary:
        engine.add_boundary_embedding(sam)
    with torch.no_grad():  # some embeddings start at zero: make every path matter
        for parameter in sam.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.02)
    return sam.train()


def disc(size: int, cx: float, cy: float, radius: float) -> np.ndarray:
    ys, xs = np.mgrid[:size, :size]
    return (xs - cx) ** 2 + (ys - cy) ** 2 <= radius**2


# ---- the prompt mix ---------------------------------------------------------------------------


def test_the_prompt_setting_is_checked_and_stored_in_one_spelling() -> None:
    assert TrainConfig().prompt == "point=0.5,box=0.5"  # the recipe, as before
    assert TrainConfig.from_dict({"prompt": "box,point"}).prompt == "point=0.5,box=0.5"
    assert TrainConfig.from_dict({"prompt": "boundary"}).prompt == "boundary=1.0"
    assert TrainConfig.from_dict({"prompt": "Boundary=0.5, point=0.25,box=0.25"}).prompt == "point=0.25,box=0.25,boundary=0.5"
    for bad, says in [
        ("points", "unknown kind 'points'"),
        ("point=0.5,box=0.6", "sum to 1.1"),
        ("point=0.5,box", "for every kind or for none"),
        ("point=-0.5,box=1.5", "not a probability"),
        ("point=x", "not a number"),
        ("point,point", "named twice"),
        ("", "give kinds"),
    ]:
        with pytest.raises(Us43dError, match="prompt") as caught:
            TrainConfig.from_dict({"prompt": bad})
        assert says in str(caught.value)


def test_the_recipe_mix_draws_what_the_recipe_drew() -> None:
    """Runs without boundary prompts keep their data stream: box exactly where the recipe's
    `rng.random(n) < 0.5` said box, and no boundary instance, whatever the floats."""
    kinds = draw_kinds(parse_prompt_mix("point=0.5,box=0.5"), 1000, np.random.default_rng(7))
    recipe = np.random.default_rng(7).random(1000) < 0.5
    assert np.array_equal(kinds == BOX, recipe) and np.array_equal(kinds == POINT, ~recipe)
    odd = draw_kinds(parse_prompt_mix("point=0.7,box=0.1,boundary=0.2"), 20_000, np.random.default_rng(0))
    shares = [float(np.mean(odd == kind)) for kind in (POINT, BOX, BOUNDARY)]
    assert shares == pytest.approx([0.7, 0.1, 0.2], abs=0.015)
    rounded = draw_kinds(parse_prompt_mix("point=0.3,box=0.7"), 20_000, np.random.default_rng(0))
    assert not (rounded == BOUNDARY).any()


def test_the_boundary_loss_weight_follows_the_prompt() -> None:
    assert resolve_new_run(tiny_config(prompt="boundary"))[0].boundary_loss_weight == 2.0
    assert resolve_new_run(tiny_config())[0].boundary_loss_weight == 0.0
    assert resolve_new_run(tiny_config(prompt="boundary", boundary_loss_weight=0.5))[0].boundary_loss_weight == 0.5
    with pytest.raises(Us43dError, match="needs boundary clicks"):
        resolve_new_run(tiny_config(boundary_loss_weight=1.0))


# ---- the samples ------------------------------------------------------------------------------


def test_boundary_samples_carry_two_clicks_on_each_instances_boundary(demo_corpus: Path) -> None:
    selection = load_selection(demo_corpus, "train")
    entries, images = selection.entries, selection.images
    recipe = TrainDataset(images, entries, 128, 32)
    boundary = TrainDataset(images, entries, 128, 32, prompt="boundary", max_clicks=6)
    mixed = TrainDataset(images, entries, 128, 32, prompt="point=0.25,box=0.25,boundary=0.5")
    counts = set()
    seen_mixed = np.zeros(2, dtype=bool)
    for index in range(6):
        plain, sample = recipe[(index, 11 + index)], boundary[(index, 11 + index)]
        assert not plain["is_boundary"].any()
        # the boundary draws come after all others: the recipe's prompts are the same numbers
        for key in ("image", "targets", "points", "boxes"):
            assert torch.equal(plain[key], sample[key]), key
        assert sample["is_boundary"].all()
        counts.add(int(sample["click_count"]))
        for clicks, target in zip(sample["clicks"], sample["targets"]):
            # the two clicks lie on the boundary of the instance, in the 128 px input frame
            assert clicks.shape == (2, 2)
            low = (clicks + 0.5) / 4 - 0.5
            near = F.max_pool2d(target[None, None], 3, stride=1, padding=1)[0, 0]
            for x, y in low.round().long().tolist():
                assert near[y, x] == 1  # on (or next to) the low-res foreground
            assert torch.dist(clicks[0], clicks[1]) > 4  # the second is across the structure, not next to the first
        flags = mixed[(index, 11 + index)]["is_boundary"]
        seen_mixed |= [bool(flags.any()), bool((~flags).any())]
    assert counts <= set(range(2, 7)) and len(counts) > 1
    assert seen_mixed.all()


# ---- the click type ---------------------------------------------------------------------------


def test_boundary_clicks_have_their_own_learned_embedding() -> None:
    sam = tiny_model()
    coords = torch.tensor([[[30.0, 40.0], [80.0, 90.0]]])
    boundary = engine.click_embeddings(sam, coords, torch.full((1, 2), engine.BOUNDARY_LABEL))
    positive = engine.click_embeddings(sam, coords, torch.ones(1, 2, dtype=torch.int))
    embed = sam.prompt_encoder.boundary_point_embed.weight
    difference = embed - sam.prompt_encoder.point_embeddings[1].weight
    torch.testing.assert_close(boundary[0, :2] - positive[0, :2], difference.expand(2, -1))
    torch.testing.assert_close(boundary[0, 2], positive[0, 2])  # the padding token is untouched
    assert engine.BOUNDARY_EMBED_KEY in sam.state_dict()
    plain = tiny_model(boundary=False)
    assert engine.BOUNDARY_EMBED_KEY not in plain.state_dict()
    with pytest.raises(ValueError, match="boundary embedding"):
        engine.click_embeddings(plain, coords, torch.full((1, 2), engine.BOUNDARY_LABEL))


def test_a_new_boundary_embedding_starts_as_the_positive_click() -> None:
    sam = build_model(model_config("tiny"))
    engine.add_boundary_embedding(sam)
    assert torch.equal(sam.prompt_encoder.boundary_point_embed.weight, sam.prompt_encoder.point_embeddings[1].weight)


# ---- the loss ---------------------------------------------------------------------------------


def test_the_blur_is_twenty_passes_of_a_7x7_mean_filter() -> None:
    x = torch.rand(2, 40, 40)
    literal = x[:, None]
    for _ in range(20):
        literal = F.avg_pool2d(literal, 7, stride=1, padding=3, count_include_pad=True)
    torch.testing.assert_close(blurred(x), literal[:, 0], rtol=1e-5, atol=1e-6)


def test_click_heatmaps_peak_at_the_clicks_low_res_pixel() -> None:
    # input pixel 4 j + 1.5 (segment_anything adds 0.5) is the centre of low-res pixel j
    clicks = torch.tensor([[[4 * 10 + 1.5, 4 * 20 + 1.5], [4 * 3 + 1.5, 4 * 5 + 1.5]]])
    both = click_heatmaps(clicks, torch.tensor([[True, True]]), 128, 32)
    one = click_heatmaps(clicks, torch.tensor([[True, False]]), 128, 32)
    assert both.shape == (1, 32, 32)
    assert one[0, 20, 10] == pytest.approx(1.0) and one[0].argmax() == 20 * 32 + 10
    assert one[0, 5, 3] < 1e-6 < both[0, 5, 3]  # an unused slot puts nothing on the map
    assert one[0, 20, 12] == pytest.approx(np.exp(-4 / 8))  # sigma 2: two pixels away, exp(-d^2 / 2 sigma^2)


def ring_heatmap(size: int = 128, radius: float = 30.0, count: int = 10) -> torch.Tensor:
    angles = torch.arange(count) * 2 * torch.pi / count
    centre = size / 2
    clicks = torch.stack([centre + radius * torch.cos(angles), centre + radius * torch.sin(angles)], dim=1)
    return click_heatmaps(clicks[None] - 0.5, torch.ones(1, count, dtype=torch.bool), size, size)  # input = low res


def disc_logits(radius: float, size: int = 128) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    return (4 * (radius - torch.sqrt((xs - size / 2) ** 2 + (ys - size / 2) ** 2)))[None]


def test_the_loss_falls_as_the_predicted_boundary_reaches_the_clicks_and_rises_past_them() -> None:
    heatmap = ring_heatmap(radius=30)
    radii = [8, 14, 20, 25, 30, 35, 42, 52]
    losses = [float(boundary_loss(disc_logits(r), heatmap)) for r in radii]
    best = radii[int(np.argmin(losses))]
    assert best == 30, losses  # lowest with the boundary on the ring of clicks
    assert all(a > b for a, b in zip(losses[:5], losses[1:5])), losses  # falls while growing towards the ring
    assert all(a < b for a, b in zip(losses[4:], losses[5:])), losses  # and rises when it overshoots them
    assert np.exp(-1) <= min(losses) and max(losses) <= 1


def test_the_literal_form_is_the_stated_formula_and_is_chosen_by_the_run() -> None:
    heatmap = ring_heatmap(radius=30)
    logits = disc_logits(24)
    by_hand = torch.exp(-(blurred(torch.sigmoid(logits)) * heatmap).sum())
    torch.testing.assert_close(boundary_loss(logits, heatmap, "literal"), by_hand[None])
    assert not torch.allclose(boundary_loss(logits, heatmap, "literal"), boundary_loss(logits, heatmap))
    # mask_losses takes the form given to it, on the chosen mask
    chosen, targets = logits[None].expand(1, 3, -1, -1).clone(), (logits > 0).float()
    rows, ious = torch.tensor([0]), torch.ones(1, 3)
    edge = mask_losses(chosen, ious, targets, boundary=(rows, heatmap), boundary_weight=2.0)
    literal = mask_losses(chosen, ious, targets, boundary=(rows, heatmap), boundary_weight=2.0, boundary_form="literal")
    torch.testing.assert_close(literal.boundary, by_hand)
    torch.testing.assert_close(edge.boundary, boundary_loss(logits, heatmap)[0])
    assert TrainConfig(model="tiny", prompt="boundary", boundary_loss_form="literal").boundary_loss_form == "literal"
    with pytest.raises(Us43dError, match="boundary_loss_form"):
        TrainConfig.from_dict({"model": "tiny", "boundary_loss_form": "gaussian"})


def test_the_loss_sends_gradients_to_the_logits_and_through_the_chosen_mask() -> None:
    heatmap = ring_heatmap(radius=30)
    logits = disc_logits(18).requires_grad_(True)
    boundary_loss(logits, heatmap).sum().backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    # a step against the gradient moves the boundary towards the ring: the loss falls
    with torch.no_grad():
        stepped = logits - 50 * logits.grad / logits.grad.abs().max()
    assert float(boundary_loss(stepped, heatmap)) < float(boundary_loss(logits.detach(), heatmap))
    # inside mask_losses it is taken on the chosen mask of the instances with clicks only
    many = torch.stack([disc_logits(5)[0], disc_logits(18)[0], disc_logits(40)[0]])[None].repeat(2, 1, 1, 1)
    many.requires_grad_(True)
    target = torch.from_numpy(disc(128, 64, 64, 18)).float()[None].repeat(2, 1, 1)
    parts = mask_losses(many, torch.zeros(2, 3), target, boundary=(torch.tensor([1]), heatmap), boundary_weight=2.0)
    torch.testing.assert_close(parts.boundary, boundary_loss(disc_logits(18), heatmap)[0])
    torch.testing.assert_close(parts.total, 20 * parts.focal + parts.dice + parts.iou + 2 * parts.boundary)
    parts.total.backward()
    assert many.grad[1, 1].abs().sum() > 0 and many.grad[1, 0].abs().sum() == 0  # the chosen mask (IoU) only
    assert mask_losses(many.detach(), torch.zeros(2, 3), target).boundary is None


# ---- clicks that grow, and the training step ---------------------------------------------------


def test_grown_clicks_land_on_the_truth_boundary_where_the_prediction_misses_it() -> None:
    sam = tiny_model()
    embedding = sam.image_encoder(torch.randn(1, 3, 128, 128))
    truth = torch.from_numpy(np.stack([disc(32, 16, 16, 9), disc(32, 10, 12, 5)])).float()
    ring = [boundary_pixels(mask.numpy() > 0) for mask in truth]
    first = torch.tensor([[[4 * 7 + 1.5, 4 * 16 + 1.5], [4 * 25 + 1.5, 4 * 16 + 1.5]], [[4 * 5 + 1.5, 4 * 12 + 1.5]] * 2])
    labels = torch.full((2, 2), engine.BOUNDARY_LABEL)
    coords, grown = grow_clicks(sam, embedding, torch.zeros(2, dtype=torch.long), first, labels, truth, 6)
    assert coords.shape == (2, 6, 2) and grown.shape == (2, 6)
    assert torch.equal(coords[:, :2], first)
    for instance in range(2):
        added = coords[instance, 2:][grown[instance, 2:] == engine.BOUNDARY_LABEL]
        assert len(added) > 0
        low = ((added + 0.5) / 4 - 0.5).round().numpy()
        on_ring = {tuple(p) for p in ring[instance]}
        assert all(tuple(p) in on_ring for p in low)  # every added click is a truth-boundary pixel
        assert len({tuple(p) for p in low}) == len(low)  # never the same one twice


def boundary_batch(images: int = 3, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    masks = torch.from_numpy(np.stack([disc(32, 14, 15, 7), disc(32, 20, 18, 5)])).float()
    clicks = torch.tensor([[[4 * 7 + 1.5, 4 * 15 + 1.5], [4 * 21 + 1.5, 4 * 15 + 1.5]], [[4 * 15 + 1.5, 4 * 18 + 1.5]] * 2])
    return {
        "image": torch.randn(images, 3, 128, 128, generator=g),
        "targets": [masks.clone() for _ in range(images)],
        "points": [torch.tensor([[56.0, 60.0], [80.0, 72.0]]) for _ in range(images)],
        "boxes": [torch.tensor([[28.0, 32.0, 88.0, 92.0], [60.0, 52.0, 100.0, 92.0]]) for _ in range(images)],
        "is_box": [torch.tensor([False, True]) for _ in range(images)],
        "is_boundary": [torch.tensor([True, False]), torch.tensor([True, True]), torch.tensor([False, False])][:images],
        "clicks": [clicks.clone() for _ in range(images)],
        "click_rank": torch.tensor([0.9, 0.1, 0.5])[:images],
        "click_count": torch.tensor([5, 7, 3])[:images],
    }


def test_a_training_step_with_boundary_clicks_trains_their_embedding() -> None:
    sam = tiny_model()
    config = tiny_config(prompt="point=0.25,box=0.25,boundary=0.5", boundary_click_images=1)
    parts = step_losses(sam, boundary_batch(), config, torch.device("cpu"))
    assert parts.boundary is not None and parts.boundary_weight == 2.0
    assert float(np.exp(-1)) <= float(parts.boundary.detach()) / 2 <= 1  # one term per pass (refine: 2 passes)
    parts.total.backward()
    grad = sam.prompt_encoder.boundary_point_embed.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    # a batch without boundary instances gives the recipe's loss, with no boundary term
    plain = boundary_batch()
    plain["is_boundary"] = [torch.zeros(2, dtype=torch.bool)] * 3
    recipe = {k: v for k, v in plain.items() if k not in ("is_boundary", "clicks", "click_rank", "click_count")}
    torch.manual_seed(1)
    with_keys = step_losses(sam, plain, config, torch.device("cpu"))
    torch.manual_seed(1)
    without = step_losses(sam, recipe, tiny_config(), torch.device("cpu"))
    assert with_keys.boundary is None
    torch.testing.assert_close(with_keys.total, without.total)


def test_only_the_lowest_ranked_images_with_boundary_instances_grow_their_clicks(monkeypatch: pytest.MonkeyPatch) -> None:
    import us43d.training.click_growth as growth

    grown = []
    original = growth.grow_clicks

    def spy(sam, embeddings, image_of, coords, labels, truth, total):
        grown.append((image_of.tolist(), total))
        return original(sam, embeddings, image_of, coords, labels, truth, total)

    monkeypatch.setattr(growth, "grow_clicks", spy)
    sam = tiny_model()
    assert click_images(boundary_batch(), 2) == [1, 0]  # rank 0.1, then 0.9; image 2 (0.5) has no boundary instance
    step_losses(sam, boundary_batch(), tiny_config(prompt="boundary", boundary_click_images=1), torch.device("cpu"))
    assert grown == [([1, 1], 7)]  # image 1's two boundary instances, to its count
    grown.clear()
    # two images grow in the same decoder calls, to one count per batch: the first image's draw
    step_losses(sam, boundary_batch(), tiny_config(prompt="boundary", boundary_click_images=2), torch.device("cpu"))
    assert grown == [([0, 1, 1], 7)]
    grown.clear()
    step_losses(sam, boundary_batch(), tiny_config(prompt="boundary", boundary_click_images=0), torch.device("cpu"))
    assert grown == []


def test_a_step_that_grows_clicks_under_autocast_trains_the_decoder() -> None:
    """The annotator's passes run inside the step's autocast region without gradients; the
    low-precision weights they cast must not be the ones the training passes then use (with
    PyTorch before 2.10 the step failed to save them for backward)."""
    sam = tiny_model()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        parts = step_losses(sam, boundary_batch(), tiny_config(prompt="boundary", boundary_click_images=2), torch.device("cpu"))
    parts.total.backward()
    decoder = sam.mask_decoder
    for weight in (decoder.transformer.layers[0].self_attn.q_proj.weight, decoder.output_hypernetworks_mlps[0].layers[0].weight):
        assert weight.grad is not None and torch.isfinite(weight.grad).all() and weight.grad.abs().sum() > 0


@pytest.mark.parametrize("form", ["sam", "authors"])
def test_the_single_mask_pass_of_several_images_is_the_decoders_own_output(form: str) -> None:
    sam = tiny_model().eval()
    if form == "authors":
        use_authors_decoder(sam).eval()
    torch.manual_seed(0)
    embeddings = sam.image_encoder(torch.randn(3, 3, 128, 128))
    coords = torch.rand(5, 4, 2) * 127
    labels = torch.tensor([[4, 4, 4, -1], [4, 4, 1, 0], [4, 4, -1, -1], [4, 4, 4, 4], [1, 0, 4, -1]], dtype=torch.int)
    image_of = torch.tensor([2, 0, 2, 1, 0])
    with torch.no_grad():
        fast = engine.single_mask_logits(sam, embeddings, image_of, engine.click_embeddings(sam, coords, labels))
        for n in range(5):
            alone, _ = engine.decode_clicks(
                sam, embeddings[image_of[n] : image_of[n] + 1], coords[n : n + 1], labels[n : n + 1], False
            )
            torch.testing.assert_close(fast[n], alone[0, 0], rtol=1e-4, atol=1e-5)
        # the annotator sees the model as in eval mode: no dropout even while the model trains
        sam.train()
        again = engine.single_mask_logits(sam, embeddings, image_of, engine.click_embeddings(sam, coords, labels))
    torch.testing.assert_close(again, fast, rtol=0, atol=0)


def test_the_annotators_click_tokens_are_the_prompt_encoders() -> None:
    sam = tiny_model()
    coords = torch.rand(3, 5, 2) * 127
    labels = torch.tensor([[4, 4, 4, 4, 4], [4, 4, -1, 4, -1], [4, 4, -1, -1, -1]], dtype=torch.int)
    with torch.no_grad():
        torch.testing.assert_close(
            engine.boundary_click_tokens(sam, coords, labels), engine.click_embeddings(sam, coords, labels)
        )


def test_the_annotators_click_tokens_take_boundary_and_padding_clicks_only() -> None:
    with pytest.raises(ValueError, match="boundary .4. and padding"):
        engine.boundary_click_tokens(tiny_model(), torch.zeros(1, 2, 2), torch.tensor([[4, 1]], dtype=torch.int))


def reference_growth(sam, embedding, coords, truth, total):
    """SAMUSA's annotator written plainly: segment_anything's decoder call per image (eval mode,
    single mask), the next click from `next_boundary_point`, one instance at a time."""
    scale = 128 / truth.shape[-1]
    sam.eval()
    labels = torch.full(coords.shape[:2], engine.BOUNDARY_LABEL, dtype=torch.int)
    chosen = [list(np.round((c.numpy() + 0.5) / scale - 0.5)) for c in coords]
    while coords.shape[1] < total:
        with torch.no_grad():
            logits, _ = engine.decode_clicks(sam, embedding, coords, labels, multimask=False)
        extra, extra_labels = torch.zeros(len(coords), 1, 2), torch.full((len(coords), 1), engine.PADDING_LABEL, dtype=torch.int)
        for n in range(len(coords)):
            point = next_boundary_point(truth[n].numpy() > 0.5, (logits[n, 0] > 0).numpy(), np.array(chosen[n]))
            if point is not None:
                chosen[n].append(point)
                extra[n, 0], extra_labels[n, 0] = torch.from_numpy((point + 0.5) * scale - 0.5), engine.BOUNDARY_LABEL
        coords, labels = torch.cat([coords, extra], 1), torch.cat([labels, extra_labels], 1)
    sam.train()
    return coords, labels


@pytest.mark.parametrize("form", ["sam", "authors"])
def test_grown_clicks_are_those_of_the_annotator_written_plainly(form: str) -> None:
    sam = tiny_model()
    if form == "authors":
        use_authors_decoder(sam)  # dropout in training mode: the annotator must not see it
    batch = boundary_batch()
    embeddings = sam.image_encoder(batch["image"]).detach()
    grown = grown_clicks(sam, embeddings, batch, [1, 0], torch.device("cpu"))
    for image in (0, 1):
        flags = batch["is_boundary"][image]
        coords, labels = reference_growth(
            sam, embeddings[image : image + 1], batch["clicks"][image][flags], batch["targets"][image][flags], 7
        )
        torch.testing.assert_close(grown[image][0], coords)
        assert torch.equal(grown[image][1], labels)
        assert (labels == engine.BOUNDARY_LABEL).sum() > 2 * len(labels)  # clicks were added


def test_the_batchs_heatmaps_are_each_images_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """The loss's heatmaps come from one call over click lists padded to the longest; padding
    slots must add nothing."""
    import us43d.training.train as train_module

    made = []
    monkeypatch.setattr(train_module, "click_heatmaps", lambda *a: made.append(a) or click_heatmaps(*a))
    sam, batch = tiny_model(), boundary_batch()
    grown = {}
    monkeypatch.setattr(train_module, "grown_clicks", lambda *a: grown.update(grown_clicks(*a)) or grown)
    step_losses(sam, batch, tiny_config(prompt="boundary", boundary_click_images=1), torch.device("cpu"))
    ((coords, valid, image_size, low),) = made
    assert coords.shape[1] == 7  # image 1 grew to 7 clicks; image 0's two are padded
    together = click_heatmaps(coords, valid, image_size, low)
    flags = batch["is_boundary"][0]
    alone0 = click_heatmaps(batch["clicks"][0][flags], torch.ones(int(flags.sum()), 2, dtype=torch.bool), image_size, low)
    alone1 = click_heatmaps(grown[1][0], grown[1][1] == engine.BOUNDARY_LABEL, image_size, low)
    torch.testing.assert_close(together, torch.cat([alone0, alone1]), rtol=0, atol=0)


def test_clicks_grown_together_are_the_clicks_grown_image_by_image() -> None:
    sam = tiny_model()
    batch = boundary_batch()
    embeddings = sam.image_encoder(batch["image"])
    together = grown_clicks(sam, embeddings, batch, [1, 0], torch.device("cpu"))
    assert sorted(together) == [0, 1]
    for image in (0, 1):
        flags = batch["is_boundary"][image]
        coords = batch["clicks"][image][flags]
        labels = torch.full(coords.shape[:2], engine.BOUNDARY_LABEL, dtype=torch.int)
        alone = grow_clicks(
            sam,
            embeddings[image : image + 1],
            torch.zeros(len(coords), dtype=torch.long),
            coords,
            labels,
            batch["targets"][image][flags],
            7,
        )
        assert together[image][0].shape == (int(flags.sum()), 7, 2)
        torch.testing.assert_close(together[image][0], alone[0])
        assert torch.equal(together[image][1], alone[1])


# ---- runs and checkpoints ---------------------------------------------------------------------


def test_a_boundary_run_trains_keeps_its_embedding_and_resumes_exactly(demo_corpus: Path, tmp_path: Path) -> None:
    config = tiny_config(prompt="point=0.25,box=0.25,boundary=0.5", boundary_max_clicks=5)
    train(demo_corpus, tmp_path / "full", config)
    train(demo_corpus, tmp_path / "part", tiny_config(prompt="boundary=0.5,box=0.25,point=0.25", boundary_max_clicks=5, iters=3))
    state = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=True)
    assert state["config"]["prompt"] == "point=0.25,box=0.25,boundary=0.5" and state["config"]["boundary_loss_weight"] == 2.0
    state["config"]["iters"] = 6  # as if the first run had been killed after step 3
    torch.save(state, tmp_path / "part" / "checkpoint.pt")
    resume(demo_corpus, tmp_path / "part", {"prompt": "boundary=0.5,point=0.25,box=0.25"})  # the same mix, spelt otherwise
    full = torch.load(tmp_path / "full" / "model.pth", weights_only=True)
    resumed = torch.load(tmp_path / "part" / "model.pth", weights_only=True)
    assert engine.BOUNDARY_EMBED_KEY in full
    assert full.keys() == resumed.keys()
    for key in full:
        torch.testing.assert_close(resumed[key], full[key], rtol=0, atol=0, msg=key)
    metrics = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert all("boundary" in record for record in metrics)
    # the embedding was trained, and our loaders read it back
    assert not torch.equal(full[engine.BOUNDARY_EMBED_KEY], full["prompt_encoder.point_embeddings.1.weight"])
    sam, _ = load_model(tmp_path / "full" / "model.pth")
    assert torch.equal(sam.prompt_encoder.boundary_point_embed.weight, full[engine.BOUNDARY_EMBED_KEY])
    with pytest.raises(Us43dError, match="prompt"):
        resume(demo_corpus, tmp_path / "part", {"iters": 8, "prompt": "boundary"})


def test_a_run_without_boundary_clicks_writes_a_plain_segment_anything_file(demo_corpus: Path, tmp_path: Path) -> None:
    train(demo_corpus, tmp_path / "boundary", tiny_config(prompt="boundary", iters=2))
    # started from a boundary run's weights, a recipe run leaves the embedding out
    train(demo_corpus, tmp_path / "recipe", tiny_config(iters=2, init=str(tmp_path / "boundary" / "model.pth")))
    plain = torch.load(tmp_path / "recipe" / "model.pth", weights_only=True)
    segment_anything = build_model(model_config("tiny"))  # segment_anything's own modules, nothing added
    segment_anything.load_state_dict(plain, strict=True)
    # and a boundary run started from plain weights starts its embedding from the positive click
    train(
        demo_corpus,
        tmp_path / "again",
        tiny_config(prompt="boundary", iters=1, lr=1e-12, init=str(tmp_path / "recipe" / "model.pth")),
    )
    again = torch.load(tmp_path / "again" / "model.pth", weights_only=True)
    torch.testing.assert_close(
        again[engine.BOUNDARY_EMBED_KEY], plain["prompt_encoder.point_embeddings.1.weight"], rtol=0, atol=1e-6
    )


def test_convert_checkpoint_leaves_the_boundary_embedding_out(demo_corpus: Path, tmp_path: Path) -> None:
    train(demo_corpus, tmp_path / "run", tiny_config(prompt="boundary", iters=1))
    result = CliRunner().invoke(app, ["convert-checkpoint", str(tmp_path / "run" / "model.pth"), str(tmp_path / "plain.pth")])
    assert result.exit_code == 0, result.output
    assert "left out prompt_encoder.boundary_point_embed.weight" in result.output
    plain = torch.load(tmp_path / "plain.pth", weights_only=True)
    build_model(model_config("tiny")).load_state_dict(plain, strict=True)


def test_the_command_line_takes_the_prompt_mix(demo_corpus: Path, tmp_path: Path) -> None:
    base = ["train", "--corpus", str(demo_corpus), "--model", "tiny", "--workers", "0", "--init", "none", "--iters", "1"]
    base += ["--batch-size", "2", "--global-batch", "2", "--val-every", "0"]
    result = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "a"), "--prompt", "boundary", "--boundary-max-clicks", "4"])
    assert result.exit_code == 0, result.output
    saved = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)["config"]
    assert saved["prompt"] == "boundary=1.0" and saved["boundary_max_clicks"] == 4 and saved["boundary_loss_weight"] == 2.0
    bad = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "b"), "--prompt", "point=0.5,edge=0.5"])
    assert bad.exit_code != 0 and "unknown kind 'edge'" in bad.output
    assert not (tmp_path / "b").exists()
