"""Field-of-view cleaning: only annotation pixels outside the scanned region go, never anatomy
inside it however dark, and never by splitting one structure into several instances."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from helpers import ellipse
from us43d.corpus.field_of_view import (
    ConvexRegion,
    SignalEnvelope,
    VolumeFieldOfView,
    image_field_of_view,
    no_signal_level,
    sequence_field_of_view,
)
from us43d.corpus.instances import extract_instances
from us43d.demo import fan_mask
from us43d.errors import ConversionError

SHAPE = (120, 160)


def sector_frame(rng: np.random.Generator, shape: tuple[int, int] = SHAPE) -> np.ndarray:
    """Speckle inside a fan (never exactly 0 there), exact 0 outside it."""
    speckle = np.clip(rng.rayleigh(50, size=shape), 1, 255).astype(np.uint8)
    return np.where(fan_mask(*shape), speckle, 0).astype(np.uint8)


def decoded(instance, shape: tuple[int, int]) -> np.ndarray:
    return mask_utils.decode({"size": list(shape), "counts": instance.rle_counts.encode()}).astype(bool)


def test_the_field_of_view_of_a_sector_is_the_sector(rng: np.random.Generator) -> None:
    fan = fan_mask(*SHAPE)
    fov = image_field_of_view(sector_frame(rng), lossy=False)
    assert fov[fan].all()  # every scanned pixel is inside
    assert np.count_nonzero(fov & ~fan) < 0.02 * fan.sum()  # and little else (the hull of an arc)


def test_dark_anatomy_on_the_edge_of_the_sector_is_kept(rng: np.random.Generator) -> None:
    image = sector_frame(rng)
    fan = fan_mask(*SHAPE)
    rows, cols = np.nonzero(fan)
    left_edge = (int(rows.mean()), int(cols[rows == int(rows.mean())].min()))
    cyst = ellipse(SHAPE, left_edge, (12, 9)) & fan
    image[cyst] = 0  # an anechoic cavity as black as the frame, opening onto it
    stats = extract_instances(cyst.astype(np.uint8), {1: "cyst"}, None, image_field_of_view(image, False), min_area=1)
    assert stats.cleaned_pixels == 0
    (instance,) = stats.instances
    np.testing.assert_array_equal(decoded(instance, SHAPE), cyst)


def test_labels_spilling_outside_the_sector_are_cut_at_its_edge(rng: np.random.Generator) -> None:
    image = sector_frame(rng)
    fan = fan_mask(*SHAPE)
    rows, cols = np.nonzero(fan)
    right_edge = (int(rows.mean()), int(cols[rows == int(rows.mean())].max()))
    spill = ellipse(SHAPE, right_edge, (10, 14))
    outside = int(np.count_nonzero(spill & ~fan))
    stats = extract_instances(spill.astype(np.uint8), {1: "lesion"}, None, image_field_of_view(image, False), min_area=1)
    (instance,) = stats.instances
    kept = decoded(instance, SHAPE)
    assert kept[spill & fan].all()  # nothing inside the scan is lost
    assert outside - 3 <= stats.cleaned_pixels <= outside and stats.cleaned_instances == 1
    assert instance.area == int(kept.sum()) == int(spill.sum()) - stats.cleaned_pixels


def test_thin_lines_and_text_outside_the_scan_do_not_widen_it(rng: np.random.Generator) -> None:
    image = np.zeros(SHAPE, np.uint8)
    image[:100] = sector_frame(rng, (100, SHAPE[1]))
    clean = image_field_of_view(image, False)
    image[110:112, :] = 182  # an ECG trace below the sector
    for left in range(2, 40, 9):  # a line of text in a corner: "E"s with 2-pixel strokes
        image[104:118, left : left + 2] = 255
        image[104:106, left : left + 6] = image[110:112, left : left + 6] = image[116:118, left : left + 6] = 255
    np.testing.assert_array_equal(image_field_of_view(image, False), clean)


def test_one_frame_cuts_dark_anatomy_at_a_corner_but_the_sequence_does_not(rng: np.random.Generator) -> None:
    """Why sequences are estimated from all frames: in one frame a cavity dark up to the
    scan's corner is indistinguishable from the outside; over time the tissue moves."""
    fan = fan_mask(*SHAPE)
    rows, cols = np.nonzero(fan)
    corner = (int(rows.max()) - 6, int(cols[rows == rows.max()].min()))  # where the arc meets the side
    cavity = ellipse(SHAPE, corner, (16, 16)) & fan
    frames = np.stack([sector_frame(rng) for _ in range(8)])
    frames[0][cavity] = 0
    frames[1:, cavity] //= 4  # dark, but not empty, in the other frames
    single = image_field_of_view(frames[0], False)
    sequence = sequence_field_of_view(frames, 0, False)
    assert np.count_nonzero(cavity & ~single) > 20
    assert not np.count_nonzero(cavity & ~sequence)
    envelope = SignalEnvelope()
    for frame in frames:
        envelope.add(np.stack([frame] * 3, axis=-1))  # a decoded colour video
    np.testing.assert_array_equal(envelope.field_of_view(lossy=False), sequence)


def cone_volume(rng: np.random.Generator, shape: tuple[int, int, int] = (40, 48, 56)) -> tuple[np.ndarray, np.ndarray]:
    """A 3D scan: speckle inside a cone opening along the first axis, exact 0 outside."""
    depth, rows, cols = np.mgrid[0 : shape[0], 0 : shape[1], 0 : shape[2]].astype(np.float64)
    radius = 6 + 0.5 * depth
    cone = np.hypot(rows - shape[1] / 2, cols - shape[2] / 2) <= radius
    speckle = np.clip(rng.rayleigh(50, size=shape), 1, 255).astype(np.uint8)
    return np.where(cone, speckle, 0).astype(np.uint8), cone


