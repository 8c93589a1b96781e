"""Peak finding and sub-pixel refinement on heatmaps (Numba CPU; the CUDA twins share these signatures)."""
from __future__ import annotations

import math

from numba import njit


@njit(nogil=True, cache=True)
def _insert_peak(scores, peaks, count, capacity, score, y, x):
    """Keep ``scores[:count]`` sorted descending with at most ``capacity`` entries; returns the new count."""
    if count == capacity and score <= scores[count - 1]:
        return count
    position = count if count < capacity else capacity - 1
    while position > 0 and scores[position - 1] < score:
        if position < capacity:
            scores[position] = scores[position - 1]
            peaks[position, 0] = peaks[position - 1, 0]
            peaks[position, 1] = peaks[position - 1, 1]
        position -= 1
    scores[position] = score
    peaks[position, 0] = y
    peaks[position, 1] = x
    return count + 1 if count < capacity else capacity


@njit(nogil=True, cache=True)
def _is_windowed_peak(heatmap, y, x, value, window):
    """The plateau rule over the (2*window+1)^2 neighbourhood of (y, x), clipped to the map."""
    height, width = heatmap.shape
    for yy in range(max(0, y - window), min(height, y + window + 1)):
        for xx in range(max(0, x - window), min(width, x + window + 1)):
            neighbour = heatmap[yy, xx]
            before = yy < y or (yy == y and xx < x)
            if neighbour > value or (before and neighbour == value):
                return False
    return True


@njit(nogil=True, cache=True)
def find_peaks(heatmaps, num_keypoints, threshold, window, peak_counts, peaks, peak_scores, row_mask):
    """Local maxima of at least ``threshold`` in a (2*window+1)^2 neighbourhood, best M per keypoint type.

    heatmaps: N x C x H x W float32 (only channels 0..K-1 are read, K = num_keypoints)
    peak_counts: N x K int32 (out) -- peaks found, at most M
    peaks: N x K x M x 2 int32 (out) -- (y, x), sorted by score, best first
    peak_scores: N x K x M float32 (out) -- heatmap value at the peak
    row_mask: bool array of at least W elements, working memory (ParseBuffers.peak_row_mask)
    Plateau rule: a pixel must be strictly greater than the window neighbours before it in raster order
    and at least as great as those after it, so a plateau that fits in one window yields one peak (a
    plateau wider than the window may yield more). NaN pixels are never peaks and suppress nothing.
    """
    n_frames = heatmaps.shape[0]
    height = heatmaps.shape[2]
    width = heatmaps.shape[3]
    capacity = peaks.shape[2]
    if window == 1 and row_mask.shape[0] < width:
        raise ValueError("find_peaks: row_mask is shorter than the maps are wide")
    for n in range(n_frames):
        for k in range(num_keypoints):
            heatmap = heatmaps[n, k]
            scores = peak_scores[n, k]
            found = peaks[n, k]
            count = 0
            for y in range(height):
                if window == 1 and 0 < y < height - 1:
                    # The common case. Most rows hold no pixel above the threshold: skip them with one
                    # vectorised pass. Otherwise the plateau rule for the row's inner pixels is evaluated
                    # without branches into row_mask (vectorised; a branch per pixel mispredicts on every
                    # blob), written with "not >=" / "not >" so that NaN suppresses nothing and is no peak.
                    row = heatmap[y]
                    above = False
                    for x in range(width):
                        above |= row[x] >= threshold
                    if not above:
                        continue
                    up = heatmap[y - 1]
                    down = heatmap[y + 1]
                    for x in range(1, width - 1):
                        value = row[x]
                        row_mask[x] = (value >= threshold) & ~(
                            (up[x - 1] >= value) | (up[x] >= value) | (up[x + 1] >= value) | (row[x - 1] >= value)
                            | (row[x + 1] > value) | (down[x - 1] > value) | (down[x] > value) | (down[x + 1] > value))
                    # Raster order, so equal scores keep it: the first column, the inner ones, the last.
                    value = row[0]
                    if value >= threshold and _is_windowed_peak(heatmap, y, 0, value, 1):
                        count = _insert_peak(scores, found, count, capacity, value, y, 0)
                    for x in range(1, width - 1):
                        if row_mask[x]:
                            count = _insert_peak(scores, found, count, capacity, row[x], y, x)
                    value = row[width - 1]
                    if width > 1 and value >= threshold and _is_windowed_peak(heatmap, y, width - 1, value, 1):
                        count = _insert_peak(scores, found, count, capacity, value, y, width - 1)
                    continue
                for x in range(width):
                    value = heatmap[y, x]
                    if value >= threshold and _is_windowed_peak(heatmap, y, x, value, window):
                        count = _insert_peak(scores, found, count, capacity, value, y, x)
            peak_counts[n, k] = count
            for m in range(count, capacity):
                peaks[n, k, m, 0] = -1
                peaks[n, k, m, 1] = -1
                peak_scores[n, k, m] = 0.0


@njit(nogil=True, cache=True)
def _parabola_offset(before, centre, after):
    """Vertex of the parabola through three samples at -1, 0, +1, clamped to half a pixel."""
    curvature = before - 2.0 * centre + after
    if not curvature < 0.0:  # not a maximum (flat, convex, or a NaN sample): keep the integer position
        return 0.0
    offset = 0.5 * (before - after) / curvature
    return min(0.5, max(-0.5, offset))


