from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from helpers import ellipse, write_jpeg, write_png
from us43d.converters import readers
from us43d.errors import ConversionError


def test_grey_rgb_and_16_bit_values_are_kept(tmp_path: Path, rng: np.random.Generator) -> None:
    grey = rng.integers(0, 256, (20, 30), dtype=np.uint8)
    rgb = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    deep = rng.integers(0, 65536, (20, 30), dtype=np.uint16)
    np.testing.assert_array_equal(readers.read_image(write_png(tmp_path / "g.png", grey)).pixels, grey)
    np.testing.assert_array_equal(readers.read_image(write_png(tmp_path / "c.png", rgb)).pixels, rgb)
    decoded = readers.read_image(write_png(tmp_path / "d.png", deep))
    assert decoded.pixels.dtype == np.uint16
    np.testing.assert_array_equal(decoded.pixels, deep)
    assert not decoded.lossy


def test_palette_rgba_and_jpeg(tmp_path: Path, rng: np.random.Generator) -> None:
    grey = rng.integers(0, 256, (10, 12), dtype=np.uint8)
    palette = Image.fromarray(grey).convert("P")
    palette.save(tmp_path / "p.png")
    np.testing.assert_array_equal(readers.read_image(tmp_path / "p.png").pixels, np.asarray(palette.convert("L")))
    rgba = np.dstack([grey, grey, grey, np.full_like(grey, 7)])
    out = readers.read_image(write_png(tmp_path / "a.png", rgba)).pixels
    assert out.shape == (10, 12, 3)
    np.testing.assert_array_equal(out[..., 0], grey)
    assert readers.read_image(write_jpeg(tmp_path / "j.jpg", grey)).lossy


@pytest.mark.parametrize("damage", ["truncate", "empty", "garbage", "missing"])
def test_broken_images_name_the_file(tmp_path: Path, rng: np.random.Generator, damage: str) -> None:
    path = write_png(tmp_path / "img.png", rng.integers(0, 256, (64, 64), dtype=np.uint8))
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "garbage":
        path.write_bytes(b"not an image at all")
    else:
        path.unlink()
    with pytest.raises(ConversionError) as info:
        readers.read_image(path)
    assert info.value.source_file == str(path)
    assert str(path) in str(info.value)


def test_binary_masks_in_every_common_encoding() -> None:
    shape = (8, 8)
    blob = ellipse(shape, (4, 4), (2, 3))
    for encoded in (blob.astype(np.uint8), blob.astype(np.uint8) * 255, blob.astype(np.uint8) * 128):
        np.testing.assert_array_equal(readers.binary_mask(encoded, shape, "m.png"), blob)
    anti_aliased = blob.astype(np.uint8) * 255
    anti_aliased[0, 0] = 100  # an edge value below half: background
    anti_aliased[4, 0] = 200  # above half: foreground
    expected = blob.copy()
    expected[4, 0] = True
    np.testing.assert_array_equal(readers.binary_mask(anti_aliased, shape, "m.png"), expected)
    assert readers.binary_mask(np.zeros(shape, np.uint8), shape, "m.png").sum() == 0


def test_noise_mask_is_refused(rng: np.random.Generator) -> None:
    noise = rng.integers(1, 255, (32, 32), dtype=np.uint8)
    with pytest.raises(ConversionError, match="not binary"):
        readers.binary_mask(noise, (32, 32), "noise.png")


def test_mask_of_another_size_is_refused_unless_allowed() -> None:
    big = (ellipse((64, 64), (32, 32), (16, 16)) * 255).astype(np.uint8)
    with pytest.raises(ConversionError, match="mask is 64x64 but its image is 16x16"):
        readers.binary_mask(big, (16, 16), "m.png")
    small = readers.binary_mask(big, (16, 16), "m.png", allow_resize=True)
    reference = ellipse((16, 16), (7.5, 7.5), (4, 4))
    assert small.shape == (16, 16)
    assert (small & reference).sum() / (small | reference).sum() > 0.9
    with pytest.raises(ConversionError, match="aspect ratios differ"):
        readers.binary_mask(big, (16, 32), "m.png", allow_resize=True)


def test_label_map_refuses_unexpected_values() -> None:
    values = np.array([[0, 1], [2, 7]], dtype=np.uint8)
    with pytest.raises(ConversionError, match=r"unexpected values \[7\]"):
        readers.label_map(values, (2, 2), [1, 2], "l.png")
    np.testing.assert_array_equal(readers.label_map(values, (2, 2), [1, 2, 7], "l.png"), values)


