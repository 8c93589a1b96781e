"""MPII-format accuracy of an estimator (common.Estimator): PCKh@0.5 on the 12 body joints.

Reads MPII annotations in the json form mmpose and most PyTorch code use: a list of people, each
``{"image", "joints": 16 x [x, y], "joints_vis": 16 flags, "center", "scale"}``, several entries per image
for multi-person images. Choices that change the numbers (also stated in the result dict):

* PCKh@0.5 as the seed defines it: a joint is correct within 0.5 x the head segment, |upper neck - head
  top| of the truth. (The official MPII toolkit uses 0.6 x the head box diagonal instead; the head box is
  not in this json.)
* Scored joints: the 12 body joints COCO-17 also has (ankles, knees, hips, wrists, elbows, shoulders) where
  ``joints_vis`` is 1; pelvis, thorax, upper neck and head top have no COCO-17 counterpart.
* Matching: the whole image goes through the estimator once; each annotated person is then paired one to
  one with a predicted person, greedily by most correct joints (then by smaller mean distance). An
  annotated person without a partner gets every joint wrong.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from posestream.pipeline.core.errors import PosestreamError
from posestream.pipeline.core.skeleton import COCO17_NAMES
from posestream.pipeline.evaluation.common import Estimator, check_batching, format_table, run_estimator

MPII_JOINT_NAMES = (
    "right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle", "pelvis", "thorax",
    "upper_neck", "head_top", "right_wrist", "right_elbow", "right_shoulder", "left_shoulder", "left_elbow",
    "left_wrist",
)
_UPPER_NECK, _HEAD_TOP = MPII_JOINT_NAMES.index("upper_neck"), MPII_JOINT_NAMES.index("head_top")
# The MPII joints scored, each with its COCO-17 index.
BODY_JOINTS = tuple(name for name in MPII_JOINT_NAMES if name in COCO17_NAMES)
_MPII_INDEX = np.array([MPII_JOINT_NAMES.index(name) for name in BODY_JOINTS])
_COCO_INDEX = np.array([COCO17_NAMES.index(name) for name in BODY_JOINTS])

DEFINITION_NOTE = "PCKh: threshold x |upper neck - head top| of the truth (the seed's definition)"
MATCH_NOTE = "each annotated person paired one to one with a predicted person, most correct joints first"


@dataclass(frozen=True)
class MpiiEvalConfig:
    batch_size: int = 1
    max_images: int | None = None
    show_progress: bool = True
    pckh_threshold: float = 0.5

    def __post_init__(self) -> None:
        check_batching("MpiiEvalConfig", self.batch_size, self.max_images)
        if not self.pckh_threshold > 0:
            raise PosestreamError("MpiiEvalConfig.pckh_threshold", f"must be > 0, got {self.pckh_threshold}")


@dataclass(frozen=True)
class MpiiPerson:
    joints: np.ndarray  # 16 x 2 float64
    visible: np.ndarray  # 16 bool

    @property
    def head_size(self) -> float:
        return float(np.linalg.norm(self.joints[_UPPER_NECK] - self.joints[_HEAD_TOP]))


def read_mpii_annotations(path: Path) -> dict[str, list[MpiiPerson]]:
    """Image file name -> its annotated people; a malformed file raises PosestreamError naming the entry."""
    try:
        entries = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise PosestreamError(str(path), "no such annotation file") from None
    except (OSError, ValueError) as error:
        raise PosestreamError(str(path), f"cannot read as JSON: {error}") from None
    if not isinstance(entries, list):
        raise PosestreamError(str(path), "expected a list of people ({image, joints, joints_vis, ...})")
    people: dict[str, list[MpiiPerson]] = {}
    for i, entry in enumerate(entries):
        try:
            joints = np.asarray(entry["joints"], np.float64).reshape(len(MPII_JOINT_NAMES), 2)
            visible = np.asarray(entry["joints_vis"]).reshape(len(MPII_JOINT_NAMES)) > 0
            image = str(entry["image"])
        except (KeyError, TypeError, ValueError) as error:
            raise PosestreamError(str(path), f"entry {i}: needs image, joints (16 x 2) and joints_vis (16): "
                                             f"{error}") from None
        people.setdefault(image, []).append(MpiiPerson(joints, visible))
    return people


def match_and_score(truth: list[MpiiPerson], predicted: list[np.ndarray],
                    threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(correct, scored), each len(truth) x 12 bool, after pairing each annotated person with one prediction
    (``predicted``: COCO-17 17 x 3 keypoint arrays)."""
    correct = np.zeros((len(truth), len(BODY_JOINTS)), bool)
    scored = np.zeros_like(correct)
    options = []  # (correct count, -mean distance, truth index, prediction index, correct flags)
    for t, person in enumerate(truth):
        points = person.joints[_MPII_INDEX]
        scored[t] = person.visible[_MPII_INDEX] & (person.head_size > 0)
        for p, keypoints in enumerate(predicted):
            found = keypoints[_COCO_INDEX, 2] > 0
            distance = np.linalg.norm(keypoints[_COCO_INDEX, :2] - points, axis=1)
            hits = scored[t] & found & (distance <= threshold * person.head_size)
            mean_distance = float(distance[scored[t] & found].mean()) if (scored[t] & found).any() else np.inf
            options.append((int(hits.sum()), -mean_distance, t, p, hits))
    used_truth, used_prediction = set(), set()
    for count, _, t, p, hits in sorted(options, key=lambda o: (o[0], o[1]), reverse=True):
        if count == 0 or t in used_truth or p in used_prediction:
            continue
        correct[t] = hits
        used_truth.add(t)
        used_prediction.add(p)
    return correct, scored


