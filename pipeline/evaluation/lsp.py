"""LSP / LSPET single-person accuracy of an estimator (common.Estimator): PCK@0.2, PCKh@0.5 and strict PCP@0.5.

Reads LSP-format data (``joints.mat`` and ``images/``), maps each image's best COCO-17 person to the 14
LSP joints, scores them, and formats the table. Choices that change the numbers (also stated in the
table and the result dict):

* LSP is single-person: the highest-scoring Person is taken, never the one nearest the truth.
* LSP neck = midpoint of the two predicted shoulders (needs both).
* LSP head top is not a COCO-17 keypoint; it is approximated as neck + 2 * (face centre - neck), where
  the face centre is the mean of the found nose/eyes/ears, i.e. the face centre is taken to lie halfway
  between neck and head top. It is a rough geometric guess, reported separately from the 12 body joints.
* PCK@0.2: correct when the distance to the truth <= 0.2 x torso, torso = |gt left shoulder - gt right
  hip|; a missing predicted joint is wrong. PCKh@0.5 (MPII's metric): correct within 0.5 x the head
  segment, |gt neck - gt head top| (LSP's neck and head top labels). Strict PCP@0.5: both predicted ends within 0.5 x the true
  limb length of their true ends. The torso limb runs from the neck to the midpoint of the two hips.
* Which joints are scored: LSP annotates every joint (its flag only marks occlusion), so all 14 are
  scored; in LSPET an unflagged joint has no real position (it sits at x <= 0 or y <= 0), so only
  flagged-visible joints, and limbs whose both ends are, are scored.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io

from posestream.pipeline.core.errors import PosestreamError
from posestream.pipeline.core.skeleton import COCO17_NAMES
from posestream.pipeline.core.types import Person
from posestream.pipeline.evaluation.common import Estimator, check_batching, format_table, run_estimator

# LSP / LSPET joint order (person-centric left/right, like COCO).
LSP_JOINT_NAMES = (
    "right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle",
    "right_wrist", "right_elbow", "right_shoulder", "left_shoulder", "left_elbow", "left_wrist",
    "neck", "head_top",
)
LSP_BODY_JOINT_COUNT = 12  # the first 12 LSP joints have a COCO-17 counterpart
_LSP_NECK = 12
_LSP_HEAD_TOP = 13
_LSP_RIGHT_HIP = 2
_LSP_LEFT_HIP = 3
_LSP_LEFT_SHOULDER = 9
_MID_HIP = 14  # extra point appended after the 14 LSP joints, only for the torso limb

# For each of the first 12 LSP joints, its COCO-17 index.
LSP_FROM_COCO17 = tuple(COCO17_NAMES.index(name) for name in LSP_JOINT_NAMES[:LSP_BODY_JOINT_COUNT])
_COCO_LEFT_SHOULDER = COCO17_NAMES.index("left_shoulder")
_COCO_RIGHT_SHOULDER = COCO17_NAMES.index("right_shoulder")
_COCO_FACE = tuple(COCO17_NAMES.index(n) for n in ("nose", "left_eye", "right_eye", "left_ear", "right_ear"))

# Limbs for PCP as (name, end, end) over the LSP joints plus _MID_HIP.
LSP_LIMBS = (
    ("torso", _LSP_NECK, _MID_HIP),
    ("head", _LSP_NECK, _LSP_HEAD_TOP),
    ("right_upper_arm", 8, 7),
    ("right_forearm", 7, 6),
    ("left_upper_arm", 9, 10),
    ("left_forearm", 10, 11),
    ("right_thigh", 2, 1),
    ("right_lower_leg", 1, 0),
    ("left_thigh", 3, 4),
    ("left_lower_leg", 4, 5),
)

LSP_TEST_SPLIT_SIZE = 2000  # only the original LSP (2000 images) has the standard train/test halves

HEAD_TOP_NOTE = "head_top approximated as neck + 2*(face centre - neck); COCO-17 has no head top"
NECK_NOTE = "neck = midpoint of the predicted shoulders"


@dataclass(frozen=True)
class LspEvalConfig:
    batch_size: int = 1
    max_images: int | None = None  # the first N images of the split; None = all
    show_progress: bool = True
    pck_threshold: float = 0.2  # fraction of the torso size
    pcp_threshold: float = 0.5  # fraction of the true limb length
    pckh_threshold: float = 0.5  # fraction of the true head segment (neck to head top)

    def __post_init__(self) -> None:
        check_batching("LspEvalConfig", self.batch_size, self.max_images)
        for name in ("pck_threshold", "pcp_threshold", "pckh_threshold"):
            if not getattr(self, name) > 0:
                raise PosestreamError(f"LspEvalConfig.{name}", f"must be > 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class LspAnnotations:
    """``joints`` (N, 14, 2) float64 x, y; ``visible`` (N, 14) bool; ``layout`` 'lsp' (3x14xN, flag 1 =
    occluded) or 'lspet' (14x3xN, flag 1 = visible)."""

    image_paths: tuple[Path, ...]
    joints: np.ndarray
    visible: np.ndarray
    layout: str

    def scored(self) -> np.ndarray:
        """(N, 14) bool: joints that have a true position to score against (see the module docstring)."""
        if self.layout == "lsp":
            return np.ones_like(self.visible)
        return self.visible.copy()


def _lsp_image_paths(images_dir: Path, count: int) -> tuple[Path, ...]:
    # LSP names its images im0001.jpg, LSPET im00001.jpg: take the width the first image uses.
    for digits in (4, 5):
        if (images_dir / f"im{1:0{digits}d}.jpg").is_file():
            paths = tuple(images_dir / f"im{i:0{digits}d}.jpg" for i in range(1, count + 1))
            missing = [p for p in paths if not p.is_file()]
            if missing:
                raise PosestreamError(str(missing[0]), f"image missing ({len(missing)} of {count} listed in joints.mat)")
            return paths
    raise PosestreamError(str(images_dir), "has no im0001.jpg or im00001.jpg (expected LSP-format images)")


def read_lsp_dataset(data_dir: Path) -> LspAnnotations:
    """Reads ``data_dir/joints.mat`` and the image list, detecting LSP (3x14xN) vs LSPET (14x3xN)."""
    data_dir = Path(data_dir)
    mat_path = data_dir / "joints.mat"
    if not mat_path.is_file():
        raise PosestreamError(str(mat_path), "not found (expected LSP-format data: images/ and joints.mat)")
    try:
        raw = scipy.io.loadmat(str(mat_path))
    except Exception as error:  # scipy raises several unrelated types for a bad file
        raise PosestreamError(str(mat_path), f"is not a readable MATLAB file ({error})") from None
    if "joints" not in raw:
        raise PosestreamError(str(mat_path), "has no 'joints' array")
    array = np.asarray(raw["joints"], dtype=np.float64)
    joint_count = len(LSP_JOINT_NAMES)
    if array.ndim == 3 and array.shape[:2] == (3, joint_count):
        layout, per_image = "lsp", array.transpose(2, 1, 0)  # -> (N, 14, 3)
    elif array.ndim == 3 and array.shape[:2] == (joint_count, 3):
        layout, per_image = "lspet", array.transpose(2, 0, 1)
    else:
        raise PosestreamError(str(mat_path), f"'joints' has shape {array.shape}, expected 3x14xN (LSP) or 14x3xN (LSPET)")
    flags = per_image[:, :, 2]
    # LSP: flag 1 = occluded; LSPET: flag 1 = visible.
    visible = flags == 0 if layout == "lsp" else flags == 1
    image_paths = _lsp_image_paths(data_dir / "images", per_image.shape[0])
    return LspAnnotations(image_paths, np.ascontiguousarray(per_image[:, :, :2]), visible, layout)


def load_lsp_annotations(data_dir: Path) -> tuple[list[Path], np.ndarray, np.ndarray]:
    """(image paths, joints (N, 14, 2) float x, y, visible (N, 14) bool) for LSP or LSPET data.

    Handles both flag conventions: LSP's 3x14xN array flags *occluded* joints, LSPET's 14x3xN array
    flags *visible* ones. In LSPET a joint that is not visible carries no real position.
    """
    dataset = read_lsp_dataset(data_dir)
    return list(dataset.image_paths), dataset.joints, dataset.visible


def lsp_split_indices(data_dir: Path, image_count: int, split: str) -> range:
    if split == "all":
        return range(image_count)
    if image_count == LSP_TEST_SPLIT_SIZE:
        halves = {"train": range(0, 1000), "test": range(1000, 2000)}
        if split in halves:
            return halves[split]
    elif split == "train":
        return range(image_count)  # LSPET is a training set in its entirety
    elif split == "test":
        raise PosestreamError(
            str(data_dir),
            f"split 'test' exists only for LSP's {LSP_TEST_SPLIT_SIZE} images (im1001-im2000); "
            f"this set has {image_count} images: use 'train' or 'all'",
        )
    raise PosestreamError(f"split {split!r}", "unknown; use 'train', 'test' (LSP only) or 'all'")


def best_person(people: Sequence[Person]) -> Person | None:
    """The highest-scoring person (the first on a tie): LSP has one annotated person, and choosing by
    distance to the truth would leak the answer."""
    return max(people, key=lambda person: person.score, default=None)


def coco17_to_lsp(keypoints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """LSP-14 points (14, 2) and found flags (14,) from one COCO-17 (17, 3) keypoint array.

    The 12 body joints map one to one; neck = shoulder midpoint; head top = neck + 2*(face centre -
    neck), an approximation (see the module docstring). Missing joints are (0, 0) and not found.
    """
    keypoints = np.asarray(keypoints, dtype=np.float64)
    coco_found = keypoints[:, 2] > 0
    points = np.zeros((len(LSP_JOINT_NAMES), 2))
    found = np.zeros(len(LSP_JOINT_NAMES), dtype=bool)
    body = list(LSP_FROM_COCO17)
    points[:LSP_BODY_JOINT_COUNT] = keypoints[body, :2]
    found[:LSP_BODY_JOINT_COUNT] = coco_found[body]
    if coco_found[_COCO_LEFT_SHOULDER] and coco_found[_COCO_RIGHT_SHOULDER]:
        neck = (keypoints[_COCO_LEFT_SHOULDER, :2] + keypoints[_COCO_RIGHT_SHOULDER, :2]) / 2
        points[_LSP_NECK], found[_LSP_NECK] = neck, True
        face = [i for i in _COCO_FACE if coco_found[i]]
        if face:
            face_centre = keypoints[face, :2].mean(axis=0)
            points[_LSP_HEAD_TOP], found[_LSP_HEAD_TOP] = neck + 2 * (face_centre - neck), True
    points[~found] = 0.0
    return points, found


def _with_mid_hip(points: np.ndarray, present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Appends the hips' midpoint as point 14 (present when both hips are)."""
    mid = (points[:, _LSP_RIGHT_HIP] + points[:, _LSP_LEFT_HIP]) / 2
    both = present[:, _LSP_RIGHT_HIP] & present[:, _LSP_LEFT_HIP]
    return np.concatenate([points, mid[:, None]], axis=1), np.concatenate([present, both[:, None]], axis=1)


