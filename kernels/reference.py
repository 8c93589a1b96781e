"""Slow, obviously-correct reference of the parse chain: the TEST ORACLE for the Numba (and CUDA) kernels.

Never used on the hot path. It follows the kernels' docstrings (kernels/__init__.py holds the contract and the
shape glossary) with plain numpy, scipy and Python loops, no numba, so that a kernel and this file agree only
when both implement the documented semantics:

    find_peaks        window NMS over a (2*window+1)^2 neighbourhood, value >= threshold; plateau rule: strictly
                      greater than the neighbours before it in raster order, at least as great as those after;
                      best M per keypoint type, ties in raster order
    refine_peaks      per-axis parabola through the peak and its two neighbours, vertex clamped to +-0.5 px,
                      no fit along an axis at the map border or where the samples are not a maximum
    paf_score_graph   S samples from a to b: the nearest pixel on the segment between the peaks clamped onto the
                      map (candidates at least (S - 1) / 2 px long), or bilinear with each sample clamped (shorter
                      ones, or every one without nearest); projected on the unclamped direction; a limb
                      needs the sample-fraction rule and a positive mean (plus OpenPose's length prior when on)
    assign            Hungarian (scipy's linear_sum_assignment) per limb, keeping positive scores, best first
    connect_parts     extend / start / join-if-disjoint; redundant limbs only complete; min_parts and
                      min_mean_score filters; score = total / (K + limb_weight) clipped to 1; best first
    nms, oks_nms      greedy best-first suppression over the full IoU / OKS matrix (top-down mode)
    decode_single     per-map argmax plus the refine_peaks parabola (top-down mode)
    crop_normalise    float bilinear crop through an affine, pad outside, BGR->RGB, (v - mean) * scale
                      (kernels.crop and kernels.crop_cuda)

Stage functions take the kernels' inputs and *return* their outputs (same shapes, dtypes and "missing" fills:
-1 for indices, 0 for scores) instead of writing preallocated buffers, so parity tests compare arrays directly.
Every frame of the batch is processed (the kernels' ``frames`` argument is not needed here).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment


@dataclass(frozen=True)
class ReferenceConfig:
    """The parse settings the reference needs; posestream.pipeline.estimators.bottomup.ParseConfig has the same field names."""

    peak_threshold: float = 0.1
    peak_window: int = 1
    paf_samples: int = 10
    paf_sampling: str = "nearest"
    paf_min_sample_score: float = 0.05
    paf_min_sample_fraction: float = 0.8
    paf_length_prior: bool = True
    min_parts: int = 3
    min_mean_score: float = 0.2
    max_peaks: int = 32
    max_people: int = 64


# A person as reference_parse reports it: (score, {keypoint: (x, y, peak score)}), positions in map pixels.
ReferencePerson = tuple[float, dict[int, tuple[float, float, float]]]


def reference_find_peaks(heatmaps, num_keypoints: int, threshold: float, window: int, max_peaks: int):
    """-> (peak_counts N x K int32, peaks N x K x M x 2 int32 (y, x), peak_scores N x K x M float32)."""
    # Compare in float64: numba promotes the float32 map value to float64 against the float64 threshold.
    heat = np.asarray(heatmaps, dtype=np.float64)[:, :num_keypoints]
    heat = np.where(np.isnan(heat), -np.inf, heat)  # NaN is never a peak and suppresses nothing
    n_frames, n_keypoints, height, width = heat.shape
    # Pixels outside the map never suppress anything: pad with -inf.
    padded = np.pad(heat, ((0, 0), (0, 0), (window, window), (window, window)), constant_values=-np.inf)
    is_peak = heat >= threshold
    for dy in range(-window, window + 1):
        for dx in range(-window, window + 1):
            if dy == 0 and dx == 0:
                continue
            neighbour = padded[:, :, window + dy:window + dy + height, window + dx:window + dx + width]
            comes_before = dy < 0 or (dy == 0 and dx < 0)  # raster order: row by row, left to right
            if comes_before:
                is_peak &= neighbour < heat  # an equal earlier neighbour already claimed the plateau
            else:
                is_peak &= neighbour <= heat

    peak_counts = np.zeros((n_frames, n_keypoints), np.int32)
    peaks = np.full((n_frames, n_keypoints, max_peaks, 2), -1, np.int32)
    peak_scores = np.zeros((n_frames, n_keypoints, max_peaks), np.float32)
    for n in range(n_frames):
        for k in range(n_keypoints):
            ys, xs = np.nonzero(is_peak[n, k])  # raster order
            values = np.asarray(heatmaps[n, k], np.float32)[ys, xs]
            best = np.argsort(-values, kind="stable")[:max_peaks]  # stable: ties keep raster order
            count = len(best)
            peak_counts[n, k] = count
            peaks[n, k, :count, 0] = ys[best]
            peaks[n, k, :count, 1] = xs[best]
            peak_scores[n, k, :count] = values[best]
    return peak_counts, peaks, peak_scores


def _parabola_vertex(before: float, centre: float, after: float) -> float:
    """Offset of the vertex of the parabola through (-1, before), (0, centre), (1, after), within +-0.5."""
    curvature = before - 2.0 * centre + after
    if not curvature < 0.0:  # a line, a valley, or a NaN sample: no maximum to move to
        return 0.0
    offset = 0.5 * (before - after) / curvature
    return float(np.clip(offset, -0.5, 0.5))


def reference_refine_peaks(heatmaps, peak_counts, peaks):
    """-> refined N x K x M x 2 float32, (x, y) in map pixels; -1 past each count."""
    n_frames, n_keypoints, max_peaks = peaks.shape[:3]
    height, width = heatmaps.shape[2], heatmaps.shape[3]
    refined = np.full((n_frames, n_keypoints, max_peaks, 2), -1.0, np.float32)
    for n in range(n_frames):
        for k in range(n_keypoints):
            heat = np.asarray(heatmaps[n, k], np.float64)
            for m in range(peak_counts[n, k]):
                y, x = int(peaks[n, k, m, 0]), int(peaks[n, k, m, 1])
                # At the border one neighbour is missing: no fit along that axis, never a step off the map.
                dx = _parabola_vertex(heat[y, x - 1], heat[y, x], heat[y, x + 1]) if 0 < x < width - 1 else 0.0
                dy = _parabola_vertex(heat[y - 1, x], heat[y, x], heat[y + 1, x]) if 0 < y < height - 1 else 0.0
                refined[n, k, m] = (x + dx, y + dy)
    return refined


def reference_refine_peaks_centroid(heatmaps, peak_counts, peaks, window: int):
    """-> refined N x K x M x 2 float32: the weighted centroid of the positive, finite values near each peak."""
    n_frames, n_keypoints, max_peaks = peaks.shape[:3]
    height, width = heatmaps.shape[2], heatmaps.shape[3]
    refined = np.full((n_frames, n_keypoints, max_peaks, 2), -1.0, np.float32)
    for n in range(n_frames):
        for k in range(n_keypoints):
            for m in range(peak_counts[n, k]):
                y, x = int(peaks[n, k, m, 0]), int(peaks[n, k, m, 1])
                y0, y1 = max(0, y - window), min(height, y + window + 1)
                x0, x1 = max(0, x - window), min(width, x + window + 1)
                patch = np.asarray(heatmaps[n, k, y0:y1, x0:x1], np.float64)
                weights = np.where(np.isfinite(patch) & (patch > 0), patch, 0.0)
                if weights.sum() > 0:
                    ys, xs = np.mgrid[y0:y1, x0:x1]
                    refined[n, k, m] = ((weights * xs).sum() / weights.sum(), (weights * ys).sum() / weights.sum())
                else:
                    refined[n, k, m] = (x, y)
    return refined


def reference_softargmax(heatmaps, num_keypoints: int, beta: float):
    """-> N x K x 3 float32 (x, y, maximum): positions under softmax(beta * map), NaN ignored."""
    n_frames, _, height, width = heatmaps.shape
    out = np.zeros((n_frames, num_keypoints, 3), np.float32)
    ys, xs = np.mgrid[0:height, 0:width]
    for n in range(n_frames):
        for k in range(num_keypoints):
            heat = np.asarray(heatmaps[n, k], np.float64)
            finite = ~np.isnan(heat)
            if not finite.any():
                out[n, k] = (-1.0, -1.0, 0.0)
                continue
            peak = heat[finite].max()
            weights = np.where(finite, np.exp(beta * (np.where(finite, heat, peak) - peak)), 0.0)
            out[n, k] = ((weights * xs).sum() / weights.sum(), (weights * ys).sum() / weights.sum(), peak)
    return out


def _bilinear(channel: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear samples at float (x, y), positions clamped onto the map first (edge pixels extend outwards)."""
    height, width = channel.shape
    x = np.clip(x, 0.0, width - 1.0)
    y = np.clip(y, 0.0, height - 1.0)
    x0 = np.floor(x).astype(np.int64)
    y0 = np.floor(y).astype(np.int64)
    x1 = np.minimum(x0 + 1, width - 1)
    y1 = np.minimum(y0 + 1, height - 1)
    fx = x - x0
    fy = y - y0
    top = channel[y0, x0] * (1.0 - fx) + channel[y0, x1] * fx
    bottom = channel[y1, x0] * (1.0 - fx) + channel[y1, x1] * fx
    return top * (1.0 - fy) + bottom * fy


