"""Values that pass between stages: a decoded frame and the people found in it."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Frame:
    """One decoded picture of one stream.

    ``image`` is H x W x 3, uint8, BGR (OpenCV's order; models declare their own order in the sidecar).
    ``index`` counts the frames the source delivered, from 0; frames skipped as corrupt do not get one.
    ``pts`` is the presentation time in seconds where the container has one, else None.
    """

    stream: int
    source: str
    index: int
    pts: float | None
    image: np.ndarray


@dataclass(frozen=True)
class Person:
    """One person in image pixels.

    ``keypoints`` is (17, 3) float32 in COCO-17 order: x, y, confidence. A keypoint that was not
    found has confidence 0 and x = y = 0. ``bbox`` is (x, y, w, h) around the found keypoints.
    ``track_id`` is the person's identity within its stream (from 1), set by ``posestream.pipeline.tracking.tracker``;
    None when tracking is off or the person is not (yet) on a confirmed track.
    """

    score: float
    keypoints: np.ndarray
    bbox: tuple[float, float, float, float]
    track_id: int | None = None


def boxes_around_keypoints(keypoints: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """N x 4 (x, y, w, h) around each person's found keypoints; ``fallback`` rows where none is found."""
    found = keypoints[:, :, 2] > 0
    xs = keypoints[:, :, 0]
    ys = keypoints[:, :, 1]
    x0 = np.where(found, xs, np.inf).min(axis=1)
    y0 = np.where(found, ys, np.inf).min(axis=1)
    x1 = np.where(found, xs, -np.inf).max(axis=1)
    y1 = np.where(found, ys, -np.inf).max(axis=1)
    boxes = np.stack([x0, y0, x1 - x0, y1 - y0], axis=1)
    none_found = ~found.any(axis=1)
    boxes[none_found] = fallback[none_found]
    return boxes