def _ratio(numerator: int, denominator: int) -> float | None:
    return float(numerator) / denominator if denominator else None


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def score_lsp(
    predicted: np.ndarray, predicted_found: np.ndarray, truth: np.ndarray, scored: np.ndarray,
    pck_threshold: float = 0.2, pcp_threshold: float = 0.5, pckh_threshold: float = 0.5,
) -> dict:
    """PCK, PCKh and strict PCP from arrays: predicted/truth (N, 14, 2), predicted_found/scored (N, 14) bool."""
    distance = np.linalg.norm(predicted - truth, axis=2)

    def per_joint_within(a: int, b: int, threshold: float) -> tuple[dict, np.ndarray, np.ndarray]:
        """Per joint, the share within ``threshold`` x |truth a - truth b| over the images where a and b are
        scored; also which joints counted and which images had the segment."""
        segment = np.linalg.norm(truth[:, a] - truth[:, b], axis=1)
        has_segment = scored[:, a] & scored[:, b] & (segment > 0)
        counted = scored & has_segment[:, None]
        correct = counted & predicted_found & (distance <= threshold * segment[:, None])
        return ({name: _ratio(int(correct[:, j].sum()), int(counted[:, j].sum()))
                 for j, name in enumerate(LSP_JOINT_NAMES)}, counted, has_segment)

    pck, pck_scored, has_torso = per_joint_within(_LSP_LEFT_SHOULDER, _LSP_RIGHT_HIP, pck_threshold)
    pckh, _, _ = per_joint_within(_LSP_NECK, _LSP_HEAD_TOP, pckh_threshold)

    predicted_ext, found_ext = _with_mid_hip(predicted, predicted_found)
    truth_ext, scored_ext = _with_mid_hip(truth, scored)
    pcp = {}
    for name, a, b in LSP_LIMBS:
        limb_length = np.linalg.norm(truth_ext[:, a] - truth_ext[:, b], axis=1)
        limit = pcp_threshold * limb_length
        limb_scored = scored_ext[:, a] & scored_ext[:, b]
        correct = (
            limb_scored & found_ext[:, a] & found_ext[:, b]
            & (np.linalg.norm(predicted_ext[:, a] - truth_ext[:, a], axis=1) <= limit)
            & (np.linalg.norm(predicted_ext[:, b] - truth_ext[:, b], axis=1) <= limit)
        )
        pcp[name] = _ratio(int(correct.sum()), int(limb_scored.sum()))

    return {
        "pck_threshold": pck_threshold,
        "pck": pck,
        "pck_mean": _mean(list(pck.values())),
        "pck_mean_body": _mean([pck[n] for n in LSP_JOINT_NAMES[:LSP_BODY_JOINT_COUNT]]),
        "pck_joints_scored": {name: int(pck_scored[:, j].sum()) for j, name in enumerate(LSP_JOINT_NAMES)},
        "images_without_torso": int((~has_torso).sum()),
        "pckh_threshold": pckh_threshold,
        "pckh": pckh,
        "pckh_mean": _mean(list(pckh.values())),
        "pckh_mean_body": _mean([pckh[n] for n in LSP_JOINT_NAMES[:LSP_BODY_JOINT_COUNT]]),
        "pcp_threshold": pcp_threshold,
        "pcp": pcp,
        "pcp_mean": _mean(list(pcp.values())),
    }


