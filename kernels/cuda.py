"""CUDA twins of the parse kernels (Numba CUDA), with the CPU kernels' names and argument lists.

The shape glossary and the contract are in kernels/__init__.py; the semantics are the CPU kernels' docstrings,
matched exactly (kernels/reference.py is the oracle for both). ``kernels/__init__`` does not import this
module, so the CPU path never needs CUDA. Importing it needs no GPU either: ``numba.cuda`` imports without one,
and kernels compile on their first launch. Under ``NUMBA_ENABLE_CUDASIM=1`` (set before numba is imported) the
same kernels run in Numba's simulator, which is how CI tests them.

What runs where (the GPU path, ``parse_on_device``):

    device   upsample (optional)  bicubic, cv2.resize INTER_CUBIC's pixel-centre convention
    device   find_peaks           one block per (frame, keypoint): every thread tests pixels for the windowed
                                  maximum and appends peaks to a shared candidate list; then each candidate's
                                  rank (score descending, ties in raster order) is counted against the list
                                  and ranks below M are written. A channel with more local maxima than the
                                  list holds (CANDIDATE_CAPACITY: only window 0 or noise on big upsampled
                                  maps get there) falls back to the CPU kernel's serial scan in one thread,
                                  so the result is the same either way.
    device   refine_peaks         one thread per (frame, keypoint, peak)
    device   paf_score_graph      one block per (frame, limb), threads over the M x M candidates
    device   assign               one thread per (frame, limb): scipy's rectangular LSAP (Crouse's shortest
                                  augmenting path, the algorithm behind linear_sum_assignment) ported line by
                                  line, so even exact ties resolve as in kernels/reference.py (the CPU
                                  kernel's own Hungarian may break those another way)
    -> host  peak_counts, peak_scores, refined, match_counts, matches, match_scores for the frames parsed:
             4K + 12KM + 4L + 12LM bytes per frame (K=18, L=19: 7,252 B at M=16, 14,356 B at M=32, for any P).
             The M x M limb score matrices (L*M*M*4 = 77,824 B per frame at M=32) and the integer peaks stay on
             the device.
    host     connect_parts        the CPU kernel itself: sequential per frame, microseconds, and fed only the
                                  compact match lists

Launchers take numba device arrays or anything with ``__cuda_array_interface__`` (a torch CUDA tensor, a
CuPy array) or only DLPack, wrapped without a copy (raw pointers, e.g. TensorRT bindings: wrap_device_pointer),
and run on ``stream=`` (a numba stream, a raw ``cudaStream_t`` handle
or an object with a ``cuda_stream`` handle such as ``torch.cuda.Stream``; default: the default stream). Given
the producer's stream, a foreign array is not synchronised on the host: the launch is ordered after the
producer's work on that stream. Host numpy arrays are accepted too, for tests and one-off calls: they are
copied to the device and outputs copied back (slow path, never the pipeline's), which is what lets
``kernels.parse_maps(..., ops=kernels.cuda)`` and the backend-parametrised tests run this module unchanged.

Differences from the CPU kernels, all outside what the contract pins down: arithmetic is the CPU kernels'
float64 where they use float64, but the CUDA compiler may contract a*b+c into fused multiply-adds, so
positions and scores can differ in the last bits (far inside the parity tolerances; with nearest-pixel PAF
sampling, a sample exactly on a pixel boundary could read the other pixel, which random maps never hit); ``refine_peaks``
processes min(heatmap frames, buffer frames) frames and leaves buffer frames past the batch untouched (the
CPU kernel walks every buffer frame); ``assign`` needs M <= MAX_ASSIGN_PEAKS.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import cuda, float32, float64, int32, uint8
from numba.core import config as numba_config

from posestream.kernels.assemble import ParseBuffers, allocate_parse_buffers
from posestream.kernels.assemble import connect_parts as _host_connect_parts
from posestream.kernels.chain import ParseConfig, SkeletonTables
from posestream.kernels.peaks import centroid_of_peak, softargmax_of_map

__all__ = [
    "CANDIDATE_CAPACITY", "MAX_ASSIGN_PEAKS", "DeviceParseBuffers", "DeviceTables", "ParseBuffers",
    "ParseTransfer", "allocate_device_parse_buffers", "allocate_parse_buffers", "as_device_array", "assign",
    "connect_parts", "device_available", "find_peaks", "host_bytes_per_frame", "paf_score_graph",
    "parse_on_device", "refine_peaks", "refine_peaks_centroid", "simulated", "softargmax", "tables_on_device",
    "upsample", "wrap_device_pointer",
]

# Peaks one find_peaks block can collect in shared memory (8 KB). A 3x3 window admits at most one peak per 2x2
# cell, 943 on a whole 46 x 82 map, so at the stride the serial fallback takes window 0.
CANDIDATE_CAPACITY = 1024
# assign keeps its LSAP state in per-thread local arrays, whose size must be a compile-time constant.
MAX_ASSIGN_PEAKS = 64
# Threads per block. The simulator runs each thread as a Python thread, so it gets small blocks (results are
# independent of the block size).
_BLOCK = 128
_SIMULATED_BLOCK = 8


def simulated() -> bool:
    """True when numba.cuda is Numba's simulator (NUMBA_ENABLE_CUDASIM=1 when numba was imported)."""
    return bool(numba_config.ENABLE_CUDASIM)


def device_available() -> bool:
    """True when the kernels can run: a usable CUDA GPU, or the simulator."""
    return simulated() or cuda.is_available()


def _threads_per_block() -> int:
    return _SIMULATED_BLOCK if simulated() else _BLOCK


# ------------------------------------------------------------------------------------------ device functions
# Python's min and max are avoided in device code: some Numba CUDA versions fail to compile their overloads.
# These keep Python's semantics exactly (which also fixes what a NaN argument gives, as on the CPU).