def _nearest(channel: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The pixel nearest each (x, y) (round half up); positions already on the map."""
    return channel[np.floor(y + 0.5).astype(np.int64), np.floor(x + 0.5).astype(np.int64)]


def reference_paf_score_graph(pafs, limbs, paf_channels, peak_counts, refined, num_samples: int,
                              min_sample_score: float, min_sample_fraction: float, length_prior: bool,
                              nearest: bool):
    """-> limb_scores N x L x M x M float32: score of candidate (peak a of limb start, peak b of limb end)."""
    n_frames, _, height, width = pafs.shape
    upper = np.array([width - 1.0, height - 1.0])
    max_peaks = refined.shape[2]
    scores = np.zeros((n_frames, len(limbs), max_peaks, max_peaks), np.float32)
    # t along the candidate, 0 at a and 1 at b; a single sample sits in the middle.
    t = np.arange(num_samples) * (1.0 / (num_samples - 1)) if num_samples > 1 else np.array([0.5])
    for n in range(n_frames):
        for l, (ka, kb) in enumerate(limbs):
            count_a, count_b = peak_counts[n, ka], peak_counts[n, kb]
            if count_a == 0 or count_b == 0:
                continue
            paf_x = np.asarray(pafs[n, paf_channels[l][0]], np.float64)
            paf_y = np.asarray(pafs[n, paf_channels[l][1]], np.float64)
            start = refined[n, ka, :count_a].astype(np.float64)[:, None, :]  # A x 1 x 2
            end = refined[n, kb, :count_b].astype(np.float64)[None, :, :]  # 1 x B x 2
            delta = end - start  # A x B x 2
            length = np.hypot(delta[..., 0], delta[..., 1])  # A x B
            usable = length >= 1e-6  # coincident peaks have no direction: never a limb
            unit = delta / np.where(usable, length, 1.0)[..., None]
            # Nearest pixels (on the segment between the peaks clamped onto the map) for candidates whose samples
            # are at least half a pixel apart; bilinear for the rest, and for all without ``nearest``.
            start_on_map = np.clip(start, 0.0, upper)
            delta_on_map = np.clip(end, 0.0, upper) - start_on_map
            on_map = start_on_map[:, :, None, :] + t[None, None, :, None] * delta_on_map[:, :, None, :]
            points = start[:, :, None, :] + t[None, None, :, None] * delta[:, :, None, :]  # A x B x S x 2
            read_nearest = (nearest & (length >= 0.5 * (num_samples - 1)))[..., None]  # A x B x 1
            nearest_x = _nearest(paf_x, on_map[..., 0], on_map[..., 1])
            nearest_y = _nearest(paf_y, on_map[..., 0], on_map[..., 1])
            field_x = np.where(read_nearest, nearest_x, _bilinear(paf_x, points[..., 0], points[..., 1]))
            field_y = np.where(read_nearest, nearest_y, _bilinear(paf_y, points[..., 0], points[..., 1]))
            along = field_x * unit[..., None, 0] + field_y * unit[..., None, 1]  # A x B x S
            mean = along.mean(axis=2)
            if length_prior:
                # OpenPose: no penalty up to half the map height, then increasingly negative.
                mean = mean + np.minimum(0.5 * height / np.where(usable, length, 1.0) - 1.0, 0.0)
            enough_samples = (along > min_sample_score).sum(axis=2) >= min_sample_fraction * num_samples
            is_limb = usable & enough_samples & (mean > 0.0)
            scores[n, l, :count_a, :count_b] = np.where(is_limb, mean, 0.0)
    return scores


def reference_assign(limb_scores, limbs, peak_counts):
    """-> (match_counts N x L int32, matches N x L x M x 2 int32 (a, b), match_scores N x L x M float32).

    Per limb, the assignment of maximum total score over the peaks found; pairs scoring 0 ("not a limb") are
    dropped, the rest sorted best first (ties by peak a, the order linear_sum_assignment returns rows in).
    """
    n_frames, n_limbs, max_peaks = limb_scores.shape[:3]
    match_counts = np.zeros((n_frames, n_limbs), np.int32)
    matches = np.full((n_frames, n_limbs, max_peaks, 2), -1, np.int32)
    match_scores = np.zeros((n_frames, n_limbs, max_peaks), np.float32)
    for n in range(n_frames):
        for l, (ka, kb) in enumerate(limbs):
            count_a, count_b = peak_counts[n, ka], peak_counts[n, kb]
            if count_a == 0 or count_b == 0:
                continue
            candidates = limb_scores[n, l, :count_a, :count_b]
            rows, cols = linear_sum_assignment(candidates, maximize=True)
            kept = [(float(candidates[a, b]), int(a), int(b)) for a, b in zip(rows, cols) if candidates[a, b] > 0.0]
            kept.sort(key=lambda match: (-match[0], match[1]))
            for i, (score, a, b) in enumerate(kept):
                matches[n, l, i] = (a, b)
                match_scores[n, l, i] = score
            match_counts[n, l] = len(kept)
    return match_counts, matches, match_scores


@dataclass(eq=False)  # people are compared by identity: two fragments are never "the same" by value
class _Growing:
    """A person being assembled: keypoint -> peak index, and the running total of peak and limb scores."""

    parts: dict[int, int]
    total: float


def reference_connect_parts(matches, match_scores, match_counts, limbs, redundant, peak_scores, min_parts: int,
                            min_mean_score: float, limb_weight: float, max_people: int):
    """-> (person_counts N int32, person_parts N x P x K int32, person_scores N x P float32, people_dropped N int32)."""
    n_frames, n_keypoints = peak_scores.shape[:2]
    person_counts = np.zeros(n_frames, np.int32)
    person_parts = np.full((n_frames, max_people, n_keypoints), -1, np.int32)
    person_scores = np.zeros((n_frames, max_people), np.float32)
    people_dropped = np.zeros(n_frames, np.int32)
    for n in range(n_frames):
        people: list[_Growing] = []  # in creation order; joined-away people are removed
        owner: dict[tuple[int, int], _Growing] = {}  # (keypoint, peak) -> the person holding that peak

        def add(person: _Growing, keypoint: int, peak: int, score: float) -> None:
            person.parts[keypoint] = peak
            person.total += score
            owner[keypoint, peak] = person

        for l, (ka, kb) in enumerate(limbs):  # sidecar order: parents before children
            for i in range(match_counts[n, l]):
                a, b = int(matches[n, l, i, 0]), int(matches[n, l, i, 1])
                limb_score = float(match_scores[n, l, i])
                peak_a, peak_b = float(peak_scores[n, ka, a]), float(peak_scores[n, kb, b])
                holder_a, holder_b = owner.get((ka, a)), owner.get((kb, b))
                if redundant[l]:
                    # Only completes: one end owned, the other free, and the owner lacks that keypoint.
                    # The peak score counts; the redundant limb's own score does not.
                    if holder_a is not None and holder_b is None and kb not in holder_a.parts:
                        add(holder_a, kb, b, peak_b)
                    elif holder_b is not None and holder_a is None and ka not in holder_b.parts:
                        add(holder_b, ka, a, peak_a)
                    continue
                if holder_a is None and holder_b is None:
                    person = _Growing(parts={}, total=0.0)
                    people.append(person)
                    add(person, ka, a, peak_a)
                    add(person, kb, b, peak_b + limb_score)
                elif holder_b is None:
                    if kb not in holder_a.parts:  # else the person already has this keypoint: b stays free
                        add(holder_a, kb, b, peak_b + limb_score)
                elif holder_a is None:
                    if ka not in holder_b.parts:
                        add(holder_b, ka, a, peak_a + limb_score)
                elif holder_a is not holder_b and not (holder_a.parts.keys() & holder_b.parts.keys()):
                    # Two fragments of one person meeting: a absorbs b.
                    for keypoint, peak in holder_b.parts.items():
                        holder_a.parts[keypoint] = peak
                        owner[keypoint, peak] = holder_a
                    holder_a.total += holder_b.total + limb_score
                    people.remove(holder_b)

        kept = []
        for person in people:
            if len(person.parts) < min_parts or person.total / len(person.parts) < min_mean_score:
                continue
            kept.append((min(1.0, person.total / (n_keypoints + limb_weight)), person))
        kept.sort(key=lambda scored: -scored[0])  # stable: ties keep creation order
        stored = kept[:max_people]
        for rank, (score, person) in enumerate(stored):
            for keypoint, peak in person.parts.items():
                person_parts[n, rank, keypoint] = peak
            person_scores[n, rank] = score
        person_counts[n] = len(stored)
        people_dropped[n] = len(kept) - len(stored)
    return person_counts, person_parts, person_scores, people_dropped


def reference_parse(heatmaps, pafs, limbs, paf_channels, redundant, config=None, *, num_keypoints: int,
                    limb_weight: float | None = None) -> list[list[ReferencePerson]]:
    """The whole chain, N x C x H x W heatmaps and N x 2L x H x W PAFs -> per frame, people best first.

    ``config`` is any object with ReferenceConfig's fields (posestream.pipeline.estimators.bottomup.ParseConfig qualifies; its
    ``upsample`` must be 1 because resizing the maps is the pipeline's job, not the parse's).
    ``redundant`` is a length-L sequence of bools. ``limb_weight`` defaults to the number of non-redundant
    limbs, as the estimator sets it. Each person is (score, {keypoint: (x, y, peak score)}) in map pixels.
    """
    config = config if config is not None else ReferenceConfig()
    if getattr(config, "upsample", 1) != 1:
        raise ValueError("reference_parse parses the maps as given: upsample them before calling it")
    limbs = [(int(a), int(b)) for a, b in np.asarray(limbs).reshape(-1, 2)]
    paf_channels = [(int(x), int(y)) for x, y in np.asarray(paf_channels).reshape(-1, 2)]
    redundant = [bool(r) for r in redundant]
    if limb_weight is None:
        limb_weight = float(len(limbs) - sum(redundant))
    heatmaps = np.asarray(heatmaps, np.float32)
    pafs = np.asarray(pafs, np.float32)

    peak_counts, peaks, peak_scores = reference_find_peaks(
        heatmaps, num_keypoints, config.peak_threshold, config.peak_window, config.max_peaks)
    refined = reference_refine_peaks(heatmaps, peak_counts, peaks)
    limb_scores = reference_paf_score_graph(
        pafs, limbs, paf_channels, peak_counts, refined, config.paf_samples, config.paf_min_sample_score,
        config.paf_min_sample_fraction, config.paf_length_prior, config.paf_sampling == "nearest")
    match_counts, matches, match_scores = reference_assign(limb_scores, limbs, peak_counts)
    person_counts, person_parts, person_scores, _ = reference_connect_parts(
        matches, match_scores, match_counts, limbs, redundant, peak_scores, config.min_parts,
        config.min_mean_score, limb_weight, config.max_people)

    frames = []
    for n in range(heatmaps.shape[0]):
        people = []
        for p in range(person_counts[n]):
            keypoints = {}
            for k in range(num_keypoints):
                peak = person_parts[n, p, k]
                if peak >= 0:
                    x, y = refined[n, k, peak]
                    keypoints[k] = (float(x), float(y), float(peak_scores[n, k, peak]))
            people.append((float(person_scores[n, p]), keypoints))
        frames.append(people)
    return frames


# ----------------------------------------------------------------------------------------------
# Top-down: box NMS, OKS-NMS (kernels/boxes.py) and single-person decoding (kernels/topdown.py)


def reference_box_iou_matrix(boxes) -> np.ndarray:
    """N x N IoU of (x0, y0, x1, y1) boxes, 0 where the union is empty."""
    boxes = np.asarray(boxes, np.float64)
    x0 = np.maximum(boxes[:, None, 0], boxes[None, :, 0])
    y0 = np.maximum(boxes[:, None, 1], boxes[None, :, 1])
    x1 = np.minimum(boxes[:, None, 2], boxes[None, :, 2])
    y1 = np.minimum(boxes[:, None, 3], boxes[None, :, 3])
    intersection = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    areas = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    union = areas[:, None] + areas[None, :] - intersection
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, intersection / np.where(union > 0, union, 1.0), 0.0)


def reference_oks_matrix(keypoints, areas, sigmas) -> np.ndarray:
    """P x P OKS over the joints both people found; scale = mean of the two areas, variance (2 sigma)^2."""
    keypoints = np.asarray(keypoints, np.float64)
    areas = np.asarray(areas, np.float64)
    variances = (2.0 * np.asarray(sigmas, np.float64)) ** 2
    squared = ((keypoints[:, None, :, :2] - keypoints[None, :, :, :2]) ** 2).sum(axis=-1)  # P x P x K
    scale = 0.5 * (areas[:, None] + areas[None, :]) + np.finfo(np.float32).eps
    similarity = np.exp(-squared / (2.0 * variances[None, None, :] * scale[:, :, None]))
    found = keypoints[:, :, 2] > 0
    shared = found[:, None, :] & found[None, :, :]
    counts = shared.sum(axis=-1)
    totals = np.where(shared, similarity, 0.0).sum(axis=-1)
    return np.where(counts > 0, totals / np.maximum(counts, 1), 0.0)


def _reference_greedy(scores, overlap: np.ndarray, threshold: float, capacity: int) -> np.ndarray:
    """Best-first greedy suppression given the full overlap matrix; ties by index; NaN scores never kept."""
    scores = np.asarray(scores, np.float64)
    candidates = [i for i in sorted(range(len(scores)), key=lambda i: (-scores[i], i)) if not np.isnan(scores[i])]
    kept: list[int] = []
    for candidate in candidates:
        if len(kept) == capacity:
            break
        if all(overlap[k, candidate] <= threshold for k in kept):
            kept.append(candidate)
    return np.asarray(kept, np.int64)


def reference_nms(boxes, scores, iou_threshold: float, capacity: int) -> np.ndarray:
    """Kept box indices, best first (kernels.boxes.nms)."""
    return _reference_greedy(scores, reference_box_iou_matrix(boxes), iou_threshold, capacity)


def reference_oks_nms(keypoints, scores, areas, sigmas, oks_threshold: float, capacity: int) -> np.ndarray:
    """Kept person indices, best first (kernels.boxes.oks_nms)."""
    return _reference_greedy(scores, reference_oks_matrix(keypoints, areas, sigmas), oks_threshold, capacity)


def reference_decode_single(heatmaps, num_keypoints: int) -> tuple[np.ndarray, np.ndarray]:
    """-> (xy B x K x 2 float32, conf B x K float32): per-map argmax (first in raster order) plus the per-axis
    parabola of refine_peaks; a map of NaN only gives (-1, -1) and 0 (kernels.topdown.decode_single)."""
    heatmaps = np.asarray(heatmaps, np.float32)[:, :num_keypoints]
    batch, keypoints, height, width = heatmaps.shape
    xy = np.full((batch, keypoints, 2), -1.0, np.float32)
    conf = np.zeros((batch, keypoints), np.float32)
    for b in range(batch):
        for k in range(keypoints):
            heatmap = heatmaps[b, k]
            if np.isnan(heatmap).all():
                continue
            flat = int(np.nanargmax(heatmap))  # the first maximum in raster order
            y, x = divmod(flat, width)
            centre = float(heatmap[y, x])
            dx = _parabola_vertex(heatmap[y, x - 1], centre, heatmap[y, x + 1]) if 0 < x < width - 1 else 0.0
            dy = _parabola_vertex(heatmap[y - 1, x], centre, heatmap[y + 1, x]) if 0 < y < height - 1 else 0.0
            xy[b, k] = (x + dx, y + dy)
            conf[b, k] = centre
    return xy, conf


def reference_crop_normalise(image, to_image, out_height: int, out_width: int, mean, scale, swap_rb: bool,
                             pad_value: float) -> np.ndarray:
    """-> (B, 3, h, w) float64: kernels.crop.crop_normalise_cpu's contract in exact float arithmetic.

    Crop pixel (x, y) samples the image at to_image[b] @ (x, y, 1) (pixel centres at integers): bilinear over
    the four surrounding pixels, each outside the image reading pad_value; channels reordered BGR -> RGB when
    swap_rb, then (value - mean[c]) * scale[c].
    """
    image = np.asarray(image)
    to_image = np.asarray(to_image, np.float64)
    image_height, image_width = image.shape[:2]
    sources = [2, 1, 0] if swap_rb else [0, 1, 2]
    crop_y, crop_x = np.mgrid[0:out_height, 0:out_width].astype(np.float64)
    result = np.empty((to_image.shape[0], 3, out_height, out_width), np.float64)

    def pixels(rows, cols):
        """(h, w, 3) float64 pixel values at integer positions, pad_value outside the image."""
        inside = (rows >= 0) & (rows < image_height) & (cols >= 0) & (cols < image_width)
        values = image[np.clip(rows, 0, image_height - 1), np.clip(cols, 0, image_width - 1)].astype(np.float64)
        return np.where(inside[..., None], values, float(pad_value))

    for b, affine in enumerate(to_image):
        x = affine[0, 0] * crop_x + affine[0, 1] * crop_y + affine[0, 2]
        y = affine[1, 0] * crop_x + affine[1, 1] * crop_y + affine[1, 2]
        left, top = np.floor(x), np.floor(y)
        fx, fy = (x - left)[..., None], (y - top)[..., None]
        left, top = left.astype(np.int64), top.astype(np.int64)
        upper = pixels(top, left) * (1.0 - fx) + pixels(top, left + 1) * fx
        lower = pixels(top + 1, left) * (1.0 - fx) + pixels(top + 1, left + 1) * fx
        sampled = upper * (1.0 - fy) + lower * fy
        for channel in range(3):
            result[b, channel] = (sampled[..., sources[channel]] - mean[channel]) * scale[channel]
    return result
