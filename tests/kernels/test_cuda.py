"""The CUDA twins (kernels/cuda.py) on small inputs: parity with the CPU kernels and the reference, and the
paths only the device has (the candidate-list overflow, the LSAP port, upsampling, the on-device chain and
what it copies to the host).

Runs wherever the CUDA kernels can run: on a GPU, or in Numba's simulator, which tests/test_cuda_simulator.py
starts in a subprocess for CI (the simulator has to be chosen before numba is imported). Inputs stay small,
2 frames of 16 x 24 maps at most, because the simulator runs every GPU thread as a Python thread. The LSAP
port and the import rules are checked in every session, GPU or not.
"""
from __future__ import annotations

import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from numba import njit
from scipy.optimize import linear_sum_assignment

import posestream.kernels.cuda as cuda_kernels
from posestream import kernels
from posestream.kernels import ParseConfig
from posestream.kernels.reference import reference_assign, reference_find_peaks, reference_parse
from tests.helpers import REPO
from tests.helpers.maps import HPE_0001, Layout, add_noise, random_people, render_maps
from tests.helpers.parse_chain import (
    PARITY_POSITION_TOLERANCE,
    PARITY_SCORE_TOLERANCE,
    assert_same_people,
    kernel_people,
    run_chain,
)

requires_device = pytest.mark.skipif(not cuda_kernels.device_available(),
                                     reason="no CUDA GPU and not in the simulator (tests/test_cuda_simulator.py "
                                            "runs this file with NUMBA_ENABLE_CUDASIM=1)")
SMALL_HEIGHT, SMALL_WIDTH = 16, 24
SMALL_CASES: dict[str, ParseConfig] = {
    "default-capacities": ParseConfig(min_parts=2),
    # Truncation and dropping, a wider window, odd S, no length prior, a strict mean.
    "tight": ParseConfig(peak_window=2, max_peaks=3, max_people=2, paf_samples=7, paf_length_prior=False,
                         min_parts=2, min_mean_score=0.5),
    "bilinear": ParseConfig(min_parts=2, paf_sampling="bilinear"),
}


