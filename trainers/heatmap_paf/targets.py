"""Training targets for a heatmap + PAF network: what the maps should be, and where the loss may look.

Everything is in network-input pixels and produced at the network's stride, with map cell centres at
``(i + 0.5) * stride - 0.5`` (the convention the parse uses to read peaks back). For one sample:

* heatmaps, K + 1 channels: a Gaussian of ``sigma`` input pixels around each labelled keypoint, the max
  over people per keypoint channel; the last channel is background = 1 - max over the keypoint channels.
* PAFs, 2 channels per limb: the limb's unit vector at every cell whose centre lies on the segment
  (between its ends, measured along it) and within ``paf_width`` input pixels of it (across it); where
  several people's limbs cover a cell their vectors are averaged, as OpenPose does.
* a loss mask, heatmap channels then PAF channels, 1 = supervised, 0 = unknown. Unknown are: ignore
  regions (crowds, people nobody labelled) in every channel; for a person missing keypoint k, channel k
  inside that person's box, and both channels of every limb touching k there; the background channel
  wherever any keypoint channel is unknown. A missing label therefore never teaches "no keypoint here".

All of it is numpy, vectorised over people, keypoints and limbs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from posestream.pipeline.networks.layout import LIMBS, NUM_KEYPOINTS, STRIDE


@dataclass(frozen=True)
class TargetConfig:
    sigma: float = 7.0  # Gaussian spread of a keypoint's heatmap peak, in input pixels
    paf_width: float = 8.0  # a limb's field reaches this far either side of the segment, in input pixels
    stride: int = STRIDE


@dataclass(frozen=True)
class Targets:
    heatmaps: np.ndarray  # (K + 1) x h x w float32
    pafs: np.ndarray  # 2L x h x w float32
    mask: np.ndarray  # (K + 1 + 2L) x h x w float32, heatmap channels first


def cell_centres(size: int, stride: int) -> np.ndarray:
    """Input-pixel coordinate of each map cell's centre along one axis."""
    return (np.arange(size, dtype=np.float32) + 0.5) * stride - 0.5


def make_heatmaps(keypoints: np.ndarray, map_height: int, map_width: int, config: TargetConfig) -> np.ndarray:
    """keypoints P x K x 3 (x, y, v; v > 0 = labelled) -> (K + 1) x h x w; the last channel is background."""
    num_keypoints = keypoints.shape[1]
    heatmaps = np.zeros((num_keypoints + 1, map_height, map_width), np.float32)
    labelled = keypoints[..., 2] > 0
    if labelled.any():
        xs = cell_centres(map_width, config.stride)
        ys = cell_centres(map_height, config.stride)
        scale = -0.5 / (config.sigma ** 2)
        # exp(-(dx^2 + dy^2) / 2s^2) = exp(-dx^2 / 2s^2) * exp(-dy^2 / 2s^2): two small tables, one product.
        along_x = np.exp(scale * (xs[None, None, :] - keypoints[..., 0:1]) ** 2)  # P x K x w
        along_y = np.exp(scale * (ys[None, None, :] - keypoints[..., 1:2]) ** 2)  # P x K x h
        along_x *= labelled[..., None]
        peaks = along_y[..., :, None] * along_x[..., None, :]  # P x K x h x w
        heatmaps[:num_keypoints] = peaks.max(axis=0)
    heatmaps[num_keypoints] = 1.0 - heatmaps[:num_keypoints].max(axis=0)
    return heatmaps


def make_pafs(keypoints: np.ndarray, map_height: int, map_width: int, config: TargetConfig,
              limbs: tuple[tuple[int, int], ...] = LIMBS) -> np.ndarray:
    """keypoints P x K x 3 -> 2L x h x w unit limb vectors, averaged over the people covering a cell."""
    pafs = np.zeros((2 * len(limbs), map_height, map_width), np.float32)
    if len(keypoints) == 0:
        return pafs
    limb_array = np.asarray(limbs, np.int64)
    start = keypoints[:, limb_array[:, 0]]  # P x L x 3
    end = keypoints[:, limb_array[:, 1]]
    delta = end[..., :2] - start[..., :2]
    length = np.linalg.norm(delta, axis=-1)  # P x L
    present = (start[..., 2] > 0) & (end[..., 2] > 0) & (length > 1e-6)
    if not present.any():
        return pafs
    unit = delta / np.where(present, length, 1.0)[..., None]  # P x L x 2
    xs = cell_centres(map_width, config.stride)
    ys = cell_centres(map_height, config.stride)
    rel_x = xs[None, None, None, :] - start[..., 0, None, None]  # P x L x 1 x w
    rel_y = ys[None, None, :, None] - start[..., 1, None, None]  # P x L x h x 1
    ux = unit[..., 0, None, None]
    uy = unit[..., 1, None, None]
    along = rel_x * ux + rel_y * uy  # P x L x h x w
    across = np.abs(rel_x * uy - rel_y * ux)
    covered = ((along >= 0) & (along <= length[..., None, None]) & (across <= config.paf_width)
               & present[..., None, None])
    count = covered.sum(axis=0)  # L x h x w
    divisor = np.maximum(count, 1).astype(np.float32)
    pafs[0::2] = (covered * ux).sum(axis=0) / divisor
    pafs[1::2] = (covered * uy).sum(axis=0) / divisor
    return pafs


