"""The parse kernels: peak finding and refinement units, hand-made scenes through the whole chain, and parity
with the slow reference in kernels/reference.py on randomised synthetic maps.

Maps come from tests/maps.py (OpenPose-style ground truth for the real hpe-0001 COCO-18 layout, 46 x 82).
The chain glue below calls the kernels in the order and with the arguments BottomUpEstimator.parse uses.
"""
from __future__ import annotations

import os
from types import ModuleType

import numpy as np
import pytest

import posestream.kernels.cuda as cuda_kernels  # importing needs no GPU: its kernels run only where device_available()
from posestream import kernels
from posestream.kernels import ParseConfig
from posestream.kernels.reference import (
    ReferencePerson,
    reference_assign,
    reference_connect_parts,
    reference_find_peaks,
    reference_paf_score_graph,
    reference_parse,
    reference_refine_peaks,
    reference_refine_peaks_centroid,
    reference_softargmax,
)
from tests.helpers.maps import (
    HPE_0001,
    Layout,
    Person,
    add_noise,
    random_people,
    render_batch,
    render_maps,
    standing_person,
)
from tests.helpers.parse_chain import (
    PARITY_POSITION_TOLERANCE,
    PARITY_SCORE_TOLERANCE,
    assert_same_people,
    kernel_people,
    run_chain,
)

# Kernel implementations that must all agree with the reference. The CUDA twins join on a GPU, or in Numba's
# CUDA simulator (NUMBA_ENABLE_CUDASIM=1 before numba is imported: tests/test_cuda_simulator.py runs them so).
KERNEL_BACKENDS: dict[str, ModuleType] = {"numba-cpu": kernels}
if cuda_kernels.device_available():
    KERNEL_BACKENDS["numba-cuda"] = cuda_kernels
POSITION_TOLERANCE = 0.25  # map px from the true sub-pixel position, for the hand-made scenes


@pytest.fixture(params=sorted(KERNEL_BACKENDS))
def backend(request) -> ModuleType:
    if (request.param == "numba-cuda" and cuda_kernels.simulated()
            and request.node.get_closest_marker("slow_in_cuda_simulator")
            and not os.environ.get("POSESTREAM_SLOW_CUDA_SIMULATION")):
        pytest.skip("minutes in the CUDA simulator; tests/test_kernels_cuda.py checks parity on small maps there")
    return KERNEL_BACKENDS[request.param]


def assert_found_people_match_truth(found: list[ReferencePerson], truth: list[Person]) -> None:
    """Each found person is exactly one true person: the same keypoints, each within POSITION_TOLERANCE."""
    assert len(found) == len(truth), f"found {len(found)} people, expected {len(truth)}"
    unclaimed = list(range(len(truth)))
    for score, keypoints in found:
        errors = {t: max((float(np.hypot(x - truth[t][k][0], y - truth[t][k][1]))
                          for k, (x, y, _) in keypoints.items() if k in truth[t]), default=np.inf)
                  for t in unclaimed}
        best = min(errors, key=errors.get)
        names = sorted(HPE_0001.keypoints[k] for k in keypoints)
        assert set(keypoints) == set(truth[best]), (
            f"person (score {score:.3f}) has {names}; the true person nearest it has "
            f"{sorted(HPE_0001.keypoints[k] for k in truth[best])}")
        assert errors[best] <= POSITION_TOLERANCE, f"person (score {score:.3f}) is {errors[best]:.3f} px off"
        unclaimed.remove(best)


def single_channel_maps(values: dict[tuple[int, int], float], height: int = 20, width: int = 30) -> np.ndarray:
    """One frame, one keypoint channel: the given (y, x) -> value pixels, zero elsewhere. 1 x 1 x H x W."""
    heatmaps = np.zeros((1, 1, height, width), np.float32)
    for (y, x), value in values.items():
        heatmaps[0, 0, y, x] = value
    return heatmaps


def found_peaks(ops: ModuleType, heatmaps: np.ndarray, threshold: float = 0.1, window: int = 1,
                max_peaks: int = 16):
    """-> ([(y, x), ...] best first, [score, ...]) for frame 0, keypoint 0 of a single-channel map."""
    counts = np.zeros((1, 1), np.int32)
    peaks = np.zeros((1, 1, max_peaks, 2), np.int32)
    scores = np.zeros((1, 1, max_peaks), np.float32)
    ops.find_peaks(heatmaps, 1, threshold, window, counts, peaks, scores, np.zeros(kernels.MAX_MAP_WIDTH, np.bool_))
    count = counts[0, 0]
    assert (peaks[0, 0, count:] == -1).all() and (scores[0, 0, count:] == 0).all()
    return [tuple(p) for p in peaks[0, 0, :count].tolist()], scores[0, 0, :count].tolist()


def refined_position(ops: ModuleType, heatmap: np.ndarray, y: int, x: int) -> tuple[float, float]:
    """refine_peaks on one H x W map with one given integer peak (y, x) -> refined (x, y)."""
    refined = np.zeros((1, 1, 1, 2), np.float32)
    ops.refine_peaks(heatmap[None, None].astype(np.float32), np.ones((1, 1), np.int32),
                     np.array([[[[y, x]]]], np.int32), refined)
    return float(refined[0, 0, 0, 0]), float(refined[0, 0, 0, 1])


# ---------------------------------------------------------------------------------------------- find_peaks


def test_find_peaks_plateau_gives_one_peak_at_its_first_pixel_in_raster_order(backend):
    plateau = {(y, x): 0.8 for y in (5, 6) for x in (10, 11, 12)}
    peaks, scores = found_peaks(backend, single_channel_maps(plateau), window=1)
    assert peaks == [(5, 10)] and scores == pytest.approx([0.8])
    # The same with a wider window and a plateau that fits in it.
    peaks, _ = found_peaks(backend, single_channel_maps({(8, 8): 0.5, (8, 9): 0.5, (9, 8): 0.5}), window=2)
    assert peaks == [(8, 8)]


