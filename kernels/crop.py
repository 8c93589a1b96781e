"""Crops for top-down pose: DeepPose's box normalisation, the crop affines, and crop + normalise on the CPU.

A box b = (cx, cy, w, h) is a centre and a size in image pixels (arrays of boxes are (B, 4) float). DeepPose's
normalisation is N(y; b) = diag(1/w, 1/h) (y - c): the box becomes the unit square centred at 0, and
N^-1(z; b) = diag(w, h) z + c takes a network's normalised output back to the image. A crop is the box
resampled onto a fixed h x w network input (glossary letters: B crops, h x w crop size).

Pixel convention (the one used by cv2 and by every kernel here): coordinates are (x, y) with pixel centres at
integers, so pixel i covers [i - 0.5, i + 0.5]. The crop's pixel grid tiles the box exactly: the crop's outer
edges -0.5 and w - 0.5 lie on the box's edges cx - w_b/2 and cx + w_b/2, hence

    image x = cx + (crop x - (w - 1) / 2) * w_b / w        crop x = (image x - cx) * w / w_b + (w - 1) / 2

and the same along y. The box centre lands on the crop's centre ((w - 1) / 2, (h - 1) / 2), and crop pixels
are N^-1 of the points N = ((x + 0.5) / w - 0.5, (y + 0.5) / h - 0.5). Boxes whose aspect differs from the
crop's are stretched; ``expand_boxes`` first makes them the crop's aspect so poses are not distorted.

Pixel values: out[b, c, y, x] = (bilinear sample of the image at to_image[b] @ (x, y, 1), channel c after the
optional BGR -> RGB swap, minus mean[c]) * scale[c]. Samples outside the image read ``pad_value`` (a raw pixel
value, normalised like any pixel), so a crop running off the image edge blends into the pad as cv2's
BORDER_CONSTANT does. The CPU path is cv2.warpAffine on the uint8 frame, which rounds its result to an integer
(0.5 grey levels from the float reference, kernels/reference.py ``reference_crop_normalise``, as measured with
OpenCV 5.0); OpenCV 4.x also rounds the source position to 1/32 pixel, which adds up to (largest horizontal +
vertical step between neighbouring pixels) / 64 grey levels. The CUDA twin (kernels/crop_cuda.py) samples in
float and matches the reference to ~1e-4 grey levels.
"""
from __future__ import annotations

import cv2
import numpy as np

__all__ = [
    "apply_affines", "check_crop_arguments", "crop_affines", "crop_normalise_cpu", "denormalise_points",
    "expand_boxes", "normalise_points",
]


