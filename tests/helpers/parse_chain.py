"""The parse chain as the tests run it, and how they compare its people with the reference's."""
from __future__ import annotations

from types import ModuleType

import numpy as np
import pytest

from posestream import kernels
from posestream.kernels import ParseConfig
from posestream.kernels.reference import ReferencePerson
from tests.helpers.maps import HPE_0001, Layout

PARITY_POSITION_TOLERANCE = 1e-3  # map px, kernel vs reference
PARITY_SCORE_TOLERANCE = 1e-5


def run_chain(ops: ModuleType, heatmaps: np.ndarray, pafs: np.ndarray, config: ParseConfig = ParseConfig(),
              layout: Layout = HPE_0001, buffers: kernels.ParseBuffers | None = None) -> kernels.ParseBuffers:
    """The kernel chain on ``ops`` (the CPU kernels or a twin), as BottomUpEstimator.parse runs it."""
    frames = heatmaps.shape[0]
    if buffers is None:
        buffers = ops.allocate_parse_buffers(frames, layout.num_keypoints, len(layout.limbs), config.max_peaks,
                                             config.max_people)
    kernels.parse_maps(heatmaps, pafs, layout, config, buffers, ops=ops)
    assert_well_formed_people(buffers, frames, config)
    return buffers


def kernel_people(buffers: kernels.ParseBuffers, n: int) -> list[ReferencePerson]:
    """Frame n's people in reference_parse's form: (score, {keypoint: (x, y, peak score)})."""
    people = []
    for p in range(buffers.person_counts[n]):
        keypoints = {}
        for k, peak in enumerate(buffers.person_parts[n, p]):
            if peak >= 0:
                x, y = buffers.refined[n, k, peak]
                keypoints[k] = (float(x), float(y), float(buffers.peak_scores[n, k, peak]))
        people.append((float(buffers.person_scores[n, p]), keypoints))
    return people


def assert_well_formed_people(buffers: kernels.ParseBuffers, frames: int, config: ParseConfig) -> None:
    """Invariants of connect_parts' output that hold for any input."""
    capacity = buffers.person_parts.shape[1]
    for n in range(frames):
        count = buffers.person_counts[n]
        parts = buffers.person_parts[n, :count]
        scores = buffers.person_scores[n, :count]
        # People start from a limb, so never fewer than two keypoints, whatever min_parts says.
        assert ((parts >= 0).sum(axis=1) >= max(2, config.min_parts)).all()
        assert ((scores > 0) & (scores <= 1)).all()
        assert (np.diff(scores) <= 0).all(), f"frame {n}: people not sorted best first: {scores}"
        for k in range(parts.shape[1]):  # a peak belongs to at most one person
            used = parts[:, k][parts[:, k] >= 0]
            assert len(used) == len(set(used.tolist()))
            assert (used < buffers.peak_counts[n, k]).all()
        assert (buffers.person_parts[n, count:] == -1).all() and (buffers.person_scores[n, count:] == 0).all()
        assert buffers.people_dropped[n] >= 0 and (buffers.people_dropped[n] == 0 or count == capacity)


def assert_same_people(found: list[ReferencePerson], expected: list[ReferencePerson]) -> None:
    assert len(found) == len(expected)
    unclaimed = list(expected)
    for score, keypoints in found:
        twins = [person for person in unclaimed if person[1].keys() == keypoints.keys() and all(
            np.hypot(x - person[1][k][0], y - person[1][k][1]) <= PARITY_POSITION_TOLERANCE
            and peak_score == pytest.approx(person[1][k][2], abs=PARITY_SCORE_TOLERANCE)
            for k, (x, y, peak_score) in keypoints.items())]
        assert twins, f"kernel person (score {score:.4f}, {len(keypoints)} keypoints) has no reference twin"
        twin = min(twins, key=lambda person: abs(person[0] - score))
        assert score == pytest.approx(twin[0], abs=PARITY_SCORE_TOLERANCE)
        unclaimed.remove(twin)
