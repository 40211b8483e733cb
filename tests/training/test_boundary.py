"""Boundary clicks (SAMUSA's simulated user): where the points land, checked by brute force."""

from __future__ import annotations

import numpy as np
import pytest

from us43d.training import boundary
from us43d.training.boundary import boundary_pixels, first_boundary_points, next_boundary_point


def disc(size: int, cx: float, cy: float, radius: float) -> np.ndarray:
    ys, xs = np.mgrid[:size, :size]
    return (xs - cx) ** 2 + (ys - cy) ** 2 <= radius**2


def brute_boundary(mask: np.ndarray) -> set[tuple[int, int]]:
    """Mask pixels with a 4-neighbour outside the mask (or outside the array)."""
    height, width = mask.shape
    found = set()
    for y in range(height):
        for x in range(width):
            if not mask[y, x]:
                continue
            for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
                ny, nx = y + dy, x + dx
                if not (0 <= ny < height and 0 <= nx < width) or not mask[ny, nx]:
                    found.add((x, y))
                    break
    return found


def test_boundary_pixels_of_a_square_are_its_ring_in_row_major_order():
    mask = np.zeros((9, 9), dtype=bool)
    mask[2:7, 3:8] = True  # rows 2..6, columns 3..7
    pixels = boundary_pixels(mask)
    assert pixels.shape == (16, 2)
    assert pixels.dtype == np.float64
    assert [tuple(p) for p in pixels[:5]] == [(3, 2), (4, 2), (5, 2), (6, 2), (7, 2)]  # (x, y): the top row first
    assert {(int(x), int(y)) for x, y in pixels} == brute_boundary(mask)
    assert (4, 4) not in {(int(x), int(y)) for x, y in pixels}  # the inside is not boundary


def test_boundary_pixels_match_brute_force_on_irregular_masks_and_image_edges():
    rng = np.random.default_rng(0)
    for _ in range(5):
        mask = rng.random((12, 15)) < 0.6  # touches every edge, has holes
        pixels = boundary_pixels(mask)
        assert {(int(x), int(y)) for x, y in pixels} == brute_boundary(mask)
        assert len(pixels) == len(brute_boundary(mask))  # no pixel twice


def test_boundary_pixels_of_an_empty_mask_is_empty():
    assert boundary_pixels(np.zeros((4, 5), dtype=bool)).shape == (0, 2)


def test_first_boundary_points_are_a_random_boundary_point_and_the_one_furthest_from_it():
    mask = disc(40, 20, 18, 11)
    ring = boundary_pixels(mask)
    on_ring = {tuple(p) for p in ring}
    firsts = set()
    for seed in range(6):
        points = first_boundary_points(mask, np.random.default_rng(seed))
        assert points.shape == (2, 2)
        assert tuple(points[0]) in on_ring and tuple(points[1]) in on_ring
        distances = np.sqrt(((ring - points[0]) ** 2).sum(axis=1))
        assert np.hypot(*(points[1] - points[0])) == pytest.approx(distances.max())
        assert np.hypot(*(points[1] - points[0])) > 20  # across the disc, not next to the first
        firsts.add(tuple(points[0]))
        again = first_boundary_points(mask, np.random.default_rng(seed))
        assert np.array_equal(points, again)  # same generator state, same clicks
    assert len(firsts) > 1  # the first point is drawn, not fixed


def test_first_boundary_points_refuse_an_empty_mask():
    with pytest.raises(ValueError, match="empty mask"):
        first_boundary_points(np.zeros((5, 5), dtype=bool), np.random.default_rng(0))


def test_next_boundary_point_is_where_the_truth_is_furthest_from_the_predicted_boundary():
    truth = disc(48, 24, 24, 15)
    predicted = truth.copy()
    predicted[:, 30:] = False  # the prediction misses the right part of the disc
    point = next_boundary_point(truth, predicted, np.empty((0, 2)))
    assert point is not None and point.shape == (2,)
    # brute force: every truth-boundary pixel's distance to the nearest predicted-boundary pixel
    ring, edge = boundary_pixels(truth), boundary_pixels(predicted)
    distances = np.sqrt(((ring[:, None] - edge[None]) ** 2).sum(axis=2)).min(axis=1)
    assert np.hypot(*(edge - point).T).min() == pytest.approx(distances.max())
    assert tuple(point) == tuple(ring[np.argmax(distances)])  # ties: the first in row-major order
    assert point[0] == 39  # the rightmost part of the disc, furthest from the cut


def test_next_boundary_point_does_not_offer_a_chosen_point_again():
    truth = disc(48, 24, 24, 15)
    predicted = truth.copy()
    predicted[:, 30:] = False
    first = next_boundary_point(truth, predicted, np.empty((0, 2)))
    assert first is not None
    second = next_boundary_point(truth, predicted, first[None] + 0.3)  # a chosen point is matched to its pixel
    assert second is not None and tuple(second) != tuple(first)


def test_next_boundary_point_for_an_empty_prediction_spreads_away_from_the_chosen_points():
    truth = disc(48, 24, 24, 15)
    chosen = np.array([[9.0, 24.0]])  # the leftmost point of the ring
    point = next_boundary_point(truth, np.zeros_like(truth), chosen)
    assert point is not None
    ring = boundary_pixels(truth)
    assert np.hypot(*(point - chosen[0])) == pytest.approx(np.sqrt(((ring - chosen[0]) ** 2).sum(axis=1)).max())
    assert point[0] == 39  # across the disc


def test_next_boundary_point_is_none_when_nothing_sensible_exists():
    truth = disc(20, 10, 10, 5)
    empty = np.zeros_like(truth)
    assert next_boundary_point(truth, empty, np.empty((0, 2))) is None  # no prediction, no point yet
    assert next_boundary_point(empty, truth, np.empty((0, 2))) is None  # no truth boundary
    tiny = np.zeros((5, 5), dtype=bool)
    tiny[2, 2] = True
    assert next_boundary_point(tiny, tiny, np.array([[2.0, 2.0]])) is None  # every boundary point already chosen


def test_next_boundary_point_refuses_a_prediction_of_another_size():
    with pytest.raises(ValueError, match="same size"):
        next_boundary_point(np.ones((4, 4), dtype=bool), np.ones((4, 5), dtype=bool), np.empty((0, 2)))


@pytest.mark.parametrize("pairs", [0, 1 << 30])  # the distance transform, and pixel pairs one by one
def test_next_boundary_point_is_the_brute_force_answer_on_either_distance_path(pairs: int, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(boundary, "BRUTE_FORCE_PAIRS", pairs)
    rng = np.random.default_rng(3)
    for n in range(40):
        truth = disc(40, rng.uniform(8, 32), rng.uniform(8, 32), rng.uniform(3, 12))
        predicted = disc(40, rng.uniform(5, 35), rng.uniform(5, 35), rng.uniform(2, 14))
        if n % 5 == 0:  # a prediction cut by the frame: ties and edges of the image
            predicted[:, : int(rng.integers(1, 20))] = False
        ring = boundary_pixels(truth)
        chosen = ring[rng.choice(len(ring), size=n % 3, replace=False)]
        point = next_boundary_point(truth, predicted, chosen)
        free = np.array([p for p in ring if not any((p == c).all() for c in chosen)])
        edge = boundary_pixels(predicted)
        if len(edge) == 0:
            continue
        distances = np.sqrt(((free[:, None] - edge[None]) ** 2).sum(axis=2)).min(axis=1)
        assert tuple(point) == tuple(free[np.argmax(distances)])