def test_find_peaks_keeps_values_at_or_above_threshold_only(backend):
    values = {(3, 3): 0.2499, (3, 10): 0.25, (3, 17): 0.2501, (10, 10): 0.9}
    peaks, scores = found_peaks(backend, single_channel_maps(values), threshold=0.25)
    # "At least": a value exactly at the threshold is a peak (the CUDA twin must agree).
    assert sorted(peaks) == [(3, 10), (3, 17), (10, 10)]
    assert min(scores) >= 0.25


def test_find_peaks_nan_is_never_a_peak_and_suppresses_nothing(backend):
    heatmaps = single_channel_maps({(2, 2): 0.9, (8, 8): 0.7})
    heatmaps[0, 0, 2, 3] = np.nan
    heatmaps[0, 0, 12, 12] = np.nan
    peaks, scores = found_peaks(backend, heatmaps)
    assert peaks == [(2, 2), (8, 8)] and scores == pytest.approx([0.9, 0.7])
    assert reference_find_peaks(heatmaps, 1, 0.1, 1, 16)[1][0, 0, :2].tolist() == [[2, 2], [8, 8]]


def test_refine_peaks_skips_the_fit_next_to_a_nan(backend):
    heatmap = np.zeros((9, 9), np.float32)
    heatmap[4, 3:6] = (0.5, 0.9, 0.7)
    heatmap[3:6, 4] = (0.6, 0.9, 0.6)
    heatmap[4, 5] = np.nan  # the right neighbour: no fit along x, the y fit still runs
    x, y = refined_position(backend, heatmap, 4, 4)
    assert x == 4.0 and y == pytest.approx(4.0)


def test_refine_peaks_reads_only_the_batch_when_buffers_hold_more_frames(backend):
    heatmaps = single_channel_maps({(5, 5): 0.9})
    buffers = kernels.allocate_parse_buffers(4, 1, 0, 8, 4)
    buffers.peak_counts[:] = 3  # stale counts in frames 1..3 must not be read: those maps do not exist
    buffers.peak_counts[0] = 1
    buffers.peaks[0, 0, 0] = (5, 5)
    buffers.refined[1:] = 7.0
    backend.refine_peaks(heatmaps, buffers.peak_counts, buffers.peaks, buffers.refined)
    assert buffers.refined[0, 0, 0].tolist() == [5.0, 5.0]
    assert (buffers.refined[1:] == 7.0).all()


def test_assign_leaves_no_stale_matches_past_the_count(backend):
    limbs = np.array([[0, 1]], np.int32)
    peak_counts = np.array([[1, 1]], np.int32)
    match_counts = np.zeros((1, 1), np.int32)
    matches = np.full((1, 1, 2, 2), -1, np.int32)
    match_scores = np.zeros((1, 1, 2), np.float32)
    limb_scores = np.zeros((1, 1, 2, 2), np.float32)
    limb_scores[0, 0, 0, 0] = 0.9
    backend.assign(limb_scores, limbs, peak_counts, 1, match_counts, matches, match_scores,
                   kernels.allocate_assign_scratch(limb_scores.shape[2]))
    assert match_counts[0, 0] == 1 and matches[0, 0, 0].tolist() == [0, 0]
    backend.assign(np.zeros_like(limb_scores), limbs, peak_counts, 1, match_counts, matches, match_scores,
                   kernels.allocate_assign_scratch(limb_scores.shape[2]))
    assert match_counts[0, 0] == 0 and (matches == -1).all() and (match_scores == 0).all()


def test_find_peaks_window_radius_is_a_square_neighbourhood(backend):
    values = {(10, 10): 0.9, (10, 13): 0.8, (13, 13): 0.7}  # both at Chebyshev distance 3 from the best
    assert sorted(found_peaks(backend, single_channel_maps(values), window=2)[0]) == [(10, 10), (10, 13), (13, 13)]
    # Radius 3 reaches both from (10, 10), diagonals included.
    assert found_peaks(backend, single_channel_maps(values), window=3)[0] == [(10, 10)]
    assert found_peaks(backend, single_channel_maps({(0, 0): 0.5, (0, 2): 0.6}), window=1)[0] == [(0, 2), (0, 0)]


def test_find_peaks_orders_best_first_and_keeps_the_best_m(backend):
    rng = np.random.default_rng(7)
    positions = [(y, x) for y in range(1, 20, 3) for x in range(1, 30, 3)]  # 70 isolated spikes
    values = dict(zip(positions, rng.uniform(0.2, 1.0, len(positions)).astype(np.float32)))
    ranked = sorted(values, key=lambda p: -values[p])
    peaks, scores = found_peaks(backend, single_channel_maps(values), max_peaks=32)
    assert peaks == ranked[:32]
    assert scores == pytest.approx([values[p] for p in ranked[:32]])
    assert (np.diff(scores) < 0).all()
    # Equal scores keep raster order.
    peaks, _ = found_peaks(backend, single_channel_maps({(9, 4): 0.5, (2, 20): 0.5, (2, 8): 0.5, (15, 1): 0.9}))
    assert peaks == [(15, 1), (2, 8), (2, 20), (9, 4)]


# -------------------------------------------------------------------------------------------- refine_peaks


@pytest.mark.parametrize("true_x, true_y", [(10.0, 8.0), (10.3, 8.2), (9.55, 7.6), (10.45, 8.45), (9.7, 8.49)])
def test_refine_peaks_recovers_the_vertex_of_a_sampled_parabola(backend, true_x, true_y):
    ys, xs = np.mgrid[0:16, 0:20]
    heatmap = 1.0 - 0.05 * (xs - true_x) ** 2 - 0.08 * (ys - true_y) ** 2
    x, y = refined_position(backend, heatmap, int(round(true_y)), int(round(true_x)))
    assert (x, y) == pytest.approx((true_x, true_y), abs=1e-4)


