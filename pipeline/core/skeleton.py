"""Keypoint layouts as data: COCO-17 (what posestream outputs) and how other layouts map onto it."""
from __future__ import annotations

COCO17_NAMES = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
)

# COCO-17 limbs for drawing (pairs of COCO-17 indices), as in the COCO annotation's "skeleton" (0-based).
COCO17_SKELETON = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7),
    (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
)

# COCO OKS sigmas per COCO-17 keypoint (pycocotools' values), used by OKS-based matching and checks.
COCO17_SIGMAS = (
    0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062,
    0.107, 0.107, 0.087, 0.087, 0.089, 0.089,
)


def coco17_index_map(keypoint_names: tuple[str, ...] | list[str]) -> list[int]:
    """For each COCO-17 keypoint, its index in ``keypoint_names``, or -1 where the model lacks it.

    Keypoints the model has but COCO-17 does not (OpenPose's neck) are simply not mapped.
    """
    position = {name: i for i, name in enumerate(keypoint_names)}
    return [position.get(name, -1) for name in COCO17_NAMES]
