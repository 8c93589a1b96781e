"""Skeleton overlays: the COCO-17 skeleton, track boxes, ID labels and trails drawn on a picture."""
from __future__ import annotations

import colorsys
from collections import deque
from typing import Mapping, Sequence

import cv2
import numpy as np

from posestream.pipeline.core.skeleton import COCO17_NAMES, COCO17_SKELETON
from posestream.pipeline.core.types import Person


def _limb_colours(count: int) -> tuple[tuple[int, int, int], ...]:
    """``count`` saturated, evenly spaced hues as BGR, so neighbouring limbs are told apart at a glance."""
    colours = []
    for i in range(count):
        red, green, blue = colorsys.hsv_to_rgb(i / count, 0.9, 1.0)
        colours.append((int(blue * 255), int(green * 255), int(red * 255)))
    return tuple(colours)


LIMB_COLOURS_BGR = _limb_colours(len(COCO17_SKELETON))
# A keypoint takes the colour of the first limb that touches it, so a dot matches a limb it sits on.
KEYPOINT_COLOURS_BGR = tuple(
    next(LIMB_COLOURS_BGR[limb] for limb, pair in enumerate(COCO17_SKELETON) if keypoint in pair)
    for keypoint in range(len(COCO17_NAMES))
)
_DOT_OUTLINE_BGR = (0, 0, 0)
_SCORE_TEXT_BGR = (255, 255, 255)
_LEFT_HIP, _RIGHT_HIP = COCO17_NAMES.index("left_hip"), COCO17_NAMES.index("right_hip")


def track_colour(track_id: int) -> tuple[int, int, int]:
    """A bright BGR colour per track ID; golden-ratio hue steps keep consecutive IDs far apart on the wheel."""
    red, green, blue = colorsys.hsv_to_rgb((track_id * 0.6180339887) % 1.0, 0.85, 1.0)
    return int(blue * 255), int(green * 255), int(red * 255)


def trail_point(person: Person) -> tuple[float, float] | None:
    """Where a person's trail runs: the mid-hip, or None when a hip was not found (no jumps to other joints)."""
    keypoints = np.asarray(person.keypoints)
    if keypoints[_LEFT_HIP, 2] <= 0 or keypoints[_RIGHT_HIP, 2] <= 0:
        return None
    middle = 0.5 * (keypoints[_LEFT_HIP, :2] + keypoints[_RIGHT_HIP, :2])
    return float(middle[0]), float(middle[1])


class TrackTrails:
    """The last ``length`` mid-hip positions of each track of one stream, for the overlay.

    Owned by that stream's overlay (``OverlaySink``). A track not seen for ``forget_after`` frames is forgotten.
    """

    def __init__(self, length: int = 20, forget_after: int = 30) -> None:
        self.length = length
        self.forget_after = forget_after
        self._points: dict[int, deque[tuple[float, float]]] = {}
        self._last_seen: dict[int, int] = {}
        self._frame = 0

    def update(self, persons: Sequence[Person]) -> dict[int, np.ndarray]:
        """Add this frame's people; returns every remembered track's trail, oldest point first (k x 2)."""
        self._frame += 1
        for person in persons:
            if person.track_id is None:
                continue
            point = trail_point(person)
            if point is None:
                continue
            self._points.setdefault(person.track_id, deque(maxlen=self.length)).append(point)
            self._last_seen[person.track_id] = self._frame
        for track_id in [t for t, seen in self._last_seen.items() if self._frame - seen > self.forget_after]:
            del self._points[track_id], self._last_seen[track_id]
        return {track_id: np.asarray(points) for track_id, points in self._points.items()}


def _stroke_width(image: np.ndarray) -> int:
    """Line thickness that reads well at any size: 3 px on 768x576, 2 px minimum."""
    return max(2, round(min(image.shape[:2]) / 200))


def _draw_trail(canvas: np.ndarray, points: np.ndarray, colour: tuple[int, int, int], thickness: int) -> None:
    """A polyline from oldest to newest point, thin at the old end so the direction of travel shows."""
    pixels = np.round(points).astype(np.int32)
    for k in range(1, len(pixels)):
        width = max(1, round(thickness * k / (len(pixels) - 1)))
        cv2.line(canvas, tuple(pixels[k - 1]), tuple(pixels[k]), colour, width, cv2.LINE_AA)