@pytest.mark.parametrize("true_x, true_y", [(10.0, 8.0), (10.3, 8.2), (9.55, 7.6), (10.45, 8.45), (9.7, 8.49)])
def test_refine_peaks_recovers_a_gaussian_peak_within_five_hundredths(backend, true_x, true_y):
    heatmaps, _ = render_maps([{0: (true_x, true_y)}], height=16, width=20, sigma=1.5)
    refined = np.zeros((1, HPE_0001.num_keypoints, 4, 2), np.float32)
    counts = np.zeros((1, HPE_0001.num_keypoints), np.int32)
    peaks = np.zeros((1, HPE_0001.num_keypoints, 4, 2), np.int32)
    backend.find_peaks(heatmaps[None], HPE_0001.num_keypoints, 0.1, 1, counts, peaks,
                       np.zeros((1, HPE_0001.num_keypoints, 4), np.float32), np.zeros(20, np.bool_))
    backend.refine_peaks(heatmaps[None], counts, peaks, refined)
    assert counts[0].tolist() == [1] + [0] * (HPE_0001.num_keypoints - 1)
    assert tuple(refined[0, 0, 0]) == pytest.approx((true_x, true_y), abs=0.05)
    assert (refined[0, 1:] == -1).all() and (refined[0, 0, 1:] == -1).all()


def test_refine_peaks_does_not_step_off_the_map_at_the_border(backend):
    height, width = 12, 16
    # Blobs centred just outside each border: their maximum pixel is on the border, pulling outwards.
    blobs = [(-0.4, 5.3, 0), (width - 0.6, 5.3, 0), (7.2, -0.4, 1), (7.2, height - 0.6, 1)]  # x, y, border axis
    for true_x, true_y, border_axis in blobs:
        ys, xs = np.mgrid[0:height, 0:width]
        heatmap = np.exp(-((xs - true_x) ** 2 + (ys - true_y) ** 2) / (2 * 1.5 ** 2))
        y, x = np.unravel_index(np.argmax(heatmap), heatmap.shape)
        refined = refined_position(backend, heatmap, int(y), int(x))
        on_border = (x, y)[border_axis]
        assert refined[border_axis] == on_border, "no fit across the border"
        other_axis = 1 - border_axis
        assert refined[other_axis] == pytest.approx((true_x, true_y)[other_axis], abs=0.05), "the other axis fits"
    # Corners: neither axis moves.
    corner = np.zeros((height, width))
    corner[0, 0], corner[0, 1], corner[1, 0] = 1.0, 0.6, 0.6
    assert refined_position(backend, corner, 0, 0) == (0.0, 0.0)


def test_refine_peaks_clamps_to_half_a_pixel_and_ignores_non_maxima(backend):
    heatmap = np.zeros((5, 5))
    heatmap[2, 1:4] = (0.0, 0.5, 0.9)  # rising but concave: the vertex is 4.5 px away
    assert refined_position(backend, heatmap, 2, 2) == (2.5, 2.0)
    heatmap[2, 1:4] = (0.2, 0.3, 0.9)  # convex: no maximum near here, stay put
    assert refined_position(backend, heatmap, 2, 2) == (2.0, 2.0)


# ------------------------------------------------------------------------------------ the chain, hand-made


def parse_one_frame(ops: ModuleType, people: list[Person], config: ParseConfig = ParseConfig(),
                    layout: Layout = HPE_0001, **render_options):
    heatmaps, pafs = render_batch([people], **render_options)
    buffers = run_chain(ops, heatmaps, pafs, config, layout)
    return buffers, kernel_people(buffers, 0)


def test_full_person_is_found_whole(backend):
    truth = [standing_person(30.3, 25.7)]
    buffers, found = parse_one_frame(backend, truth)
    assert_found_people_match_truth(found, truth)
    assert len(found[0][1]) == HPE_0001.num_keypoints
    assert found[0][0] > 0.9  # every peak near 1, every limb near 1
    assert buffers.people_dropped[0] == 0


def test_people_whose_forearms_cross_are_kept_apart(backend):
    left_person = standing_person(30.2, 26.4)
    right_person = standing_person(51.7, 25.8)
    wrist, elbow = HPE_0001.index("left_wrist"), HPE_0001.index("left_elbow")
    # The left person reaches right; the right person reaches across their own body to the left, so the two
    # left forearms -- the same limb type, sharing PAF channels -- cross near (39.6, 21.2).
    left_person[elbow], left_person[wrist] = (36.1, 19.3), (44.35, 24.2)
    right_person[elbow], right_person[wrist] = (48.2, 17.1), (38.15, 22.45)
    truth = [left_person, right_person]
    _, found = parse_one_frame(backend, truth)
    assert_found_people_match_truth(found, truth)


def test_person_with_a_missing_forearm_comes_out_without_that_wrist(backend):
    truth = [standing_person(40.6, 24.3, without=("left_wrist",))]
    _, found = parse_one_frame(backend, truth)
    assert_found_people_match_truth(found, truth)
    assert HPE_0001.index("left_wrist") not in found[0][1]
    assert len(found[0][1]) == HPE_0001.num_keypoints - 1


@pytest.mark.parametrize("min_parts, min_mean_score", [(3, 0.2), (1, 0.0)])
def test_isolated_blob_is_neither_a_person_nor_attached_to_one(backend, min_parts, min_mean_score):
    person = standing_person(25.4, 25.2)
    right_wrist = HPE_0001.index("right_wrist")
    stray = {right_wrist: (70.3, 9.6)}  # a lone heatmap blob: a "person" of one keypoint has no limbs, no PAF
    config = ParseConfig(min_parts=min_parts, min_mean_score=min_mean_score)
    buffers, found = parse_one_frame(backend, [person, stray], config)
    assert buffers.peak_counts[0, right_wrist] == 2, "the stray blob is a peak"
    assert_found_people_match_truth(found, [person])  # not a person, and not the person's wrist


def test_empty_frame_has_no_peaks_matches_or_people_even_in_reused_buffers(backend):
    heatmaps, pafs = render_batch([[standing_person(30.0, 25.0), standing_person(55.0, 24.0)], []])
    buffers = run_chain(backend, heatmaps, pafs)
    assert buffers.person_counts.tolist() == [2, 0]
    # Frame-after-frame reuse: the same buffers, now two empty frames, must not keep the earlier people.
    empty_heatmaps, empty_pafs = render_batch([[], []])
    run_chain(backend, empty_heatmaps, empty_pafs, buffers=buffers)
    assert (buffers.peak_counts == 0).all() and (buffers.peaks == -1).all() and (buffers.peak_scores == 0).all()
    assert (buffers.refined == -1).all() and (buffers.limb_scores == 0).all()
    assert (buffers.match_counts == 0).all()
    assert (buffers.person_counts == 0).all() and (buffers.people_dropped == 0).all()
    assert (buffers.person_parts == -1).all() and (buffers.person_scores == 0).all()