def _box_cells(boxes: np.ndarray, map_height: int, map_width: int, stride: int) -> np.ndarray:
    """P x h x w bool: cells whose centre lies inside each person's box (x0, y0, x1, y1 in input pixels)."""
    xs = cell_centres(map_width, stride)
    ys = cell_centres(map_height, stride)
    inside_x = (xs[None, :] >= boxes[:, 0:1]) & (xs[None, :] <= boxes[:, 2:3])  # P x w
    inside_y = (ys[None, :] >= boxes[:, 1:2]) & (ys[None, :] <= boxes[:, 3:4])  # P x h
    return inside_y[:, :, None] & inside_x[:, None, :]


def ignore_cells(ignore: np.ndarray | None, map_height: int, map_width: int, stride: int) -> np.ndarray:
    """An input-resolution ignore mask (H x W, nonzero = ignore) -> h x w bool, a cell ignored if any
    of its pixels is."""
    if ignore is None:
        return np.zeros((map_height, map_width), np.bool_)
    height, width = map_height * stride, map_width * stride
    padded = np.zeros((height, width), np.bool_)
    h, w = min(height, ignore.shape[0]), min(width, ignore.shape[1])
    padded[:h, :w] = ignore[:h, :w] > 0
    return padded.reshape(map_height, stride, map_width, stride).any(axis=(1, 3))


def make_mask(keypoints: np.ndarray, boxes: np.ndarray, ignore: np.ndarray | None, map_height: int,
              map_width: int, config: TargetConfig,
              limbs: tuple[tuple[int, int], ...] = LIMBS) -> np.ndarray:
    """(K + 1 + 2L) x h x w float32 loss mask: 0 where the truth is unknown (see the module docstring).

    ``boxes`` P x 4 (x0, y0, x1, y1 input pixels) is where each person's unlabelled keypoints may lie.
    """
    num_keypoints = keypoints.shape[1]
    unknown_keypoint = np.zeros((num_keypoints, map_height, map_width), np.bool_)
    if len(keypoints):
        missing = keypoints[..., 2] <= 0  # P x K
        in_box = _box_cells(np.asarray(boxes, np.float32).reshape(-1, 4), map_height, map_width, config.stride)
        # Channel k is unknown where any person missing k has their box: (K x P) @ (P x hw) > 0.
        unknown_keypoint = (missing.T.astype(np.float32) @ in_box.reshape(len(in_box), -1).astype(np.float32)
                            ).reshape(num_keypoints, map_height, map_width) > 0
    limb_array = np.asarray(limbs, np.int64)
    unknown_limb = unknown_keypoint[limb_array[:, 0]] | unknown_keypoint[limb_array[:, 1]]  # L x h x w
    unknown_background = unknown_keypoint.any(axis=0)
    unknown = np.concatenate([unknown_keypoint, unknown_background[None], np.repeat(unknown_limb, 2, axis=0)])
    unknown |= ignore_cells(ignore, map_height, map_width, config.stride)[None]
    return (~unknown).astype(np.float32)


def make_targets(keypoints: np.ndarray, boxes: np.ndarray, ignore: np.ndarray | None, input_height: int,
                 input_width: int, config: TargetConfig) -> Targets:
    """Heatmaps, PAFs and loss mask for one sample whose keypoints are in input pixels.

    keypoints: P x K x 3 (x, y, v) with v > 0 labelled; boxes: P x 4 person extents; ignore: H x W or None.
    """
    if input_height % config.stride or input_width % config.stride:
        raise ValueError(f"input {input_height}x{input_width} is not a multiple of stride {config.stride}")
    keypoints = np.asarray(keypoints, np.float32)
    if keypoints.size == 0:
        keypoints = keypoints.reshape(0, NUM_KEYPOINTS, 3)
    map_height, map_width = input_height // config.stride, input_width // config.stride
    return Targets(
        heatmaps=make_heatmaps(keypoints, map_height, map_width, config),
        pafs=make_pafs(keypoints, map_height, map_width, config),
        mask=make_mask(keypoints, boxes, ignore, map_height, map_width, config),
    )
