"""Top-down crops (kernels/crop.py, kernels/crop_cuda.py): box normalisation, crop affines, and crop + normalise
against the float reference (kernels/reference.py) on random and real images.

The "cuda" cases run wherever the CUDA twin can: on a GPU, or in Numba's simulator, which the last test here
starts in a subprocess for CI (the simulator must be chosen before numba is imported). Crops stay small (at most
5 crops of 32 x 24) because the simulator runs every GPU thread as a Python thread.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest

import posestream.kernels.cuda as cuda_kernels
from posestream.kernels.crop import (
    apply_affines,
    crop_affines,
    crop_normalise_cpu,
    denormalise_points,
    expand_boxes,
    normalise_points,
)
from posestream.kernels.reference import reference_crop_normalise
from tests.helpers import REPO

BACKENDS = ["cpu", "cuda"]
CROP_HEIGHT, CROP_WIDTH = 32, 24
IMAGE_HEIGHT, IMAGE_WIDTH = 40, 56
IMAGENET = ((123.675, 116.28, 103.53), (1 / 58.395, 1 / 57.12, 1 / 57.375))  # in grey levels, RGB order
RAW = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
# The CUDA twin samples in float: its distance from the float reference, in output units.
CUDA_TOLERANCE = 1e-3
# Boxes of every kind the parity cases draw from, for a 40 x 56 image: [cx, cy, w, h].
BOX_KINDS = {
    "inside": (28.0, 20.0, 30.0, 36.0),
    "off-the-left-top": (-3.0, 4.0, 22.0, 30.0),
    "off-the-right-bottom": (52.5, 37.25, 18.0, 26.0),
    "tiny": (17.3, 22.6, 0.7, 0.9),
    "huge": (30.0, 18.0, 230.0, 170.0),
    "wholly-outside": (-40.0, 80.0, 12.0, 16.0),
}


def requires(backend: str):
    if backend == "cuda" and not cuda_kernels.device_available():
        pytest.skip("no CUDA GPU and not in the simulator (test_the_cuda_cases_pass_in_the_simulator runs them)")


def crop_normalise(backend: str, image, to_image, out, mean, scale, swap_rb, pad_value) -> None:
    if backend == "cpu":
        crop_normalise_cpu(image, to_image, out, mean, scale, swap_rb, pad_value)
    else:
        from posestream.kernels.crop_cuda import crop_normalise_cuda

        crop_normalise_cuda(image, to_image, out, mean, scale, swap_rb, pad_value)


def cpu_grey_tolerance(image: np.ndarray, pad_value: float) -> float:
    """How far cv2.warpAffine on uint8 may be from the float reference, in grey levels.

    It rounds its result to an integer: 0.5, plus under 0.05 for fixed-point weights. OpenCV 5 samples at the
    exact position (0.5 measured on every case here, random and real images). OpenCV 4.x also rounds the
    position to 1/32 pixel (1/64 + 1/1024 at most), which moves a bilinear sample by up to that times the
    largest step between neighbouring pixels, per axis: about 9 grey levels on noise, 5 on the LSP photo.
    """
    rounding = 0.55
    if int(cv2.__version__.split(".")[0]) >= 5:
        return rounding
    padded = np.pad(image.astype(np.int64), ((1, 1), (1, 1), (0, 0)), constant_values=int(round(pad_value)))
    step_x = np.abs(np.diff(padded, axis=1)).max()
    step_y = np.abs(np.diff(padded, axis=0)).max()
    return rounding + (step_x + step_y) * (1 / 64 + 1 / 1024)


def assert_matches_reference(backend, out, image, to_image, mean, scale, swap_rb, pad_value) -> float:
    """-> the largest difference from the reference, in output units."""
    expected = reference_crop_normalise(image, to_image, out.shape[2], out.shape[3], mean, scale, swap_rb,
                                        pad_value)
    error = float(np.abs(out - expected).max())
    tolerance = CUDA_TOLERANCE if backend == "cuda" else cpu_grey_tolerance(image, pad_value) * max(map(abs, scale))
    assert error <= tolerance, f"{backend}: {error} from the reference, tolerance {tolerance}"
    return error


# ------------------------------------------------------------------------------------ boxes and points


def random_boxes(rng, count: int) -> np.ndarray:
    """Boxes of every size, many partly off a 40 x 56 image."""
    centres = rng.uniform((-10.0, -10.0), (IMAGE_WIDTH + 10.0, IMAGE_HEIGHT + 10.0), (count, 2))
    sizes = np.exp(rng.uniform(np.log(0.5), np.log(300.0), (count, 2)))
    return np.concatenate([centres, sizes], axis=1)


def test_normalise_then_denormalise_returns_the_points():
    rng = np.random.default_rng(0)
    boxes = random_boxes(rng, 5)
    points = rng.uniform(-100.0, 200.0, (5, 3, 4, 2))
    normalised = normalise_points(points, boxes)
    np.testing.assert_allclose(denormalise_points(normalised, boxes), points, rtol=0, atol=1e-9)
    # N maps the box onto the unit square centred at 0.
    corners = boxes[:, None, :2] + np.array([[-0.5, -0.5], [0.5, 0.5]]) * boxes[:, None, 2:]
    np.testing.assert_allclose(normalise_points(corners, boxes), np.broadcast_to([[-0.5, -0.5], [0.5, 0.5]],
                                                                                 (5, 2, 2)), atol=1e-12)


def test_crop_affines_are_inverses_of_each_other():
    boxes = random_boxes(np.random.default_rng(1), 7)
    to_crop, to_image = crop_affines(boxes, CROP_HEIGHT, CROP_WIDTH)
    assert to_crop.shape == to_image.shape == (7, 2, 3) and to_crop.dtype == to_image.dtype == np.float64
    homogeneous = np.zeros((7, 3, 3))
    homogeneous[:, 2, 2] = 1.0
    forward, backward = homogeneous.copy(), homogeneous.copy()
    forward[:, :2], backward[:, :2] = to_crop, to_image
    np.testing.assert_allclose(backward @ forward, np.broadcast_to(np.eye(3), (7, 3, 3)), atol=1e-9)
    np.testing.assert_allclose(forward @ backward, np.broadcast_to(np.eye(3), (7, 3, 3)), atol=1e-9)


def test_a_box_centre_lands_on_the_crop_centre_and_its_edges_on_the_crop_edges():
    boxes = random_boxes(np.random.default_rng(2), 6)
    to_crop, _ = crop_affines(boxes, CROP_HEIGHT, CROP_WIDTH)
    half = boxes[:, 2:] / 2
    points = np.stack([boxes[:, :2], boxes[:, :2] - half, boxes[:, :2] + half], axis=1)  # centre, corners
    in_crop = np.empty_like(points)
    apply_affines(points, to_crop, in_crop)
    centre = ((CROP_WIDTH - 1) / 2, (CROP_HEIGHT - 1) / 2)
    np.testing.assert_allclose(in_crop[:, 0], np.broadcast_to(centre, (6, 2)), atol=1e-9)
    np.testing.assert_allclose(in_crop[:, 1], np.full((6, 2), -0.5), atol=1e-9)
    np.testing.assert_allclose(in_crop[:, 2], np.broadcast_to((CROP_WIDTH - 0.5, CROP_HEIGHT - 0.5), (6, 2)),
                               atol=1e-9)


def test_crop_pixels_are_the_box_normalisation_scaled_to_the_crop():
    """to_crop(y) = N(y; b) * (w, h) + ((w - 1) / 2, (h - 1) / 2): the affines and N are one convention."""
    rng = np.random.default_rng(3)
    boxes = random_boxes(rng, 4)
    points = rng.uniform(-50.0, 100.0, (4, 14, 2))
    to_crop, _ = crop_affines(boxes, CROP_HEIGHT, CROP_WIDTH)
    in_crop = points.copy()
    apply_affines(in_crop, to_crop, in_crop)  # in place
    expected = normalise_points(points, boxes) * (CROP_WIDTH, CROP_HEIGHT) + ((CROP_WIDTH - 1) / 2,
                                                                               (CROP_HEIGHT - 1) / 2)
    np.testing.assert_allclose(in_crop, expected, rtol=0, atol=1e-9)


@pytest.mark.parametrize("scale", [1.0, 1.25, 2.0])
def test_expand_boxes_keeps_the_crop_aspect_and_contains_the_box(scale):
    boxes = np.array([[10.0, 20.0, 30.0, 90.0], [10.0, 20.0, 90.0, 30.0], [0.0, 0.0, 24.0, 32.0],
                      [5.0, 5.0, 0.0, 10.0], [5.0, 5.0, 1e-3, 1e4]])
    expanded = expand_boxes(boxes, CROP_HEIGHT, CROP_WIDTH, scale)
    np.testing.assert_array_equal(expanded[:, :2], boxes[:, :2])
    np.testing.assert_allclose(expanded[:, 2] / expanded[:, 3], CROP_WIDTH / CROP_HEIGHT, rtol=1e-12)
    assert (expanded[:, 2:] >= boxes[:, 2:] * scale * (1 - 1e-12)).all()
    grown_by_exactly_scale = np.isclose(expanded[:, 2:], boxes[:, 2:] * scale, rtol=1e-12)
    assert grown_by_exactly_scale.any(axis=1).all(), "one side grows by scale alone, the other to the aspect"
    # A box already at the crop's aspect only grows by scale.
    np.testing.assert_allclose(expanded[2, 2:], np.array([24.0, 32.0]) * scale)


def test_bad_boxes_and_arrays_are_refused_with_a_reason():
    with pytest.raises(ValueError, match=r"box 1 .* positive width and height"):
        crop_affines(np.array([[1.0, 1.0, 4.0, 4.0], [1.0, 1.0, 0.0, 4.0]]), CROP_HEIGHT, CROP_WIDTH)
    with pytest.raises(ValueError, match=r"\(B, 4\)"):
        crop_affines(np.zeros((3, 3)), CROP_HEIGHT, CROP_WIDTH)
    _, to_image = crop_affines(np.array([[10.0, 10.0, 8.0, 8.0]]), CROP_HEIGHT, CROP_WIDTH)
    image = np.zeros((20, 20, 3), np.uint8)
    out = np.zeros((1, 3, CROP_HEIGHT, CROP_WIDTH), np.float32)
    with pytest.raises(ValueError, match="uint8"):
        crop_normalise_cpu(image.astype(np.float32), to_image, out, *RAW, False, 0)
    with pytest.raises(ValueError, match=r"to_image must be \(2, 2, 3\)"):
        crop_normalise_cpu(image, to_image, np.zeros((2, 3, 4, 4), np.float32), *RAW, False, 0)
    with pytest.raises(ValueError, match="pad_value"):
        crop_normalise_cpu(image, to_image, out, *RAW, False, 300)
    with pytest.raises(ValueError, match=r"points must be \(1, \.\.\., 2\)"):
        normalise_points(np.zeros((2, 2)), np.array([[10.0, 10.0, 8.0, 8.0]]))


# --------------------------------------------------------------------------------------------- pixels


PARITY_CASES = {
    # name: (boxes, normalisation, swap_rb, pad value)
    "one-inside-imagenet-bgr": (["inside"], IMAGENET, False, 114),
    "one-off-the-edge-raw-rgb": (["off-the-left-top"], RAW, True, 0),
    "five-mixed-imagenet-rgb": (["off-the-right-bottom", "tiny", "huge", "inside", "wholly-outside"], IMAGENET,
                                True, 114),
    "five-mixed-raw-bgr": (["huge", "off-the-left-top", "tiny", "off-the-right-bottom", "inside"], RAW, False, 255),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", sorted(PARITY_CASES))
def test_crops_match_the_float_reference(backend, case):
    requires(backend)
    kinds, (mean, scale), swap_rb, pad_value = PARITY_CASES[case]
    rng = np.random.default_rng(sorted(PARITY_CASES).index(case))
    image = rng.integers(0, 256, (IMAGE_HEIGHT, IMAGE_WIDTH, 3), dtype=np.uint8)  # noise: any misplacement shows
    boxes = np.array([BOX_KINDS[kind] for kind in kinds])
    _, to_image = crop_affines(boxes, CROP_HEIGHT, CROP_WIDTH)
    out = np.full((len(boxes), 3, CROP_HEIGHT, CROP_WIDTH), np.nan, np.float32)
    crop_normalise(backend, image, to_image, out, mean, scale, swap_rb, pad_value)
    assert_matches_reference(backend, out, image, to_image, mean, scale, swap_rb, pad_value)


@pytest.mark.parametrize("backend", BACKENDS)
def test_random_boxes_match_the_float_reference(backend):
    requires(backend)
    rng = np.random.default_rng(7)
    image = rng.integers(0, 256, (IMAGE_HEIGHT, IMAGE_WIDTH, 3), dtype=np.uint8)
    boxes = random_boxes(rng, 3)
    _, to_image = crop_affines(boxes, 16, 12)
    out = np.zeros((3, 3, 16, 12), np.float32)
    crop_normalise(backend, image, to_image, out, *IMAGENET, True, 114)
    assert_matches_reference(backend, out, image, to_image, *IMAGENET, True, 114)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_box_as_large_as_the_image_copies_it_exactly(backend):
    """Box (W/2 - 0.5, H/2 - 0.5, W, H) at the image's own size: to_image is the identity, the crop is the image."""
    requires(backend)
    height, width = 10, 14
    image = np.random.default_rng(8).integers(0, 256, (height, width, 3), dtype=np.uint8)
    _, to_image = crop_affines(np.array([[width / 2 - 0.5, height / 2 - 0.5, width, height]]), height, width)
    np.testing.assert_allclose(to_image[0], [[1, 0, 0], [0, 1, 0]], atol=1e-12)
    out = np.zeros((1, 3, height, width), np.float32)
    crop_normalise(backend, image, to_image, out, *RAW, True, 0)
    np.testing.assert_array_equal(out[0], image[:, :, ::-1].transpose(2, 0, 1).astype(np.float32))


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_box_off_the_image_is_all_pad_normalised(backend):
    requires(backend)
    image = np.full((IMAGE_HEIGHT, IMAGE_WIDTH, 3), 7, np.uint8)
    _, to_image = crop_affines(np.array([BOX_KINDS["wholly-outside"]]), 8, 6)
    out = np.zeros((1, 3, 8, 6), np.float32)
    mean, scale = IMAGENET
    crop_normalise(backend, image, to_image, out, mean, scale, True, 114)
    for channel in range(3):
        np.testing.assert_allclose(out[0, channel], (114 - mean[channel]) * scale[channel], rtol=1e-6)


