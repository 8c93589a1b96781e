"""MPII PCKh@0.5 (eval mpii) and LSP's PCKh column, scored against estimators built from the truth."""
from __future__ import annotations

import json

import numpy as np
import pytest

from posestream.pipeline.core.errors import PosestreamError
from posestream.pipeline.core.skeleton import COCO17_NAMES
from posestream.pipeline.core.types import Person
from posestream.pipeline.evaluation.lsp import score_lsp
from posestream.pipeline.evaluation.mpii import (
    BODY_JOINTS,
    MPII_JOINT_NAMES,
    MpiiEvalConfig,
    evaluate_mpii,
    read_mpii_annotations,
)


def person_from_mpii(joints: np.ndarray, shift: float = 0.0) -> Person:
    keypoints = np.zeros((17, 3), np.float32)
    for name in BODY_JOINTS:
        keypoints[COCO17_NAMES.index(name)] = (*(joints[MPII_JOINT_NAMES.index(name)] + shift), 0.9)
    return Person(score=1.0, keypoints=keypoints, bbox=(0.0, 0.0, 1.0, 1.0))


@pytest.mark.shared
def test_truth_scores_one_and_a_shift_past_half_the_head_scores_zero(shared):
    folder = shared / "data/mmpose/mpii"
    annotations = folder / "test_mpii.json"
    by_image = read_mpii_annotations(annotations)

    def estimator_with(shift_in_heads: float):
        names = iter(sorted(by_image))

        def estimate(images):
            people = by_image[next(names)]
            return [[person_from_mpii(p.joints, shift_in_heads * p.head_size) for p in reversed(people)]]
        return estimate

    perfect = evaluate_mpii(folder, annotations, estimator_with(0.0), MpiiEvalConfig(show_progress=False))
    assert perfect["pckh_mean_body"] == 1.0 and perfect["people"] == len(json.loads(annotations.read_text()))
    # Each coordinate moved by 0.3 heads: 0.42 heads away, inside 0.5; by 0.4: 0.57 heads, outside.
    assert evaluate_mpii(folder, annotations, estimator_with(0.3),
                         MpiiEvalConfig(show_progress=False))["pckh_mean_body"] == 1.0
    assert evaluate_mpii(folder, annotations, estimator_with(0.4),
                         MpiiEvalConfig(show_progress=False))["pckh_mean_body"] == 0.0
    nobody = evaluate_mpii(folder, annotations, lambda images: [[]], MpiiEvalConfig(show_progress=False))
    assert nobody["pckh_mean_body"] == 0.0


def test_a_malformed_entry_is_named(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"image": "a.jpg", "joints": [[0, 0]] * 3, "joints_vis": [1] * 16}]))
    with pytest.raises(PosestreamError, match="entry 0"):
        read_mpii_annotations(bad)


def test_lsp_pckh_uses_half_the_neck_to_head_top_segment():
    truth = np.zeros((1, 14, 2))
    truth[0, :, 0] = np.arange(14) * 10.0
    truth[0, 12] = (0.0, 0.0)  # neck
    truth[0, 13] = (0.0, 20.0)  # head top: head segment 20, PCKh@0.5 radius 10
    predicted = truth.copy()
    predicted[0, 0] += (9.0, 0.0)  # right ankle inside
    predicted[0, 1] += (11.0, 0.0)  # right knee outside
    metrics = score_lsp(predicted, np.ones((1, 14), bool), truth, np.ones((1, 14), bool))
    assert metrics["pckh"]["right_ankle"] == 1.0 and metrics["pckh"]["right_knee"] == 0.0
    assert metrics["pckh_mean_body"] == pytest.approx(11 / 12)
