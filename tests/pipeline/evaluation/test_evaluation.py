"""COCO AP and LSP PCK/PCP on the real shared data, with estimators built from the ground truth itself.

pycocotools runs for real; the estimators look each image up by the hash of its pixels, so they do not
depend on the order or batching the evaluator uses.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from posestream.pipeline.core.errors import PosestreamError
from posestream.pipeline.core.skeleton import COCO17_NAMES
from posestream.pipeline.core.types import Person
from posestream.pipeline.evaluation.coco import CocoEvalConfig, evaluate_coco, format_coco_table, person_to_coco_result
from posestream.pipeline.evaluation.lsp import (
    LSP_FROM_COCO17,
    LSP_JOINT_NAMES,
    LspEvalConfig,
    coco17_to_lsp,
    evaluate_lsp,
    format_lsp_table,
    load_lsp_annotations,
    score_lsp,
)

QUIET = dict(show_progress=False)
LSP_TEST_IMAGES = 20
BODY_JOINTS = LSP_JOINT_NAMES[:12]
LEFT_BODY_JOINTS = tuple(n for n in BODY_JOINTS if n.startswith("left_"))
RIGHT_BODY_JOINTS = tuple(n for n in BODY_JOINTS if n.startswith("right_"))
# Arm and leg limbs as LSP index pairs, written out here independently of the module's table.
ARM_LEG_LIMBS = {
    "right_upper_arm": (8, 7), "right_forearm": (7, 6), "left_upper_arm": (9, 10), "left_forearm": (10, 11),
    "right_thigh": (2, 1), "right_lower_leg": (1, 0), "left_thigh": (3, 4), "left_lower_leg": (4, 5),
}
LSP_LEFT_SHOULDER, LSP_RIGHT_HIP = 9, 2


def pixel_key(image: np.ndarray) -> str:
    return hashlib.sha1(image.tobytes()).hexdigest()


def estimator_from(people_for_key: Callable[[str], list[Person]]):
    def estimate(images: list[np.ndarray]) -> list[list[Person]]:
        return [people_for_key(pixel_key(image)) for image in images]
    return estimate


def nobody(images: list[np.ndarray]) -> list[list[Person]]:
    return [[] for _ in images]


# ----------------------------------------------------------------------------------------------
# COCO (mmpose's 4 val2017 images, 12 annotated people)


@pytest.fixture(scope="module")
def coco_dir(shared) -> Path:
    return shared / "data" / "mmpose" / "coco"


@pytest.fixture(scope="module")
def coco_truth(coco_dir) -> tuple[dict, dict[str, int]]:
    """The json, and image id by pixel hash."""
    dataset = json.loads((coco_dir / "test_coco.json").read_text())
    id_by_key = {pixel_key(cv2.imread(str(coco_dir / im["file_name"]))): im["id"] for im in dataset["images"]}
    return dataset, id_by_key


def coco_people(dataset: dict, image_id: int, rng: np.random.Generator | None = None, shift: float = 0.0,
                fill_missing: bool = False) -> list[Person]:
    """The annotated people of one image as Persons: noise (1 px sd) and/or a shift of every keypoint."""
    people = []
    for annotation in dataset["annotations"]:
        if annotation["image_id"] != image_id or annotation["num_keypoints"] == 0:
            continue
        truth = np.asarray(annotation["keypoints"], dtype=np.float32).reshape(17, 3)
        found = truth[:, 2] > 0
        keypoints = np.zeros((17, 3), np.float32)
        keypoints[found, :2] = truth[found, :2] + shift
        if rng is not None:
            keypoints[found, :2] += rng.normal(0.0, 1.0, size=(found.sum(), 2))
        keypoints[found, 2] = 0.9
        if fill_missing:  # every keypoint "found": unannotated ones at the box centre
            x, y, w, h = annotation["bbox"]
            keypoints[~found] = (x + w / 2, y + h / 2, 0.1)
        people.append(Person(0.9, keypoints, tuple(annotation["bbox"])))
    return people


def coco_estimator(coco_truth, **options):
    dataset, id_by_key = coco_truth
    return estimator_from(lambda key: coco_people(dataset, id_by_key[key], **options))


@pytest.mark.shared
def test_coco_ground_truth_with_small_noise_scores_ap_near_one(coco_dir, coco_truth):
    estimate = coco_estimator(coco_truth, rng=np.random.default_rng(0))
    metrics = evaluate_coco(coco_dir, coco_dir / "test_coco.json", estimate, CocoEvalConfig(batch_size=3, **QUIET))
    assert metrics["AP"] > 0.9 and metrics["AP50"] == pytest.approx(1.0) and metrics["AR50"] == pytest.approx(1.0)
    assert (metrics["images"], metrics["people_gt"], metrics["people_detected"]) == (4, 12, 12)
    exact = evaluate_coco(coco_dir, coco_dir / "test_coco.json", coco_estimator(coco_truth), CocoEvalConfig(**QUIET))
    assert exact["AP"] == pytest.approx(1.0) and exact["AR"] == pytest.approx(1.0)
    assert metrics["seconds_per_image"] >= 0


@pytest.mark.shared
def test_coco_estimator_finding_nobody_scores_zero(coco_dir):
    metrics = evaluate_coco(coco_dir, coco_dir / "test_coco.json", nobody, CocoEvalConfig(**QUIET))
    assert metrics["AP"] == 0.0 and metrics["AR"] == 0.0
    assert metrics["people_detected"] == 0 and metrics["people_gt"] == 12


@pytest.mark.shared
def test_coco_shifted_keypoints_score_clearly_lower(coco_dir, coco_truth):
    annotation_file = coco_dir / "test_coco.json"
    shifted_5 = evaluate_coco(coco_dir, annotation_file, coco_estimator(coco_truth, shift=5.0), CocoEvalConfig(**QUIET))
    shifted_10 = evaluate_coco(coco_dir, annotation_file, coco_estimator(coco_truth, shift=10.0), CocoEvalConfig(**QUIET))
    assert 0.0 < shifted_10["AP"] < shifted_5["AP"] < 0.7


@pytest.mark.shared
def test_coco_agrees_with_pycocotools_loadres_when_every_keypoint_is_found(coco_dir, coco_truth):
    # With no missing keypoints our own results object and pycocotools' loadRes must give the same stats.
    dataset, id_by_key = coco_truth
    options = dict(shift=3.0, fill_missing=True)
    metrics = evaluate_coco(coco_dir, coco_dir / "test_coco.json", coco_estimator(coco_truth, **options), CocoEvalConfig(**QUIET))

    truth = COCO(str(coco_dir / "test_coco.json"))
    results = [person_to_coco_result(p, im["id"]) for im in dataset["images"] for p in coco_people(dataset, im["id"], **options)]
    reference = COCOeval(truth, truth.loadRes(results), "keypoints")
    reference.evaluate()
    reference.accumulate()
    reference.summarize()
    assert [metrics[k] for k in ("AP", "AP50", "AP75", "AP_M", "AP_L", "AR", "AR50", "AR75", "AR_M", "AR_L")] == \
        pytest.approx(list(reference.stats))


@pytest.mark.shared
def test_coco_runs_only_person_images_and_honours_max_images(coco_dir, coco_truth, tmp_path):
    dataset = json.loads((coco_dir / "test_coco.json").read_text())
    # An image without annotations (and without a file): COCO convention is not to run or score it.
    dataset["images"].append({"id": 999, "file_name": "not_there.jpg", "width": 10, "height": 10})
    annotation_file = tmp_path / "extra_image.json"
    annotation_file.write_text(json.dumps(dataset))
    metrics = evaluate_coco(coco_dir, annotation_file, coco_estimator(coco_truth), CocoEvalConfig(**QUIET))
    assert metrics["images"] == 4 and metrics["AP"] == pytest.approx(1.0)

    first_two = evaluate_coco(coco_dir, annotation_file, coco_estimator(coco_truth), CocoEvalConfig(max_images=2, **QUIET))
    assert first_two["images"] == 2 and first_two["people_gt"] == 3  # ids 785 (1 person) and 40083 (2 + 1 empty)
    assert first_two["AP"] == pytest.approx(1.0)  # the people of images not run are not counted as missed


@pytest.mark.shared
def test_coco_bad_inputs_name_the_path(coco_dir, tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(PosestreamError, match="nope.json.*not found"):
        evaluate_coco(coco_dir, missing, nobody, CocoEvalConfig(**QUIET))

    not_json = tmp_path / "garbage.json"
    not_json.write_text("{ this is not json")
    with pytest.raises(PosestreamError, match="garbage.json.*not JSON"):
        evaluate_coco(coco_dir, not_json, nobody, CocoEvalConfig(**QUIET))

    dataset = json.loads((coco_dir / "test_coco.json").read_text())
    for annotation in dataset["annotations"]:
        del annotation["keypoints"]
    no_keypoints = tmp_path / "boxes_only.json"
    no_keypoints.write_text(json.dumps(dataset))
    with pytest.raises(PosestreamError, match="boxes_only.json.*no person keypoint annotations"):
        evaluate_coco(coco_dir, no_keypoints, nobody, CocoEvalConfig(**QUIET))

    images_dir = tmp_path / "images"
    images_dir.mkdir()
    for name in ("000000000785.jpg", "000000040083.jpg", "000000197388.jpg"):
        shutil.copy(coco_dir / name, images_dir / name)
    with pytest.raises(PosestreamError) as caught:
        evaluate_coco(images_dir, coco_dir / "test_coco.json", nobody, CocoEvalConfig(**QUIET))
    assert str(images_dir / "000000196141.jpg") in str(caught.value) and "missing" in str(caught.value)


@pytest.mark.shared
def test_coco_estimator_returning_wrong_count_is_an_error(coco_dir):
    with pytest.raises(PosestreamError, match="returned 0 results for 2 images"):
        evaluate_coco(coco_dir, coco_dir / "test_coco.json", lambda images: [], CocoEvalConfig(batch_size=2, **QUIET))


# ----------------------------------------------------------------------------------------------
# LSP / LSPET loader against the raw .mat files


@pytest.mark.shared
def test_lsp_loader_reads_3x14xN_with_flag_one_meaning_occluded(shared):
    data_dir = shared / "data" / "lsp"
    raw = scipy.io.loadmat(str(data_dir / "joints.mat"))["joints"]  # 3 x 14 x 2000
    paths, joints, visible = load_lsp_annotations(data_dir)
    assert len(paths) == 2000 and paths[0].name == "im0001.jpg" and paths[-1].name == "im2000.jpg"
    assert joints.shape == (2000, 14, 2) and visible.shape == (2000, 14) and visible.dtype == bool
    assert joints[0, 0] == pytest.approx(raw[:2, 0, 0])  # im0001 right ankle
    assert joints[1000, 13] == pytest.approx(raw[:2, 13, 1000])  # im1001 head top
    np.testing.assert_array_equal(visible, raw[2].T == 0)
    assert (~visible).sum() == (raw[2] == 1).sum() == 2044


@pytest.mark.shared
def test_lspet_loader_reads_14x3xN_with_flag_one_meaning_visible(shared):
    data_dir = shared / "data" / "lspet"
    raw = scipy.io.loadmat(str(data_dir / "joints.mat"))["joints"]  # 14 x 3 x 10000
    paths, joints, visible = load_lsp_annotations(data_dir)
    assert len(paths) == 10000 and paths[0].name == "im00001.jpg" and paths[-1].name == "im10000.jpg"
    assert joints.shape == (10000, 14, 2) and visible.shape == (10000, 14)
    assert joints[0, 1] == pytest.approx(raw[1, :2, 0])  # im00001 right knee
    assert not visible[0, 0] and visible[0, 1]  # im00001: right ankle unannotated (flag 0), knee flag 1
    np.testing.assert_array_equal(visible, raw[:, 2, :].T == 1)


# ----------------------------------------------------------------------------------------------
# LSP PCK / PCP with estimators built from the ground truth


@pytest.fixture(scope="module")
def lsp_truth(shared) -> tuple[Path, np.ndarray, dict[str, int]]:
    """The LSP folder, its joints, and image index by pixel hash for the first test-split images."""
    data_dir = shared / "data" / "lsp"
    paths, joints, _ = load_lsp_annotations(data_dir)
    index_by_key = {pixel_key(cv2.imread(str(paths[i]))): i for i in range(1000, 1000 + LSP_TEST_IMAGES)}
    return data_dir, joints, index_by_key


def lsp_person(lsp_joints: np.ndarray, score: float = 0.9, with_face: bool = False) -> Person:
    """LSP joints of one image as a COCO-17 Person; with_face puts the nose halfway between the shoulder
    midpoint and the true head top, where the documented head-top rule expects it."""
    keypoints = np.zeros((17, 3), np.float32)
    for lsp_index, coco_index in enumerate(LSP_FROM_COCO17):
        keypoints[coco_index] = (*lsp_joints[lsp_index], 1.0)
    if with_face:
        shoulder_mid = (lsp_joints[8] + lsp_joints[9]) / 2
        keypoints[COCO17_NAMES.index("nose")] = (*((shoulder_mid + lsp_joints[13]) / 2), 1.0)
    return Person(score, keypoints, (0.0, 0.0, 1.0, 1.0))


def torso_sizes(joints: np.ndarray) -> np.ndarray:
    return np.linalg.norm(joints[:, LSP_LEFT_SHOULDER] - joints[:, LSP_RIGHT_HIP], axis=1)


def lsp_estimator(lsp_truth, shift_in_torsos: float = 0.0, shifted_joints: tuple[str, ...] = LSP_JOINT_NAMES,
                  with_face: bool = False):
    """Ground truth with the named joints moved right by a fraction of that image's torso size."""
    _, joints, index_by_key = lsp_truth
    torsos = torso_sizes(joints)
    rows = [LSP_JOINT_NAMES.index(n) for n in shifted_joints]

    def people(key: str) -> list[Person]:
        i = index_by_key[key]
        moved = joints[i].copy()
        moved[rows, 0] += shift_in_torsos * torsos[i]
        return [lsp_person(moved, with_face=with_face)]
    return estimator_from(people)


