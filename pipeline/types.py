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
    ``track_id`` is the person's identity within its stream (from 1), set by ``pipeline.tracking``;
    None when tracking is off or the person is not (yet) on a confirmed track.
    """

    score: float
    keypoints: np.ndarray
    bbox: tuple[float, float, float, float]
    track_id: int | None = None
