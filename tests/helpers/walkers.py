"""Synthetic walking people with known identities, as a pose detector would report them frame by frame.

A walker is a COCO-17 skeleton whose mid-body follows a given path, with arms and legs swinging as it
walks. Each frame it is either seen (keypoints with Gaussian noise, joints outside the picture not found)
or not (occluded, off screen). Used by tests/test_tracking.py and benchmarks/bench_tracker.py.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from posestream.pipeline.core.types import Person

# A standing person in unit height (head top ~ -0.5, ankles ~ +0.5), origin at the box centre, COCO-17 order.
_STANDING_PX = np.array([
    (400, 100), (405, 95), (395, 95), (410, 98), (390, 98), (430, 140), (370, 140), (440, 190),
    (360, 190), (445, 240), (355, 240), (420, 250), (380, 250), (425, 320), (375, 320), (428, 390), (372, 390),
], np.float64)
UNIT_POSE = (_STANDING_PX - np.array([400.0, 242.5])) / 295.0
# How far each joint swings forward/back (fraction of height) when walking: arms and legs in opposition.
_SWING = np.zeros(17)
_SWING[[7, 9]] = (0.03, 0.06)   # left elbow, wrist
_SWING[[8, 10]] = (-0.03, -0.06)  # right elbow, wrist
_SWING[[13, 15]] = (-0.04, -0.08)  # left knee, ankle
_SWING[[14, 16]] = (0.04, 0.08)  # right knee, ankle


@dataclass(frozen=True)
class Walker:
    """One person over a sequence: per frame, where its box centre is, how tall it is, whether it is seen.

    ``joint_seen`` (frames x 17 bool, optional) removes joints on partly occluded frames; ``score`` is the
    person score the detector gives it per frame.
    """

    identity: int
    centres: np.ndarray  # F x 2
    heights: np.ndarray  # F
    seen: np.ndarray  # F bool
    score: np.ndarray  # F
    joint_seen: np.ndarray | None = None  # F x 17 bool


@dataclass(frozen=True)
class DetectedFrame:
    """What the detector reports on one frame, plus the truth: which walker each detection is."""

    index: int
    truth_ids: np.ndarray  # n int
    keypoints: np.ndarray  # n x 17 x 3
    scores: np.ndarray  # n
    boxes: np.ndarray  # n x 4 (x, y, w, h) around the found keypoints

    def people(self) -> list[Person]:
        return [Person(score=float(s), keypoints=k.astype(np.float32), bbox=tuple(float(v) for v in b))
                for s, k, b in zip(self.scores, self.keypoints, self.boxes)]


def straight_path(start: tuple[float, float], velocity: tuple[float, float], frames: int,
                  speed_wobble: float = 0.0, wobble_period: float = 37.0, phase: float = 0.0) -> np.ndarray:
    """F x 2 centres moving along ``velocity`` (px/frame); ``speed_wobble`` varies the speed by that fraction."""
    t = np.arange(frames, dtype=np.float64)
    speed_factor = 1.0 + speed_wobble * np.sin(2 * np.pi * t / wobble_period + phase)
    travelled = np.concatenate([[0.0], np.cumsum(speed_factor[:-1])])
    return np.asarray(start, np.float64) + travelled[:, None] * np.asarray(velocity, np.float64)


def walker(identity: int, centres: np.ndarray, height: float, seen: np.ndarray | None = None,
           score: float | np.ndarray = 0.5, joint_seen: np.ndarray | None = None) -> Walker:
    frames = len(centres)
    return Walker(identity=identity, centres=np.asarray(centres, np.float64), heights=np.full(frames, height),
                  seen=np.ones(frames, bool) if seen is None else np.asarray(seen, bool),
                  score=np.broadcast_to(np.asarray(score, np.float64), (frames,)).copy(), joint_seen=joint_seen)


def pose(centre: np.ndarray, height: float, stride_phase: float) -> np.ndarray:
    """17 x 2 keypoints of a walker at ``centre`` with its limbs at ``stride_phase`` (radians)."""
    points = UNIT_POSE * height + centre
    points[:, 0] += _SWING * height * np.sin(stride_phase)
    return points


def render(walkers: list[Walker], frames: int, rng: np.random.Generator, noise_px: float = 2.0,
           image_size: tuple[int, int] = (768, 576), noise_per_height: float = 0.0,
           joint_dropout: float = 0.0) -> list[DetectedFrame]:
    """Each frame's detections: seen walkers with noisy keypoints inside the picture, in shuffled order.

    Keypoint noise is ``noise_px`` + ``noise_per_height`` * height (standard deviation, px); each joint is
    independently not found with probability ``joint_dropout``, as a small person's wrists and ankles often are.
    """
    width, height = image_size
    out = []
    strides = {w.identity: np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(w.centres, axis=0), axis=1))])
               for w in walkers}
    for f in range(frames):
        ids, keypoint_list, scores = [], [], []
        for w in walkers:
            if not w.seen[f]:
                continue
            points = pose(w.centres[f], w.heights[f], 2 * np.pi * strides[w.identity][f] / (0.9 * w.heights[f]))
            points = points + rng.normal(0.0, noise_px + noise_per_height * w.heights[f], points.shape)
            confidence = rng.uniform(0.5, 0.9, 17)
            found = ((points[:, 0] >= 0) & (points[:, 0] <= width - 1)
                     & (points[:, 1] >= 0) & (points[:, 1] <= height - 1))
            if joint_dropout:
                found &= rng.random(17) >= joint_dropout
            if w.joint_seen is not None:
                found &= w.joint_seen[f]
            if found.sum() < 3:
                continue  # a detector does not report a person from one or two joints
            keypoints = np.zeros((17, 3))
            keypoints[found, :2] = points[found]
            keypoints[found, 2] = confidence[found]
            ids.append(w.identity)
            keypoint_list.append(keypoints)
            scores.append(w.score[f])
        order = rng.permutation(len(ids))
        keypoints = np.asarray(keypoint_list, np.float64).reshape(-1, 17, 3)[order]
        out.append(DetectedFrame(index=f, truth_ids=np.asarray(ids, np.int64)[order], keypoints=keypoints,
                                 scores=np.asarray(scores, np.float64)[order], boxes=boxes_of(keypoints)))
    return out


def boxes_of(keypoints: np.ndarray) -> np.ndarray:
    """n x 4 (x, y, w, h) around each person's found keypoints."""
    boxes = np.zeros((len(keypoints), 4))
    for n, person in enumerate(keypoints):
        found = person[person[:, 2] > 0, :2]
        if len(found):
            x0, y0 = found.min(axis=0)
            x1, y1 = found.max(axis=0)
            boxes[n] = (x0, y0, x1 - x0, y1 - y0)
    return boxes