def run_lsp(lsp_truth, estimate, **config) -> dict:
    data_dir = lsp_truth[0]
    return evaluate_lsp(data_dir, "test", estimate, LspEvalConfig(max_images=LSP_TEST_IMAGES, show_progress=False, **config))


@pytest.mark.shared
def test_lsp_ground_truth_scores_full_pck_on_body_joints_and_full_pcp_on_limbs(lsp_truth):
    metrics = run_lsp(lsp_truth, lsp_estimator(lsp_truth), batch_size=3)
    assert metrics["images"] == LSP_TEST_IMAGES and metrics["dataset"] == "lsp"
    assert all(metrics["pck"][n] == 1.0 for n in BODY_JOINTS)
    assert metrics["pck_mean_body"] == 1.0
    assert all(metrics["pcp"][n] == 1.0 for n in ARM_LEG_LIMBS)
    # No face keypoints: head top cannot be estimated, and a missing joint counts as wrong.
    assert metrics["pck"]["head_top"] == 0.0 and metrics["pcp"]["head"] == 0.0
    assert metrics["pck_mean"] < 1.0


@pytest.mark.shared
def test_lsp_head_top_follows_the_documented_rule(lsp_truth):
    metrics = run_lsp(lsp_truth, lsp_estimator(lsp_truth, with_face=True))
    assert metrics["pck"]["head_top"] == 1.0


