"""Shared readers: the pixel work every converter needs, done once and done carefully.

Every function raises `ConversionError` naming the file it was reading, so a converter never
has to wrap calls in its own error handling.
"""

from __future__ import annotations

import os
import pickle
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from us43d.errors import ConversionError

LOSSY_FORMATS = frozenset({"JPEG", "MPO", "WEBP"})
# A binary mask is refused when more than this share of its non-zero pixels are neither 0 nor
# the full value: anti-aliased edges stay well below it, noise or a grey image goes above.
MAX_INTERMEDIATE_SHARE = 0.5
NEAR_EDGE = 0.125  # values within 1/8 of the range from 0 or full count as clean
# Masks stored at another size are resized only when their aspect ratio matches the image's.
MAX_ASPECT_MISMATCH = 0.02
# The largest image and volume we decode. Ultrasound frames are a few megapixels and volumes a
# few hundred megavoxels at most; a file that claims more is corrupt or a decompression bomb
# (a 68 KB PNG can claim 178 Mpx). US43D_MAX_IMAGE_PIXELS / US43D_MAX_VOLUME_VOXELS raise them.
MAX_IMAGE_PIXELS = int(os.environ.get("US43D_MAX_IMAGE_PIXELS", 50_000_000))
MAX_VOLUME_VOXELS = int(os.environ.get("US43D_MAX_VOLUME_VOXELS", 1_000_000_000))


@dataclass(frozen=True)
class DecodedImage:
    pixels: np.ndarray  # (H, W) uint8/uint16 or (H, W, 3) uint8
    lossy: bool
    format: str | None


def _fail(path: Path | str, reason: str) -> ConversionError:
    return ConversionError(reason, source_file=str(path))


def _open(path: Path) -> Image.Image:
    if not path.is_file():
        raise _fail(path, "file is missing")
    try:
        with warnings.catch_warnings():  # PIL's own bomb warning: our limit below is lower and says more
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
        _check_size(path, image.width * image.height, MAX_IMAGE_PIXELS, f"image of {image.width}x{image.height}")
        image.load()
    except Image.DecompressionBombError as exc:
        raise _fail(path, f"image is implausibly large ({exc})") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise _fail(path, f"cannot decode image ({exc})") from exc
    if image.width == 0 or image.height == 0:
        raise _fail(path, "image has no pixels")
    return image


def _check_size(path: Path | str, count: int, limit: int, what: str) -> None:
    if count > limit:
        raise _fail(path, f"{what} is {count / 1e6:.0f} M elements, over the limit of {limit / 1e6:.0f} M (corrupt, or raise it)")


def _as_array(image: Image.Image, path: Path) -> np.ndarray:
    """Pixels in a PNG-storable layout, values untouched wherever the mode allows it."""
    mode = image.mode
    if mode in ("L", "RGB"):
        return np.asarray(image)
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        return np.asarray(image).astype(np.uint16, copy=False)
    if mode == "1":
        return np.asarray(image.convert("L"))
    if mode == "LA":
        return np.asarray(image.getchannel("L"))
    if mode in ("RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"):
        return np.asarray(image.convert("RGB"))
    if mode in ("P", "PA"):
        rgb = np.asarray(image.convert("RGB"))
        if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
            return np.ascontiguousarray(rgb[..., 0])
        return rgb
    if mode == "I":
        values = np.asarray(image)
        if values.min() >= 0 and values.max() <= 65535:
            return values.astype(np.uint16)
        raise _fail(path, "32-bit image with values outside 0..65535")
    raise _fail(path, f"unsupported image mode {mode}")


def read_image(path: Path) -> DecodedImage:
    """Decode an image file (8/16-bit grey, palette, RGB(A)) without changing its values."""
    with _open(path) as image:
        return DecodedImage(_as_array(image, path), image.format in LOSSY_FORMATS, image.format)


def read_mask_values(path: Path) -> np.ndarray:
    """A mask file as a 2D array of raw values (colour masks reduced by their channel maximum)."""
    with _open(path) as image:
        values = _as_array(image, path)
    return values.max(axis=2) if values.ndim == 3 else values