def evaluate_mpii(images_dir: Path, annotations: Path, estimate: Estimator,
                  config: MpiiEvalConfig = MpiiEvalConfig()) -> dict:
    """PCKh per body joint and its mean over the annotated people of MPII-format data."""
    images_dir = Path(images_dir)
    by_image = read_mpii_annotations(annotations)
    names = sorted(by_image)
    if config.max_images is not None:
        names = names[:config.max_images]
    paths = [images_dir / name for name in names]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise PosestreamError(str(missing[0]), f"image listed in {annotations} is missing "
                                               f"({len(missing)} of {len(paths)})")
    people_per_image, seconds = run_estimator(paths, estimate, config.batch_size, config.show_progress, "MPII eval")
    correct, scored = [], []
    for name, people in zip(names, people_per_image):
        hits, counted = match_and_score(by_image[name], [np.asarray(p.keypoints) for p in people],
                                        config.pckh_threshold)
        correct.append(hits)
        scored.append(counted)
    correct_all, scored_all = np.concatenate(correct), np.concatenate(scored)
    per_joint = {name: (float((correct_all[:, j] & scored_all[:, j]).sum() / scored_all[:, j].sum())
                        if scored_all[:, j].any() else None) for j, name in enumerate(BODY_JOINTS)}
    total = int(scored_all.sum())
    return {
        "pckh_threshold": config.pckh_threshold,
        "pckh": per_joint,
        "pckh_mean_body": float((correct_all & scored_all).sum() / total) if total else None,
        "joints_scored": total,
        "images": len(names),
        "people": int(correct_all.shape[0]),
        "seconds_per_image": seconds / max(len(names), 1),
        "notes": [DEFINITION_NOTE, MATCH_NOTE],
    }


def format_mpii_table(metrics: dict) -> str:
    rows = [(name, metrics["pckh"][name]) for name in BODY_JOINTS]
    rows.append(("mean (12 body, over joints)", metrics["pckh_mean_body"]))
    footer = (f"MPII: {metrics['images']} images, {metrics['people']} annotated people, "
              f"{metrics['joints_scored']} joints scored, {metrics['seconds_per_image'] * 1000:.1f} ms/image\n"
              f"{DEFINITION_NOTE}; {MATCH_NOTE}")
    return "\n\n".join([format_table(rows, ("joint", f"PCKh@{metrics['pckh_threshold']:g}")), footer])
