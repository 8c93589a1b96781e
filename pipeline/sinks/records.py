"""The public JSON-lines schema (docs/output-schema.md): one frame's record and each person's in it."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from posestream.pipeline.core.skeleton import COCO17_NAMES
from posestream.pipeline.core.types import Frame, Person


def person_record(person: Person) -> dict:
    """One person in the public schema: pixels rounded to 2 decimals, score and confidences to 4."""
    keypoints = np.asarray(person.keypoints, dtype=np.float64)
    if keypoints.shape != (len(COCO17_NAMES), 3):
        raise ValueError(f"Person.keypoints must be (17, 3), got {keypoints.shape}")
    return {
        "score": round(float(person.score), 4),
        "bbox": [round(float(value), 2) for value in person.bbox],
        "keypoints": [[round(float(x), 2), round(float(y), 2), round(float(c), 4)] for x, y, c in keypoints],
        "track_id": None if person.track_id is None else int(person.track_id),
    }


def frame_record(frame: Frame, persons: Sequence[Person]) -> dict:
    """One frame's line of the JSON-lines output (docs/output-schema.md)."""
    return {
        "stream": int(frame.stream),
        "source": str(frame.source),
        "frame": int(frame.index),
        "pts": None if frame.pts is None else round(float(frame.pts), 6),
        "persons": [person_record(person) for person in persons],
    }
