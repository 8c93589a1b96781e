"""The part-affinity-field line integral: a score for every candidate limb (Numba CPU)."""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numba import njit


class PafScratch(NamedTuple):
    """paf_score_graph's working memory for capacity M, allocated once (a NamedTuple of arrays: Numba reads its fields)."""

    read_ahead_sum: np.ndarray  # 1 float64: the sum of the values read ahead, stored so the compiler keeps those reads
    head_totals: np.ndarray  # M float64: per peak b, the sum of the first samples from the current peak a
    head_misses: np.ndarray  # M int32: per peak b, how many of those samples missed (0 for a short candidate)
    survivors: np.ndarray  # M int32: the peaks b whose candidates from the current peak a may still be limbs


def allocate_paf_scratch(max_peaks: int) -> PafScratch:
    return PafScratch(read_ahead_sum=np.zeros(1, np.float64), head_totals=np.zeros(max_peaks, np.float64),
                      head_misses=np.zeros(max_peaks, np.int32), survivors=np.zeros(max_peaks, np.int32))


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


@njit(nogil=True, cache=True, inline="always")
def _middle_out_t(i, middle, spacing, num_samples):
    """Where the i-th sample sits, as t from a (0) to b (1): the middle first, then alternately after and before.

    Wrong pairs fail in the middle, far from the end peaks they may share with right ones, so the early exit
    comes after a few samples. t = s * spacing, not s / (S - 1): a multiply instead of a division (the
    reference and the CUDA kernel compute t the same way, so nearest-pixel samples agree to the bit).
    """
    if num_samples == 1:
        return 0.5
    step = (i + 1) // 2
    s = middle + step if i % 2 == 1 else middle - step
    return s * spacing


@njit(nogil=True, cache=True, inline="always")
def _nearest_sample(paf_x, paf_y, start_x, start_y, delta_x, delta_y, t, ux, uy):
    """The PAF at the pixel nearest start + t * delta (a segment on the map), projected on (ux, uy)."""
    # Positions are >= 0, so int() is floor(); convex combinations of on-map ends stay on the map.
    column = int(start_x + t * delta_x + 0.5)
    row = int(start_y + t * delta_y + 0.5)
    return paf_x[row, column] * ux + paf_y[row, column] * uy


@njit(nogil=True, cache=True, inline="always")
def _read_nearest_heads(paf_x, paf_y, xa, ya, clamped_xa, clamped_ya, ends, count_b, head, middle, spacing,
                        num_samples, min_sample_score, allowed_misses, nearest_min_length, head_totals, head_misses,
                        survivors):
    """The first ``head`` nearest-pixel samples of every candidate from (xa, ya) (clamped onto the map:
    (clamped_xa, clamped_ya)) to a peak in ``ends``.

    A loop over the candidates with no exit and no branch on the samples, so their reads overlap and nothing
    mispredicts. Lists the candidates that may still be limbs in ``survivors`` and returns their count; the
    candidate loop scores only those. Short candidates (interpolated, see paf_score_graph) get 0 misses here
    and always survive, to be read there.
    """
    height, width = paf_x.shape
    count = 0
    for b in range(count_b):
        xb = ends[b, 0]
        yb = ends[b, 1]
        dx = xb - xa
        dy = yb - ya
        length = math.sqrt(dx * dx + dy * dy)
        ux = dx / length if length > 0.0 else 0.0
        uy = dy / length if length > 0.0 else 0.0
        clamped_dx = min(max(xb, 0.0), width - 1.0) - clamped_xa
        clamped_dy = min(max(yb, 0.0), height - 1.0) - clamped_ya
        total = 0.0
        misses = 0
        for i in range(head):
            sample = _nearest_sample(paf_x, paf_y, clamped_xa, clamped_ya, clamped_dx, clamped_dy,
                                     _middle_out_t(i, middle, spacing, num_samples), ux, uy)
            total += sample
            misses += int(not sample > min_sample_score)
        head_totals[b] = total
        head_misses[b] = misses if length >= nearest_min_length else 0
        survivors[count] = b
        count += int(head_misses[b] <= allowed_misses)
    return count


