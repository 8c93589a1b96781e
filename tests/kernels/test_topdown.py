"""Top-down kernels against the slow reference: box NMS, OKS-NMS (kernels/boxes.py) and single-person decoding
(kernels/topdown.py), on hand-made cases and randomised inputs."""
from __future__ import annotations

import numpy as np
import pytest

from posestream.kernels.boxes import nms, oks_nms
from posestream.kernels.reference import reference_decode_single, reference_nms, reference_oks_nms
from posestream.kernels.topdown import decode_single
from posestream.pipeline.core.skeleton import COCO17_SIGMAS

SIGMAS = np.asarray(COCO17_SIGMAS, np.float32)


def run_nms(boxes, scores, threshold, capacity=64) -> np.ndarray:
    keep = np.full(capacity, -1, np.int64)
    count = nms(np.asarray(boxes, np.float32), np.asarray(scores, np.float32), threshold, keep)
    return keep[:count]


def run_oks_nms(keypoints, scores, areas, threshold, capacity=64) -> np.ndarray:
    keep = np.full(capacity, -1, np.int64)
    count = oks_nms(np.asarray(keypoints, np.float32), np.asarray(scores, np.float32),
                    np.asarray(areas, np.float32), SIGMAS, threshold, keep)
    return keep[:count]


# ------------------------------------------------------------------------------------------------ box NMS


