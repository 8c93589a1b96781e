"""Augmentation: one random affine warp per sample to the training input size, plus a colour jitter.

A sample says which region of its image should fill the input (``centre`` and ``size``); the warp
scales that region to the input with a random extra scale, rotates it about its centre, shifts it and
maybe mirrors it, all as one 2 x 3 matrix applied once to the image (cv2.warpAffine, pad 128), the
keypoints, the person boxes and the ignore mask. A mirrored sample swaps left and right keypoints
(``layout.FLIP_KEYPOINTS``), so "left" keeps meaning the person's left.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import cv2
import numpy as np

from posestream.pipeline.networks.layout import FLIP_KEYPOINTS, PAD_VALUE, PIXEL_MEAN, PIXEL_SCALE


@dataclass(frozen=True)
class AugmentConfig:
    scale_min: float = 0.7  # random extra scale of the framed region
    scale_max: float = 1.3
    rotation_degrees: float = 30.0  # uniform in +-this
    translate: float = 0.15  # random shift, as a fraction of the input size
    flip_probability: float = 0.5
    brightness: float = 0.2  # additive, as a fraction of 255, uniform in +-this
    contrast: float = 0.25  # multiplicative around the mean, in 1 +- this
    saturation: float = 0.25  # blend with grey, in 1 +- this


@dataclass
class PoseSample:
    """One training image with its people, in its own pixels (or, after ``warp_sample``, input pixels).

    keypoints: P x K x 3 (x, y, v), v > 0 = labelled; boxes: P x 4 (x0, y0, x1, y1), the extent in which
    a person's unlabelled keypoints may lie; ignore: H x W uint8, nonzero = people nobody labelled, or
    None. ``centre``/``size``: the region (a square of side ``size``) that fills the input at scale 1.
    """

    image: np.ndarray
    keypoints: np.ndarray
    boxes: np.ndarray
    ignore: np.ndarray | None
    centre: tuple[float, float]
    size: float


def plan_warp(centre: tuple[float, float], size: float, input_height: int, input_width: int,
              rng: np.random.Generator | None, config: AugmentConfig) -> tuple[np.ndarray, bool]:
    """The 2 x 3 matrix from sample pixels to input pixels, and whether it mirrors. ``rng=None``: no
    randomness (the framed region, centred, upright)."""
    scale = min(input_height, input_width) / max(size, 1e-6)
    angle = 0.0
    shift_x = shift_y = 0.0
    flip = False
    if rng is not None:
        scale *= rng.uniform(config.scale_min, config.scale_max)
        angle = math.radians(rng.uniform(-config.rotation_degrees, config.rotation_degrees))
        shift_x = rng.uniform(-config.translate, config.translate) * input_width
        shift_y = rng.uniform(-config.translate, config.translate) * input_height
        flip = bool(rng.random() < config.flip_probability)
    cos, sin = scale * math.cos(angle), scale * math.sin(angle)
    out_x = (input_width - 1) / 2 + shift_x
    out_y = (input_height - 1) / 2 + shift_y
    cx, cy = centre
    matrix = np.array([[cos, -sin, out_x - cos * cx + sin * cy],
                       [sin, cos, out_y - sin * cx - cos * cy]], np.float64)
    if flip:
        # x -> (W - 1) - x after the warp.
        matrix[0] = -matrix[0]
        matrix[0, 2] += input_width - 1
    return matrix, flip


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """(..., 2) points through a 2 x 3 affine matrix."""
    return points @ matrix[:, :2].T.astype(points.dtype) + matrix[:, 2].astype(points.dtype)


def transform_boxes(boxes: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """P x 4 boxes -> the axis-aligned boxes around their warped corners."""
    if len(boxes) == 0:
        return boxes.reshape(0, 4)
    x0, y0, x1, y1 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    corners = np.stack([np.stack([x0, y0], -1), np.stack([x1, y0], -1),
                        np.stack([x0, y1], -1), np.stack([x1, y1], -1)], axis=1)  # P x 4 x 2
    warped = transform_points(corners, matrix)
    return np.concatenate([warped.min(axis=1), warped.max(axis=1)], axis=1).astype(np.float32)


def flip_keypoints(keypoints: np.ndarray) -> np.ndarray:
    """Swap left and right keypoint channels (after a mirror, the person's left is drawn on the right)."""
    return keypoints[:, list(FLIP_KEYPOINTS)]


def warp_sample(sample: PoseSample, matrix: np.ndarray, flipped: bool, input_height: int,
                input_width: int) -> PoseSample:
    """Apply one warp to everything in the sample; the result is in input pixels."""
    size = (input_width, input_height)
    image = cv2.warpAffine(sample.image, matrix, size, flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=(PAD_VALUE,) * 3)
    keypoints = sample.keypoints.astype(np.float32, copy=True)
    if len(keypoints):
        keypoints[..., :2] = transform_points(keypoints[..., :2], matrix)
        keypoints[keypoints[..., 2] <= 0, :2] = 0.0  # unlabelled points carry no position
        if flipped:
            keypoints = flip_keypoints(keypoints)
    ignore = None
    if sample.ignore is not None:
        ignore = cv2.warpAffine(sample.ignore, matrix, size, flags=cv2.INTER_NEAREST,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    centre = transform_points(np.asarray(sample.centre, np.float64), matrix)
    return PoseSample(image=image, keypoints=keypoints, boxes=transform_boxes(sample.boxes, matrix),
                      ignore=ignore, centre=(float(centre[0]), float(centre[1])),
                      size=float(min(input_height, input_width)))


def jitter_colour(image: np.ndarray, rng: np.random.Generator, config: AugmentConfig) -> np.ndarray:
    """Random brightness, contrast and saturation of a BGR uint8 image."""
    pixels = image.astype(np.float32)
    grey = pixels @ np.array([0.114, 0.587, 0.299], np.float32)  # BGR luma weights
    saturation = rng.uniform(1 - config.saturation, 1 + config.saturation)
    pixels = grey[..., None] + saturation * (pixels - grey[..., None])
    contrast = rng.uniform(1 - config.contrast, 1 + config.contrast)
    mean = float(grey.mean())
    pixels = mean + contrast * (pixels - mean)
    pixels += rng.uniform(-config.brightness, config.brightness) * 255.0
    return np.clip(pixels, 0, 255).astype(np.uint8)


def augment(sample: PoseSample, input_height: int, input_width: int, rng: np.random.Generator | None,
            config: AugmentConfig) -> PoseSample:
    """A random warp (and colour jitter) of the sample to the input size; ``rng=None`` only frames it."""
    matrix, flipped = plan_warp(sample.centre, sample.size, input_height, input_width, rng, config)
    warped = warp_sample(sample, matrix, flipped, input_height, input_width)
    if rng is None:
        return warped
    return replace(warped, image=jitter_colour(warped.image, rng, config))


def normalise(image: np.ndarray) -> np.ndarray:
    """BGR uint8 H x W x 3 -> 3 x H x W float32 network input, (pixel - 128) / 256 as layout.py defines."""
    return ((image.astype(np.float32) - PIXEL_MEAN) * PIXEL_SCALE).transpose(2, 0, 1).copy()
