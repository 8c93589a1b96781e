"""The torch soft-argmax (trainers) agrees with the Numba kernel and passes gradients to the maps."""
from __future__ import annotations

import numpy as np
import pytest

from posestream import kernels

torch = pytest.importorskip("torch")
from posestream.trainers.heatmap_paf.soft_argmax import soft_argmax  # noqa: E402


def test_torch_soft_argmax_matches_the_numba_kernel():
    rng = np.random.default_rng(0)
    maps = rng.normal(size=(2, 4, 9, 13)).astype(np.float32)
    expected = np.zeros((2, 4, 3), np.float32)
    kernels.softargmax(maps, 4, 3.0, expected)
    got = soft_argmax(torch.from_numpy(maps), 3.0).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_gradients_move_the_position_towards_a_target():
    maps = torch.zeros(1, 1, 8, 8, requires_grad=True)
    target = torch.tensor([6.0, 2.0])
    optimiser = torch.optim.Adam([maps], lr=0.05)
    start = (soft_argmax(maps, 2.0)[0, 0, :2] - target).norm().item()
    for _ in range(100):
        optimiser.zero_grad()
        loss = (soft_argmax(maps, 2.0)[0, 0, :2] - target).pow(2).sum()
        loss.backward()
        optimiser.step()
    end = (soft_argmax(maps, 2.0)[0, 0, :2] - target).norm().item()
    assert end < 0.25 * start