def test_colour_mask(tmp_path: Path) -> None:
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[0, 0] = (0, 255, 0)
    rgb[1, 1] = (255, 0, 0)
    path = write_png(tmp_path / "c.png", rgb)
    labels = readers.read_colour_mask(path, (4, 4), {(0, 255, 0): 1, (255, 0, 0): 2})
    assert labels[0, 0] == 1 and labels[1, 1] == 2 and labels.sum() == 3
    rgb[2:, :] = (0, 0, 255)
    write_png(path, rgb)
    with pytest.raises(ConversionError, match="match none of the colours"):
        readers.read_colour_mask(path, (4, 4), {(0, 255, 0): 1, (255, 0, 0): 2})


def test_polygon_rasterisation() -> None:
    mask = readers.polygons_to_mask([[2, 2, 8, 2, 8, 6, 2, 6]], 10, 12, "p.json")
    assert mask.shape == (10, 12)
    assert mask[4, 5] and not mask[0, 0]
    assert 20 <= mask.sum() <= 40
    with pytest.raises(ConversionError, match="fewer than three points"):
        readers.polygons_to_mask([[1, 1, 2, 2]], 10, 12, "p.json")


def test_volumes_slice_along_named_axes(tmp_path: Path) -> None:
    data = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "v.nii.gz")
    volume = readers.read_volume(tmp_path / "v.nii.gz")
    assert volume.axcodes == ("R", "A", "S")
    assert volume.axis_of("sagittal") == 0 and volume.axis_of("coronal") == 1 and volume.axis_of("axial") == 2
    slices = list(readers.iter_slices(volume.array, volume.axis_of("sagittal")))
    assert len(slices) == 4 and slices[1][1].shape == (5, 6)
    np.testing.assert_array_equal(slices[1][1], data[1])

    image = sitk.GetImageFromArray(data.transpose(2, 1, 0))  # ITK wants (k, j, i)
    sitk.WriteImage(image, str(tmp_path / "v.mha"))
    itk_volume = readers.read_volume(tmp_path / "v.mha")
    np.testing.assert_array_equal(itk_volume.array, data)
    assert itk_volume.axis_of("sagittal") == 0 and itk_volume.axis_of("frames") == 2


def test_nan_volume_is_refused(tmp_path: Path) -> None:
    data = np.ones((3, 3, 3), np.float32)
    data[1, 1, 1] = np.nan
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "nan.nii.gz")
    with pytest.raises(ConversionError, match="NaN"):
        readers.read_volume(tmp_path / "nan.nii.gz")


def test_to_storable_keeps_fitting_integers_and_scales_the_rest() -> None:
    small = np.array([[0, 200]], dtype=np.int32)
    assert readers.to_storable(small).dtype == np.uint8
    wide = np.array([[0, 1000]], dtype=np.int32)
    assert readers.to_storable(wide).dtype == np.uint16
    floats = np.array([[-1.0, 1.0]])
    np.testing.assert_array_equal(readers.to_storable(floats), [[0, 255]])


def test_images_and_volumes_beyond_the_size_limit_are_refused_before_decoding(tmp_path: Path) -> None:
    """A small file can claim a huge image (a 68 KB PNG claiming 178 Mpx took 1.8 GB to decode)."""
    import nibabel as nib

    from us43d.converters.readers import MAX_IMAGE_PIXELS, read_image, read_volume

    bomb = tmp_path / "bomb.png"
    Image.new("1", (10_000, 6_000)).save(bomb)  # 60 Mpx of zeros: a few KB on disk
    assert bomb.stat().st_size < 200_000 and 10_000 * 6_000 > MAX_IMAGE_PIXELS
    with pytest.raises(ConversionError, match=r"image of 10000x6000 is 60 M elements, over the limit of 50 M"):
        read_image(bomb)
    header = nib.Nifti1Header()
    header.set_data_shape((2_000, 2_000, 300))
    header.set_data_dtype(np.uint8)
    volume = tmp_path / "huge.nii"
    volume.write_bytes(header.binaryblock + b"\0" * 4 + b"\0" * 1000)  # the data is not there at all
    with pytest.raises(ConversionError, match=r"volume of \(2000, 2000, 300\) is 1200 M elements, over the limit"):
        read_volume(volume)


@pytest.mark.parametrize("centre", [(15, 20), (15, 100), (85, 20), (85, 100), (50, 5), (5, 60), (30, 30)])
def test_outlines_cut_by_a_side_or_a_corner_are_closed_and_closed_ones_kept(centre: tuple[int, int]) -> None:
    """A head outline that leaves the image through one side, through a corner, or that only
    touches two sides while staying closed (30, 30): each fills to the disk it outlines."""
    from us43d.converters.readers import filled_outline

    rows, cols = np.mgrid[:100, :120]
    distance = np.hypot(rows - centre[0], cols - centre[1])
    ring = (distance >= 28.5) & (distance <= 30.5)
    np.testing.assert_array_equal(filled_outline(ring, close_at_border=True), distance <= 30.5)