def evaluate_lsp(data_dir: Path, split: str, estimate: Estimator, config: LspEvalConfig = LspEvalConfig()) -> dict:
    """Single-person PCK@0.2 and strict PCP@0.5 of ``estimate`` on LSP-format data.

    ``split``: 'train' (im0001-im1000), 'test' (im1001-im2000) or 'all' for LSP; 'train' or 'all'
    (both: every image) for LSPET. Per-joint/per-limb values are None where nothing could be scored.
    """
    data_dir = Path(data_dir)
    dataset = read_lsp_dataset(data_dir)
    indices = list(lsp_split_indices(data_dir, len(dataset.image_paths), split))
    if config.max_images is not None:
        indices = indices[:config.max_images]
    image_paths = [dataset.image_paths[i] for i in indices]

    people_per_image, estimate_seconds = run_estimator(
        image_paths, estimate, config.batch_size, config.show_progress, f"LSP eval ({split})"
    )
    predicted = np.zeros((len(indices), len(LSP_JOINT_NAMES), 2))
    predicted_found = np.zeros((len(indices), len(LSP_JOINT_NAMES)), dtype=bool)
    for row, people in enumerate(people_per_image):
        person = best_person(people)
        if person is not None:
            predicted[row], predicted_found[row] = coco17_to_lsp(person.keypoints)

    metrics = score_lsp(
        predicted, predicted_found, dataset.joints[indices], dataset.scored()[indices],
        config.pck_threshold, config.pcp_threshold, config.pckh_threshold,
    )
    metrics.update({
        "dataset": dataset.layout,
        "split": split,
        "images": len(indices),
        "images_without_people": sum(1 for people in people_per_image if not people),
        "seconds_per_image": estimate_seconds / max(len(indices), 1),
        "notes": [NECK_NOTE, HEAD_TOP_NOTE, "torso limb = neck to hip midpoint", "best-scoring person per image"],
    })
    return metrics


