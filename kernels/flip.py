"""Test-time flip: average a network's maps of an image with the maps of its mirror image.

The mirror image's maps, flipped back, see the person with left and right exchanged. So a heatmap channel
reads its mirror keypoint's channel (left wrist <- right wrist), and a limb's field reads its mirror limb's
field with the x component negated (and both components negated when the mirror limb is stored from its
other end). ``flip_tables`` derives those three tables from keypoint names and limbs; ``merge_flipped_cpu``
applies them in one pass and writes the average into the first maps.

Shapes (as kernels/__init__.py's glossary): heatmaps N x K' x H x W (K' = keypoints + optional
background), PAFs N x 2L x H x W. The tables: ``heatmap_source`` K' int32, ``paf_source`` 2L int32,
``paf_sign`` 2L float32.
"""
from __future__ import annotations

import numpy as np
from numba import njit


def mirror_name(name: str) -> str:
    """left_x <-> right_x; any other name is its own mirror."""
    if name.startswith("left_"):
        return "right_" + name[len("left_"):]
    if name.startswith("right_"):
        return "left_" + name[len("right_"):]
    return name


def flip_tables(keypoints: tuple[str, ...], limbs: tuple[tuple[int, int], ...],
                paf_channels: tuple[tuple[int, int], ...],
                heatmap_channels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(heatmap_source, paf_source, paf_sign) for ``merge_flipped_cpu``.

    Raises ValueError when a mirrored keypoint or limb is missing from the model's tables (a skeleton that
    is not left/right symmetric cannot be flipped).
    """
    index = {name: i for i, name in enumerate(keypoints)}
    keypoint_mirror = []
    for name in keypoints:
        if mirror_name(name) not in index:
            raise ValueError(f"keypoint {name!r} has no mirror {mirror_name(name)!r}")
        keypoint_mirror.append(index[mirror_name(name)])
    heatmap_source = np.arange(heatmap_channels, dtype=np.int32)  # background (if any) is its own mirror
    heatmap_source[:len(keypoints)] = keypoint_mirror
    limb_index = {tuple(limb): i for i, limb in enumerate(limbs)}
    paf_source = np.zeros(2 * len(limbs), np.int32)
    paf_sign = np.ones(2 * len(limbs), np.float32)
    for i, (a, b) in enumerate(limbs):
        mirrored = (keypoint_mirror[a], keypoint_mirror[b])
        if mirrored in limb_index:
            j, reverse = limb_index[mirrored], 1.0
        elif mirrored[::-1] in limb_index:
            j, reverse = limb_index[mirrored[::-1]], -1.0  # stored from the other end: the field points back
        else:
            raise ValueError(f"limb {keypoints[a]}-{keypoints[b]} has no mirror limb")
        x_out, y_out = paf_channels[i]
        x_in, y_in = paf_channels[j]
        paf_source[x_out], paf_sign[x_out] = x_in, -reverse  # mirroring negates x
        paf_source[y_out], paf_sign[y_out] = y_in, reverse
    return heatmap_source, paf_source, paf_sign


@njit(nogil=True, cache=True)
def _merge(maps, flipped, source, sign):
    """maps[c] <- (maps[c] + sign[c] x flipped[source[c]] mirrored) / 2; ``sign`` None: all +1 (heatmaps)."""
    n, channels, height, width = maps.shape
    for i in range(n):
        for c in range(channels):
            s = source[c]
            k = np.float32(1.0) if sign is None else sign[c]
            for y in range(height):
                for x in range(width):
                    maps[i, c, y, x] = 0.5 * (maps[i, c, y, x] + k * flipped[i, s, y, width - 1 - x])


def merge_flipped_cpu(heatmaps: np.ndarray, pafs: np.ndarray, flipped_heatmaps: np.ndarray,
                      flipped_pafs: np.ndarray, heatmap_source: np.ndarray, paf_source: np.ndarray,
                      paf_sign: np.ndarray) -> None:
    """In place: heatmaps, pafs <- the average of themselves and the mirror image's maps, flipped back."""
    if flipped_heatmaps.shape != heatmaps.shape or flipped_pafs.shape != pafs.shape:
        raise ValueError(f"flipped maps {flipped_heatmaps.shape}, {flipped_pafs.shape} differ from "
                         f"{heatmaps.shape}, {pafs.shape}")
    _merge(heatmaps, flipped_heatmaps, heatmap_source, None)
    _merge(pafs, flipped_pafs, paf_source, paf_sign)


def merge_flipped_reference(heatmaps, pafs, flipped_heatmaps, flipped_pafs, heatmap_source, paf_source, paf_sign):
    """The slow numpy oracle: returns the merged (heatmaps, pafs) as new arrays."""
    back_heatmaps = flipped_heatmaps[:, heatmap_source, :, ::-1]
    back_pafs = flipped_pafs[:, paf_source, :, ::-1] * paf_sign[None, :, None, None]
    return (heatmaps + back_heatmaps) / 2, (pafs + back_pafs) / 2