@cuda.jit(device=True)
def _min(a, b):
    return b if b < a else a


@cuda.jit(device=True)
def _max(a, b):
    return b if b > a else a


@cuda.jit(device=True)
def _is_windowed_maximum(heatmaps, n, k, y, x, value, window, height, width):
    """The CPU kernel's test, loop for loop: strictly above earlier neighbours (raster order), at least later ones.

    A NaN neighbour compares false both ways, so it suppresses nothing.
    """
    for yy in range(_max(0, y - window), _min(height, y + window + 1)):
        for xx in range(_max(0, x - window), _min(width, x + window + 1)):
            neighbour = heatmaps[n, k, yy, xx]
            before = yy < y or (yy == y and xx < x)
            if neighbour > value or (before and neighbour == value):
                return False
    return True


@cuda.jit(device=True)
def _insert_peak(peak_scores, peaks, n, k, count, capacity, score, y, x):
    """The CPU kernel's sorted insertion (equal scores stay behind earlier ones); returns the new count."""
    if count == capacity and score <= peak_scores[n, k, count - 1]:
        return count
    position = count if count < capacity else capacity - 1
    while position > 0 and peak_scores[n, k, position - 1] < score:
        if position < capacity:
            peak_scores[n, k, position] = peak_scores[n, k, position - 1]
            peaks[n, k, position, 0] = peaks[n, k, position - 1, 0]
            peaks[n, k, position, 1] = peaks[n, k, position - 1, 1]
        position -= 1
    peak_scores[n, k, position] = score
    peaks[n, k, position, 0] = y
    peaks[n, k, position, 1] = x
    return count + 1 if count < capacity else capacity


@cuda.jit(device=True)
def _parabola_offset(before, centre, after):
    """Vertex of the parabola through three samples at -1, 0, +1, clamped to half a pixel (as the CPU kernel)."""
    # float() where the CPU kernel promotes to float64 implicitly: the simulator, running this as Python,
    # would keep numpy float32 (NEP 50) and round differently.
    curvature = float(before) - 2.0 * float(centre) + float(after)
    if not curvature < 0.0:  # flat, convex, or a NaN sample: no fit, as on the CPU
        return 0.0
    offset = 0.5 * float(before - after) / curvature  # the difference itself in float32, as on the CPU
    return _min(0.5, _max(-0.5, offset))


@cuda.jit(device=True)
def _bilinear(pafs, n, channel, x, y, height, width):
    """Bilinear sample with edge clamping, in float64 (the reference's formula; the CPU kernel's shares the
    weights between the two channels, which rounds differently in the last bits)."""
    x = _min(_max(x, 0.0), width - 1.0)
    y = _min(_max(y, 0.0), height - 1.0)
    x0 = int(x)
    y0 = int(y)
    x1 = _min(x0 + 1, width - 1)
    y1 = _min(y0 + 1, height - 1)
    fx = x - x0
    fy = y - y0
    top = float(pafs[n, channel, y0, x0]) * (1.0 - fx) + float(pafs[n, channel, y0, x1]) * fx
    bottom = float(pafs[n, channel, y1, x0]) * (1.0 - fx) + float(pafs[n, channel, y1, x1]) * fx
    return top * (1.0 - fy) + bottom * fy


def _solve_assignment(limb_scores, n, l, count_a, count_b, col4row, row4col, u, v, shortest, path, remaining,
                      row_seen, col_seen):
    """Minimum-cost assignment of the negated count_a x count_b block of limb_scores[n, l]: scipy's
    rectangular_lsap.cpp (Crouse, "On implementing 2D rectangular assignment algorithms", 2016), line by line.

    Works on the problem scipy solves: transposed when count_b < count_a, so rows <= columns. On return
    col4row[i] is the column of problem row i (every row is assigned). Returns False only for an infeasible
    matrix, which finite scores never are. Plain Python over arrays: compiled for CUDA below and with njit in the
    tests, where it is checked against scipy itself.
    """
    transposed = count_b < count_a
    rows = count_b if transposed else count_a
    cols = count_a if transposed else count_b
    for i in range(rows):
        u[i] = 0.0
        col4row[i] = -1
    for j in range(cols):
        v[j] = 0.0
        path[j] = -1
        row4col[j] = -1
    for current_row in range(rows):
        # Shortest augmenting path from current_row (scipy's augmenting_path).
        min_value = 0.0
        remaining_count = cols
        for it in range(cols):
            remaining[it] = cols - it - 1  # reverse order: a constant matrix gives the identity, as scipy
        for i in range(rows):
            row_seen[i] = 0
        for j in range(cols):
            col_seen[j] = 0
            shortest[j] = math.inf
        sink = -1
        i = current_row
        while sink == -1:
            index = -1
            lowest = math.inf
            row_seen[i] = 1
            for it in range(remaining_count):
                j = remaining[it]
                # scipy maximises by negating a float64 copy (transposed when taller than wide).
                cost = -float(limb_scores[n, l, j, i]) if transposed else -float(limb_scores[n, l, i, j])
                reduced = min_value + cost - u[i] - v[j]
                if reduced < shortest[j]:
                    path[j] = i
                    shortest[j] = reduced
                # Among equally short paths prefer one that ends at a free column (a sink), as scipy does.
                if shortest[j] < lowest or (shortest[j] == lowest and row4col[j] == -1):
                    lowest = shortest[j]
                    index = it
            min_value = lowest
            if min_value == math.inf:
                return False
            j = remaining[index]
            if row4col[j] == -1:
                sink = j
            else:
                i = row4col[j]
            col_seen[j] = 1
            remaining_count -= 1
            remaining[index] = remaining[remaining_count]
        # Update the duals.
        u[current_row] += min_value
        for i in range(rows):
            if row_seen[i] != 0 and i != current_row:
                u[i] += min_value - shortest[col4row[i]]
        for j in range(cols):
            if col_seen[j] != 0:
                v[j] -= min_value - shortest[j]
        # Augment along the path.
        j = sink
        while True:
            i = path[j]
            row4col[j] = i
            previous = col4row[i]
            col4row[i] = j
            j = previous
            if i == current_row:
                break
    return True


