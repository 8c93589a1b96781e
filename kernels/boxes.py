"""Greedy suppression of duplicates: box NMS (detector outputs) and OKS-NMS (people found in overlapping crops).

Both are best-first: candidates are visited by score, highest first (equal scores in index order); a candidate
is kept unless it overlaps an already kept one by more than the threshold. Outputs are the kept indices, best
first, written into a caller-allocated ``keep_out``; the return value is how many were written. When
``keep_out`` is full the search stops, so the kept ones are always the best-scoring survivors.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(nogil=True, cache=True)
def box_iou(boxes, a, b):
    """IoU of rows a and b of an N x 4 (x0, y0, x1, y1) array; 0 when the union is empty."""
    width = min(boxes[a, 2], boxes[b, 2]) - max(boxes[a, 0], boxes[b, 0])
    height = min(boxes[a, 3], boxes[b, 3]) - max(boxes[a, 1], boxes[b, 1])
    if width <= 0.0 or height <= 0.0:
        return 0.0
    intersection = width * height
    area_a = max(boxes[a, 2] - boxes[a, 0], 0.0) * max(boxes[a, 3] - boxes[a, 1], 0.0)
    area_b = max(boxes[b, 2] - boxes[b, 0], 0.0) * max(boxes[b, 3] - boxes[b, 1], 0.0)
    union = area_a + area_b - intersection
    return intersection / union if union > 0.0 else 0.0


@njit(nogil=True, cache=True)
def nms(boxes, scores, iou_threshold, keep_out):
    """Box non-maximum suppression.

    boxes: N x 4 float (x0, y0, x1, y1); scores: N float; keep_out: int array (out) -- kept indices, best first.
    A box is dropped when its IoU with a kept box is greater than ``iou_threshold``. NaN scores are never kept.
    Returns the number of indices written.
    """
    order = np.argsort(-scores, kind="mergesort")  # stable: equal scores keep index order
    capacity = keep_out.shape[0]
    count = 0
    for i in range(order.shape[0]):
        if count == capacity:
            break
        candidate = order[i]
        if not scores[candidate] == scores[candidate]:  # NaN
            continue
        suppressed = False
        for j in range(count):
            if box_iou(boxes, keep_out[j], candidate) > iou_threshold:
                suppressed = True
                break
        if not suppressed:
            keep_out[count] = candidate
            count += 1
    return count


@njit(nogil=True, cache=True)
def keypoint_oks(keypoints, areas, sigmas, a, b):
    """COCO object keypoint similarity between people a and b of a P x K x 3 (x, y, confidence) array.

    Joints count where both people found them (confidence > 0); the scale is the mean of their two areas,
    variance (2 sigma)^2 per joint, as COCO's evaluation. 0 when they share no joint.
    """
    scale = 0.5 * (areas[a] + areas[b]) + np.finfo(np.float32).eps
    total = 0.0
    shared = 0
    for k in range(keypoints.shape[1]):
        if keypoints[a, k, 2] > 0.0 and keypoints[b, k, 2] > 0.0:
            dx = keypoints[a, k, 0] - keypoints[b, k, 0]
            dy = keypoints[a, k, 1] - keypoints[b, k, 1]
            variance = (2.0 * sigmas[k]) ** 2
            total += math.exp(-(dx * dx + dy * dy) / (2.0 * variance * scale))
            shared += 1
    return total / shared if shared > 0 else 0.0


@njit(nogil=True, cache=True)
def oks_nms(keypoints, scores, areas, sigmas, oks_threshold, keep_out):
    """Person non-maximum suppression by keypoint similarity (``keypoint_oks``).

    keypoints: P x K x 3 float (x, y, confidence; confidence 0 = not found); scores: P; areas: P float, the
    people's box areas in square pixels; sigmas: K COCO sigmas; keep_out: int array (out) -- kept indices, best
    first. A person is dropped when its OKS with a kept person is greater than ``oks_threshold``.
    Returns the number of indices written.
    """
    order = np.argsort(-scores, kind="mergesort")
    capacity = keep_out.shape[0]
    count = 0
    for i in range(order.shape[0]):
        if count == capacity:
            break
        candidate = order[i]
        if not scores[candidate] == scores[candidate]:
            continue
        suppressed = False
        for j in range(count):
            if keypoint_oks(keypoints, areas, sigmas, keep_out[j], candidate) > oks_threshold:
                suppressed = True
                break
        if not suppressed:
            keep_out[count] = candidate
            count += 1
    return count