def test_nms_keeps_the_best_of_overlapping_boxes_and_separate_boxes():
    boxes = [[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [0, 0, 10, 10.5]]
    scores = [0.6, 0.9, 0.5, 0.3]
    # box 1 wins its cluster (IoU(0,1) = 81/119 = 0.68), box 2 is alone
    assert run_nms(boxes, scores, 0.5).tolist() == [1, 2]
    # a threshold above every overlap keeps all, best first
    assert run_nms(boxes, scores, 0.99).tolist() == [1, 0, 2, 3]


def test_nms_ties_go_in_index_order_and_capacity_keeps_the_best():
    boxes = [[0, 0, 1, 1], [5, 5, 6, 6], [9, 9, 10, 10]]
    assert run_nms(boxes, [0.5, 0.5, 0.7], 0.5).tolist() == [2, 0, 1]
    assert run_nms(boxes, [0.5, 0.5, 0.7], 0.5, capacity=2).tolist() == [2, 0]


def test_nms_empty_and_degenerate_inputs():
    assert run_nms(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []
    # zero-area boxes never overlap anything; a NaN score is never kept
    assert run_nms([[1, 1, 1, 1], [1, 1, 1, 1], [0, 0, 2, 2]], [0.9, 0.8, np.nan], 0.1).tolist() == [0, 1]


def random_boxes(rng, count):
    corners = rng.uniform(0, 200, (count, 2))
    sizes = rng.uniform(2, 60, (count, 2))
    return np.concatenate([corners, corners + sizes], axis=1).astype(np.float32)


@pytest.mark.parametrize("seed", range(20))
def test_nms_matches_reference_on_random_boxes(seed):
    rng = np.random.default_rng(seed)
    count = int(rng.integers(1, 80))
    boxes = random_boxes(rng, count)
    scores = rng.uniform(0, 1, count).astype(np.float32)
    scores[rng.uniform(size=count) < 0.2] = 0.5  # ties
    threshold = float(rng.uniform(0.1, 0.8))
    capacity = int(rng.integers(1, 40))
    expected = reference_nms(boxes, scores, threshold, capacity)
    assert run_nms(boxes, scores, threshold, capacity).tolist() == expected.tolist()


# ------------------------------------------------------------------------------------------------ OKS-NMS


def person(centre_x, centre_y, height, rng=None, noise=0.0, found=None):
    """A rough standing person: 17 COCO joints around a centre, ``height`` pixels tall."""
    layout = np.array([[0, -0.45], [-0.03, -0.47], [0.03, -0.47], [-0.06, -0.45], [0.06, -0.45],
                       [-0.12, -0.3], [0.12, -0.3], [-0.16, -0.1], [0.16, -0.1], [-0.18, 0.08], [0.18, 0.08],
                       [-0.08, 0.05], [0.08, 0.05], [-0.08, 0.28], [0.08, 0.28], [-0.08, 0.5], [0.08, 0.5]])
    keypoints = np.ones((17, 3), np.float32)
    keypoints[:, :2] = layout * height + [centre_x, centre_y]
    if rng is not None:
        keypoints[:, :2] += rng.normal(0, noise, (17, 2))
    if found is not None:
        keypoints[~found] = 0.0
    return keypoints


def test_oks_nms_merges_a_person_found_twice_and_keeps_neighbours():
    rng = np.random.default_rng(0)
    people = np.stack([person(100, 100, 150), person(101, 99, 150, rng, 1.0), person(160, 100, 150)])
    areas = np.full(3, 150 * 60, np.float32)
    # the duplicate (1) scores best, so it is kept and the original (0) goes; the neighbour 60 px away stays
    assert run_oks_nms(people, [0.7, 0.8, 0.6], areas, 0.9).tolist() == [1, 2]


def test_oks_nms_uses_only_joints_both_found():
    upper = np.zeros(17, bool)
    upper[:11] = True
    lower = ~upper
    people = np.stack([person(100, 100, 150, found=upper), person(100, 100, 150, found=lower),
                       person(100, 100, 150)])
    areas = np.full(3, 9000, np.float32)
    # 0 and 1 share no joint: both kept; 2 shares joints with each and sits on them: suppressed
    assert run_oks_nms(people, [0.9, 0.8, 0.7], areas, 0.5).tolist() == [0, 1]


@pytest.mark.parametrize("seed", range(20))
def test_oks_nms_matches_reference_on_random_people(seed):
    rng = np.random.default_rng(100 + seed)
    count = int(rng.integers(1, 30))
    centres = rng.uniform(0, 300, (count, 2))
    heights = rng.uniform(40, 200, count)
    people = np.stack([person(x, y, h, rng, rng.uniform(0, 8), rng.uniform(size=17) > 0.2)
                       for (x, y), h in zip(centres, heights)])
    areas = (heights * heights * 0.4).astype(np.float32)
    scores = rng.uniform(0, 1, count).astype(np.float32)
    threshold = float(rng.uniform(0.3, 0.95))
    capacity = int(rng.integers(1, 32))
    expected = reference_oks_nms(people, scores, areas, SIGMAS, threshold, capacity)
    assert run_oks_nms(people, scores, areas, threshold, capacity).tolist() == expected.tolist()


# ------------------------------------------------------------------------------------------------ decode_single


def gaussian_maps(centres: np.ndarray, height: int, width: int, sigma: float) -> np.ndarray:
    """B x K x H x W float32 Gaussians of peak 1 at centres (B x K x 2, x y, pixel centres at integers)."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    dx = xs[None, None] - centres[..., 0, None, None]
    dy = ys[None, None] - centres[..., 1, None, None]
    return np.exp(-(dx * dx + dy * dy) / (2 * sigma * sigma)).astype(np.float32)


def run_decode(heatmaps, keypoints):
    xy = np.zeros((heatmaps.shape[0], keypoints, 2), np.float32)
    conf = np.zeros((heatmaps.shape[0], keypoints), np.float32)
    decode_single(np.ascontiguousarray(heatmaps, np.float32), xy, conf)
    return xy, conf


@pytest.mark.parametrize("sigma", [1.0, 1.5, 2.0, 3.0])
def test_decode_single_finds_sub_pixel_gaussian_centres(sigma):
    rng = np.random.default_rng(int(sigma * 10))
    centres = rng.uniform(2, [45, 61], (4, 17, 2)).astype(np.float32)  # away from the border
    maps = gaussian_maps(centres, 64, 48, sigma)
    maps *= rng.uniform(0.3, 1.0, (4, 17, 1, 1)).astype(np.float32)  # the peak height is the confidence
    xy, conf = run_decode(maps, 17)
    assert np.abs(xy - centres).max() < 0.05
    np.testing.assert_allclose(conf, maps.max(axis=(2, 3)), rtol=0, atol=1e-6)
    expected_xy, expected_conf = reference_decode_single(maps, 17)
    np.testing.assert_allclose(xy, expected_xy, atol=1e-4)
    np.testing.assert_array_equal(conf, expected_conf)


def test_decode_single_reads_only_the_first_k_channels_and_handles_edges_and_nan():
    maps = np.zeros((1, 4, 8, 8), np.float32)
    maps[0, 0, 0, 5] = 1.0  # on the top border: no fit along y
    maps[0, 0, 0, 4] = 0.5
    maps[0, 1] = np.nan
    maps[0, 2, 3, 3] = maps[0, 2, 3, 6] = 0.7  # two equal maxima: the first in raster order
    maps[0, 3] = 5.0  # a background channel, not decoded
    xy, conf = run_decode(maps, 3)
    expected_xy, expected_conf = reference_decode_single(maps, 3)
    np.testing.assert_allclose(xy, expected_xy, atol=1e-6)
    np.testing.assert_array_equal(conf, expected_conf)
    assert xy[0, 0, 1] == 0.0 and 4.5 < xy[0, 0, 0] < 5.0
    assert xy[0, 1].tolist() == [-1.0, -1.0] and conf[0, 1] == 0.0
    assert xy[0, 2].tolist() == [3.0, 3.0]


@pytest.mark.parametrize("seed", range(5))
def test_decode_single_matches_reference_on_noisy_maps(seed):
    rng = np.random.default_rng(200 + seed)
    maps = rng.uniform(-0.1, 1.0, (3, 19, 32, 24)).astype(np.float32)
    xy, conf = run_decode(maps, 18)
    expected_xy, expected_conf = reference_decode_single(maps, 18)
    np.testing.assert_allclose(xy, expected_xy, atol=1e-4)
    np.testing.assert_array_equal(conf, expected_conf)