def present_values(values: np.ndarray) -> np.ndarray:
    """Sorted distinct values; a histogram for 8-bit data, which is several times faster than
    sorting and is the common case for masks."""
    if values.dtype == np.uint8 or values.dtype == bool:
        return np.flatnonzero(np.bincount(values.ravel().view(np.uint8), minlength=2)).astype(values.dtype)
    return np.unique(values)


def read_csv(path: Path, columns: Sequence[str], as_text: bool = False) -> Any:
    """A CSV table (pandas) that must hold `columns`; `as_text` keeps every cell a string."""
    import pandas as pd

    if not path.is_file():
        raise _fail(path, "file is missing")
    try:
        table = pd.read_csv(path, dtype=str if as_text else None).rename(columns=str.strip)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise _fail(path, f"cannot read CSV ({exc})") from exc
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise _fail(path, f"CSV lacks columns {missing}")
    return table


def _full_value(values: np.ndarray) -> int:
    return 65535 if values.dtype == np.uint16 else 255


def _check_resize(
    path: Path | str, mask_shape: tuple[int, ...], shape: tuple[int, int], allow: bool, any_aspect: bool = False
) -> None:
    if tuple(mask_shape[:2]) == tuple(shape):
        return
    (mh, mw), (h, w) = mask_shape[:2], shape
    if not allow:
        raise _fail(path, f"mask is {mw}x{mh} but its image is {w}x{h}")
    if not any_aspect and abs(mw / mh - w / h) > MAX_ASPECT_MISMATCH * (w / h):
        raise _fail(path, f"mask is {mw}x{mh}, image {w}x{h}: aspect ratios differ, refusing to resize")


def binary_mask(values: np.ndarray, shape: tuple[int, int], path: Path | str, allow_resize: bool = False) -> np.ndarray:
    """Foreground of a binary-looking mask, at the image's size.

    A mask with a single non-zero value is foreground wherever it has that value (0/1, 0/255,
    0/128 all work). Otherwise it is thresholded at half range, so anti-aliased and JPEG
    masks work; a mask whose non-zero pixels are mostly neither 0 nor full is refused as not
    binary rather than guessed at. A mask of another size (same aspect ratio) is resized as
    coverage and thresholded at one half, when the caller allows it.
    """
    if values.ndim != 2:
        raise _fail(path, f"mask has shape {values.shape}, expected a 2D array")
    _check_resize(path, values.shape, shape, allow_resize)
    nonzero = values > 0
    n_nonzero = int(np.count_nonzero(nonzero))
    if values.dtype == bool or n_nonzero == 0:
        coverage = nonzero
    else:
        present = present_values(values[nonzero])
        if present.size == 1:
            coverage = nonzero
        else:
            full = _full_value(values)
            # JPEG ringing leaves faint values near 0 and near full around every edge: only the
            # middle band counts as "neither", and only against pixels that are not near 0.
            near_zero = values < full * NEAR_EDGE
            middle = ~near_zero & (values <= full * (1 - NEAR_EDGE))
            substantial = int(np.count_nonzero(~near_zero))
            intermediate = int(np.count_nonzero(middle))
            if intermediate > MAX_INTERMEDIATE_SHARE * max(substantial, 1):
                raise _fail(
                    path,
                    f"mask values are not binary: {intermediate} of {substantial} foreground-like pixels are "
                    f"far from both 0 and {full} ({present.size} distinct values)",
                )
            coverage = values > full / 2
    if coverage.shape == tuple(shape):
        return coverage
    resized = Image.fromarray(coverage.astype(np.float32)).resize(
        (shape[1], shape[0]), Image.Resampling.BILINEAR if coverage.shape[0] < shape[0] else Image.Resampling.BOX
    )
    return np.asarray(resized) > 0.5


def read_binary_mask(path: Path, shape: tuple[int, int], allow_resize: bool = False) -> np.ndarray:
    return binary_mask(read_mask_values(path), shape, path, allow_resize)


