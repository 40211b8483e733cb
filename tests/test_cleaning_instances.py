from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils

from helpers import ellipse
from us43d.corpus.cleaning import background_mask, background_threshold
from us43d.corpus.instances import extract_instances
from us43d.demo import fan_mask


def fan_image(shape: tuple[int, int] = (80, 100)) -> np.ndarray:
    image = np.where(fan_mask(*shape), 120, 0).astype(np.uint8)
    return image


def test_background_is_the_dark_region_touching_the_border() -> None:
    image = fan_image()
    cyst = ellipse(image.shape, (50, 50), (6, 8))
    image[cyst] = 0  # an anechoic cyst inside the fan: black, but not background
    background = background_mask(image, 0)
    assert background[0, 0] and background[79, 0]
    assert not background[cyst].any()
    assert not background[fan_mask(*image.shape)].any()


def test_cleaning_removes_only_spill_over_the_frame() -> None:
    image = fan_image()
    background = background_mask(image, 0)
    spill = ellipse(image.shape, (60, 8), (10, 10))  # straddles the fan's left edge
    labels = spill.astype(np.uint8)
    stats = extract_instances(labels, {1: "lesion"}, None, background, min_area=1)
    assert stats.cleaned_pixels == int((spill & background).sum()) > 0
    (instance,) = stats.instances
    decoded = mask_utils.decode({"size": list(image.shape), "counts": instance.rle_counts.encode()}).astype(bool)
    np.testing.assert_array_equal(decoded, spill & ~background)
    assert instance.area == int(decoded.sum())


def test_lossy_images_get_a_near_zero_background() -> None:
    assert background_threshold(None, lossy=False) == 0
    assert background_threshold(None, lossy=True) > 0
    assert background_threshold(3, lossy=True) == 3


def test_components_become_instances_and_small_ones_are_dropped() -> None:
    labels = np.zeros((40, 40), np.uint8)
    labels[2:12, 2:12] = 1
    labels[20:30, 20:30] = 1
    labels[35:37, 35:37] = 2
    stats = extract_instances(labels, {1: "a", 2: "b"}, None, None, min_area=16)
    assert [(i.category, i.area, i.bbox) for i in stats.instances] == [("a", 100, (2, 2, 10, 10)), ("a", 100, (20, 20, 10, 10))]
    assert stats.small_dropped == 1


def test_given_instances_are_kept_whole() -> None:
    a = np.zeros((10, 10), bool)
    a[1:3, 1:3] = a[6:8, 6:8] = True  # two parts of one polygon annotation stay one instance
    stats = extract_instances(None, {}, [("x", a)], None, min_area=1)
    assert len(stats.instances) == 1 and stats.instances[0].area == 8


def test_unnamed_label_values_are_refused_even_if_cleaning_removes_them() -> None:
    import pytest

    from us43d.errors import ConversionError

    labels = np.zeros((20, 20), np.uint8)
    labels[5:10, 5:10] = 1
    labels[0, 0] = 3  # lies on the background, and has no name
    background = np.zeros((20, 20), bool)
    background[0, :] = True
    with pytest.raises(ConversionError, match="label value 3 has no category name"):
        extract_instances(labels, {1: "a"}, None, background, min_area=1)
    labels[0, 0] = 1  # a named value whose pixels all go: no instance from them, no error
    stats = extract_instances(labels, {1: "a"}, None, background, min_area=1)
    assert [i.area for i in stats.instances] == [25] and stats.cleaned_pixels == 1