@pytest.mark.shared
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_person_from_lsp_is_cropped_and_its_joints_go_there_and_back(backend, shared):
    from posestream.pipeline.evaluation.lsp import read_lsp_dataset

    requires(backend)
    annotations = read_lsp_dataset(shared / "data" / "lsp")
    index = 1000
    assert annotations.image_paths[index].name == "im1001.jpg"
    image = cv2.imread(str(annotations.image_paths[index]))
    joints = annotations.joints[index][None]  # (1, 14, 2)
    low, high = joints[0].min(axis=0), joints[0].max(axis=0)
    box = np.concatenate([(low + high) / 2, high - low])[None]
    height, width = 64, 48  # small enough for the simulator
    boxes = expand_boxes(box, height, width, scale=1.25)
    to_crop, to_image = crop_affines(boxes, height, width)

    in_crop = np.empty_like(joints)
    apply_affines(joints, to_crop, in_crop)
    # The box was grown by 1.25 at least along each axis: the joints lie in its middle 80%.
    assert (np.abs(normalise_points(joints, boxes)) <= 0.4 + 1e-9).all()
    assert (in_crop >= -0.5).all() and (in_crop <= np.array([width, height]) - 0.5).all()
    back = np.empty_like(in_crop)
    apply_affines(in_crop, to_image, back)
    np.testing.assert_allclose(back, joints, rtol=0, atol=1e-9)

    out = np.zeros((1, 3, height, width), np.float32)
    crop_normalise(backend, image, to_image, out, *IMAGENET, True, 114)
    assert_matches_reference(backend, out, image, to_image, *IMAGENET, True, 114)
    # What the crop shows at each joint is what the image shows there: the person is in the crop, in place.
    # (Nearest crop pixel against the image's nearest pixel: about a pixel of blur, on edges too.)
    nearest = np.round(in_crop[0]).astype(int)
    crop_at_joints = out[0][:, nearest[:, 1], nearest[:, 0]].T
    rgb = image[:, :, ::-1].astype(np.float64)
    image_at_joints = (rgb[np.round(joints[0, :, 1]).astype(int), np.round(joints[0, :, 0]).astype(int)]
                       - IMAGENET[0]) * IMAGENET[1]
    differences = np.abs(crop_at_joints - image_at_joints) / np.array(IMAGENET[1])  # grey levels
    # Measured: median 10 grey levels; against another joint's pixel (a misplaced crop) it is 57.
    assert np.median(differences) < 25