def test_volume_labels_outside_the_cone_are_cleaned_in_every_slicing(rng: np.random.Generator) -> None:
    volume, cone = cone_volume(rng)
    label = np.zeros(volume.shape, bool)
    grid = np.mgrid[0 : volume.shape[0], 0 : volume.shape[1], 0 : volume.shape[2]]
    label[((grid[0] - 14) ** 2 + (grid[1] - 24) ** 2 + (grid[2] - 40) ** 2) <= 9**2] = True  # pokes out of the cone
    assert np.count_nonzero(label & ~cone) > 200
    fov = VolumeFieldOfView.estimate(volume)
    for axis in range(3):
        removed = kept_inside = 0
        for index in range(volume.shape[axis]):
            plane_label = np.take(label, index, axis)
            if not plane_label.any():
                continue
            shape = plane_label.shape
            plane_fov = fov.plane(axis, index, shape)
            stats = extract_instances(plane_label.astype(np.uint8), {1: "gland"}, None, plane_fov, min_area=1)
            removed += stats.cleaned_pixels
            kept_inside += int(np.count_nonzero(plane_label & np.take(cone, index, axis) & ~plane_fov))
        assert kept_inside == 0  # nothing inside the cone is ever removed
        outside = int(np.count_nonzero(label & ~cone))
        assert 0.9 * outside <= removed <= outside  # the hull of a round cone is a polyhedron around it


def test_an_empty_or_flat_scan_has_no_field_of_view() -> None:
    assert image_field_of_view(np.zeros(SHAPE, np.uint8), False) is None
    assert VolumeFieldOfView.estimate(np.zeros((10, 10, 10), np.uint8)).plane(0, 3, (10, 10)) is None
    line = np.zeros(SHAPE, np.uint8)
    line[60, :] = 200  # one row of signal: no region to speak of
    assert image_field_of_view(line, False) is None


def test_lossy_sources_tolerate_compression_noise() -> None:
    assert no_signal_level(None, lossy=False) == 0
    assert no_signal_level(None, lossy=True) > 0
    assert no_signal_level(3, lossy=True) == 3


def test_region_drawing_matches_a_direct_half_plane_test() -> None:
    equations = np.array([[1.0, 0.3, -40.0], [-0.6, 1.0, -10.0], [0.2, -1.0, -5.0], [-1.0, -0.1, 2.0]])
    region = ConvexRegion(equations / np.linalg.norm(equations[:, :2], axis=1, keepdims=True))
    rows, cols = np.mgrid[0:50, 0:60]
    direct = np.all(
        region.equations[:, 0, None, None] * rows + region.equations[:, 1, None, None] * cols + region.equations[:, 2, None, None]
        <= 1e-9,
        axis=0,
    )
    np.testing.assert_array_equal(region.mask((50, 60)), direct)


def test_cleaning_shrinks_a_structure_but_never_splits_it(rng: np.random.Generator) -> None:
    image = np.zeros((60, 80), np.uint8)
    image[:, 20:] = np.clip(rng.rayleigh(50, size=(60, 60)), 1, 255).astype(np.uint8)  # scan starts at column 20
    arc = ellipse((60, 80), (30, 18), (20, 10)) & ~ellipse((60, 80), (30, 18), (14, 6))
    labels = arc.astype(np.uint8)  # a ring whose left half lies outside: two arcs remain inside
    stats = extract_instances(labels, {1: "wall"}, None, image_field_of_view(image, False), min_area=1)
    assert len(stats.instances) == 1 and stats.cleaned_instances == 1
    kept = decoded(stats.instances[0], (60, 80))
    np.testing.assert_array_equal(kept, arc & (np.arange(80) >= 20)[None, :])


def test_components_become_instances_and_small_ones_are_dropped() -> None:
    labels = np.zeros((40, 40), np.uint8)
    labels[2:12, 2:12] = 1
    labels[20:30, 20:30] = 1
    labels[35:37, 35:37] = 2
    stats = extract_instances(labels, {1: "a", 2: "b"}, None, None, min_area=16)
    assert [(i.category, i.area, i.bbox) for i in stats.instances] == [("a", 100, (2, 2, 10, 10)), ("a", 100, (20, 20, 10, 10))]
    assert stats.small_dropped == 1 and stats.cleaned_pixels == 0


def test_given_instances_are_kept_whole() -> None:
    a = np.zeros((10, 10), bool)
    a[1:3, 1:3] = a[6:8, 6:8] = True  # two parts of one polygon annotation stay one instance
    stats = extract_instances(None, {}, [("x", a)], None, min_area=1)
    assert len(stats.instances) == 1 and stats.instances[0].area == 8


def test_an_instance_wholly_outside_the_field_of_view_is_dropped() -> None:
    fov = np.zeros((20, 20), bool)
    fov[:, 10:] = True
    labels = np.zeros((20, 20), np.uint8)
    labels[2:6, 2:6] = 1  # outside
    labels[10:15, 12:17] = 1  # inside
    stats = extract_instances(labels, {1: "a"}, None, fov, min_area=1)
    assert [i.area for i in stats.instances] == [25] and stats.cleaned_pixels == 16 and stats.small_dropped == 1


def test_unnamed_label_values_are_refused() -> None:
    labels = np.zeros((20, 20), np.uint8)
    labels[5:10, 5:10] = 1
    labels[0, 0] = 3
    fov = np.ones((20, 20), bool)
    fov[0, :] = False  # value 3 lies outside the field of view, and still has no name
    with pytest.raises(ConversionError, match="label value 3 has no category name"):
        extract_instances(labels, {1: "a"}, None, fov, min_area=1)
