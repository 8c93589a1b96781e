"""Tracking math as Numba functions over arrays: Kalman filter on boxes, pose similarity, One Euro filter.

No Python objects in here: ``posestream.pipeline.tracking.tracker.PoseTracker`` owns the arrays (one row per track slot)
and calls these once per frame over all tracks at a time.

Shapes (T track slots, D detections in this frame, J = 17 COCO-17 joints):
    means          T x 8      Kalman state (cx, cy, w, h, vcx, vcy, vw, vh): box centre and size in
                              pixels, velocities in pixels per frame
    covariances    T x 8 x 8
    states         T int8     slot state: 0 free, 1 tentative, 2 confirmed, 3 lost (see posestream.pipeline.tracking.tracker)
    boxes          D x 4      detection boxes (cx, cy, w, h)
    keypoints      D x J x 3  (x, y, confidence); confidence 0 means not found
Row selections are passed as int64 index arrays (``rows`` into tracks, ``cols`` into detections), so the
caller never copies the track arrays to work on a subset.

Noise model (BoT-SORT's xywh Kalman filter): every standard deviation is a fixed fraction of the box width
(for x and w) or height (for y and h), so the filter behaves the same for near and far people.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

STATE_FREE = 0
STATE_LOST = 3


@njit(nogil=True, cache=True)
def kalman_initiate(means, covariances, rows, boxes, cols, std_position, std_velocity):
    """Start the filter of track ``rows[k]`` at box ``cols[k]`` with zero velocity and a wide velocity prior."""
    for k in range(rows.shape[0]):
        r = rows[k]
        d = cols[k]
        width = max(boxes[d, 2], 1.0)
        height = max(boxes[d, 3], 1.0)
        for i in range(8):
            means[r, i] = 0.0
            for j in range(8):
                covariances[r, i, j] = 0.0
        for i in range(4):
            means[r, i] = boxes[d, i]
        for i in range(4):
            scale = width if i % 2 == 0 else height  # x-like (cx, w) follow the width, y-like the height
            covariances[r, i, i] = (2.0 * std_position * scale) ** 2
            covariances[r, i + 4, i + 4] = (10.0 * std_velocity * scale) ** 2


@njit(nogil=True, cache=True)
def kalman_predict(means, covariances, states, std_position, std_velocity):
    """One frame of constant-velocity motion for every used slot, in place.

    A lost track keeps its centre velocity but not its size velocity (as ByteTrack does), so a box coasting
    through an occlusion does not shrink to nothing or balloon.
    """
    for r in range(means.shape[0]):
        if states[r] == STATE_FREE:
            continue
        if states[r] == STATE_LOST:
            means[r, 6] = 0.0
            means[r, 7] = 0.0
        width = max(means[r, 2], 1.0)
        height = max(means[r, 3], 1.0)
        for i in range(4):
            means[r, i] += means[r, i + 4]
        # P <- F P F^T with F = [[I, I], [0, I]]: add the velocity rows, then the velocity columns.
        for i in range(4):
            for j in range(8):
                covariances[r, i, j] += covariances[r, i + 4, j]
        for i in range(8):
            for j in range(4):
                covariances[r, i, j] += covariances[r, i, j + 4]
        for i in range(4):
            scale = width if i % 2 == 0 else height
            covariances[r, i, i] += (std_position * scale) ** 2
            covariances[r, i + 4, i + 4] += (std_velocity * scale) ** 2


@njit(nogil=True, cache=True)
def kalman_update(means, covariances, rows, boxes, cols, std_position):
    """Correct track ``rows[k]`` with measured box ``cols[k]`` (H = [I 0], R from the predicted size)."""
    innovation_cov = np.empty((4, 4))
    lower = np.empty((4, 4))
    gain_t = np.empty((4, 8))  # K^T = S^-1 P[:4, :]
    top = np.empty((4, 8))
    for k in range(rows.shape[0]):
        r = rows[k]
        d = cols[k]
        width = max(means[r, 2], 1.0)
        height = max(means[r, 3], 1.0)
        for i in range(4):
            for j in range(8):
                top[i, j] = covariances[r, i, j]
        for i in range(4):
            for j in range(4):
                innovation_cov[i, j] = top[i, j]
            scale = width if i % 2 == 0 else height
            innovation_cov[i, i] += (std_position * scale) ** 2
        # Cholesky S = L L^T (S is 4 x 4 symmetric positive definite).
        for i in range(4):
            for j in range(i + 1):
                total = innovation_cov[i, j]
                for m in range(j):
                    total -= lower[i, m] * lower[j, m]
                if i == j:
                    lower[i, i] = math.sqrt(max(total, 1e-12))
                else:
                    lower[i, j] = total / lower[j, j]
        # Solve L Y = P[:4, :], then L^T K^T = Y.
        for c in range(8):
            for i in range(4):
                total = top[i, c]
                for m in range(i):
                    total -= lower[i, m] * gain_t[m, c]
                gain_t[i, c] = total / lower[i, i]
            for i in range(3, -1, -1):
                total = gain_t[i, c]
                for m in range(i + 1, 4):
                    total -= lower[m, i] * gain_t[m, c]
                gain_t[i, c] = total / lower[i, i]
        residual0 = boxes[d, 0] - means[r, 0]
        residual1 = boxes[d, 1] - means[r, 1]
        residual2 = boxes[d, 2] - means[r, 2]
        residual3 = boxes[d, 3] - means[r, 3]
        for i in range(8):
            means[r, i] += (gain_t[0, i] * residual0 + gain_t[1, i] * residual1
                            + gain_t[2, i] * residual2 + gain_t[3, i] * residual3)
        # P <- P - K P[:4, :], then symmetrised against rounding drift.
        for i in range(8):
            for j in range(8):
                covariances[r, i, j] -= (gain_t[0, i] * top[0, j] + gain_t[1, i] * top[1, j]
                                         + gain_t[2, i] * top[2, j] + gain_t[3, i] * top[3, j])
        for i in range(8):
            for j in range(i + 1, 8):
                mean_value = 0.5 * (covariances[r, i, j] + covariances[r, j, i])
                covariances[r, i, j] = mean_value
                covariances[r, j, i] = mean_value


@njit(nogil=True, cache=True)
def _completed_box(track_keypoints, r, keypoints, d, min_confidence, min_aspect, min_size, box):
    """Write into ``box`` the (cx, cy, w, h) of detection d's body as track r last knew it; returns the
    number of joints the two share (confidence above ``min_confidence`` in both), 0 when none.

    A detection missing joints the track has (legs hidden behind a car, arms out of the picture) has a
    smaller box with a shifted centre; fed to the Kalman filter that reads as motion. So the track's
    remembered joints, moved by the mean displacement of the shared joints, fill in the missing ones, and the
    box is taken around the detection's found joints plus those. Widened to ``min_aspect`` * height.
    """
    joints = keypoints.shape[1]
    shared = 0
    shift_x = 0.0
    shift_y = 0.0
    for j in range(joints):
        if track_keypoints[r, j, 2] > min_confidence and keypoints[d, j, 2] > min_confidence:
            shift_x += keypoints[d, j, 0] - track_keypoints[r, j, 0]
            shift_y += keypoints[d, j, 1] - track_keypoints[r, j, 1]
            shared += 1
    x0 = math.inf
    y0 = math.inf
    x1 = -math.inf
    y1 = -math.inf
    for j in range(joints):
        if keypoints[d, j, 2] > 0.0:
            x = keypoints[d, j, 0]
            y = keypoints[d, j, 1]
        elif shared > 0 and track_keypoints[r, j, 2] > min_confidence:
            x = track_keypoints[r, j, 0] + shift_x / shared
            y = track_keypoints[r, j, 1] + shift_y / shared
        else:
            continue
        x0 = min(x0, x)
        y0 = min(y0, y)
        x1 = max(x1, x)
        y1 = max(y1, y)
    if x0 > x1:  # no joint at all: a degenerate box at the origin, which overlaps nothing real
        x0 = x1 = y0 = y1 = 0.0
    height = max(y1 - y0, min_size)
    box[0] = 0.5 * (x0 + x1)
    box[1] = 0.5 * (y0 + y1)
    box[2] = max(max(x1 - x0, min_aspect * height), min_size)
    box[3] = height
    return shared


@njit(nogil=True, cache=True)
def _pair_similarity(track_box, shift_x, shift_y, track_keypoints, r, keypoints, d, det_box, shared, sigmas,
                     iou_weight, min_confidence):
    """iou_weight * IoU(track_box, det_box) + (1 - iou_weight) * OKS of the track's keypoints moved by the
    shift; IoU alone without shared joints; 0 when the boxes do not overlap (OKS would be tiny anyway, and
    skipping it saves the exponentials)."""
    track_w = max(track_box[2], 1.0)
    track_h = max(track_box[3], 1.0)
    overlap_w = (min(track_box[0] + 0.5 * track_w, det_box[0] + 0.5 * det_box[2])
                 - max(track_box[0] - 0.5 * track_w, det_box[0] - 0.5 * det_box[2]))
    overlap_h = (min(track_box[1] + 0.5 * track_h, det_box[1] + 0.5 * det_box[3])
                 - max(track_box[1] - 0.5 * track_h, det_box[1] - 0.5 * det_box[3]))
    if overlap_w <= 0.0 or overlap_h <= 0.0:
        return 0.0
    intersection = overlap_w * overlap_h
    iou = intersection / (track_w * track_h + det_box[2] * det_box[3] - intersection)
    if shared == 0:
        return iou
    area = 0.5 * (track_w * track_h + det_box[2] * det_box[3])
    oks_total = 0.0
    for j in range(sigmas.shape[0]):
        if track_keypoints[r, j, 2] <= min_confidence or keypoints[d, j, 2] <= min_confidence:
            continue
        dx = track_keypoints[r, j, 0] + shift_x - keypoints[d, j, 0]
        dy = track_keypoints[r, j, 1] + shift_y - keypoints[d, j, 1]
        kappa = 2.0 * sigmas[j]
        oks_total += math.exp(-(dx * dx + dy * dy) / (2.0 * area * kappa * kappa))
    return iou_weight * iou + (1.0 - iou_weight) * oks_total / shared


@njit(nogil=True, cache=True)
def pose_similarity(means, observed_boxes, track_keypoints, rows, keypoints, cols, sigmas, iou_weight,
                    min_confidence, min_aspect, min_size):
    """len(rows) x len(cols) similarity in [0, 1]: iou_weight * IoU + (1 - iou_weight) * OKS.

    IoU is between the track's Kalman prediction and the detection's completed box (``_completed_box``),
    so a person seen only in part still overlaps its own track. OKS is COCO's, between the detection and the
    track's remembered keypoints moved by the predicted centre shift (so it compares poses, not positions
    twice over), with s^2 = the mean of the two box areas and only joints above ``min_confidence`` in both.
    observed_boxes: T x 4 completed box (cx, cy, w, h) at each track's last observation.

    (Also scoring a lost track against its last observed box, unmoved, as OC-SORT's recovery does, was
    tried: on vtest.avi it joined fewer fragments than it cost, handing a lost walker's ID to whoever
    stood where the walker was last seen.)
    """
    similarity = np.zeros((rows.shape[0], cols.shape[0]))
    det_box = np.empty(4)
    for a in range(rows.shape[0]):
        r = rows[a]
        predicted = means[r, :4]
        shift_x = means[r, 0] - observed_boxes[r, 0]
        shift_y = means[r, 1] - observed_boxes[r, 1]
        for b in range(cols.shape[0]):
            d = cols[b]
            shared = _completed_box(track_keypoints, r, keypoints, d, min_confidence, min_aspect, min_size,
                                    det_box)
            similarity[a, b] = _pair_similarity(predicted, shift_x, shift_y, track_keypoints, r, keypoints, d,
                                                det_box, shared, sigmas, iou_weight, min_confidence)
    return similarity


@njit(nogil=True, cache=True)
def observe(track_keypoints, observed_boxes, rows, keypoints, cols, min_confidence, min_aspect, min_size,
            memory_decay, measured):
    """Track ``rows[k]`` has been matched to detection ``cols[k]``: its Kalman measurement and memory.

    measured: D x 4 (out), row ``cols[k]`` = the completed box (the Kalman measurement); observed_boxes:
    T x 4 (out), row ``rows[k]`` = the same box.
    The track's remembered keypoints become the detection's found joints; a joint the detection lacks keeps
    its remembered position moved with the body and its confidence times ``memory_decay``, and is forgotten
    once that falls to ``min_confidence``, so a hidden limb fills in the box for a few frames only.
    """
    joints = keypoints.shape[1]
    box = np.empty(4)
    for k in range(rows.shape[0]):
        r = rows[k]
        d = cols[k]
        shared = _completed_box(track_keypoints, r, keypoints, d, min_confidence, min_aspect, min_size, box)
        shift_x = 0.0
        shift_y = 0.0
        if shared > 0:
            for j in range(joints):
                if track_keypoints[r, j, 2] > min_confidence and keypoints[d, j, 2] > min_confidence:
                    shift_x += keypoints[d, j, 0] - track_keypoints[r, j, 0]
                    shift_y += keypoints[d, j, 1] - track_keypoints[r, j, 1]
            shift_x /= shared
            shift_y /= shared
        for j in range(joints):
            if keypoints[d, j, 2] > 0.0:
                for i in range(3):
                    track_keypoints[r, j, i] = keypoints[d, j, i]
            elif shared > 0 and track_keypoints[r, j, 2] * memory_decay > min_confidence:
                track_keypoints[r, j, 0] += shift_x
                track_keypoints[r, j, 1] += shift_y
                track_keypoints[r, j, 2] *= memory_decay
            else:
                for i in range(3):
                    track_keypoints[r, j, i] = 0.0
        for i in range(4):
            measured[d, i] = box[i]
            observed_boxes[r, i] = box[i]


@njit(nogil=True, cache=True)
def _smoothing_factor(dt, cutoff):
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


@njit(nogil=True, cache=True)
def one_euro_update(values, rates, times, ready, rows, keypoints, cols, now, min_cutoff, beta, d_cutoff,
                    full_confidence, fallback_dt, out):
    """One Euro filter step for the joints of track ``rows[k]`` observed as detection ``cols[k]``.

    values, rates: T x J x 2 filtered position (px) and filtered speed (px/s) per joint and axis
    times: T x J time (s) of each joint's last update; ready: T x J bool, the joint has been seen
    out: D x J x 3, row ``cols[k]`` written: filtered x, y and the observed confidence.

    Confidence rule: a joint with confidence 0 (not found) leaves the filter untouched (it holds the last
    value and its clock, so the next dt spans the gap) and is written as [0, 0, 0]. A found joint moves the
    filter by the One Euro step scaled by min(1, confidence / full_confidence): a weak, likely misplaced
    joint nudges the filtered position instead of dragging it. A joint seen for the first time starts
    the filter at its observed position.
    """
    joints = keypoints.shape[1]
    for k in range(rows.shape[0]):
        r = rows[k]
        d = cols[k]
        for j in range(joints):
            confidence = keypoints[d, j, 2]
            out[d, j, 2] = confidence
            if confidence <= 0.0:
                out[d, j, 0] = 0.0
                out[d, j, 1] = 0.0
                continue
            if not ready[r, j]:
                for axis in range(2):
                    values[r, j, axis] = keypoints[d, j, axis]
                    rates[r, j, axis] = 0.0
                    out[d, j, axis] = keypoints[d, j, axis]
                times[r, j] = now
                ready[r, j] = True
                continue
            dt = now - times[r, j]
            if dt <= 0.0:
                dt = fallback_dt  # repeated or backwards timestamps: assume one nominal frame
            weight = min(1.0, confidence / full_confidence)
            rate_alpha = _smoothing_factor(dt, d_cutoff)
            for axis in range(2):
                observed = keypoints[d, j, axis]
                raw_rate = (observed - values[r, j, axis]) / dt
                rates[r, j, axis] += weight * rate_alpha * (raw_rate - rates[r, j, axis])
                cutoff = min_cutoff + beta * abs(rates[r, j, axis])
                alpha = _smoothing_factor(dt, cutoff)
                values[r, j, axis] += weight * alpha * (observed - values[r, j, axis])
                out[d, j, axis] = values[r, j, axis]
            times[r, j] = now