@pytest.mark.shared
def test_lsp_pck_threshold_is_a_fifth_of_the_torso(lsp_truth):
    inside = run_lsp(lsp_truth, lsp_estimator(lsp_truth, shift_in_torsos=0.15))
    outside = run_lsp(lsp_truth, lsp_estimator(lsp_truth, shift_in_torsos=0.25))
    assert inside["pck_mean_body"] == 1.0 and outside["pck_mean_body"] == 0.0


@pytest.mark.shared
def test_lsp_shifting_one_side_halves_body_pck(lsp_truth):
    metrics = run_lsp(lsp_truth, lsp_estimator(lsp_truth, 0.3, shifted_joints=LEFT_BODY_JOINTS))
    assert all(metrics["pck"][n] == 0.0 for n in LEFT_BODY_JOINTS)
    assert all(metrics["pck"][n] == 1.0 for n in RIGHT_BODY_JOINTS)
    assert metrics["pck_mean_body"] == pytest.approx(0.5)
    assert all(metrics["pcp"][n] == 1.0 for n in ARM_LEG_LIMBS if n.startswith("right_"))


@pytest.mark.shared
def test_lsp_strict_pcp_is_half_the_true_limb_length(lsp_truth):
    # Every joint moved by 0.3 torso: a limb stays correct exactly where 0.3 torso <= 0.5 limb length.
    _, joints, _ = lsp_truth
    test_joints = joints[1000:1000 + LSP_TEST_IMAGES]
    shift = 0.3 * torso_sizes(test_joints)
    metrics = run_lsp(lsp_truth, lsp_estimator(lsp_truth, 0.3))
    for name, (a, b) in ARM_LEG_LIMBS.items():
        limb_length = np.linalg.norm(test_joints[:, a] - test_joints[:, b], axis=1)
        assert metrics["pcp"][name] == pytest.approx(np.mean(shift <= 0.5 * limb_length)), name
    assert 0.0 < metrics["pcp_mean"] < 1.0