def label_map(
    values: np.ndarray,
    shape: tuple[int, int],
    allowed: Sequence[int],
    path: Path | str,
    allow_resize: bool = False,
) -> np.ndarray:
    """An integer label map whose values must all be in `allowed` (0 is always allowed)."""
    if values.ndim != 2:
        raise _fail(path, f"label map has shape {values.shape}, expected a 2D array")
    if not np.issubdtype(values.dtype, np.integer) and values.dtype != bool:
        if not np.isfinite(values).all():
            raise _fail(path, "label map holds NaN or infinite values")
        if not np.array_equal(values, np.round(values)):
            raise _fail(path, "label map holds non-integer values")
    values = values.astype(np.int32, copy=False)
    unexpected = sorted(set(present_values(values).tolist()) - {0, *allowed})
    if unexpected:
        raise _fail(path, f"label map holds unexpected values {unexpected[:10]} (expected {sorted({0, *allowed})})")
    _check_resize(path, values.shape, shape, allow_resize)
    if values.shape != tuple(shape):
        values = np.asarray(Image.fromarray(values).resize((shape[1], shape[0]), Image.Resampling.NEAREST))
    return values


def read_label_map(path: Path, shape: tuple[int, int], allowed: Sequence[int], allow_resize: bool = False) -> np.ndarray:
    return label_map(read_mask_values(path), shape, allowed, path, allow_resize)


def read_colour_mask(
    path: Path,
    shape: tuple[int, int],
    colours: Mapping[tuple[int, int, int], int],
    tolerance: int = 0,
    max_unmatched_share: float = 0.01,
    stretched: bool = False,
) -> np.ndarray:
    """Label map from a colour-coded mask; black is background.

    Each pixel takes the label of the nearest colour (black included, largest channel
    difference) within `tolerance`: anti-aliased edges, a tinted background or a legend colour
    drawn a shade off all land where they belong. More than `max_unmatched_share` of pixels
    far from every colour means the colour table is wrong for this file, which is an error,
    not background. A mask drawn on the image stretched to another size (`stretched`) is
    brought back to the image's size by nearest neighbour, whatever its aspect ratio.
    """
    with _open(path) as image:
        rgb = np.asarray(image.convert("RGB")).astype(np.int16)
    _check_resize(path, rgb.shape, shape, allow=stretched, any_aspect=stretched)
    table = np.asarray([(0, 0, 0), *colours], dtype=np.int16)
    values = np.asarray([0, *colours.values()], dtype=np.int32)
    distance = np.abs(rgb[:, :, None, :] - table[None, None, :, :]).max(axis=3)  # (H, W, colours)
    nearest = distance.argmin(axis=2)
    matched = np.take_along_axis(distance, nearest[..., None], axis=2)[..., 0] <= tolerance
    unmatched = int(np.count_nonzero(~matched))
    if unmatched > max_unmatched_share * matched.size:
        raise _fail(path, f"{unmatched} pixels match none of the colours {sorted(colours)} within {tolerance}")
    labels = np.where(matched, values[nearest], 0).astype(np.int32)
    if labels.shape != tuple(shape):
        labels = np.asarray(Image.fromarray(labels).resize((shape[1], shape[0]), Image.Resampling.NEAREST))
    return labels


PolygonConvention = Literal["coco", "centres", "labelme"]


def polygons_to_mask(
    polygons: Sequence[Sequence[float]], height: int, width: int, path: Path | str, convention: PolygonConvention = "coco"
) -> np.ndarray:
    """Rasterise polygons ([x0, y0, x1, y1, ...]) into one boolean mask, the way their source meant.

    - "coco": COCO files, whose coordinates put pixel (0, 0) between 0 and 1 (pycocotools);
    - "centres": vertices on pixel centres (tracings, point lists): a pixel belongs when its
      centre is inside the polygon or on its outline, as scikit-image's `draw.polygon` decides;
    - "labelme": LabelMe files, drawn as LabelMe itself does (filled polygon plus its outline).
    Rasterising centre coordinates as COCO's would move every mask half a pixel up and left.
    """
    rings = [np.asarray(list(map(float, p)), dtype=np.float64) for p in polygons if len(p) >= 6 and len(p) % 2 == 0]
    if not rings:
        raise _fail(path, "polygon with fewer than three points")
    if any(not np.isfinite(ring).all() for ring in rings):
        raise _fail(path, "polygon holds NaN or infinite coordinates")
    if convention == "coco":
        from pycocotools import mask as mask_utils

        rles = mask_utils.frPyObjects([ring.tolist() for ring in rings], height, width)
        return mask_utils.decode(mask_utils.merge(rles)).astype(bool)
    mask = np.zeros((height, width), dtype=bool)
    for ring in rings:
        xs, ys = ring[0::2], ring[1::2]
        if convention == "centres":
            mask |= _centres_inside(xs, ys, height, width)
        else:
            from PIL import ImageDraw

            canvas = Image.new("1", (width, height), 0)
            ImageDraw.Draw(canvas).polygon(list(zip(xs.tolist(), ys.tolist())), fill=1, outline=1)
            mask |= np.asarray(canvas, dtype=bool)
    return mask


