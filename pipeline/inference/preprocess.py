"""Resize keeping aspect, pad to the network's size, normalise; and the inverse for coordinates."""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from posestream.pipeline.core.model import InputSpec


@dataclass(frozen=True)
class Letterbox:
    """Image pixels -> network-input pixels: u = x * scale + pad_x (pixel centres kept aligned)."""

    scale: float
    pad_x: float
    pad_y: float
    input_height: int
    input_width: int
    image_height: int
    image_width: int

    def to_image(self, points: np.ndarray) -> np.ndarray:
        """(..., 2) network-input coordinates (x, y) -> original-image coordinates."""
        out = np.empty_like(points, dtype=np.float32)
        out[..., 0] = (points[..., 0] + 0.5 - self.pad_x) / self.scale - 0.5
        out[..., 1] = (points[..., 1] + 0.5 - self.pad_y) / self.scale - 0.5
        return out


def plan_letterbox(image_height: int, image_width: int, spec: InputSpec, stride: int,
                   resizable: bool, input_height: int | None = None) -> Letterbox:
    """Choose the network input size and scale for an image.

    A resizable network gets the requested height (default: the sidecar's) and the width the image's
    aspect needs, rounded up to the stride; a fixed network is filled as far as the aspect allows.
    Padding goes right and bottom, so the image sits at the origin.
    """
    if resizable:
        height = input_height or spec.height
        height = int(math.ceil(height / stride) * stride)
        scale = height / image_height
        width = int(math.ceil(image_width * scale / stride) * stride)
    else:
        height, width = spec.height, spec.width
        scale = min(height / image_height, width / image_width)
    return Letterbox(scale=scale, pad_x=0.0, pad_y=0.0, input_height=height, input_width=width,
                     image_height=image_height, image_width=image_width)


def fill_input(image: np.ndarray, box: Letterbox, spec: InputSpec, out: np.ndarray) -> None:
    """Write one normalised 3 x H x W float32 network input for ``image`` (BGR uint8) into ``out``."""
    resized_w = min(box.input_width, max(1, round(image.shape[1] * box.scale)))
    resized_h = min(box.input_height, max(1, round(image.shape[0] * box.scale)))
    resized = cv2.resize(image, (resized_w, resized_h), interpolation=cv2.INTER_LINEAR)
    if spec.color_order == "RGB":
        resized = resized[:, :, ::-1]
    out[...] = spec.pad_value
    out[:, :resized_h, :resized_w] = resized.transpose(2, 0, 1)
    for channel in range(3):
        if spec.mean[channel] != 0.0 or spec.scale[channel] != 1.0:
            out[channel] -= spec.mean[channel]
            out[channel] *= spec.scale[channel]
