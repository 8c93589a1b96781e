"""The CPU upsample twin (kernels/upsample.py): cv2's INTER_CUBIC resize into a preallocated output, and parity
with the CUDA twin (kernels.cuda.upsample) where the CUDA kernels can run.

The CUDA comparison runs on a GPU, or in Numba's simulator, which the last test starts in a subprocess (the
simulator has to be chosen before numba is imported); the maps stay a few pixels wide because the simulator runs
each GPU thread as a Python thread.
"""
from __future__ import annotations

import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

import posestream.kernels.cuda as cuda_kernels
from posestream.kernels.upsample import upsample_cpu
from tests.helpers import REPO

requires_device = pytest.mark.skipif(not cuda_kernels.device_available(),
                                     reason="no CUDA GPU and not in the simulator (the simulator test below runs it)")
SIMULATOR_BUDGET_SECONDS = 120  # the run takes a few seconds; this only stops a hang


def random_maps(seed: int, frames: int = 2, channels: int = 3, height: int = 4, width: int = 6) -> np.ndarray:
    rng = np.random.default_rng(seed)
    maps = rng.random((frames, channels, height, width)).astype(np.float32)
    maps[0, min(1, channels - 1), 1:3, 2:4] = 1.0  # a plateau, as clipped heatmaps have
    return maps


def cv2_reference(maps: np.ndarray, factor: int) -> np.ndarray:
    """cv2.resize INTER_CUBIC of each frame's channels, one channel at a time (no channel-axis handling)."""
    n, channels, height, width = maps.shape
    out = np.empty((n, channels, height * factor, width * factor), np.float32)
    for i in range(n):
        for c in range(channels):
            out[i, c] = cv2.resize(maps[i, c], (width * factor, height * factor), interpolation=cv2.INTER_CUBIC)
    return out


@pytest.mark.parametrize("factor", [2, 3, 4])
@pytest.mark.parametrize("channels", [1, 3, 19])
def test_upsample_cpu_matches_cv2_inter_cubic(factor, channels):
    maps = random_maps(factor * 100 + channels, channels=channels)
    out = np.full((2, channels, 4 * factor, 6 * factor), np.nan, np.float32)  # every value must be written
    assert upsample_cpu(maps, factor, out) is None
    # cv2 vectorises many channels otherwise than one: the sums agree within a few float32 steps, not bit for bit.
    np.testing.assert_allclose(out, cv2_reference(maps, factor), rtol=0, atol=1e-5)


def test_upsample_cpu_fills_only_the_first_channels_of_out():
    maps = random_maps(7, channels=5)
    out = np.zeros((2, 2, 8, 12), np.float32)
    upsample_cpu(maps, 2, out)
    np.testing.assert_allclose(out, cv2_reference(maps, 2)[:, :2], rtol=0, atol=1e-5)


@pytest.mark.parametrize("shape", [(2, 4, 8, 12), (2, 3, 8, 13), (2, 3, 9, 12), (1, 3, 8, 12)])
def test_upsample_cpu_rejects_an_output_of_the_wrong_shape(shape):
    with pytest.raises(ValueError, match="out is"):
        upsample_cpu(random_maps(0), 2, np.zeros(shape, np.float32))


@requires_device
@pytest.mark.parametrize("factor", [2, 3])
def test_upsample_cpu_matches_the_cuda_twin(factor):
    maps = random_maps(factor)
    on_cpu = np.zeros((2, 2, 4 * factor, 6 * factor), np.float32)  # only the first two channels, as on the device
    on_device = np.zeros_like(on_cpu)
    upsample_cpu(maps, factor, on_cpu)
    cuda_kernels.upsample(maps, factor, on_device)
    # cv2 sums in float32 in an order of its own: the twins agree within ~1e-6 of the maps' range.
    np.testing.assert_allclose(on_device, on_cpu, rtol=0, atol=1e-5)


def test_upsample_cpu_matches_the_cuda_twin_in_the_simulator():
    """Without a GPU, the comparison above runs in Numba's CUDA simulator, in a subprocess (a few seconds)."""
    if cuda_kernels.device_available():
        pytest.skip("the CUDA kernels run in this session: the comparison above ran directly")
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/kernels/test_upsample.py",
               "-k", "test_upsample_cpu_matches_the_cuda_twin and not simulator"]
    result = subprocess.run(command, cwd=REPO, env={**os.environ, "NUMBA_ENABLE_CUDASIM": "1"},
                            capture_output=True, text=True, timeout=SIMULATOR_BUDGET_SECONDS)
    assert result.returncode == 0, f"the CUDA twin comparison failed in the simulator:\n{result.stdout[-4000:]}"
    assert "2 passed" in result.stdout, result.stdout[-2000:]