@pytest.mark.shared
def test_lsp_takes_the_best_scoring_person_not_the_nearest(lsp_truth):
    _, joints, index_by_key = lsp_truth

    def two_people(truth_score: float, decoy_score: float):
        def people(key: str) -> list[Person]:
            truth = joints[index_by_key[key]]
            return [lsp_person(truth, score=truth_score), lsp_person(truth + 500.0, score=decoy_score)]
        return estimator_from(people)

    assert run_lsp(lsp_truth, two_people(0.4, 0.8))["pck_mean_body"] == 0.0
    assert run_lsp(lsp_truth, two_people(0.8, 0.4))["pck_mean_body"] == 1.0


@pytest.mark.shared
def test_lsp_estimator_finding_nobody_scores_zero(lsp_truth):
    metrics = run_lsp(lsp_truth, nobody)
    assert metrics["pck_mean"] == 0.0 and metrics["pcp_mean"] == 0.0
    assert metrics["images_without_people"] == LSP_TEST_IMAGES
    table = format_lsp_table(metrics)
    assert "head_top**" in table and "PCK@0.2" in table and "PCP@0.5" in table and "approximated" in table


@pytest.mark.shared
def test_lspet_scores_only_visible_joints_and_has_no_test_split(shared):
    data_dir = shared / "data" / "lspet"
    paths, joints, visible = load_lsp_annotations(data_dir)
    index_by_key = {pixel_key(cv2.imread(str(paths[i]))): i for i in range(5)}
    estimate = estimator_from(lambda key: [lsp_person(joints[index_by_key[key]])])
    metrics = evaluate_lsp(data_dir, "train", estimate, LspEvalConfig(max_images=5, show_progress=False))
    assert metrics["dataset"] == "lspet" and metrics["images"] == 5
    scored_body = [metrics["pck"][n] for n in BODY_JOINTS if metrics["pck_joints_scored"][n] > 0]
    assert scored_body and all(v == 1.0 for v in scored_body)
    assert metrics["pck_joints_scored"]["right_ankle"] <= visible[:5, 0].sum()

    with pytest.raises(PosestreamError, match="'test' exists only for LSP"):
        evaluate_lsp(data_dir, "test", nobody, LspEvalConfig(show_progress=False))
    with pytest.raises(PosestreamError, match="unknown"):
        evaluate_lsp(shared / "data" / "lsp", "val", nobody, LspEvalConfig(show_progress=False))


