"""The part-affinity-field line integral: a score for every candidate limb (Numba CPU)."""
from __future__ import annotations

import math

from numba import njit


@njit(nogil=True, cache=True)
def _paf_along(paf_x, paf_y, x, y, ux, uy):
    """The PAF at (x, y), bilinearly interpolated (clamped to the map), projected on the unit vector (ux, uy).

    Both channels share the interpolation weights, so they are computed once.
    """
    height, width = paf_x.shape
    x = min(max(x, 0.0), width - 1.0)
    y = min(max(y, 0.0), height - 1.0)
    x0 = int(x)
    y0 = int(y)
    x1 = min(x0 + 1, width - 1)
    y1 = min(y0 + 1, height - 1)
    fx = x - x0
    fy = y - y0
    w00 = (1.0 - fx) * (1.0 - fy)
    w01 = fx * (1.0 - fy)
    w10 = (1.0 - fx) * fy
    w11 = fx * fy
    along_x = paf_x[y0, x0] * w00 + paf_x[y0, x1] * w01 + paf_x[y1, x0] * w10 + paf_x[y1, x1] * w11
    along_y = paf_y[y0, x0] * w00 + paf_y[y0, x1] * w01 + paf_y[y1, x0] * w10 + paf_y[y1, x1] * w11
    return along_x * ux + along_y * uy


@njit(nogil=True, cache=True)
def paf_score_graph(pafs, limbs, paf_channels, peak_counts, refined, num_samples, min_sample_score,
                    min_sample_fraction, length_prior, scores):
    """Score every (peak a, peak b) candidate of every limb by the PAF line integral.

    pafs: N x 2L x H x W float32; limbs: L x 2 int32 keypoint pairs; paf_channels: L x 2 int32 (x, y)
    peak_counts: N x K int32; refined: N x K x M x 2 float32 (x, y)
    scores: N x L x M x M float32 (out) -- score of (a, b); 0 means "not a limb".
    A candidate is a limb when at least ``min_sample_fraction`` of its S samples have a PAF component
    along the candidate above ``min_sample_score`` and its mean score is positive. With
    ``length_prior`` on, OpenPose's prior min(0.5 * H / length - 1, 0) is added to the mean, which
    penalises limbs longer than half the map height. Candidates shorter than 1e-6 map pixels (two
    peaks at one spot) have no direction and score 0.
    """
    n_frames = pafs.shape[0]
    height = pafs.shape[2]
    n_limbs = limbs.shape[0]
    capacity = refined.shape[2]
    needed = min_sample_fraction * num_samples
    for n in range(n_frames):
        for l in range(n_limbs):
            ka = limbs[l, 0]
            kb = limbs[l, 1]
            paf_x = pafs[n, paf_channels[l, 0]]
            paf_y = pafs[n, paf_channels[l, 1]]
            count_a = peak_counts[n, ka]
            count_b = peak_counts[n, kb]
            for a in range(capacity):
                for b in range(capacity):
                    scores[n, l, a, b] = 0.0
            for a in range(count_a):
                xa = refined[n, ka, a, 0]
                ya = refined[n, ka, a, 1]
                for b in range(count_b):
                    dx = refined[n, kb, b, 0] - xa
                    dy = refined[n, kb, b, 1] - ya
                    length = math.sqrt(dx * dx + dy * dy)
                    if length < 1e-6:
                        continue
                    ux = dx / length
                    uy = dy / length
                    total = 0.0
                    misses = 0
                    middle = (num_samples - 1) // 2
                    for i in range(num_samples):
                        # Middle-out: wrong pairs fail in the middle, far from the shared end peaks, so the
                        # exact early exit below comes after a few samples.
                        step = (i + 1) // 2
                        s = middle + step if i % 2 == 1 else middle - step
                        t = s / (num_samples - 1) if num_samples > 1 else 0.5
                        px = xa + t * dx
                        py = ya + t * dy
                        sample = _paf_along(paf_x, paf_y, px, py, ux, uy)
                        total += sample
                        if not sample > min_sample_score:
                            misses += 1
                            if num_samples - misses < needed:
                                break  # the sample-fraction rule can no longer be met: not a limb
                    if num_samples - misses < needed:
                        continue
                    score = total / num_samples
                    if length_prior:
                        score += min(0.5 * height / length - 1.0, 0.0)
                    if score > 0.0:
                        scores[n, l, a, b] = score
