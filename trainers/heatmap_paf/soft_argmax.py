"""Soft-argmax in torch: the differentiable twin of kernels.softargmax, for training on keypoint positions.

Integral-regression style losses need positions that gradients flow through; this computes the same
expected position under softmax(beta * map) as the Numba kernel (tests hold them to each other).
"""
from __future__ import annotations

import torch


def soft_argmax(heatmaps: torch.Tensor, beta: float) -> torch.Tensor:
    """N x K x H x W maps -> N x K x 3: (x, y) in map pixels under softmax(beta * map), and each map's maximum."""
    n, k, height, width = heatmaps.shape
    flat = heatmaps.reshape(n, k, height * width)
    weights = torch.softmax(beta * flat, dim=-1)  # softmax subtracts the maximum itself: no overflow
    ys = torch.arange(height, dtype=heatmaps.dtype, device=heatmaps.device).repeat_interleave(width)
    xs = torch.arange(width, dtype=heatmaps.dtype, device=heatmaps.device).repeat(height)
    x = (weights * xs).sum(-1)
    y = (weights * ys).sum(-1)
    return torch.stack([x, y, flat.amax(-1)], dim=-1)