# ----------------------------------------------------------------------------------------------
# Pure pieces, no shared data


def test_coco17_to_lsp_maps_body_joints_and_builds_neck_and_head_top():
    keypoints = np.zeros((17, 3), np.float32)
    keypoints[COCO17_NAMES.index("right_ankle")] = (10, 200, 0.8)
    keypoints[COCO17_NAMES.index("left_shoulder")] = (60, 50, 0.9)
    keypoints[COCO17_NAMES.index("right_shoulder")] = (40, 50, 0.9)
    keypoints[COCO17_NAMES.index("left_ear")] = (55, 30, 0.5)
    keypoints[COCO17_NAMES.index("right_ear")] = (45, 30, 0.5)
    points, found = coco17_to_lsp(keypoints)
    assert found[LSP_JOINT_NAMES.index("right_ankle")] and not found[LSP_JOINT_NAMES.index("left_ankle")]
    assert points[LSP_JOINT_NAMES.index("right_ankle")] == pytest.approx((10, 200))
    assert points[LSP_JOINT_NAMES.index("left_shoulder")] == pytest.approx((60, 50))
    assert points[LSP_JOINT_NAMES.index("neck")] == pytest.approx((50, 50))
    assert points[LSP_JOINT_NAMES.index("head_top")] == pytest.approx((50, 10))  # 50 + 2 * (30 - 50)

    keypoints[COCO17_NAMES.index("right_shoulder")] = 0  # no neck, so no head top either
    _, found = coco17_to_lsp(keypoints)
    assert not found[LSP_JOINT_NAMES.index("neck")] and not found[LSP_JOINT_NAMES.index("head_top")]