def _as_boxes(boxes) -> np.ndarray:
    array = np.asarray(boxes, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != 4:
        raise ValueError(f"boxes must be (B, 4) [cx, cy, w, h], got shape {array.shape}")
    return array


def _check_crop_size(out_height: int, out_width: int) -> None:
    if int(out_height) < 1 or int(out_width) < 1:
        raise ValueError(f"crop size must be at least 1 x 1, got {out_height} x {out_width}")


def expand_boxes(boxes, out_height: int, out_width: int, scale: float = 1.25) -> np.ndarray:
    """(B, 4): boxes grown by `scale` and then widened or heightened to the crop's aspect ratio (never cut).

    Centres stay; a box wider than the crop's aspect gets taller, a taller one gets wider.
    """
    boxes = _as_boxes(boxes)
    _check_crop_size(out_height, out_width)
    aspect = out_width / out_height
    width = boxes[:, 2] * scale
    height = boxes[:, 3] * scale
    expanded = boxes.copy()
    expanded[:, 2] = np.maximum(width, height * aspect)
    expanded[:, 3] = np.maximum(height, width / aspect)
    return expanded


def crop_affines(boxes, out_height: int, out_width: int) -> tuple[np.ndarray, np.ndarray]:
    """(to_crop, to_image), each (B, 2, 3) float64: image pixel -> crop pixel and back; pixel centres map to
    pixel centres (the convention is in the module docstring)."""
    boxes = _as_boxes(boxes)
    _check_crop_size(out_height, out_width)
    sizes = boxes[:, 2:4]
    bad = ~(np.isfinite(boxes).all(axis=1) & (sizes > 0).all(axis=1))
    if bad.any():
        index = int(np.flatnonzero(bad)[0])
        raise ValueError(f"box {index} {boxes[index].tolist()} needs a finite centre and a positive width and "
                         f"height ({int(bad.sum())} such boxes)")
    crop_centre = np.array([(out_width - 1) / 2.0, (out_height - 1) / 2.0])
    image_per_crop = sizes / np.array([out_width, out_height], np.float64)  # image pixels per crop pixel
    count = boxes.shape[0]
    to_image = np.zeros((count, 2, 3), np.float64)
    to_crop = np.zeros((count, 2, 3), np.float64)
    for axis in range(2):
        to_image[:, axis, axis] = image_per_crop[:, axis]
        to_image[:, axis, 2] = boxes[:, axis] - image_per_crop[:, axis] * crop_centre[axis]
        to_crop[:, axis, axis] = 1.0 / image_per_crop[:, axis]
        to_crop[:, axis, 2] = crop_centre[axis] - boxes[:, axis] / image_per_crop[:, axis]
    return to_crop, to_image


def apply_affines(points, affines, out) -> None:
    """points (B, ..., 2) float -> out (same shape): each crop's points through its own affine (N^-1 for poses).

    affines (B, 2, 3); ``out`` may be ``points`` itself.
    """
    points = np.asarray(points)
    affines = np.asarray(affines, dtype=np.float64)
    if points.ndim < 2 or points.shape[-1] != 2:
        raise ValueError(f"points must be (B, ..., 2), got shape {points.shape}")
    if affines.shape != (points.shape[0], 2, 3):
        raise ValueError(f"affines must be ({points.shape[0]}, 2, 3) for {points.shape[0]} crops of points, "
                         f"got shape {affines.shape}")
    if out.shape != points.shape:
        raise ValueError(f"out has shape {out.shape}, points {points.shape}")
    per_crop = (slice(None),) + (None,) * (points.ndim - 2)  # broadcast one affine over a crop's points
    matrix = affines[per_crop]
    x = points[..., 0].astype(np.float64)  # copies, so that out may alias points
    y = points[..., 1].astype(np.float64)
    out[..., 0] = matrix[..., 0, 0] * x + matrix[..., 0, 1] * y + matrix[..., 0, 2]
    out[..., 1] = matrix[..., 1, 0] * x + matrix[..., 1, 1] * y + matrix[..., 1, 2]


def _box_parts(points: np.ndarray, boxes) -> tuple[np.ndarray, np.ndarray]:
    """(centres, sizes) of the boxes, shaped to broadcast against (B, ..., 2) points."""
    boxes = _as_boxes(boxes)
    if points.ndim < 2 or points.shape[-1] != 2 or points.shape[0] != boxes.shape[0]:
        raise ValueError(f"points must be ({boxes.shape[0]}, ..., 2) for {boxes.shape[0]} boxes, "
                         f"got shape {points.shape}")
    shape = (boxes.shape[0],) + (1,) * (points.ndim - 2) + (2,)
    return boxes[:, 0:2].reshape(shape), boxes[:, 2:4].reshape(shape)


def normalise_points(points, boxes) -> np.ndarray:
    """N(y; b) = (y - c) / (w, h): (B, ..., 2) image points -> box-normalised points, float64."""
    points = np.asarray(points, dtype=np.float64)
    centres, sizes = _box_parts(points, boxes)
    return (points - centres) / sizes


def denormalise_points(points, boxes) -> np.ndarray:
    """N^-1(z; b) = z * (w, h) + c: (B, ..., 2) box-normalised points -> image points, float64."""
    points = np.asarray(points, dtype=np.float64)
    centres, sizes = _box_parts(points, boxes)
    return points * sizes + centres


def check_crop_arguments(image_shape, image_dtype, to_image_shape, out_shape, out_dtype, mean, scale,
                         pad_value) -> None:
    """The checks both crop_normalise twins make (shapes and dtypes only, so device arrays pass too)."""
    if len(image_shape) != 3 or image_shape[2] != 3 or np.dtype(image_dtype) != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8 BGR, got shape {tuple(image_shape)} {np.dtype(image_dtype)}")
    if len(out_shape) != 4 or out_shape[1] != 3 or np.dtype(out_dtype) != np.float32:
        raise ValueError(f"out must be (B, 3, h, w) float32, got shape {tuple(out_shape)} {np.dtype(out_dtype)}")
    if tuple(to_image_shape) != (out_shape[0], 2, 3):
        raise ValueError(f"to_image must be ({out_shape[0]}, 2, 3) for out's {out_shape[0]} crops, "
                         f"got shape {tuple(to_image_shape)}")
    if len(mean) != 3 or len(scale) != 3:
        raise ValueError(f"mean and scale need one value per channel, got {len(mean)} and {len(scale)}")
    if not 0 <= pad_value <= 255:
        raise ValueError(f"pad_value is a raw uint8 pixel value (0-255), got {pad_value}")


def crop_normalise_cpu(image, to_image, out, mean, scale, swap_rb, pad_value) -> None:
    """image (H, W, 3) uint8 BGR; to_image (B, 2, 3); out (B, 3, h, w) float32 preallocated.

    out[b, c, y, x] = (bilinear sample of the image at to_image[b] @ (x, y, 1), channel c after the optional
    BGR->RGB swap, minus mean[c]) * scale[c]; samples outside the image read pad_value (a raw pixel value,
    normalised like any pixel). cv2.warpAffine (WARP_INVERSE_MAP, INTER_LINEAR, BORDER_CONSTANT) on the uint8
    image: positions rounded to 1/32 pixel, values to integers (tolerance in the module docstring). A
    non-integer pad_value is rounded like any cv2 uint8 border value.
    """
    to_image = np.ascontiguousarray(to_image, dtype=np.float64)
    check_crop_arguments(image.shape, image.dtype, to_image.shape, out.shape, out.dtype, mean, scale, pad_value)
    height, width = out.shape[2], out.shape[3]
    crop = np.empty((height, width, 3), np.uint8)  # one scratch crop, reused for every box
    border = (float(pad_value),) * 3
    sources = (2, 1, 0) if swap_rb else (0, 1, 2)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    for b in range(out.shape[0]):
        crop = cv2.warpAffine(image, to_image[b], (width, height), dst=crop, flags=flags,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=border)
        for channel in range(3):
            plane = out[b, channel]
            np.subtract(crop[:, :, sources[channel]], np.float32(mean[channel]), out=plane, dtype=np.float32)
            np.multiply(plane, np.float32(scale[channel]), out=plane)