# ------------------------------------------------------------------------------------------ the device twin


@pytest.mark.parametrize("swap_rb", [False, True])
def test_device_arrays_in_and_out(swap_rb):
    """The pipeline's path: frame, affines and output on the device, a stream, nothing copied back implicitly."""
    requires("cuda")
    from numba import cuda

    from posestream.kernels.crop_cuda import crop_normalise_cuda

    rng = np.random.default_rng(9)
    image = rng.integers(0, 256, (IMAGE_HEIGHT, IMAGE_WIDTH, 3), dtype=np.uint8)
    _, to_image = crop_affines(np.array([BOX_KINDS["inside"], BOX_KINDS["off-the-right-bottom"]]), 12, 8)
    stream = cuda.stream()
    out_device = cuda.device_array((2, 3, 12, 8), np.float32, stream=stream)
    crop_normalise_cuda(cuda.to_device(image, stream=stream), cuda.to_device(to_image, stream=stream), out_device,
                        *IMAGENET, swap_rb, 114, stream=stream)
    out = out_device.copy_to_host(stream=stream)
    stream.synchronize()
    assert_matches_reference("cuda", out, image, to_image, *IMAGENET, swap_rb, 114)


def test_the_crop_kernel_compiles_for_a_real_gpu_when_the_cuda_compiler_is_here(compile_ptx_for_hopper):
    """Typing and lowering for sm_90, which the simulator never does (NVVM is found through CUDA_HOME)."""
    from numba import types

    from posestream.kernels import crop_cuda

    f64 = types.float64
    signature = (types.Array(types.uint8, 3, "C"), types.Array(types.float64, 3, "C"), f64, types.int64,
                 types.int64, types.int64, f64, f64, f64, f64, f64, f64, types.Array(types.float32, 4, "C"))
    assert ".entry" in compile_ptx_for_hopper(crop_cuda._crop_normalise_kernel.py_func, signature)


def test_the_cuda_cases_pass_in_the_simulator():
    """CI has no GPU: this file's cuda cases in a NUMBA_ENABLE_CUDASIM=1 subprocess (about half a minute)."""
    if cuda_kernels.simulated():
        pytest.skip("this session is the simulator: the cuda cases run in it directly")
    if cuda_kernels.device_available():
        pytest.skip("a GPU is here: the cuda cases run on it directly")
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/kernels/test_crop.py", "-k",
               "cuda or device"]
    result = subprocess.run(command, cwd=REPO, env={**os.environ, "NUMBA_ENABLE_CUDASIM": "1"},
                            capture_output=True, text=True, timeout=300)
    report = result.stdout[-6000:] + result.stderr[-3000:]
    assert result.returncode == 0, f"the crop's CUDA cases failed in the simulator:\n{report}"
    passed = int(re.search(r"(\d+) passed", result.stdout).group(1))
    assert passed >= 9, f"only {passed} cuda cases passed in the simulator:\n{report}"