def test_more_peaks_than_capacity_keeps_the_best_m_through_the_chain(backend):
    # Seven people on a wide map, M = 4: each keypoint type keeps its four strongest peaks, which are the four
    # brightest people's (the gap 0.7 -> 0.5 outlasts any sub-pixel loss), so exactly those four come out, whole.
    amplitudes = [0.3, 0.8, 0.4, 1.0, 0.5, 0.9, 0.7]
    truth = [standing_person(9.0 + 13.5 * i, 25.3, scale=0.8) for i in range(len(amplitudes))]
    config = ParseConfig(max_peaks=4)
    buffers, found = parse_one_frame(backend, truth, config, width=100, amplitudes=amplitudes)
    assert (buffers.peak_counts[0] == 4).all()
    brightest = sorted(range(len(truth)), key=lambda i: -amplitudes[i])[:4]
    assert_found_people_match_truth(found, [truth[i] for i in brightest])


def test_more_people_than_capacity_keeps_the_best_and_counts_the_rest(backend):
    amplitudes = [0.8, 1.0, 0.6, 0.9, 0.7]
    truth = [standing_person(9.0 + 17.0 * i, 25.3, scale=0.8) for i in range(len(amplitudes))]
    config = ParseConfig(max_people=3)
    buffers, found = parse_one_frame(backend, truth, config, width=96, amplitudes=amplitudes)
    assert buffers.person_counts[0] == 3 and buffers.people_dropped[0] == 2
    best_first = sorted(range(len(truth)), key=lambda i: -amplitudes[i])
    assert_found_people_match_truth(found, [truth[i] for i in best_first[:3]])
    for (_, keypoints), i in zip(found, best_first):  # in score order, which here is brightness order
        assert keypoints[HPE_0001.index("neck")][:2] == pytest.approx(truth[i][HPE_0001.index("neck")], abs=0.25)


def test_limb_order_does_not_change_clean_people(backend):
    """Children before parents: people grow as fragments that must be joined, ending as the same people."""
    truth = [standing_person(27.6, 25.2), standing_person(52.3, 24.6, scale=0.9)]
    children_first = HPE_0001.with_limb_order(np.arange(len(HPE_0001.limbs))[::-1])
    _, in_sidecar_order = parse_one_frame(backend, truth)
    _, in_reverse_order = parse_one_frame(backend, truth, layout=children_first)
    assert_found_people_match_truth(in_reverse_order, truth)
    for (score, keypoints), (reverse_score, reverse_keypoints) in zip(in_sidecar_order, in_reverse_order):
        assert keypoints == reverse_keypoints
        # Every non-redundant limb's score is counted once either way, through an extension or a join.
        assert reverse_score == pytest.approx(score, abs=1e-5)


# ---------------------------------------------------------------------------------------------- connect_parts
# Toy skeletons with hand-written matches, so each grouping rule is reached on purpose. Every peak scores 1.

ToyPerson = tuple[float, dict[int, int]]  # (score, {keypoint: peak})


def assert_toy_people(found: list[ToyPerson], expected: list[ToyPerson]) -> None:
    assert [parts for _, parts in found] == [parts for _, parts in expected]
    assert [score for score, _ in found] == pytest.approx([score for score, _ in expected], abs=1e-6)


def connect(ops: ModuleType, limbs: list[tuple[int, int]], redundant: list[bool],
            matches_per_limb: list[list[tuple[int, int, float]]], num_keypoints: int, min_parts: int = 2,
            min_mean_score: float = 0.0, limb_weight: float | None = None,
            max_people: int = 8) -> list[ToyPerson]:
    """connect_parts on one frame, given per limb its matches (peak a, peak b, limb score), best first.

    Checks the reference agrees, then returns the kernel's people, best first.
    """
    max_peaks = 3
    limbs_array = np.asarray(limbs, np.int32)
    redundant_array = np.asarray(redundant, np.bool_)
    matches = np.full((1, len(limbs), max_peaks, 2), -1, np.int32)
    match_scores = np.zeros((1, len(limbs), max_peaks), np.float32)
    match_counts = np.zeros((1, len(limbs)), np.int32)
    for l, limb_matches in enumerate(matches_per_limb):
        for i, (a, b, score) in enumerate(limb_matches):
            matches[0, l, i] = (a, b)
            match_scores[0, l, i] = score
        match_counts[0, l] = len(limb_matches)
    peak_scores = np.ones((1, num_keypoints, max_peaks), np.float32)
    if limb_weight is None:
        limb_weight = float(len(limbs) - sum(redundant))
    buffers = ops.allocate_parse_buffers(1, num_keypoints, len(limbs), max_peaks, max_people)
    ops.connect_parts(matches, match_scores, match_counts, limbs_array, redundant_array, peak_scores, 1, min_parts,
                      min_mean_score, limb_weight, buffers.person_counts, buffers.person_parts,
                      buffers.person_scores, buffers.people_dropped, buffers.connect_scratch)
    reference = reference_connect_parts(matches, match_scores, match_counts, limbs_array, redundant_array,
                                        peak_scores, min_parts, min_mean_score, limb_weight, max_people)

    def people(counts, parts, scores) -> list[ToyPerson]:
        return [(float(scores[0, p]), {k: int(peak) for k, peak in enumerate(parts[0, p]) if peak >= 0})
                for p in range(counts[0])]

    found = people(buffers.person_counts, buffers.person_parts, buffers.person_scores)
    assert_toy_people(found, people(*reference[:3]))
    return found


def test_connect_parts_joins_fragments_that_share_no_keypoint_type(backend):
    # 0-1 and 2-3 start two fragments, 1-2 joins them (adding its own score), then 4-3 extends the joined person
    # from the limb's second end.
    found = connect(backend, [(0, 1), (2, 3), (1, 2), (4, 3)], [False] * 4,
                    [[(0, 0, 0.9)], [(0, 0, 0.8)], [(0, 0, 0.7)], [(0, 0, 0.6)]], num_keypoints=5)
    total = 5 * 1.0 + 0.9 + 0.8 + 0.7 + 0.6
    assert_toy_people(found, [(total / (5 + 4), {0: 0, 1: 0, 2: 0, 3: 0, 4: 0})])