def draw_people(
    image: np.ndarray,
    persons: Sequence[Person],
    min_confidence: float = 0.1,
    draw_scores: bool = True,
    trails: Mapping[int, np.ndarray] | None = None,
) -> np.ndarray:
    """A copy of ``image`` (H x W x 3 uint8 BGR) with each person's COCO-17 skeleton drawn on it.

    A limb is drawn when both its keypoints have confidence >= ``min_confidence``; a keypoint dot likewise.
    Keypoints with confidence 0 (not found) are never drawn. With ``draw_scores`` the person score is
    written just above the person's box. A person with a ``track_id`` also gets a thin box and the label
    ``#ID`` in that ID's colour (``track_colour``), and, when ``trails`` has its ID, its trail (k x 2 points,
    oldest first) under the skeleton.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"draw_people needs an H x W x 3 uint8 image, got {image.shape} {image.dtype}")
    canvas = image.copy()
    image_thickness = _stroke_width(canvas)
    font_scale = max(0.45, image_thickness / 5)
    if trails:
        for person in persons:
            points = trails.get(person.track_id) if person.track_id is not None else None
            if points is not None and len(points) >= 2:
                _draw_trail(canvas, points, track_colour(person.track_id), image_thickness)
    for person in persons:
        # Small (far) people get thinner strokes so dots do not hide their limbs.
        thickness = max(1, min(image_thickness, round(person.bbox[3] / 40)))
        dot_radius = max(2, min(image_thickness + 1, round(person.bbox[3] / 30)))
        keypoints = np.asarray(person.keypoints, dtype=np.float32)
        if keypoints.shape != (len(COCO17_NAMES), 3):
            raise ValueError(f"Person.keypoints must be (17, 3), got {keypoints.shape}")
        shown = (keypoints[:, 2] >= min_confidence) & (keypoints[:, 2] > 0) & np.isfinite(keypoints).all(axis=1)
        points = [(int(round(x)), int(round(y))) for x, y in keypoints[:, :2]]
        for (start, end), colour in zip(COCO17_SKELETON, LIMB_COLOURS_BGR):
            if shown[start] and shown[end]:
                cv2.line(canvas, points[start], points[end], colour, thickness, cv2.LINE_AA)
        for index in np.flatnonzero(shown):
            # A dark ring keeps the dot visible on bright clothes and on its own limb colour.
            cv2.circle(canvas, points[index], dot_radius + 1, _DOT_OUTLINE_BGR, -1, cv2.LINE_AA)
            cv2.circle(canvas, points[index], dot_radius, KEYPOINT_COLOURS_BGR[index], -1, cv2.LINE_AA)
        tracked = person.track_id is not None
        if tracked and shown.any():
            x, y, w, h = (int(round(value)) for value in person.bbox)
            cv2.rectangle(canvas, (x, y), (x + w, y + h), track_colour(person.track_id), 1, cv2.LINE_AA)
        if (draw_scores or tracked) and shown.any():
            x, y = person.bbox[0], person.bbox[1]
            origin = (int(round(x)), max(int(round(y)) - 2 * thickness, 12))
            parts = ([f"#{person.track_id}"] if tracked else []) + ([f"{person.score:.2f}"] if draw_scores else [])
            text = " ".join(parts)
            colour = track_colour(person.track_id) if tracked else _SCORE_TEXT_BGR
            # The ID label is drawn at least 2 px thick so its colour reads at a glance.
            text_thickness = max(2 if tracked else 1, thickness - 1)
            cv2.putText(canvas, text, origin, cv2.FONT_HERSHEY_SIMPLEX, font_scale, _DOT_OUTLINE_BGR,
                        text_thickness + 2 if tracked else thickness + 1, cv2.LINE_AA)
            cv2.putText(canvas, text, origin, cv2.FONT_HERSHEY_SIMPLEX, font_scale, colour, text_thickness,
                        cv2.LINE_AA)
    return canvas