def test_score_lsp_counts_missing_joints_as_wrong_and_skips_unscored_ones():
    truth = np.zeros((2, 14, 2))
    truth[:, LSP_RIGHT_HIP] = (0, 100)  # torso = 100 with the left shoulder at the origin
    predicted = truth.copy()
    predicted[:, 0] += (19, 0)  # right ankle: inside 0.2 * 100
    predicted[:, 1] += (21, 0)  # right knee: outside
    found = np.ones((2, 14), bool)
    found[0, 5] = False  # left ankle missing in the first image
    scored = np.ones((2, 14), bool)
    scored[1, 4] = False  # left knee not annotated in the second image
    metrics = score_lsp(predicted, found, truth, scored)
    assert metrics["pck"]["right_ankle"] == 1.0 and metrics["pck"]["right_knee"] == 0.0
    assert metrics["pck"]["left_ankle"] == 0.5
    assert metrics["pck_joints_scored"]["left_knee"] == 1
    # Left lower leg (knee-ankle): image 0 misses the ankle, image 1's knee is not scored -> 0 of 1.
    assert metrics["pcp"]["left_lower_leg"] == 0.0


def test_coco_config_rejects_bad_values():
    with pytest.raises(PosestreamError, match="batch_size"):
        CocoEvalConfig(batch_size=0)
    with pytest.raises(PosestreamError, match="max_images"):
        LspEvalConfig(max_images=0)


def test_format_coco_table_lists_every_stat():
    metrics = {k: 0.5 for k in ("AP", "AP50", "AP75", "AP_M", "AP_L", "AR", "AR50", "AR75", "AR_M", "AR_L")}
    metrics.update(images=4, people_gt=12, people_detected=10, seconds_per_image=0.02)
    table = format_coco_table(metrics)
    assert "AP_M" in table and "0.500" in table and "people annotated 12" in table and "20.0 ms/image" in table