def format_lsp_table(metrics: dict) -> str:
    """Per-joint PCK and per-limb strict PCP, with means; approximated joints are starred."""
    approximated = {"neck": "neck*", "head_top": "head_top**"}
    pck_rows = [
        (approximated.get(name, name), metrics["pck"][name], metrics["pckh"][name], metrics["pck_joints_scored"][name])
        for name in LSP_JOINT_NAMES
    ]
    pck_rows += [("mean (12 body)", metrics["pck_mean_body"], metrics["pckh_mean_body"], ""),
                 ("mean (14)", metrics["pck_mean"], metrics["pckh_mean"], "")]
    pcp_rows = [(name, metrics["pcp"][name]) for name, _, _ in LSP_LIMBS] + [("mean", metrics["pcp_mean"])]
    pck_header = ("joint", f"PCK@{metrics['pck_threshold']:g}", f"PCKh@{metrics['pckh_threshold']:g}", "scored")
    pcp_header = ("limb", f"PCP@{metrics['pcp_threshold']:g}")
    footer = (
        f"{metrics['dataset']} {metrics['split']}: {metrics['images']} images "
        f"({metrics['images_without_people']} with no person, {metrics['images_without_torso']} without a "
        f"torso to scale PCK), {metrics['seconds_per_image'] * 1000:.1f} ms/image in estimate\n"
        f"* {NECK_NOTE}\n** {HEAD_TOP_NOTE}"
    )
    return "\n\n".join([format_table(pck_rows, pck_header), format_table(pcp_rows, pcp_header), footer])