@njit(nogil=True, cache=True)
def parabola_vertex(heatmap, y, x):
    """(x, y) of the maximum at integer (y, x) of one H x W map, refined by a parabola per axis; no fit along
    an axis at the map border."""
    height, width = heatmap.shape
    centre = heatmap[y, x]
    dx = 0.0
    dy = 0.0
    if 0 < x < width - 1:
        dx = _parabola_offset(heatmap[y, x - 1], centre, heatmap[y, x + 1])
    if 0 < y < height - 1:
        dy = _parabola_offset(heatmap[y - 1, x], centre, heatmap[y + 1, x])
    return x + dx, y + dy


@njit(nogil=True, cache=True)
def refine_peaks(heatmaps, peak_counts, peaks, refined):
    """Sub-pixel peak positions by a parabola fit through the maximum and its neighbours, per axis.

    refined: N x K x M x 2 float32 (out) -- (x, y) in map pixels; entries past the count are -1.
    At the map border, or next to a NaN, the fit along that axis is skipped. Only the heatmaps' N frames
    are refined, so buffers may hold more frames than this batch.
    """
    n_frames = heatmaps.shape[0]
    n_keypoints, capacity = peaks.shape[1], peaks.shape[2]
    for n in range(n_frames):
        for k in range(n_keypoints):
            heatmap = heatmaps[n, k]
            for m in range(capacity):
                if m >= peak_counts[n, k]:
                    refined[n, k, m, 0] = -1.0
                    refined[n, k, m, 1] = -1.0
                    continue
                refined[n, k, m, 0], refined[n, k, m, 1] = parabola_vertex(heatmap, peaks[n, k, m, 0],
                                                                           peaks[n, k, m, 1])


def centroid_of_peak(heatmaps, n, k, m, peaks, window, refined):
    """refined[n, k, m] = the weighted centroid around peak m of map (n, k). Plain Python on purpose: compiled
    by njit here and as a CUDA device function in kernels/cuda.py, so both twins run the same lines."""
    height = heatmaps.shape[2]
    width = heatmaps.shape[3]
    y = peaks[n, k, m, 0]
    x = peaks[n, k, m, 1]
    weight = 0.0
    sum_x = 0.0
    sum_y = 0.0
    for yy in range(y - window if y > window else 0, y + window + 1 if y + window + 1 < height else height):
        for xx in range(x - window if x > window else 0, x + window + 1 if x + window + 1 < width else width):
            value = heatmaps[n, k, yy, xx]
            if value > 0.0 and value < math.inf:  # NaN and infinities carry no position
                weight += value
                sum_x += value * xx
                sum_y += value * yy
    if weight > 0.0:
        refined[n, k, m, 0] = sum_x / weight
        refined[n, k, m, 1] = sum_y / weight
    else:
        refined[n, k, m, 0] = x
        refined[n, k, m, 1] = y


def softargmax_of_map(heatmaps, n, k, beta, keypoints):
    """keypoints[n, k] = (x, y, maximum) of map (n, k) under softmax(beta * map); shared by both twins."""
    height = heatmaps.shape[2]
    width = heatmaps.shape[3]
    peak = -math.inf
    for y in range(height):
        for x in range(width):
            if heatmaps[n, k, y, x] > peak:
                peak = heatmaps[n, k, y, x]
    if not peak > -math.inf:
        keypoints[n, k, 0] = -1.0
        keypoints[n, k, 1] = -1.0
        keypoints[n, k, 2] = 0.0
        return
    weight = 0.0
    sum_x = 0.0
    sum_y = 0.0
    for y in range(height):
        for x in range(width):
            value = heatmaps[n, k, y, x]
            if value == value:  # not NaN
                # Shifted by the maximum so exp never overflows.
                w = math.exp(beta * (value - peak))
                weight += w
                sum_x += w * x
                sum_y += w * y
    keypoints[n, k, 0] = sum_x / weight
    keypoints[n, k, 1] = sum_y / weight
    keypoints[n, k, 2] = peak


_centroid_of_peak = njit(nogil=True, cache=True)(centroid_of_peak)
_softargmax_of_map = njit(nogil=True, cache=True)(softargmax_of_map)


@njit(nogil=True, cache=True)
def refine_peaks_centroid(heatmaps, peak_counts, peaks, window, refined):
    """Sub-pixel peak positions as the heatmap-weighted centroid of the (2*window+1)^2 neighbourhood.

    The alternative to ``refine_peaks`` for flat-topped or noisy peaks. Only positive, finite values weigh
    in; the window is clipped at the map border; with no positive weight the integer position is kept.
    refined: N x K x M x 2 float32 (out) -- (x, y); entries past the count are -1.
    """
    n_keypoints, capacity = peaks.shape[1], peaks.shape[2]
    for n in range(heatmaps.shape[0]):
        for k in range(n_keypoints):
            for m in range(capacity):
                if m < peak_counts[n, k]:
                    _centroid_of_peak(heatmaps, n, k, m, peaks, window, refined)
                else:
                    refined[n, k, m, 0] = -1.0
                    refined[n, k, m, 1] = -1.0


@njit(nogil=True, cache=True)
def softargmax(heatmaps, num_keypoints, beta, keypoints):
    """One keypoint per map: the expected position under softmax(beta * heatmap), for single-person maps.

    heatmaps: N x C x H x W (channels 0..K-1 read); keypoints: N x K x 3 float32 (out) -- (x, y, the map's
    maximum as confidence). Smooth in the map values, so the same formula trains through gradients
    (trainers/heatmap_paf/soft_argmax.py is its torch twin); large beta approaches argmax. NaN pixels are ignored; a map
    of NaN only gives (-1, -1, 0). Maps must not hold infinities.
    """
    for n in range(heatmaps.shape[0]):
        for k in range(num_keypoints):
            _softargmax_of_map(heatmaps, n, k, beta, keypoints)