def random_walkers(count: int, frames: int, rng: np.random.Generator,
                   image_size: tuple[int, int] = (1920, 1080)) -> list[Walker]:
    """``count`` people walking at random speeds and directions, turning back at the picture's edges."""
    width, height = image_size
    walkers = []
    for identity in range(1, count + 1):
        person_height = rng.uniform(120, 300)
        position = np.array([rng.uniform(50, width - 50), rng.uniform(person_height / 2, height - person_height / 2)])
        velocity = rng.normal(0, 4, 2)
        centres = np.empty((frames, 2))
        for f in range(frames):
            centres[f] = position
            position = position + velocity
            for axis, (low, high) in enumerate(((50, width - 50), (person_height / 2, height - person_height / 2))):
                if not low <= position[axis] <= high:
                    velocity[axis] = -velocity[axis]
                    position[axis] = np.clip(position[axis], low, high)
        walkers.append(walker(identity, centres, person_height, score=rng.uniform(0.3, 0.7)))
    return walkers


def pedestrian_crowd(count: int, frames: int, rng: np.random.Generator, image_size: tuple[int, int] = (1280, 720),
                     max_occlusion: int = 10, dropout: float = 0.03, size_scale: float = 1.0,
                     speed_scale: float = 1.0) -> list[Walker]:
    """A street scene: ``count`` pedestrians cross the picture left or right, each in its own depth lane.

    Perspective ties size to the ground line (farther is smaller and higher), so two people who overlap in
    the picture differ in size, as real people passing each other do. Each walks at its own varying speed,
    enters at a random frame from the side it comes from, leaves on the other side, drops out of single
    frames at rate ``dropout`` and is hidden for one run of 1..``max_occlusion`` frames. At the default
    scales people are 110-280 px tall and walk 1.3-2.7 % of their height per frame (25 frames/s);
    ``size_scale`` and ``speed_scale`` shrink or speed them up (a far camera at 10 frames/s: 0.35 and 4).
    """
    width, height = image_size
    horizon = 0.3 * height
    lanes = np.linspace(0.55 * height, 0.95 * height, count) + rng.uniform(-5, 5, count)
    walkers = []
    for identity, foot_y in enumerate(rng.permutation(lanes), start=1):
        person_height = 0.6 * (foot_y - horizon) * size_scale
        direction = rng.choice((-1.0, 1.0))
        speed = rng.uniform(0.8, 1.6) * person_height / 60.0 * speed_scale
        start_frame = int(rng.integers(0, frames // 2))
        start_x = -0.3 * person_height if direction > 0 else width + 0.3 * person_height
        path = straight_path((start_x, foot_y - person_height / 2), (direction * speed, 0.0), frames - start_frame,
                             speed_wobble=0.2, phase=rng.uniform(0, 2 * np.pi))
        centres = np.concatenate([np.repeat(path[:1], start_frame, axis=0), path])
        seen = rng.random(frames) >= dropout
        seen[:start_frame] = False
        hidden_from = int(rng.integers(start_frame, frames))
        seen[hidden_from:hidden_from + int(rng.integers(1, max_occlusion + 1))] = False
        walkers.append(walker(identity, centres, person_height, seen=seen, score=rng.uniform(0.3, 0.7)))
    return walkers