def test_connect_parts_never_joins_fragments_that_share_a_keypoint_type(backend):
    # A triangle 0-1, 0-2, 1-2: the first two limbs grow fragments holding different keypoint-0 peaks, so the
    # third cannot join them (one person, two noses); it adds nothing and its score counts nowhere.
    found = connect(backend, [(0, 1), (0, 2), (1, 2)], [False] * 3,
                    [[(0, 0, 0.9)], [(1, 0, 0.8)], [(0, 0, 0.7)]], num_keypoints=3)
    assert_toy_people(found, [(2.9 / 6, {0: 0, 1: 0}), (2.8 / 6, {0: 1, 2: 0})])


def test_connect_parts_redundant_limbs_only_complete_people(backend):
    # 0-1 starts a person. Redundant 1-2 completes it with keypoint 2 (the peak's score counts, the redundant
    # limb's does not); redundant 0-3 between free peaks starts no one; redundant 0-2 cannot add a second
    # keypoint 2.
    found = connect(backend, [(0, 1), (1, 2), (0, 3), (0, 2)], [False, True, True, True],
                    [[(0, 0, 0.9)], [(0, 0, 0.8)], [(1, 1, 0.7)], [(0, 1, 0.6)]], num_keypoints=4, min_parts=1)
    assert_toy_people(found, [(3.9 / (4 + 1), {0: 0, 1: 0, 2: 0})])


def test_connect_parts_filters_by_parts_and_mean_and_clips_the_score(backend):
    limbs, matches = [(0, 1), (2, 3)], [[(0, 0, 0.9)], [(0, 0, 0.1)]]  # totals 2.9 and 2.1 over two parts each
    assert_toy_people(connect(backend, limbs, [False] * 2, matches, 4),
                      [(2.9 / 6, {0: 0, 1: 0}), (2.1 / 6, {2: 0, 3: 0})])
    assert connect(backend, limbs, [False] * 2, matches, 4, min_parts=3) == []
    assert_toy_people(connect(backend, limbs, [False] * 2, matches, 4, min_mean_score=1.2),
                      [(2.9 / 6, {0: 0, 1: 0})])  # means 1.45 and 1.05
    # A weight too small for the total: the score stays within [0, 1].
    assert_toy_people(connect(backend, [(0, 1)], [False], matches[:1], 2, limb_weight=0.0), [(1.0, {0: 0, 1: 0})])


# ------------------------------------------------------------------------------------ parity with reference

# The hpe-0001 order lists parents before children, so it never joins fragments or extends from a limb's
# second end; a shuffled order reaches those rules too (and puts redundant limbs mid-stream).
SHUFFLED_LIMBS = HPE_0001.with_limb_order(np.random.default_rng(3).permutation(len(HPE_0001.limbs)))
PARITY_CASES: dict[str, tuple[ParseConfig, Layout]] = {
    "defaults": (ParseConfig(), HPE_0001),
    # Small capacities (truncation and dropping), a wider window, odd S, no length prior, other filters.
    "tight": (ParseConfig(peak_window=2, max_peaks=4, max_people=3, paf_samples=7, paf_length_prior=False,
                          min_parts=2, min_mean_score=0.5), HPE_0001),
    "shuffled-limbs": (ParseConfig(min_parts=2), SHUFFLED_LIMBS),
    "bilinear": (ParseConfig(paf_sampling="bilinear"), HPE_0001),
    # Other sample rules: paf_score_graph reads the first floor(allowed misses) + 1 samples of every candidate
    # before any can fail; these make that 1 (every sample must pass) and 6 (half may miss) instead of 3.
    "every-sample": (ParseConfig(paf_samples=4, paf_min_sample_fraction=1.0), HPE_0001),
    "half-the-samples": (ParseConfig(paf_min_sample_fraction=0.5), HPE_0001),
}
PARITY_SEEDS = range(8)
FRAMES_PER_BATCH = 3


def random_batch(seed: int) -> tuple[np.ndarray, np.ndarray, list[list[Person]]]:
    rng = np.random.default_rng(seed)
    frames, scenes = [], []
    for _ in range(FRAMES_PER_BATCH):
        people = random_people(rng, int(rng.integers(1, 11)))
        heatmaps, pafs = render_maps(people, sigma=float(rng.uniform(1.0, 2.0)))
        frames.append(add_noise(heatmaps, pafs, rng, level=float(rng.uniform(0.01, 0.035))))
        scenes.append(people)
    return np.stack([h for h, _ in frames]), np.stack([p for _, p in frames]), scenes