_solve_assignment_device = cuda.jit(device=True)(_solve_assignment)


@cuda.jit(device=True)
def _cubic_weights(t):
    """cv2's interpolateCubic (A = -0.75) in float32: weights of the samples at -1, 0, +1, +2."""
    a = float32(-0.75)
    one = float32(1.0)
    t1 = t + one
    w0 = ((a * t1 - float32(5.0) * a) * t1 + float32(8.0) * a) * t1 - float32(4.0) * a
    w1 = ((a + float32(2.0)) * t - (a + float32(3.0))) * t * t + one
    s = one - t
    w2 = ((a + float32(2.0)) * s - (a + float32(3.0))) * s * s + one
    w3 = one - w0 - w1 - w2
    return w0, w1, w2, w3


@cuda.jit(device=True)
def _source_position(destination, scale):
    """cv2.resize's source coordinate of a destination pixel centre: (floor, float32 fraction)."""
    position = float32((destination + 0.5) * scale - 0.5)
    start = int(math.floor(position))
    return start, position - float32(start)


# ----------------------------------------------------------------------------------------------------- kernels


@cuda.jit(cache=True)
def _find_peaks_kernel(heatmaps, num_keypoints, threshold, window, peak_counts, peaks, peak_scores):
    """One block per (keypoint, frame): blockIdx.x = k, blockIdx.y = n."""
    candidate_scores = cuda.shared.array(CANDIDATE_CAPACITY, float32)
    candidate_pixels = cuda.shared.array(CANDIDATE_CAPACITY, int32)
    candidate_total = cuda.shared.array(1, int32)
    k = cuda.blockIdx.x
    n = cuda.blockIdx.y
    thread = cuda.threadIdx.x
    threads = cuda.blockDim.x
    height = heatmaps.shape[2]
    width = heatmaps.shape[3]
    capacity = peaks.shape[2]
    if thread == 0:
        candidate_total[0] = 0
    cuda.syncthreads()
    # Pass 1: every pixel in parallel; peaks go to the shared list in no particular order.
    for pixel in range(thread, height * width, threads):
        y = pixel // width
        x = pixel - y * width
        value = heatmaps[n, k, y, x]
        # float64 comparison, as the CPU kernel's (explicit for the simulator, see _parabola_offset).
        if float(value) >= threshold and _is_windowed_maximum(heatmaps, n, k, y, x, value, window, height,
                                                              width):
            slot = cuda.atomic.add(candidate_total, 0, 1)
            if slot < CANDIDATE_CAPACITY:
                candidate_scores[slot] = value
                candidate_pixels[slot] = pixel
    cuda.syncthreads()
    total = candidate_total[0]  # every peak of the channel, counted even past the list's capacity
    count = _min(total, capacity)
    if total <= CANDIDATE_CAPACITY:
        # Pass 2: a candidate's slot is its rank, best score first and equal scores in raster order, which is
        # exactly the order the CPU kernel's sorted insertion produces.
        for i in range(thread, total, threads):
            score = candidate_scores[i]
            pixel = candidate_pixels[i]
            rank = 0
            for j in range(total):
                other = candidate_scores[j]
                if other > score or (other == score and candidate_pixels[j] < pixel):
                    rank += 1
                    if rank >= capacity:
                        break
            if rank < capacity:
                y = pixel // width
                peaks[n, k, rank, 0] = y
                peaks[n, k, rank, 1] = pixel - y * width
                peak_scores[n, k, rank] = score
    elif thread == 0:
        # The list overflowed: the CPU kernel's serial scan, in one thread. count == capacity here, so the
        # other threads have no slots to clear and do not race with it.
        found = 0
        for y in range(height):
            for x in range(width):
                value = heatmaps[n, k, y, x]
                if float(value) >= threshold and _is_windowed_maximum(heatmaps, n, k, y, x, value, window,
                                                                      height, width):
                    found = _insert_peak(peak_scores, peaks, n, k, found, capacity, value, y, x)
    for m in range(count + thread, capacity, threads):
        peaks[n, k, m, 0] = -1
        peaks[n, k, m, 1] = -1
        peak_scores[n, k, m] = 0.0
    if thread == 0:
        peak_counts[n, k] = count