# Bytes per cache line (x86-64 and most ARM cores): the read-ahead below reads one value per line.
CACHE_LINE_BYTES = 64


# Inlined by Numba: as a call inside the limb loop it slowed the candidate loop that follows by half (measured).
@njit(nogil=True, cache=True, inline="always")
def _read_ahead(paf_x, paf_y, starts, count_a, ends, count_b):
    """Read one value per cache line of the map region a limb's samples can touch; returns their sum.

    The samples read the field at scattered pixels. On maps not yet in cache (a new frame) each of those
    reads is a miss the processor waits for. Reading the region row by row first streams it in, because the
    hardware prefetcher follows sequential reads: with 20 people on 46x82 maps the whole parse took 0.41 ms
    per frame without this and 0.33 ms with it (docs/parse.md). The region is the bounding box of both
    keypoint types' peaks, clamped onto the map, plus the pixels a bilinear sample beside it reads. The caller
    stores the sum, so the compiler keeps the reads.
    """
    height, width = paf_x.shape
    total = 0.0
    if count_a == 0 or count_b == 0:
        return total
    low_x = high_x = starts[0, 0]
    low_y = high_y = starts[0, 1]
    for a in range(count_a):
        low_x, high_x = min(low_x, starts[a, 0]), max(high_x, starts[a, 0])
        low_y, high_y = min(low_y, starts[a, 1]), max(high_y, starts[a, 1])
    for b in range(count_b):
        low_x, high_x = min(low_x, ends[b, 0]), max(high_x, ends[b, 0])
        low_y, high_y = min(low_y, ends[b, 1]), max(high_y, ends[b, 1])
    first_column = int(min(max(low_x, 0.0), width - 1.0))
    last_column = min(int(min(max(high_x, 0.0), width - 1.0)) + 1, width - 1)
    first_row = int(min(max(low_y, 0.0), height - 1.0))
    last_row = min(int(min(max(high_y, 0.0), height - 1.0)) + 1, height - 1)
    step = max(CACHE_LINE_BYTES // paf_x.itemsize, 1)
    for row in range(first_row, last_row + 1):
        for column in range(first_column, last_column + 1, step):
            total += paf_x[row, column] + paf_y[row, column]
        total += paf_x[row, last_column] + paf_y[row, last_column]
    return total


@njit(nogil=True, cache=True)
def paf_score_graph(pafs, limbs, paf_channels, peak_counts, refined, num_samples, min_sample_score,
                    min_sample_fraction, length_prior, nearest, scores, scratch):
    """Score every (peak a, peak b) candidate of every limb by the PAF line integral.

    pafs: N x 2L x H x W float32; limbs: L x 2 int32 keypoint pairs; paf_channels: L x 2 int32 (x, y)
    peak_counts: N x K int32; refined: N x K x M x 2 float32 (x, y)
    scores: N x L x M x M float32 (out) -- score of (a, b); 0 means "not a limb".
    scratch: PafScratch for capacity >= M (allocate_paf_scratch), overwritten.
    The S samples sit at a + t (b - a), t = s * (1 / (S - 1)) (one sample: t = 1/2). With ``nearest``, a candidate
    whose samples are at least half a pixel apart (length >= (S - 1) / 2) reads each at the nearest pixel, as
    OpenPose, Lightweight OpenPose and trt_pose do: the segment runs between the two peaks clamped onto the
    map and a sample at q reads pixel floor(q + 1/2). Shorter candidates, and all of them without
    ``nearest``, interpolate each sample bilinearly, clamped onto the map: the samples of a short limb would
    crowd into its two end pixels, where a limb's own field is weakest. Either way the PAF is projected on
    the unit vector from the unclamped a to b. A candidate is a limb when at least ``min_sample_fraction`` of its samples have a
    projection above ``min_sample_score`` and its mean projection is positive. With ``length_prior`` on,
    OpenPose's prior min(0.5 * H / length - 1, 0) is added to the mean, which penalises limbs longer than
    half the map height. Candidates shorter than 1e-6 map pixels (two peaks at one spot) have no direction
    and score 0.
    """
    n_frames = pafs.shape[0]
    height = pafs.shape[2]
    width = pafs.shape[3]
    n_limbs = limbs.shape[0]
    capacity = refined.shape[2]
    allowed_misses = num_samples - min_sample_fraction * num_samples
    middle = (num_samples - 1) // 2
    spacing = 1.0 / (num_samples - 1) if num_samples > 1 else 0.0
    nearest_min_length = 0.5 * (num_samples - 1)  # samples at least half a pixel apart
    head = max(min(num_samples, int(math.floor(allowed_misses)) + 1), 0)  # samples read before one can fail
    head_totals = scratch.head_totals
    head_misses = scratch.head_misses
    survivors = scratch.survivors
    for n in range(n_frames):
        for l in range(n_limbs):
            ka = limbs[l, 0]
            kb = limbs[l, 1]
            paf_x = pafs[n, paf_channels[l, 0]]
            paf_y = pafs[n, paf_channels[l, 1]]
            count_a = peak_counts[n, ka]
            count_b = peak_counts[n, kb]
            starts = refined[n, ka]  # M x 2 views: fewer index computations in the candidate loop
            ends = refined[n, kb]
            limb_scores = scores[n, l]
            for a in range(capacity):
                for b in range(capacity):
                    limb_scores[a, b] = 0.0
            scratch.read_ahead_sum[0] += _read_ahead(paf_x, paf_y, starts, count_a, ends, count_b)
            for a in range(count_a):
                xa = starts[a, 0]
                ya = starts[a, 1]
                # The nearest-pixel segment's start, clamped once here instead of at every sample.
                clamped_xa = min(max(xa, 0.0), width - 1.0)
                clamped_ya = min(max(ya, 0.0), height - 1.0)
                if nearest:
                    survivor_count = _read_nearest_heads(
                        paf_x, paf_y, xa, ya, clamped_xa, clamped_ya, ends, count_b, head, middle, spacing,
                        num_samples, min_sample_score, allowed_misses, nearest_min_length, head_totals, head_misses,
                        survivors)
                else:
                    survivor_count = count_b
                    for b in range(count_b):
                        survivors[b] = b
                for survivor in range(survivor_count):
                    b = survivors[survivor]
                    xb = ends[b, 0]
                    yb = ends[b, 1]
                    dx = xb - xa
                    dy = yb - ya
                    length = math.sqrt(dx * dx + dy * dy)
                    if length < 1e-6:
                        continue
                    ux = dx / length
                    uy = dy / length
                    # Samples middle-out (_middle_out_t), with an exact early exit: once the sample-fraction rule
                    # can no longer be met. The first ``head`` samples are read whatever they hold (the rule
                    # cannot fail sooner), so their misses are counted without a branch.
                    if nearest and length >= nearest_min_length:
                        total = head_totals[b]
                        misses = head_misses[b]
                        clamped_dx = min(max(xb, 0.0), width - 1.0) - clamped_xa
                        clamped_dy = min(max(yb, 0.0), height - 1.0) - clamped_ya
                        for i in range(head, num_samples):
                            sample = _nearest_sample(paf_x, paf_y, clamped_xa, clamped_ya, clamped_dx, clamped_dy,
                                                     _middle_out_t(i, middle, spacing, num_samples), ux, uy)
                            total += sample
                            if not sample > min_sample_score:
                                misses += 1
                                if misses > allowed_misses:
                                    break
                    else:
                        total = 0.0
                        misses = 0
                        for i in range(head):
                            t = _middle_out_t(i, middle, spacing, num_samples)
                            sample = _paf_along(paf_x, paf_y, xa + t * dx, ya + t * dy, ux, uy)
                            total += sample
                            misses += int(not sample > min_sample_score)
                        if misses <= allowed_misses:
                            for i in range(head, num_samples):
                                t = _middle_out_t(i, middle, spacing, num_samples)
                                sample = _paf_along(paf_x, paf_y, xa + t * dx, ya + t * dy, ux, uy)
                                total += sample
                                if not sample > min_sample_score:
                                    misses += 1
                                    if misses > allowed_misses:
                                        break
                    if misses > allowed_misses:
                        continue
                    score = total / num_samples
                    if length_prior:
                        score += min(0.5 * height / length - 1.0, 0.0)
                    if score > 0.0:
                        limb_scores[a, b] = score