@pytest.mark.slow_in_cuda_simulator
@pytest.mark.parametrize("case", sorted(PARITY_CASES))
@pytest.mark.parametrize("seed", PARITY_SEEDS)
def test_kernels_match_the_reference_on_random_maps(backend, seed, case):
    config, layout = PARITY_CASES[case]
    heatmaps, pafs, _ = random_batch(seed)
    buffers = run_chain(backend, heatmaps, pafs, config, layout)

    # Stage by stage, each reference stage fed the reference's own earlier results.
    peak_counts, peaks, peak_scores = reference_find_peaks(
        heatmaps, layout.num_keypoints, config.peak_threshold, config.peak_window, config.max_peaks)
    np.testing.assert_array_equal(buffers.peak_counts, peak_counts)
    np.testing.assert_array_equal(buffers.peaks, peaks)
    np.testing.assert_array_equal(buffers.peak_scores, peak_scores)

    refined = reference_refine_peaks(heatmaps, peak_counts, peaks)
    np.testing.assert_allclose(buffers.refined, refined, rtol=0, atol=PARITY_POSITION_TOLERANCE)

    limb_scores = reference_paf_score_graph(
        pafs, layout.limbs, layout.paf_channels, peak_counts, refined, config.paf_samples,
        config.paf_min_sample_score, config.paf_min_sample_fraction, config.paf_length_prior,
        config.paf_sampling == "nearest")
    np.testing.assert_allclose(buffers.limb_scores, limb_scores, rtol=0, atol=PARITY_SCORE_TOLERANCE)

    match_counts, matches, match_scores = reference_assign(limb_scores, layout.limbs, peak_counts)
    np.testing.assert_array_equal(buffers.match_counts, match_counts)
    for n in range(FRAMES_PER_BATCH):
        for l in range(len(layout.limbs)):
            found = match_counts[n, l]
            # Only up to the count: assign leaves entries past it as they were.
            np.testing.assert_array_equal(buffers.matches[n, l, :found], matches[n, l, :found],
                                          err_msg=f"frame {n}, limb {l}")
            np.testing.assert_allclose(buffers.match_scores[n, l, :found], match_scores[n, l, :found], rtol=0,
                                       atol=PARITY_SCORE_TOLERANCE)

    person_counts, person_parts, person_scores, people_dropped = reference_connect_parts(
        matches, match_scores, match_counts, layout.limbs, layout.redundant, peak_scores, config.min_parts,
        config.min_mean_score, layout.limb_weight, config.max_people)
    np.testing.assert_array_equal(buffers.person_counts, person_counts)
    np.testing.assert_array_equal(buffers.people_dropped, people_dropped)
    for n in range(FRAMES_PER_BATCH):
        # The same people (same peaks grouped together) with the same scores. Order is compared through the
        # scores only: people whose scores tie may come out in either order.
        kernel_groups = {tuple(row): score for row, score in
                         zip(buffers.person_parts[n, :person_counts[n]].tolist(), buffers.person_scores[n].tolist())}
        reference_groups = {tuple(row): score for row, score in
                            zip(person_parts[n, :person_counts[n]].tolist(), person_scores[n].tolist())}
        assert kernel_groups.keys() == reference_groups.keys(), f"frame {n}: people grouped differently"
        for group, score in kernel_groups.items():
            assert score == pytest.approx(reference_groups[group], abs=PARITY_SCORE_TOLERANCE)
        np.testing.assert_allclose(buffers.person_scores[n], person_scores[n], rtol=0, atol=PARITY_SCORE_TOLERANCE)

    # And end to end, in reference_parse's own terms.
    expected = reference_parse(heatmaps, pafs, layout.limbs, layout.paf_channels, layout.redundant, config,
                               num_keypoints=layout.num_keypoints)
    for n in range(FRAMES_PER_BATCH):
        assert_same_people(kernel_people(buffers, n), expected[n])


def test_parity_batches_exercise_capacities_and_real_people():
    """Guards the parity test against going vacuous: the random batches must fill M, drop people and group many."""
    tight, _ = PARITY_CASES["tight"]
    totals = {"people": 0, "full peak lists": 0, "dropped": 0}
    for seed in PARITY_SEEDS:
        heatmaps, pafs, _ = random_batch(seed)
        default_buffers = run_chain(kernels, heatmaps, pafs)
        totals["people"] += int(default_buffers.person_counts.sum())
        tight_buffers = run_chain(kernels, heatmaps, pafs, tight)
        totals["full peak lists"] += int((tight_buffers.peak_counts == tight.max_peaks).sum())
        totals["dropped"] += int(tight_buffers.people_dropped.sum())
    assert totals["people"] >= 3 * len(PARITY_SEEDS) and totals["full peak lists"] > 0 and totals["dropped"] > 0, totals


@pytest.mark.parametrize("seed", range(6))
def test_assign_reaches_scipys_optimum_on_dense_contested_candidates(backend, seed):
    """Most peaks compete for several partners: the Hungarian path, not the direct-match shortcut, decides."""
    from scipy.optimize import linear_sum_assignment

    rng = np.random.default_rng(seed)
    count_a, count_b, capacity = rng.integers(3, 12), rng.integers(3, 12), 12
    limb_scores = np.zeros((1, 1, capacity, capacity), np.float32)
    dense = rng.uniform(0.0, 1.0, (count_a, count_b)).astype(np.float32)
    dense[rng.random((count_a, count_b)) < 0.3] = 0.0  # some candidates are not limbs
    limb_scores[0, 0, :count_a, :count_b] = dense
    limbs = np.array([[0, 1]], np.int32)
    peak_counts = np.array([[count_a, count_b]], np.int32)
    match_counts = np.zeros((1, 1), np.int32)
    matches = np.full((1, 1, capacity, 2), -1, np.int32)
    match_scores = np.zeros((1, 1, capacity), np.float32)
    backend.assign(limb_scores, limbs, peak_counts, 1, match_counts, matches, match_scores,
                   kernels.allocate_assign_scratch(limb_scores.shape[2]))
    found = match_counts[0, 0]
    pairs = matches[0, 0, :found]
    assert len(set(pairs[:, 0].tolist())) == found and len(set(pairs[:, 1].tolist())) == found
    assert (dense[pairs[:, 0], pairs[:, 1]] > 0).all()
    assert np.all(np.diff(match_scores[0, 0, :found]) <= 0)  # best first
    rows, cols = linear_sum_assignment(dense, maximize=True)
    assert match_scores[0, 0, :found].sum() == pytest.approx(dense[rows, cols].sum(), abs=1e-5)


# ------------------------------------------------------------------------------------------------------------
# The alternatives to the parabola fit: weighted centroid, and softargmax for single-person maps
# ------------------------------------------------------------------------------------------------------------

def gaussian_map(height: int, width: int, centres: list[tuple[float, float]], sigma: float = 1.2) -> np.ndarray:
    ys, xs = np.mgrid[0:height, 0:width]
    heat = np.zeros((height, width), np.float32)
    for cx, cy in centres:
        heat = np.maximum(heat, np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma ** 2)).astype(np.float32))
    return heat