@cuda.jit(cache=True)
def _refine_peaks_kernel(heatmaps, frames, peak_counts, peaks, refined):
    """One thread per (frame, keypoint, peak slot)."""
    index = cuda.grid(1)
    n_keypoints = peaks.shape[1]
    capacity = peaks.shape[2]
    if index >= frames * n_keypoints * capacity:
        return
    m = index % capacity
    k = (index // capacity) % n_keypoints
    n = index // (capacity * n_keypoints)
    if m >= peak_counts[n, k]:
        refined[n, k, m, 0] = -1.0
        refined[n, k, m, 1] = -1.0
        return
    height = heatmaps.shape[2]
    width = heatmaps.shape[3]
    y = peaks[n, k, m, 0]
    x = peaks[n, k, m, 1]
    centre = heatmaps[n, k, y, x]
    dx = 0.0
    dy = 0.0
    if 0 < x < width - 1:
        dx = _parabola_offset(heatmaps[n, k, y, x - 1], centre, heatmaps[n, k, y, x + 1])
    if 0 < y < height - 1:
        dy = _parabola_offset(heatmaps[n, k, y - 1, x], centre, heatmaps[n, k, y + 1, x])
    refined[n, k, m, 0] = x + dx
    refined[n, k, m, 1] = y + dy


_centroid_of_peak_device = cuda.jit(device=True)(centroid_of_peak)
_softargmax_of_map_device = cuda.jit(device=True)(softargmax_of_map)


@cuda.jit(cache=True)
def _refine_centroid_kernel(heatmaps, frames, peak_counts, peaks, window, refined):
    """One thread per (frame, keypoint, peak slot)."""
    index = cuda.grid(1)
    n_keypoints = peaks.shape[1]
    capacity = peaks.shape[2]
    if index >= frames * n_keypoints * capacity:
        return
    m = index % capacity
    k = (index // capacity) % n_keypoints
    n = index // (capacity * n_keypoints)
    if m < peak_counts[n, k]:
        _centroid_of_peak_device(heatmaps, n, k, m, peaks, window, refined)
    else:
        refined[n, k, m, 0] = -1.0
        refined[n, k, m, 1] = -1.0


@cuda.jit(cache=True)
def _softargmax_kernel(heatmaps, num_keypoints, beta, keypoints):
    """One thread per (frame, keypoint): single-person maps are small, two passes over one map suffice."""
    index = cuda.grid(1)
    if index < heatmaps.shape[0] * num_keypoints:
        _softargmax_of_map_device(heatmaps, index // num_keypoints, index % num_keypoints, beta, keypoints)


@cuda.jit(cache=True)
def _paf_score_graph_kernel(pafs, limbs, paf_channels, peak_counts, refined, num_samples, min_sample_score,
                            min_sample_fraction, length_prior, nearest, scores):
    """One block per (limb, frame): blockIdx.x = l, blockIdx.y = n; threads over the M x M candidates."""
    l = cuda.blockIdx.x
    n = cuda.blockIdx.y
    height = pafs.shape[2]
    width = pafs.shape[3]
    capacity = refined.shape[2]
    ka = limbs[l, 0]
    kb = limbs[l, 1]
    channel_x = paf_channels[l, 0]
    channel_y = paf_channels[l, 1]
    count_a = peak_counts[n, ka]
    count_b = peak_counts[n, kb]
    needed = min_sample_fraction * num_samples
    spacing = 1.0 / (num_samples - 1) if num_samples > 1 else 0.0  # t = s * spacing, as the CPU kernel
    for pair in range(cuda.threadIdx.x, capacity * capacity, cuda.blockDim.x):
        a = pair // capacity
        b = pair - a * capacity
        score = 0.0
        if a < count_a and b < count_b:
            xa = float(refined[n, ka, a, 0])
            ya = float(refined[n, ka, a, 1])
            dx = float(refined[n, kb, b, 0]) - xa
            dy = float(refined[n, kb, b, 1]) - ya
            length = math.sqrt(dx * dx + dy * dy)
            if length >= 1e-6:  # two peaks at one spot have no direction: not a limb
                ux = dx / length
                uy = dy / length
                clamped_xa = _min(_max(xa, 0.0), width - 1.0)
                clamped_ya = _min(_max(ya, 0.0), height - 1.0)
                clamped_dx = _min(_max(float(refined[n, kb, b, 0]), 0.0), width - 1.0) - clamped_xa
                clamped_dy = _min(_max(float(refined[n, kb, b, 1]), 0.0), height - 1.0) - clamped_ya
                total = 0.0
                above = 0
                read_nearest = nearest and length >= 0.5 * (num_samples - 1)  # as the CPU kernel
                for s in range(num_samples):
                    t = s * spacing if num_samples > 1 else 0.5
                    if read_nearest:
                        column = int(clamped_xa + t * clamped_dx + 0.5)
                        row = int(clamped_ya + t * clamped_dy + 0.5)
                        sample = (float(pafs[n, channel_x, row, column]) * ux
                                  + float(pafs[n, channel_y, row, column]) * uy)
                    else:
                        px = xa + t * dx
                        py = ya + t * dy
                        sample = (_bilinear(pafs, n, channel_x, px, py, height, width) * ux
                                  + _bilinear(pafs, n, channel_y, px, py, height, width) * uy)
                    total += sample
                    if sample > min_sample_score:
                        above += 1
                mean = total / num_samples
                if length_prior:
                    mean += _min(0.5 * height / length - 1.0, 0.0)
                if above >= needed and mean > 0.0:
                    score = mean
        scores[n, l, a, b] = score


@cuda.jit(cache=True)
def _assign_kernel(limb_scores, limbs, peak_counts, frames, match_counts, matches, match_scores):
    """One thread per (frame, limb): the maximum-score assignment, positive pairs best first (ties by peak a)."""
    index = cuda.grid(1)
    n_limbs = limbs.shape[0]
    if index >= frames * n_limbs:
        return
    n = index // n_limbs
    l = index - n * n_limbs
    capacity = matches.shape[2]
    col4row = cuda.local.array(MAX_ASSIGN_PEAKS, int32)
    row4col = cuda.local.array(MAX_ASSIGN_PEAKS, int32)
    path = cuda.local.array(MAX_ASSIGN_PEAKS, int32)
    remaining = cuda.local.array(MAX_ASSIGN_PEAKS, int32)
    u = cuda.local.array(MAX_ASSIGN_PEAKS, float64)
    v = cuda.local.array(MAX_ASSIGN_PEAKS, float64)
    shortest = cuda.local.array(MAX_ASSIGN_PEAKS, float64)
    row_seen = cuda.local.array(MAX_ASSIGN_PEAKS, uint8)
    col_seen = cuda.local.array(MAX_ASSIGN_PEAKS, uint8)
    count_a = peak_counts[n, limbs[l, 0]]
    count_b = peak_counts[n, limbs[l, 1]]
    found = 0
    if count_a > 0 and count_b > 0:
        _solve_assignment_device(limb_scores, n, l, count_a, count_b, col4row, row4col, u, v, shortest, path,
                                 remaining, row_seen, col_seen)
        transposed = count_b < count_a
        for i in range(_min(count_a, count_b)):
            a = col4row[i] if transposed else i
            b = i if transposed else col4row[i]
            score = limb_scores[n, l, a, b]
            if not score > 0.0:  # 0 is "not a limb"
                continue
            position = found
            while position > 0 and (match_scores[n, l, position - 1] < score
                                    or (match_scores[n, l, position - 1] == score
                                        and matches[n, l, position - 1, 0] > a)):
                match_scores[n, l, position] = match_scores[n, l, position - 1]
                matches[n, l, position, 0] = matches[n, l, position - 1, 0]
                matches[n, l, position, 1] = matches[n, l, position - 1, 1]
                position -= 1
            match_scores[n, l, position] = score
            matches[n, l, position, 0] = a
            matches[n, l, position, 1] = b
            found += 1
    match_counts[n, l] = found
    for m in range(found, capacity):  # "missing" past the count, not the previous frame's matches
        matches[n, l, m, 0] = -1
        matches[n, l, m, 1] = -1
        match_scores[n, l, m] = 0.0


@cuda.jit(cache=True)
def _upsample_kernel(maps, scale_y, scale_x, out):
    """One thread per output pixel: cv2's separable bicubic, rows first, edge pixels replicated."""
    index = cuda.grid(1)
    n_channels = out.shape[1]
    out_height = out.shape[2]
    out_width = out.shape[3]
    if index >= out.shape[0] * n_channels * out_height * out_width:
        return
    ox = index % out_width
    oy = (index // out_width) % out_height
    c = (index // (out_width * out_height)) % n_channels
    n = index // (out_width * out_height * n_channels)
    height = maps.shape[2]
    width = maps.shape[3]
    sy, ty = _source_position(oy, scale_y)
    sx, tx = _source_position(ox, scale_x)
    wx0, wx1, wx2, wx3 = _cubic_weights(tx)
    wy0, wy1, wy2, wy3 = _cubic_weights(ty)
    x0 = _min(_max(sx - 1, 0), width - 1)
    x1 = _min(_max(sx, 0), width - 1)
    x2 = _min(_max(sx + 1, 0), width - 1)
    x3 = _min(_max(sx + 2, 0), width - 1)
    total = float32(0.0)
    for tap in range(4):
        y = _min(_max(sy - 1 + tap, 0), height - 1)
        row = (maps[n, c, y, x0] * wx0 + maps[n, c, y, x1] * wx1 + maps[n, c, y, x2] * wx2
               + maps[n, c, y, x3] * wx3)
        weight = wy0 if tap == 0 else (wy1 if tap == 1 else (wy2 if tap == 2 else wy3))
        total += row * weight
    out[n, c, oy, ox] = total


# ----------------------------------------------------------------------------------------- arrays and streams


def _is_device_array(array) -> bool:
    from numba.cuda.cudadrv import devicearray  # the simulator's own module when it is on

    return devicearray.is_cuda_ndarray(array)


def as_device_array(array, producer_stream_given: bool = False):
    """A numba device array viewing ``array``'s memory, or None for a host array.

    Device arrays pass as they are; ``__cuda_array_interface__`` objects (torch, CuPy) and DLPack-only CUDA
    objects (through torch) are wrapped without a copy. With ``producer_stream_given`` (the kernels are queued on
    the producer's stream, after its work) the producer is not synchronised on the host; otherwise numba
    synchronises on the stream the array interface names.
    """
    if _is_device_array(array):
        return array
    if (not hasattr(array, "__cuda_array_interface__") and hasattr(array, "__dlpack_device__")
            and array.__dlpack_device__()[0] in _DLPACK_CUDA_DEVICES):
        try:
            import torch  # DLPack to the CUDA array interface, zero copy
        except ImportError as error:
            raise TypeError(f"{type(array).__name__} exposes only DLPack; install torch (or pass an object with "
                            "__cuda_array_interface__) to hand it to the CUDA kernels") from error
        array = torch.from_dlpack(array)
    if hasattr(array, "__cuda_array_interface__"):
        return cuda.as_cuda_array(array, sync=not producer_stream_given)
    return None


_DLPACK_CUDA_DEVICES = (2, 13)  # kDLCUDA, kDLCUDAManaged


def wrap_device_pointer(pointer: int, shape: tuple[int, ...], dtype=np.float32, owner=None):
    """A C-contiguous numba device array over raw device memory (a TensorRT binding, a cudaMalloc'd buffer),
    without a copy. ``owner`` is kept alive with the array; the caller orders the work by passing its stream."""
    interface = {"shape": tuple(int(side) for side in shape), "strides": None, "typestr": np.dtype(dtype).str,
                 "data": (int(pointer), False), "version": 3}
    return cuda.from_cuda_array_interface(interface, owner=owner, sync=False)


def _resolve_stream(stream):
    """-> a numba stream, or 0 for the default stream.

    Accepts None/0, a numba stream, a raw cudaStream_t handle (int) or an object with a ``cuda_stream`` handle
    (torch.cuda.Stream). The simulator runs everything synchronously: any stream is the default one there.
    """
    if stream is None or simulated():
        return 0
    if isinstance(stream, int):
        return cuda.external_stream(stream) if stream else 0
    handle = getattr(stream, "cuda_stream", None)
    if isinstance(handle, int):
        return cuda.external_stream(handle) if handle else 0
    return stream


def _synchronize(stream) -> None:
    if isinstance(stream, int):
        cuda.synchronize()
    else:
        stream.synchronize()


class _Arguments:
    """Device views of a launcher's arguments; host arrays are copied in, and host outputs copied back by
    ``finish`` (the convenience path for tests and one-off calls)."""

    def __init__(self, stream):
        self.stream = stream
        self._copy_back: list[tuple[object, np.ndarray]] = []

    def _view(self, array):
        return as_device_array(array, producer_stream_given=not isinstance(self.stream, int))

    def read(self, array):
        device = self._view(array)
        if device is not None:
            return device
        return cuda.to_device(np.ascontiguousarray(array), stream=self.stream)

    def write(self, array):
        """An output (or in-out) array: a host one is copied in too, so what the kernel leaves alone stays."""
        device = self._view(array)
        if device is not None:
            return device
        if not isinstance(array, np.ndarray):
            raise TypeError(f"output must be a device array or a numpy array, not {type(array).__name__}")
        device = cuda.to_device(np.ascontiguousarray(array), stream=self.stream)
        self._copy_back.append((device, array))
        return device

    def finish(self) -> None:
        if not self._copy_back:
            return
        results = [(device.copy_to_host(stream=self.stream), host) for device, host in self._copy_back]
        _synchronize(self.stream)
        for result, host in results:
            host[...] = result


def _blocks(total: int, threads: int) -> int:
    return max(1, -(-total // threads))


# ------------------------------------------------------------------------------------------------- launchers


def find_peaks(heatmaps, num_keypoints, threshold, window, peak_counts, peaks, peak_scores, row_mask=None, *,
               stream=None):
    """CUDA twin of kernels.peaks.find_peaks (same arguments, same results); see its docstring. ``row_mask`` is
    accepted for the shared signature and not used (the CPU kernel's working row)."""
    capacity = peaks.shape[2]
    if capacity > CANDIDATE_CAPACITY:
        raise ValueError(f"find_peaks on the device keeps at most {CANDIDATE_CAPACITY} peaks per map, not {capacity}")
    stream = _resolve_stream(stream)
    args = _Arguments(stream)
    heatmaps_device = args.read(heatmaps)
    counts_device, peaks_device, scores_device = args.write(peak_counts), args.write(peaks), args.write(peak_scores)
    frames = heatmaps_device.shape[0]
    if frames and num_keypoints:
        _find_peaks_kernel[(int(num_keypoints), frames), _threads_per_block(), stream](
            heatmaps_device, int(num_keypoints), float(threshold), int(window), counts_device, peaks_device,
            scores_device)
    args.finish()


def _refine_on_device(kernel, heatmaps, peak_counts, peaks, options: tuple, refined, stream) -> None:
    """Launch a per-peak refinement kernel: one thread per (frame, keypoint, peak slot) of the heatmaps' batch.

    ``options`` are the kernel's arguments between ``peaks`` and ``refined`` (the centroid's window).
    """
    stream = _resolve_stream(stream)
    args = _Arguments(stream)
    heatmaps_device = args.read(heatmaps)
    counts_device, peaks_device = args.read(peak_counts), args.read(peaks)
    refined_device = args.write(refined)
    frames = min(heatmaps_device.shape[0], peaks_device.shape[0])
    total = frames * peaks_device.shape[1] * peaks_device.shape[2]
    if total:
        threads = _threads_per_block()
        kernel[_blocks(total, threads), threads, stream](
            heatmaps_device, frames, counts_device, peaks_device, *options, refined_device)
    args.finish()


def refine_peaks(heatmaps, peak_counts, peaks, refined, *, stream=None):
    """CUDA twin of kernels.peaks.refine_peaks; frames past the heatmaps' batch are left untouched."""
    _refine_on_device(_refine_peaks_kernel, heatmaps, peak_counts, peaks, (), refined, stream)


def refine_peaks_centroid(heatmaps, peak_counts, peaks, window, refined, *, stream=None):
    """CUDA twin of kernels.peaks.refine_peaks_centroid; frames past the heatmaps' batch are left untouched."""
    _refine_on_device(_refine_centroid_kernel, heatmaps, peak_counts, peaks, (int(window),), refined, stream)


def softargmax(heatmaps, num_keypoints, beta, keypoints, *, stream=None):
    """CUDA twin of kernels.peaks.softargmax (same arguments, same results); see its docstring."""
    stream = _resolve_stream(stream)
    args = _Arguments(stream)
    heatmaps_device = args.read(heatmaps)
    keypoints_device = args.write(keypoints)
    total = heatmaps_device.shape[0] * int(num_keypoints)
    if total:
        threads = _threads_per_block()
        _softargmax_kernel[_blocks(total, threads), threads, stream](
            heatmaps_device, int(num_keypoints), float(beta), keypoints_device)
    args.finish()


def paf_score_graph(pafs, limbs, paf_channels, peak_counts, refined, num_samples, min_sample_score,
                    min_sample_fraction, length_prior, nearest, scores, scratch=None, *, stream=None):
    """CUDA twin of kernels.paf.paf_score_graph (same arguments, same results); see its docstring.
    ``scratch`` is accepted for the shared signature and not used: each device thread scores one candidate."""
    stream = _resolve_stream(stream)
    args = _Arguments(stream)
    pafs_device = args.read(pafs)
    limbs_device, channels_device = args.read(limbs), args.read(paf_channels)
    counts_device, refined_device = args.read(peak_counts), args.read(refined)
    scores_device = args.write(scores)
    frames, n_limbs = pafs_device.shape[0], limbs_device.shape[0]
    if frames and n_limbs:
        _paf_score_graph_kernel[(n_limbs, frames), _threads_per_block(), stream](
            pafs_device, limbs_device, channels_device, counts_device, refined_device, int(num_samples),
            float(min_sample_score), float(min_sample_fraction), bool(length_prior), bool(nearest), scores_device)
    args.finish()


def assign(limb_scores, limbs, peak_counts, frames, match_counts, matches, match_scores, scratch=None, *,
           stream=None):
    """CUDA twin of kernels.assemble.assign: per (frame, limb) the maximum-score assignment (scipy's algorithm,
    ported), positive pairs kept best first. Scores must be finite, as paf_score_graph's always are.
    ``scratch`` is accepted for the shared signature and not used: each device thread keeps its working
    memory in local arrays."""
    capacity = limb_scores.shape[2]
    if capacity > MAX_ASSIGN_PEAKS:
        raise ValueError(f"assign on the device handles M <= {MAX_ASSIGN_PEAKS} peaks per keypoint, not {capacity}")
    stream = _resolve_stream(stream)
    args = _Arguments(stream)
    scores_device, limbs_device, counts_device = args.read(limb_scores), args.read(limbs), args.read(peak_counts)
    match_counts_device, matches_device = args.write(match_counts), args.write(matches)
    match_scores_device = args.write(match_scores)
    total = int(frames) * limbs_device.shape[0]
    if total:
        threads = min(32, _threads_per_block())  # heavy threads: spread them over the SMs
        _assign_kernel[_blocks(total, threads), threads, stream](
            scores_device, limbs_device, counts_device, int(frames), match_counts_device, matches_device,
            match_scores_device)
    args.finish()


def connect_parts(matches, match_scores, match_counts, limbs, redundant, peak_scores, frames, min_parts,
                  min_mean_score, limb_weight, person_counts, person_parts, person_scores, people_dropped, scratch, *,
                  stream=None):
    """kernels.assemble.connect_parts on the host, by design: it is sequential per frame and its inputs are the
    compact match lists. Device inputs are copied to the host (parse_on_device copies them anyway), device
    outputs are filled from the host result."""
    stream = _resolve_stream(stream)
    producer_stream_given = not isinstance(stream, int)
    arrays = [matches, match_scores, match_counts, limbs, redundant, peak_scores,
              person_counts, person_parts, person_scores, people_dropped]
    on_device = [as_device_array(array, producer_stream_given) for array in arrays]
    host = [np.asarray(array) if device is None else device.copy_to_host(stream=stream)
            for array, device in zip(arrays, on_device)]
    if any(device is not None for device in on_device):
        _synchronize(stream)
    _host_connect_parts(*host[:6], int(frames), min_parts, min_mean_score, limb_weight, *host[6:], scratch)
    outputs = list(zip(on_device[6:], host[6:]))
    for device, result in outputs:
        if device is not None:
            device.copy_to_device(result, stream=stream)
    if any(device is not None for device, _ in outputs):
        _synchronize(stream)


def upsample(maps, factor, out, *, stream=None):
    """N x C x H x W -> out (N x C' x H*f x W*f, C' <= C: the first C' channels), bicubic on the device.

    cv2.resize INTER_CUBIC's convention (kernels.upsample.upsample_cpu, its CPU twin): output pixel centre x maps to source
    (x + 0.5) / f - 0.5, cubic weights with A = -0.75 computed in float32, border pixels replicated. cv2 sums
    in float32 with SIMD ordering of its own, so results agree within ~1e-6 of the map's range, not bit for bit.
    """
    factor = int(factor)
    stream = _resolve_stream(stream)
    args = _Arguments(stream)
    maps_device = args.read(maps)
    out_device = args.write(out)
    n, channels, height, width = out_device.shape
    if channels > maps_device.shape[1] or (height, width) != (maps_device.shape[2] * factor,
                                                              maps_device.shape[3] * factor):
        raise ValueError(f"out is {tuple(out_device.shape)}, expected N x (<= {maps_device.shape[1]}) x "
                         f"{maps_device.shape[2] * factor} x {maps_device.shape[3] * factor}")
    total = n * channels * height * width
    if total:
        threads = _threads_per_block()
        # cv2's scale: source size over destination size, in double.
        _upsample_kernel[_blocks(total, threads), threads, stream](
            maps_device, maps_device.shape[2] / height, maps_device.shape[3] / width, out_device)
    args.finish()


# ------------------------------------------------------------------------------------- the chain on the device


@dataclass(frozen=True)
class DeviceTables:
    """A model's SkeletonTables with device copies of the two tables the kernels read (connect_parts, on the
    host, reads the host ones)."""

    tables: SkeletonTables
    limbs: object  # L x 2 int32, on the device
    paf_channels: object  # L x 2 int32, on the device


def tables_on_device(tables: SkeletonTables, stream=None) -> DeviceTables:
    """Copy the tables once, so that parse_on_device copies nothing to the device per call."""
    stream = _resolve_stream(stream)
    return DeviceTables(tables, cuda.to_device(np.ascontiguousarray(tables.limbs, np.int32), stream=stream),
                        cuda.to_device(np.ascontiguousarray(tables.paf_channels, np.int32), stream=stream))


@dataclass(frozen=True)
class DeviceParseBuffers:
    """Device arrays of the chain, plus the host ParseBuffers (pinned memory) the compact results land in.

    ``host.peaks`` and ``host.limb_scores`` are not filled by parse_on_device: those stay on the device.
    """

    peak_counts: object  # N x K int32
    peaks: object  # N x K x M x 2 int32
    peak_scores: object  # N x K x M float32
    refined: object  # N x K x M x 2 float32
    limb_scores: object  # N x L x M x M float32
    match_counts: object  # N x L int32
    matches: object  # N x L x M x 2 int32
    match_scores: object  # N x L x M float32
    host: ParseBuffers

    @property
    def batch_capacity(self) -> int:
        return self.peak_counts.shape[0]


def allocate_device_parse_buffers(frames: int, keypoints: int, limbs: int, max_peaks: int,
                                  max_people: int) -> DeviceParseBuffers:
    if max_peaks > MAX_ASSIGN_PEAKS:
        raise ValueError(f"the device parse handles M <= {MAX_ASSIGN_PEAKS}, not {max_peaks}")
    template = allocate_parse_buffers(frames, keypoints, limbs, max_peaks, max_people)
    host = {}
    for name, array in vars(template).items():
        if not isinstance(array, np.ndarray) or name == "peak_row_mask":
            host[name] = array  # the host kernels' scratch: never copied, no need to pin
            continue
        pinned = cuda.pinned_array(array.shape, array.dtype)  # page-locked: copies are asynchronous and fast
        pinned[...] = array
        host[name] = pinned
    device = {name: cuda.to_device(getattr(template, name)) for name in (
        "peak_counts", "peaks", "peak_scores", "refined", "limb_scores", "match_counts", "matches",
        "match_scores")}
    return DeviceParseBuffers(**device, host=ParseBuffers(**host))


def host_bytes_per_frame(keypoints: int, limbs: int, max_peaks: int) -> int:
    """Bytes parse_on_device copies to the host per frame: counts, refined peaks and their scores, matches."""
    k, l, m = keypoints, limbs, max_peaks
    return 4 * k + (4 + 8) * k * m + 4 * l + (8 + 4) * l * m


@dataclass(frozen=True)
class ParseTransfer:
    """What one parse_on_device call moved to the host."""

    frames: int
    bytes_to_host: int

    @property
    def bytes_per_frame(self) -> float:
        return self.bytes_to_host / self.frames if self.frames else 0.0


def parse_on_device(heatmaps, pafs, tables: SkeletonTables | DeviceTables, config: ParseConfig,
                    buffers: DeviceParseBuffers, *, stream=None) -> ParseTransfer:
    """kernels.parse_maps on the device: a batch of device maps in, people in ``buffers.host`` (a ParseBuffers).

    heatmaps N x C x H x W and pafs N x 2L x H x W, float32, on the device (numba, torch, CuPy: no copy).
    ``tables`` from tables_on_device (plain SkeletonTables work, at the cost of copying them every call). With
    ``config.upsample`` > 1 the maps are resized on the device first (scratch allocated per call). The device
    work is queued on ``stream``; the call returns once the compact results are on the host and connect_parts
    has run there.
    """
    if not isinstance(tables, DeviceTables):
        tables = tables_on_device(tables, stream)
    stream = _resolve_stream(stream)
    producer_stream_given = not isinstance(stream, int)
    heatmaps = as_device_array(heatmaps, producer_stream_given)
    pafs = as_device_array(pafs, producer_stream_given)
    if heatmaps is None or pafs is None:
        raise TypeError("parse_on_device takes device arrays (numba, or with __cuda_array_interface__)")
    frames = heatmaps.shape[0]
    if frames > buffers.batch_capacity:
        raise ValueError(f"batch of {frames} frames, buffers hold {buffers.batch_capacity}")
    skeleton = tables.tables
    factor = int(config.upsample)
    if factor > 1:
        size = (heatmaps.shape[2] * factor, heatmaps.shape[3] * factor)
        upsampled_heatmaps = cuda.device_array((frames, skeleton.num_keypoints) + size, np.float32, stream=stream)
        upsampled_pafs = cuda.device_array((frames, pafs.shape[1]) + size, np.float32, stream=stream)
        upsample(heatmaps, factor, upsampled_heatmaps, stream=stream)  # only the K keypoint maps are read
        upsample(pafs, factor, upsampled_pafs, stream=stream)
        heatmaps, pafs = upsampled_heatmaps, upsampled_pafs

    def batch(array):
        """The first `frames` frames, so every kernel's batch is this batch."""
        return array if frames == buffers.batch_capacity else array[:frames]

    counts, peaks, peak_scores = batch(buffers.peak_counts), batch(buffers.peaks), batch(buffers.peak_scores)
    refined, limb_scores = batch(buffers.refined), batch(buffers.limb_scores)
    match_counts, matches, match_scores = batch(buffers.match_counts), batch(buffers.matches), batch(
        buffers.match_scores)
    find_peaks(heatmaps, skeleton.num_keypoints, config.peak_threshold, config.peak_window, counts, peaks,
               peak_scores, stream=stream)
    if config.refine == "centroid":
        refine_peaks_centroid(heatmaps, counts, peaks, config.refine_window, refined, stream=stream)
    else:
        refine_peaks(heatmaps, counts, peaks, refined, stream=stream)
    paf_score_graph(pafs, tables.limbs, tables.paf_channels, counts, refined, config.paf_samples,
                    config.paf_min_sample_score, config.paf_min_sample_fraction, config.paf_length_prior,
                    config.paf_sampling == "nearest", limb_scores, stream=stream)
    assign(limb_scores, tables.limbs, counts, frames, match_counts, matches, match_scores, stream=stream)

    host = buffers.host
    copied = 0
    for name, source in (("peak_counts", counts), ("peak_scores", peak_scores), ("refined", refined),
                         ("match_counts", match_counts), ("matches", matches), ("match_scores", match_scores)):
        destination = getattr(host, name)[:frames]
        source.copy_to_host(destination, stream=stream)
        copied += destination.nbytes
    _synchronize(stream)
    _host_connect_parts(host.matches, host.match_scores, host.match_counts, skeleton.limbs, skeleton.redundant,
                        host.peak_scores, frames, config.min_parts, config.min_mean_score, skeleton.limb_weight,
                        host.person_counts, host.person_parts, host.person_scores, host.people_dropped,
                        host.connect_scratch)
    return ParseTransfer(frames, copied)
