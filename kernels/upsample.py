"""Bicubic upsampling of network maps on the CPU: the twin of kernels.cuda.upsample.

A parse at a finer grid than the network's stride (``ParseConfig.upsample`` > 1) resizes the heatmaps
and PAFs first. This is cv2.resize with INTER_CUBIC, whose convention the CUDA twin reproduces: output
pixel centre x maps to source (x + 0.5) / f - 0.5, cubic weights with A = -0.75, border pixels
replicated. Like the CUDA twin it writes into an output the caller allocated, and may fill only the
first channels of the maps.
"""
from __future__ import annotations

import cv2
import numpy as np


def upsample_cpu(maps: np.ndarray, factor: int, out: np.ndarray) -> None:
    """N x C x H x W -> out (N x C' x H*f x W*f, C' <= C: the first C' channels), bicubic."""
    factor = int(factor)
    n, channels, height, width = out.shape
    if (n != maps.shape[0] or channels > maps.shape[1]
            or (height, width) != (maps.shape[2] * factor, maps.shape[3] * factor)):
        raise ValueError(f"out is {tuple(out.shape)}, expected {maps.shape[0]} x (<= {maps.shape[1]}) x "
                         f"{maps.shape[2] * factor} x {maps.shape[3] * factor}")
    if channels == 0:
        return  # cv2 has no zero-channel image; there is nothing to write
    for i in range(n):
        # cv2 resizes up to 512 channels at once in HWC layout.
        hwc = np.ascontiguousarray(maps[i, :channels].transpose(1, 2, 0))
        resized = cv2.resize(hwc, (width, height), interpolation=cv2.INTER_CUBIC)
        # cv2 drops the channel axis of a one-channel image; the reshape puts it back.
        out[i] = resized.reshape(height, width, channels).transpose(2, 0, 1)