@pytest.mark.parametrize("true_x, true_y", [(10.0, 8.0), (10.3, 8.2), (9.6, 7.7)])
def test_refine_peaks_centroid_moves_towards_the_true_centre(backend, true_x, true_y):
    heatmaps = gaussian_map(16, 20, [(true_x, true_y)])[None, None]
    counts, peaks, scores = reference_find_peaks(heatmaps, 1, 0.1, 1, 4)
    refined = np.zeros((1, 1, 4, 2), np.float32)
    backend.refine_peaks_centroid(heatmaps, counts, peaks, 2, refined)
    integer_error = np.hypot(peaks[0, 0, 0, 1] - true_x, peaks[0, 0, 0, 0] - true_y)
    centroid_error = np.hypot(refined[0, 0, 0, 0] - true_x, refined[0, 0, 0, 1] - true_y)
    assert centroid_error <= integer_error + 1e-4 and centroid_error < 0.15
    assert (refined[0, 0, 1:] == -1).all()


def test_refine_peaks_centroid_matches_the_reference_with_nan_and_borders(backend):
    rng = np.random.default_rng(3)
    heatmaps = rng.random((2, 3, 12, 15)).astype(np.float32)
    heatmaps[0, 1, 0, :] = np.nan
    heatmaps[1, 2, :, :] = -0.5  # no positive weight anywhere: the integer position stays
    heatmaps[1, 2, 4, 6] = -0.1
    counts, peaks, _ = reference_find_peaks(heatmaps, 3, -1.0, 1, 6)
    refined = np.zeros((2, 3, 6, 2), np.float32)
    backend.refine_peaks_centroid(heatmaps, counts, peaks, 1, refined)
    expected = reference_refine_peaks_centroid(heatmaps, counts, peaks, 1)
    np.testing.assert_allclose(refined, expected, atol=PARITY_POSITION_TOLERANCE)
    assert refined[1, 2, 0].tolist() == [6.0, 4.0]


def test_centroid_refinement_through_the_chain_finds_the_same_people(backend):
    truth = [standing_person(15.2, 24.6), standing_person(40.7, 23.1, scale=0.9), standing_person(66.4, 25.3)]
    heatmaps, pafs = render_batch([truth])
    parabola = run_chain(backend, heatmaps, pafs, ParseConfig())
    centroid = run_chain(backend, heatmaps, pafs, ParseConfig(refine="centroid", refine_window=2))
    assert centroid.person_counts[0] == parabola.person_counts[0] == 3
    np.testing.assert_array_equal(centroid.person_parts[0], parabola.person_parts[0])
    assert_found_people_match_truth(kernel_people(centroid, 0), truth)


def test_short_candidates_interpolate_even_with_nearest_sampling(backend):
    # S = 10 samples on a limb 3 px long are a third of a pixel apart: most would read the two end pixels, so
    # a candidate shorter than (S - 1) / 2 = 4.5 px is interpolated. Same field as above: 0.6 at y = 2.4.
    pafs = np.zeros((1, 2, 5, 9), np.float32)
    pafs[0, 0, 2, :] = 1.0
    args = (pafs, np.array([[0, 1]], np.int32), np.array([[0, 1]], np.int32), np.array([[1, 1]], np.int32))
    for end_x, expected in ((4.0, 0.6), (6.0, 1.0)):  # 3 px: interpolated; 5 px: nearest pixel (row 2)
        refined = np.array([[[[1.0, 2.4]], [[end_x, 2.4]]]], np.float32)
        scores = np.zeros((1, 1, 1, 1), np.float32)
        backend.paf_score_graph(*args, refined, 10, 0.5, 0.8, False, True, scores, kernels.allocate_paf_scratch(1))
        assert scores[0, 0, 0, 0] == pytest.approx(expected, abs=1e-6), end_x
        reference = reference_paf_score_graph(*args, refined, 10, 0.5, 0.8, False, True)
        assert reference[0, 0, 0, 0] == pytest.approx(expected, abs=1e-6), end_x


def test_parse_config_rejects_an_unknown_refinement():
    with pytest.raises(ValueError, match="refine"):
        ParseConfig(refine="spline")
    with pytest.raises(ValueError, match="paf_sampling"):
        ParseConfig(paf_sampling="cubic")


@pytest.mark.parametrize("peak_y, nearest_score, bilinear_score", [(2.4, 1.0, 0.6), (2.6, 0.0, 0.0)])
def test_paf_samples_read_the_nearest_pixel_or_interpolate(backend, peak_y, nearest_score, bilinear_score):
    # One horizontal limb from x = 1 to x = 7 at height peak_y over a PAF that is 1 along x on row 2 only,
    # samples needing 0.5. Nearest: y = 2.4 reads row 2 (score 1), y = 2.6 reads row 3 (nothing). Bilinear
    # reads 0.6 of row 2 at y = 2.4 (score 0.6) and 0.4 at y = 2.6 (below 0.5 everywhere: not a limb).
    pafs = np.zeros((1, 2, 5, 9), np.float32)
    pafs[0, 0, 2, :] = 1.0
    limbs = np.array([[0, 1]], np.int32)
    channels = np.array([[0, 1]], np.int32)
    counts = np.array([[1, 1]], np.int32)
    refined = np.array([[[[1.0, peak_y]], [[7.0, peak_y]]]], np.float32)
    for nearest, expected in ((True, nearest_score), (False, bilinear_score)):
        scores = np.full((1, 1, 1, 1), -1.0, np.float32)
        backend.paf_score_graph(pafs, limbs, channels, counts, refined, 7, 0.5, 0.8, False, nearest, scores,
                                kernels.allocate_paf_scratch(1))
        reference = reference_paf_score_graph(pafs, limbs, channels, counts, refined, 7, 0.5, 0.8, False, nearest)
        assert scores[0, 0, 0, 0] == pytest.approx(expected, abs=1e-6), f"nearest={nearest}"
        assert reference[0, 0, 0, 0] == pytest.approx(expected, abs=1e-6), f"nearest={nearest}"


def test_softargmax_finds_single_peaks_and_matches_the_reference(backend):
    # Wide peaks and beta = 15: narrow enough to silence the background, wide enough to sample sub-pixel.
    heatmaps = np.stack([gaussian_map(24, 32, [(7.3, 5.6)], sigma=3.0), gaussian_map(24, 32, [(25.0, 18.5)], sigma=3.0),
                         np.full((24, 32), np.nan, np.float32)])[None]
    heatmaps[0, 1, 0, 0] = np.nan
    keypoints = np.zeros((1, 3, 3), np.float32)
    backend.softargmax(heatmaps, 3, 15.0, keypoints)
    np.testing.assert_allclose(keypoints[0, 0, :2], (7.3, 5.6), atol=0.05)
    np.testing.assert_allclose(keypoints[0, 1, :2], (25.0, 18.5), atol=0.05)
    assert keypoints[0, 2].tolist() == [-1.0, -1.0, 0.0]
    np.testing.assert_allclose(keypoints, reference_softargmax(heatmaps, 3, 15.0), atol=1e-4)