def small_random_batch(seed: int, frames: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """``frames`` noisy 16 x 24 frames of 1-4 random people (partly off the map), hpe-0001's layout."""
    rng = np.random.default_rng(seed)
    heatmaps, pafs = [], []
    for _ in range(frames):
        people = random_people(rng, int(rng.integers(1, 5)), height=SMALL_HEIGHT, width=SMALL_WIDTH)
        heat, paf = render_maps(people, height=SMALL_HEIGHT, width=SMALL_WIDTH, sigma=float(rng.uniform(0.8, 1.3)))
        heat, paf = add_noise(heat, paf, rng, level=float(rng.uniform(0.01, 0.03)), spurious_blobs=2, sigma=1.0)
        heatmaps.append(heat)
        pafs.append(paf)
    return np.stack(heatmaps), np.stack(pafs)


def quantised_maps(seed: int, frames: int, channels: int, height: int, width: int, levels: int = 8) -> np.ndarray:
    """Smooth random maps rounded to ``levels`` steps: equal values and plateaus everywhere."""
    rng = np.random.default_rng(seed)
    noise = rng.random((frames * channels, height + 2, width + 2))
    smooth = (noise[:, :-2, 1:-1] + noise[:, 2:, 1:-1] + noise[:, 1:-1, :-2] + noise[:, 1:-1, 2:]
              + 2 * noise[:, 1:-1, 1:-1]) / 6.0
    return (np.round(smooth * levels) / levels).astype(np.float32).reshape(frames, channels, height, width)


def peaks_of(ops, heatmaps: np.ndarray, num_keypoints: int, threshold: float, window: int, max_peaks: int):
    frames = heatmaps.shape[0]
    counts = np.zeros((frames, num_keypoints), np.int32)
    peaks = np.zeros((frames, num_keypoints, max_peaks, 2), np.int32)
    scores = np.zeros((frames, num_keypoints, max_peaks), np.float32)
    ops.find_peaks(heatmaps, num_keypoints, threshold, window, counts, peaks, scores,
                   np.zeros(heatmaps.shape[3], np.bool_))
    return counts, peaks, scores


def assert_same_peaks(found, expected) -> None:
    for name, got, want in zip(("peak_counts", "peaks", "peak_scores"), found, expected):
        np.testing.assert_array_equal(got, want, err_msg=name)


# --------------------------------------------------------------------------------- no device needed


def test_importing_kernels_needs_no_cuda_and_kernels_cuda_needs_no_gpu():
    environment = {key: value for key, value in os.environ.items() if key != "NUMBA_ENABLE_CUDASIM"}
    script = ("import sys, kernels; assert 'numba.cuda' not in sys.modules, 'kernels imports numba.cuda'; "
              "import kernels.cuda as c; print(c.simulated(), c.device_available())")
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=environment, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[0] == "False"


@pytest.mark.parametrize("kind", ["uniform", "sparse", "ties", "constant"])
def test_lsap_port_picks_exactly_scipys_assignment(kind):
    """The device assign's solver, compiled for the CPU here: the same pairs as linear_sum_assignment, ties too."""
    solve = njit(cuda_kernels._solve_assignment)
    capacity = 8
    scratch_int = [np.empty(capacity, np.int32) for _ in range(4)]
    scratch_float = [np.empty(capacity, np.float64) for _ in range(3)]
    seen = [np.empty(capacity, np.uint8) for _ in range(2)]
    rng = np.random.default_rng(["uniform", "sparse", "ties", "constant"].index(kind))
    for _ in range(150):
        count_a, count_b = int(rng.integers(1, capacity + 1)), int(rng.integers(1, capacity + 1))
        if kind == "uniform":
            block = rng.random((count_a, count_b))
        elif kind == "sparse":
            block = rng.random((count_a, count_b)) * (rng.random((count_a, count_b)) < 0.3)
        elif kind == "ties":
            block = rng.integers(0, 3, (count_a, count_b)) / 2.0
        else:
            block = np.full((count_a, count_b), 0.5 if rng.random() < 0.5 else 0.0)
        limb_scores = np.zeros((1, 1, capacity, capacity), np.float32)
        limb_scores[0, 0, :count_a, :count_b] = block
        col4row, row4col, path, remaining = scratch_int
        u, v, shortest = scratch_float
        assert solve(limb_scores, 0, 0, count_a, count_b, col4row, row4col, u, v, shortest, path, remaining,
                     *seen)
        transposed = count_b < count_a
        pairs = sorted((int(col4row[i]), i) if transposed else (i, int(col4row[i]))
                       for i in range(min(count_a, count_b)))
        rows, cols = linear_sum_assignment(limb_scores[0, 0, :count_a, :count_b], maximize=True)
        assert pairs == sorted(zip(rows.tolist(), cols.tolist())), (kind, block)


def test_host_copies_per_frame_stay_under_64_kb_for_any_people_capacity():
    keypoints, limbs = HPE_0001.num_keypoints, len(HPE_0001.limbs)
    assert cuda_kernels.host_bytes_per_frame(keypoints, limbs, 16) == 7_252
    assert cuda_kernels.host_bytes_per_frame(keypoints, limbs, 32) == 14_356
    # What copying the M x M limb score matrices alone would cost at M = 32: over the budget, hence assign on
    # the device.
    assert limbs * 32 * 32 * 4 > 64 * 1024 > cuda_kernels.host_bytes_per_frame(keypoints, limbs, 32)


def test_kernels_compile_for_a_real_gpu_when_the_cuda_compiler_is_here(compile_ptx_for_hopper):
    """Typing and lowering for sm_90, which the simulator never does: catches device code that only runs there."""
    from numba import types

    maps, scores3 = types.Array(types.float32, 4, "C"), types.Array(types.float32, 3, "C")
    table, ints4 = types.Array(types.int32, 2, "C"), types.Array(types.int32, 4, "C")
    i64, f64 = types.int64, types.float64
    signatures = {
        cuda_kernels._find_peaks_kernel: (maps, i64, f64, i64, table, ints4, scores3),
        cuda_kernels._refine_peaks_kernel: (maps, i64, table, ints4, maps),
        cuda_kernels._paf_score_graph_kernel: (maps, table, table, table, maps, i64, f64, f64, types.boolean, types.boolean, maps),
        cuda_kernels._assign_kernel: (maps, table, table, i64, table, ints4, scores3),
        cuda_kernels._upsample_kernel: (maps, f64, f64, maps),
    }
    for kernel, signature in signatures.items():
        assert ".entry" in compile_ptx_for_hopper(kernel.py_func, signature)


# --------------------------------------------------------------------------------------- on the device


@requires_device
@pytest.mark.parametrize("case", sorted(SMALL_CASES))
@pytest.mark.parametrize("seed", range(3))
def test_small_random_maps_give_the_cpu_kernels_and_references_results(seed, case):
    config = SMALL_CASES[case]
    heatmaps, pafs = small_random_batch(seed)
    on_cpu = run_chain(kernels, heatmaps, pafs, config)
    on_device = run_chain(cuda_kernels, heatmaps, pafs, config)
    for name in ("peak_counts", "peaks", "peak_scores", "match_counts", "person_counts", "people_dropped"):
        np.testing.assert_array_equal(getattr(on_device, name), getattr(on_cpu, name), err_msg=name)
    np.testing.assert_allclose(on_device.refined, on_cpu.refined, rtol=0, atol=PARITY_POSITION_TOLERANCE)
    np.testing.assert_allclose(on_device.limb_scores, on_cpu.limb_scores, rtol=0, atol=PARITY_SCORE_TOLERANCE)
    for n in range(heatmaps.shape[0]):
        for l in range(len(HPE_0001.limbs)):
            found = on_cpu.match_counts[n, l]
            assert sorted(map(tuple, on_device.matches[n, l, :found].tolist())) == sorted(
                map(tuple, on_cpu.matches[n, l, :found].tolist())), f"frame {n}, limb {l}"
    expected = reference_parse(heatmaps, pafs, HPE_0001.limbs, HPE_0001.paf_channels, HPE_0001.redundant, config,
                               num_keypoints=HPE_0001.num_keypoints)
    for n in range(heatmaps.shape[0]):
        assert_same_people(kernel_people(on_device, n), expected[n])
        assert_same_people(kernel_people(on_device, n), kernel_people(on_cpu, n))


@requires_device
@pytest.mark.parametrize("window", [0, 1, 2])
def test_find_peaks_ties_and_plateaus_resolve_as_on_the_cpu(window):
    heatmaps = quantised_maps(seed=window, frames=2, channels=3, height=12, width=16)
    expected = peaks_of(kernels, heatmaps, 3, 0.25, window, 5)
    assert (expected[0] == 5).any() and len(np.unique(expected[2][expected[2] > 0])) < (expected[2] > 0).sum()
    assert_same_peaks(peaks_of(cuda_kernels, heatmaps, 3, 0.25, window, 5), expected)
    assert_same_peaks(expected, reference_find_peaks(heatmaps, 3, 0.25, window, 5))


@requires_device
@pytest.mark.parametrize("height, width", [(32, 32), (33, 32)])
def test_find_peaks_when_the_candidates_fill_or_overflow_shared_memory(height, width):
    """Window 0 and threshold 0 make every pixel a peak: 1024 fills the block's list, 1056 overflows it and takes
    the serial fallback. Both must give the CPU's best 16, ties in raster order."""
    assert cuda_kernels.CANDIDATE_CAPACITY == 1024
    heatmaps = quantised_maps(seed=height, frames=1, channels=1, height=height, width=width, levels=16)
    expected = peaks_of(kernels, heatmaps, 1, 0.0, 0, 16)
    assert expected[0][0, 0] == 16
    assert_same_peaks(peaks_of(cuda_kernels, heatmaps, 1, 0.0, 0, 16), expected)


@requires_device
@pytest.mark.parametrize("seed", range(3))
def test_assign_on_the_device_is_scipys_even_with_ties(seed):
    rng = np.random.default_rng(seed)
    frames, capacity = 2, 6
    limbs = np.array([[0, 1], [1, 2], [2, 0]], np.int32)
    peak_counts = rng.integers(0, capacity + 1, (frames, 3)).astype(np.int32)
    limb_scores = (rng.integers(0, 4, (frames, len(limbs), capacity, capacity)) / 4.0).astype(np.float32)
    match_counts = np.zeros((frames, len(limbs)), np.int32)
    matches = np.zeros((frames, len(limbs), capacity, 2), np.int32)  # stale values must be overwritten
    match_scores = np.ones((frames, len(limbs), capacity), np.float32)
    cuda_kernels.assign(limb_scores, limbs, peak_counts, frames, match_counts, matches, match_scores, None)
    expected_counts, expected_matches, expected_scores = reference_assign(limb_scores, limbs, peak_counts)
    np.testing.assert_array_equal(match_counts, expected_counts)
    np.testing.assert_array_equal(matches, expected_matches)
    np.testing.assert_array_equal(match_scores, expected_scores)


@requires_device
@pytest.mark.parametrize("factor", [2, 3, 4])
def test_upsample_matches_cv2_inter_cubic(factor):
    rng = np.random.default_rng(factor)
    maps = rng.random((2, 3, 4, 6)).astype(np.float32)
    maps[0, 1, 1:3, 2:4] = 1.0  # a plateau, as clipped heatmaps have
    out = np.zeros((2, 2, 4 * factor, 6 * factor), np.float32)  # only the first two channels
    cuda_kernels.upsample(maps, factor, out)
    for n in range(2):
        hwc = np.ascontiguousarray(maps[n].transpose(1, 2, 0))
        expected = cv2.resize(hwc, (6 * factor, 4 * factor), interpolation=cv2.INTER_CUBIC).transpose(2, 0, 1)
        np.testing.assert_allclose(out[n], expected[:2], rtol=0, atol=1e-5)


@requires_device
def test_parse_on_device_finds_the_cpu_chains_people_and_copies_only_compact_results():
    from numba import cuda

    config = ParseConfig(min_parts=2, max_peaks=8, max_people=6)
    heatmaps, pafs = small_random_batch(seed=3)
    on_cpu = run_chain(kernels, heatmaps, pafs, config)
    stream = cuda.stream()
    buffers = cuda_kernels.allocate_device_parse_buffers(3, HPE_0001.num_keypoints, len(HPE_0001.limbs),
                                                         config.max_peaks, config.max_people)  # room for 3
    tables = cuda_kernels.tables_on_device(HPE_0001, stream=stream)
    heatmaps_device, pafs_device = cuda.to_device(heatmaps, stream=stream), cuda.to_device(pafs, stream=stream)
    transfer = cuda_kernels.parse_on_device(heatmaps_device, pafs_device, tables, config, buffers, stream=stream)
    host = buffers.host
    assert transfer.frames == 2 and on_cpu.person_counts.sum() > 0
    assert transfer.bytes_per_frame == cuda_kernels.host_bytes_per_frame(HPE_0001.num_keypoints,
                                                                         len(HPE_0001.limbs), config.max_peaks)
    np.testing.assert_array_equal(host.person_counts[:2], on_cpu.person_counts)
    np.testing.assert_array_equal(host.people_dropped[:2], on_cpu.people_dropped)
    for n in range(2):
        assert_same_people(kernel_people(host, n), kernel_people(on_cpu, n))


@requires_device
def test_parse_on_device_upsamples_on_the_device():
    """A three-keypoint toy skeleton (few channels keep the simulator quick), maps doubled before the parse."""
    toy = Layout(keypoints=("head", "hip", "foot"), limbs=np.array([[0, 1], [1, 2]], np.int32),
                 paf_channels=np.array([[0, 1], [2, 3]], np.int32), redundant=np.zeros(2, np.bool_),
                 background_channel=False)
    people = [{0: (2.2, 1.1), 1: (2.4, 4.0), 2: (2.1, 6.8)}, {0: (7.6, 1.3), 1: (7.3, 4.2), 2: (7.7, 6.6)}]
    heatmaps, pafs = render_maps(people, height=8, width=10, sigma=0.8, layout=toy)
    heatmaps, pafs = heatmaps[None], pafs[None]
    config = ParseConfig(upsample=2, min_parts=3, max_peaks=4, max_people=4)
    upsampled_heatmaps = np.zeros((1, 3, 16, 20), np.float32)
    upsampled_pafs = np.zeros((1, 4, 16, 20), np.float32)
    cuda_kernels.upsample(heatmaps, 2, upsampled_heatmaps)
    cuda_kernels.upsample(pafs, 2, upsampled_pafs)
    on_cpu = run_chain(kernels, upsampled_heatmaps, upsampled_pafs, ParseConfig(min_parts=3, max_peaks=4,
                                                                                  max_people=4), toy)
    assert on_cpu.person_counts[0] == 2

    from numba import cuda

    buffers = cuda_kernels.allocate_device_parse_buffers(1, 3, 2, config.max_peaks, config.max_people)
    cuda_kernels.parse_on_device(cuda.to_device(heatmaps), cuda.to_device(pafs), toy, config, buffers)
    np.testing.assert_array_equal(buffers.host.person_counts, on_cpu.person_counts)
    assert_same_people(kernel_people(buffers.host, 0), kernel_people(on_cpu, 0))


@requires_device
def test_foreign_device_arrays_enter_without_a_copy():
    if cuda_kernels.simulated():
        pytest.skip("the simulator has no device memory to share")
    from numba import cuda

    class Foreign:
        """Any producer's device buffer (torch, CuPy, TensorRT bindings) as the CUDA array interface shows it."""

        def __init__(self, array):
            self._array = array
            self.__cuda_array_interface__ = array.__cuda_array_interface__

    heatmaps = quantised_maps(seed=5, frames=2, channels=3, height=12, width=16)
    device_heatmaps = cuda.to_device(heatmaps)
    pointer = device_heatmaps.device_ctypes_pointer.value
    assert cuda_kernels.as_device_array(Foreign(device_heatmaps)).device_ctypes_pointer.value == pointer
    raw = cuda_kernels.wrap_device_pointer(pointer, heatmaps.shape, np.float32, owner=device_heatmaps)
    assert raw.device_ctypes_pointer.value == pointer
    np.testing.assert_array_equal(raw.copy_to_host(), heatmaps)
    assert_same_peaks(peaks_of(cuda_kernels, Foreign(device_heatmaps), 3, 0.25, 1, 5),
                      peaks_of(kernels, heatmaps, 3, 0.25, 1, 5))


class _DeviceOutputs:
    """A real backend whose outputs are handed over on the device, as the torch and TensorRT backends do."""

    def __init__(self, backend):
        self._backend = backend
        self.name = backend.name
        self.resizable = backend.resizable
        self.cuda_stream = None  # the default stream
        self.outputs_on_gpu = True

    def describe(self, height, width):
        return self._backend.describe(height, width)

    def infer(self, batch):
        return self._backend.infer(batch)

    def infer_device(self, batch):
        heatmaps, pafs = self._backend.infer(batch)
        return cuda_kernels.cuda.to_device(heatmaps), cuda_kernels.cuda.to_device(pafs)


@requires_device
def test_estimator_parses_device_outputs_on_the_device_like_the_cpu(tiny_model):
    from posestream.pipeline.core.model import load_model_spec
    from posestream.pipeline.estimators.bottomup import BottomUpEstimator, EstimatorConfig
    from posestream.pipeline.inference.backends import BackendConfig, create_backend

    spec = load_model_spec(str(tiny_model))
    backend = _DeviceOutputs(create_backend(spec, BackendConfig()))
    parse = ParseConfig(peak_threshold=0.0, min_parts=2, min_mean_score=0.0, max_peaks=8, max_people=8)
    on_cpu = BottomUpEstimator(spec, backend, EstimatorConfig(parse=parse))
    on_device = BottomUpEstimator(spec, backend, EstimatorConfig(parse=parse, parse_device="cuda"))
    rng = np.random.default_rng(5)
    images = [rng.integers(0, 256, (60, 90, 3), dtype=np.uint8) for _ in range(2)]
    expected, got = on_cpu(images), on_device(images)
    assert sum(len(people) for people in expected) > 0
    for want, have in zip(expected, got):
        assert len(want) == len(have)
        for a, b in zip(want, have):
            np.testing.assert_allclose(a.keypoints, b.keypoints, atol=1e-3)
            assert abs(a.score - b.score) < 1e-5


def test_estimator_refuses_a_device_parse_on_a_host_backend(tiny_model):
    from posestream.pipeline.core.errors import PosestreamError
    from posestream.pipeline.core.model import load_model_spec
    from posestream.pipeline.estimators.bottomup import BottomUpEstimator, EstimatorConfig
    from posestream.pipeline.inference.backends import BackendConfig, create_backend

    spec = load_model_spec(str(tiny_model))
    with pytest.raises(PosestreamError, match="cannot parse on the GPU"):
        BottomUpEstimator(spec, create_backend(spec, BackendConfig()), EstimatorConfig(parse_device="cuda"))