def _centres_inside(xs: np.ndarray, ys: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pixels whose centre lies inside the polygon (even-odd rule) or on its outline."""
    mask = np.zeros((height, width), dtype=bool)
    x0, x1 = max(int(np.floor(xs.min())), 0), min(int(np.ceil(xs.max())), width - 1)
    y0, y1 = max(int(np.floor(ys.min())), 0), min(int(np.ceil(ys.max())), height - 1)
    if x0 > x1 or y0 > y1:
        return mask
    py, px = np.mgrid[y0 : y1 + 1, x0 : x1 + 1].astype(np.float64)
    inside = np.zeros(px.shape, dtype=bool)
    on_outline = np.zeros(px.shape, dtype=bool)
    for ax, ay, bx, by in zip(xs, ys, np.roll(xs, -1), np.roll(ys, -1)):
        if ay != by:
            crossing = ax + (py - ay) * (bx - ax) / (by - ay)
            inside ^= ((ay > py) != (by > py)) & (px < crossing)
        along = (np.minimum(ax, bx) <= px) & (px <= np.maximum(ax, bx)) & (np.minimum(ay, by) <= py) & (py <= np.maximum(ay, by))
        on_outline |= along & (np.abs((bx - ax) * (py - ay) - (by - ay) * (px - ax)) <= 1e-9)
    mask[y0 : y1 + 1, x0 : x1 + 1] = inside | on_outline
    return mask


# --- volumes and videos ---------------------------------------------------------------------

_AXIS_LETTERS = {"sagittal": "LR", "coronal": "AP", "axial": "SI"}


@dataclass(frozen=True)
class Volume:
    """Voxels in (i, j, k) index order with the anatomical code of each axis (RAS letters)."""

    array: np.ndarray
    axcodes: tuple[str, ...]

    def axis_of(self, view: str) -> int:
        """Array axis to index for slices of a named view; `frames` is the last axis."""
        if view == "frames":
            return self.array.ndim - 1
        letters = _AXIS_LETTERS[view]
        for axis, code in enumerate(self.axcodes):
            if code in letters:
                return axis
        raise ValueError(f"no {view} axis in orientation {self.axcodes}")


def read_volume(path: Path) -> Volume:
    """NIfTI through nibabel; MetaImage, NRRD and the rest through SimpleITK."""
    if not path.is_file():
        raise _fail(path, "file is missing")
    name = path.name.lower()
    try:
        if name.endswith((".nii", ".nii.gz")):
            import nibabel as nib

            image = nib.load(str(path))
            _check_size(path, int(np.prod(image.shape, dtype=np.int64)), MAX_VOLUME_VOXELS, f"volume of {image.shape}")
            array = np.asanyarray(image.dataobj)
            axcodes = tuple(nib.aff2axcodes(image.affine))
        else:
            import SimpleITK as sitk

            header = sitk.ImageFileReader()
            header.SetFileName(str(path))
            header.ReadImageInformation()
            size = tuple(header.GetSize()) + (header.GetNumberOfComponents(),)
            _check_size(path, int(np.prod(size, dtype=np.int64)), MAX_VOLUME_VOXELS, f"volume of {size[:-1]}")
            image = sitk.ReadImage(str(path))
            array = sitk.GetArrayFromImage(image)
            if image.GetNumberOfComponentsPerPixel() > 1:  # vector pixels: channels last
                array = np.moveaxis(array, -1, 0)
            array = array.T  # ITK's (k, j, i) back to (i, j, k)
            direction = np.asarray(image.GetDirection()).reshape(image.GetDimension(), image.GetDimension())
            axcodes = _itk_axcodes(direction)
    except ConversionError:
        raise
    except Exception as exc:  # both libraries raise a variety of types for a corrupt file
        raise _fail(path, f"cannot read volume ({exc})") from exc
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise _fail(path, "volume holds NaN or infinite values")
    return Volume(np.asarray(array), axcodes + ("T",) * (array.ndim - len(axcodes)))


def _itk_axcodes(direction: np.ndarray) -> tuple[str, ...]:
    # ITK directions are in LPS; flip the first two world axes to speak RAS like nibabel.
    ras = direction.copy()
    ras[:2] *= -1
    codes = []
    for axis in range(ras.shape[1]):
        world = int(np.argmax(np.abs(ras[:, axis])))
        positive = ras[world, axis] > 0
        codes.append(("R", "A", "S")[world] if positive else ("L", "P", "I")[world] if world < 3 else "T")
    return tuple(codes)


def iter_slices(array: np.ndarray, axis: int) -> Iterator[tuple[int, np.ndarray]]:
    """2D slices along one axis, with their index."""
    for index in range(array.shape[axis]):
        yield index, np.take(array, index, axis=axis)


def to_storable(array: np.ndarray) -> np.ndarray:
    """Integer data that fits 8 or 16 bits keeps its values; anything else is scaled to 8 bits.

    Call it on a whole volume, not per slice, so every slice of a volume shares one scale.
    """
    if array.dtype == np.uint8 or array.dtype == np.uint16:
        return array
    if np.issubdtype(array.dtype, np.integer) or array.dtype == bool:
        low, high = int(array.min()), int(array.max())
        if low >= 0 and high <= 255:
            return array.astype(np.uint8)
        if low >= 0 and high <= 65535:
            return array.astype(np.uint16)
    values = array.astype(np.float64)
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(array.shape, dtype=np.uint8)
    return np.round((values - low) * (255.0 / (high - low))).astype(np.uint8)


def nonzero_mask(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """Foreground of a colour-coded mask whose colours carry no meaning: any non-zero pixel."""
    values = read_mask_values(path)
    _check_resize(path, values.shape, shape, allow=False)
    return values > 0


_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def connected_components(mask: np.ndarray) -> list[np.ndarray]:
    """Each 8-connected component of a boolean mask as its own mask, in label order."""
    from scipy import ndimage

    labels, count = ndimage.label(mask, structure=_EIGHT_CONNECTED)
    if count == 1:
        return [labels == 1]
    parts = []
    for index, region in enumerate(ndimage.find_objects(labels), start=1):
        part = np.zeros(mask.shape, dtype=bool)
        part[region] = labels[region] == index
        parts.append(part)
    return parts


def filled_outline(mask: np.ndarray, close_at_border: bool = False) -> np.ndarray:
    """A closed outline (an ellipse drawn as a line) turned into the region it encloses.

    An outline of a structure that runs out of the image is cut open by the border, and filling
    it would leave the thin line. With `close_at_border` an outline that encloses nothing is closed
    along the edge first: on each side it touches in several places, between its outermost
    touches; and where it leaves through a corner (touching two adjacent sides once each), around
    that corner. Only for outlines: a filled region touching one side twice (a U) would have its
    gap closed too.
    """
    from scipy import ndimage

    filled = ndimage.binary_fill_holes(mask)
    if close_at_border and np.count_nonzero(filled) == np.count_nonzero(mask):  # open: encloses nothing
        mask = mask.copy()
        sides = {"top": mask[0], "bottom": mask[-1], "left": mask[:, 0], "right": mask[:, -1]}  # views
        runs = {}
        for name, side in sides.items():
            touches = np.flatnonzero(side)
            runs[name] = int(np.count_nonzero(np.diff(touches) > 1)) + 1 if touches.size else 0
            if runs[name] > 1:
                side[touches[0] : touches[-1] + 1] = True
        touched = {name for name, count in runs.items() if count}
        corners = {("top", "left"), ("top", "right"), ("bottom", "left"), ("bottom", "right")}
        if len(touched) == 2 and tuple(sorted(touched, key=["top", "bottom", "left", "right"].index)) in corners:
            for name in touched:  # from the touch along the side to the shared corner
                side, touches = sides[name], np.flatnonzero(sides[name])
                toward_start = (name in ("left", "right") and "top" in touched) or (
                    name in ("top", "bottom") and "left" in touched
                )
                if toward_start:
                    side[: touches[-1] + 1] = True
                else:
                    side[touches[0] :] = True
        filled = ndimage.binary_fill_holes(mask)
    return filled


def read_video_frames(path: Path, wanted: set[int] | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Decoded RGB frames of a video (AVI, MP4, ...) with their 0-based index; only `wanted`
    frames when given (decoding stops after the last of them). Needs PyAV (`pip install av`)."""
    if not path.is_file():
        raise _fail(path, "file is missing")
    try:
        import av
    except ModuleNotFoundError as exc:
        raise _fail(path, "reading videos needs PyAV: pip install av") from exc
    last = max(wanted) if wanted else None
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            _check_size(path, stream.width * stream.height, MAX_IMAGE_PIXELS, f"video frame of {stream.width}x{stream.height}")
            for index, frame in enumerate(container.decode(stream)):
                if last is not None and index > last:
                    break
                if wanted is None or index in wanted:
                    yield index, frame.to_ndarray(format="rgb24")
    except (av.error.FFmpegError, IndexError) as exc:  # IndexError: no video stream
        raise _fail(path, f"cannot decode video ({exc or 'no video stream'})") from exc


# --- NumPy files holding Python objects -----------------------------------------------------


# What a NumPy array of Python objects (a dict of arrays) pickles to, and nothing else: unpickling
# anything beyond these would let the file run code. `numpy.ndarray` itself is not callable from
# the file: called directly with a buffer it makes an object array out of the file's bytes, whose
# "objects" are pointers the file chose. It may only name the type `_reconstruct` makes, which
# starts empty; NumPy then refuses bytes as the content of an object array.
class _ArrayTypeName:
    """Stands for numpy.ndarray in a pickle; only `_reconstruct` accepts it."""


def _reconstruct(subtype: object, shape: Any, typecode: Any) -> np.ndarray:
    if subtype is not _ArrayTypeName:
        raise pickle.UnpicklingError("refusing to rebuild an array of another type than numpy.ndarray")
    return _multiarray()._reconstruct(np.ndarray, shape, typecode)


def _scalar(dtype: Any, *content: Any) -> Any:
    return _multiarray().scalar(dtype, *content)  # NumPy refuses object scalars from bytes


def _multiarray() -> Any:
    import importlib

    return importlib.import_module("numpy._core.multiarray" if hasattr(np, "_core") else "numpy.core.multiarray")


_ARRAY_GLOBALS: dict[tuple[str, str], Any] = {
    **{(module, "_reconstruct"): _reconstruct for module in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(module, "scalar"): _scalar for module in ("numpy.core.multiarray", "numpy._core.multiarray")},
    ("numpy", "ndarray"): _ArrayTypeName,
    ("numpy", "dtype"): np.dtype,
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ARRAY_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only NumPy arrays and plain Python values")
        return _ARRAY_GLOBALS[(module, name)]


def read_object_npy(path: Path) -> Any:
    """The Python value saved in a `.npy` file of dtype object (`np.save(path, {...})`), read by an
    unpickler that builds NumPy arrays, dicts, lists, strings and numbers only, so that a hostile
    file cannot run code."""
    from numpy.lib import format as npy_format

    if not path.is_file():
        raise _fail(path, "file is missing")
    try:
        with path.open("rb") as handle:
            version = npy_format.read_magic(handle)
            headers = {(1, 0): npy_format.read_array_header_1_0, (2, 0): npy_format.read_array_header_2_0}
            if version not in headers:
                raise ValueError(f"unsupported .npy version {version}")
            _, _, dtype = headers[version](handle)
            if dtype != np.dtype(object):
                return np.load(path, allow_pickle=False)
            value = _ArrayUnpickler(handle).load()
    except pickle.UnpicklingError as exc:
        raise _fail(path, f"not a plain NumPy object file ({exc})") from exc
    except (OSError, ValueError, EOFError, TypeError, AttributeError, IndexError, KeyError) as exc:
        raise _fail(path, f"cannot read NumPy file ({type(exc).__name__}: {exc})") from exc
    if isinstance(value, np.ndarray) and value.shape == () and value.dtype == object:
        return value.item()
    return value