def test_softargmax_small_beta_drifts_to_the_map_centre(backend):
    heatmaps = gaussian_map(10, 10, [(2.0, 2.0)])[None, None]
    keypoints = np.zeros((1, 1, 3), np.float32)
    backend.softargmax(heatmaps, 1, 1e-6, keypoints)
    np.testing.assert_allclose(keypoints[0, 0, :2], (4.5, 4.5), atol=1e-3)


def test_people_to_image_matches_numpy_on_letterboxed_people():
    # The oracle is numpy on float32 arrays, step for step: map pixels -> input pixels -> the letterbox's
    # inverse (posestream.pipeline.inference.preprocess.Letterbox.to_image) -> clipped to the image; boxes around the keypoints
    # with a positive confidence (posestream.pipeline.core.types.boxes_around_keypoints).
    from posestream.pipeline.core.types import boxes_around_keypoints
    from posestream.pipeline.inference.preprocess import Letterbox

    rng = np.random.default_rng(5)
    frames, people, keypoints, max_peaks = 3, 6, 5, 4
    box = Letterbox(scale=0.638, pad_x=3.0, pad_y=11.0, input_height=368, input_width=496, image_height=576,
                    image_width=768)
    stride = 8.0
    person_counts = np.array([6, 0, 4], np.int32)
    person_parts = rng.integers(-1, max_peaks, (frames, people, keypoints)).astype(np.int32)
    person_parts[0, 5] = -1  # a person with none of the output keypoints: not kept
    person_parts[0, 5, 4] = 2  # ... though it has keypoint 4, which has no output keypoint
    refined = rng.uniform(-2.0, 70.0, (frames, keypoints, max_peaks, 2)).astype(np.float32)  # some off the image
    peak_scores = rng.uniform(0.0, 1.3, (frames, keypoints, max_peaks)).astype(np.float32)  # some above 1
    peak_scores[2, 1, :] = 0.0  # found with confidence 0: not in the box
    index = np.array([0, 1, -1, 3, 2, 1], np.int64)  # J = 6 output keypoints; one the model lacks

    out_keypoints = np.full((frames, people, len(index), 3), np.nan, np.float32)
    out_boxes = np.full((frames, people, 4), np.nan, np.float32)
    out_kept = np.zeros((frames, people), np.bool_)
    kernels.people_to_image(person_counts, person_parts, refined, peak_scores, frames, index, stride, box.scale,
                            box.pad_x, box.pad_y, box.image_width, box.image_height, out_keypoints, out_boxes,
                            out_kept)

    for n in range(frames):
        count = person_counts[n]
        known = index >= 0
        peaks = person_parts[n, :count][:, np.where(known, index, 0)]
        found = known[None, :] & (peaks >= 0)
        safe = np.where(found, peaks, 0)
        xy = box.to_image((refined[n, np.where(known, index, 0)[None, :], safe] + 0.5) * stride - 0.5)
        np.clip(xy[..., 0], 0.0, box.image_width - 1.0, out=xy[..., 0])
        np.clip(xy[..., 1], 0.0, box.image_height - 1.0, out=xy[..., 1])
        expected = np.zeros((count, len(index), 3), np.float32)
        expected[..., :2] = np.where(found[..., None], xy, 0.0)
        expected[..., 2] = np.where(found, np.minimum(peak_scores[n, np.where(known, index, 0)[None, :], safe], 1.0),
                                    0.0)
        np.testing.assert_array_equal(out_keypoints[n, :count], expected)
        np.testing.assert_array_equal(out_boxes[n, :count], boxes_around_keypoints(expected, np.zeros((count, 4))))
        np.testing.assert_array_equal(out_kept[n, :count], found.any(axis=1))
    assert not out_kept[0, 5] and out_kept[0, :5].any()
    assert np.isnan(out_keypoints[1]).all()  # past the count: not written


@pytest.mark.slow_in_cuda_simulator
@pytest.mark.parametrize("nearest", [True, False])
@pytest.mark.parametrize("num_samples, min_sample_fraction", [(1, 0.8), (2, 0.8), (2, 1.0), (5, 0.0), (10, 0.3),
                                                             (10, 1.0), (13, 0.7)])
def test_paf_score_graph_matches_the_reference_for_any_sample_rule(backend, num_samples, min_sample_fraction,
                                                                   nearest):
    # The kernel reads the first floor(S - fraction * S) + 1 samples of every candidate before any can fail, then
    # scores the survivors; the reference reads all S. Peaks off the map and on its border included.
    heatmaps, pafs, _ = random_batch(11)
    config = ParseConfig()
    buffers = run_chain(backend, heatmaps, pafs, config)
    refined = buffers.refined.copy()
    refined[0, 1, 0] = (-3.0, 4.5)  # off the map: its samples are clamped onto it
    refined[1, 2, 1] = (pafs.shape[3] - 1.0, pafs.shape[2] - 1.0)
    counts = np.maximum(buffers.peak_counts, 2)  # those peaks count even where none was found
    scores = np.zeros_like(buffers.limb_scores)
    layout = HPE_0001
    backend.paf_score_graph(pafs, layout.limbs, layout.paf_channels, counts, refined, num_samples, 0.05,
                            min_sample_fraction, True, nearest, scores,
                            kernels.allocate_paf_scratch(scores.shape[2]))
    expected = reference_paf_score_graph(pafs, layout.limbs, layout.paf_channels, counts, refined, num_samples, 0.05,
                                         min_sample_fraction, True, nearest)
    np.testing.assert_allclose(scores, expected, rtol=0, atol=PARITY_SCORE_TOLERANCE)
    assert (expected > 0).sum() > 10  # some candidates are limbs
