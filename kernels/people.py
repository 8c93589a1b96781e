"""The parse's people in original-image pixels: keypoints, confidences and boxes for a batch, in one call.

Arithmetic is float32 throughout, step for step as numpy would do it on float32 arrays, so the results are
the ones the pipeline reported before this kernel replaced its per-frame numpy code.
"""
from __future__ import annotations

import numpy as np
from numba import njit


@njit(nogil=True, cache=True)
def people_to_image(person_counts, person_parts, refined, peak_scores, frames, keypoint_index, stride, scale, pad_x,
                    pad_y, image_width, image_height, keypoints, boxes, kept):
    """Map pixels -> network-input pixels -> original-image pixels for every person of ``frames`` frames.

    person_counts: N int32; person_parts: N x P x K int32; refined: N x K x M x 2 float32 (x, y) in map
    pixels at ``stride`` input pixels each; peak_scores: N x K x M float32.
    keypoint_index: J int -- the model keypoint behind each output keypoint (COCO-17 order), -1 where the
    model has none. The letterbox: input u = x * scale + pad (pixel centres aligned); points are kept on
    the image_width x image_height image.
    keypoints: N x P x J x 3 float32 (out) -- x, y, confidence (the peak score, at most 1); 0, 0, 0 where
    not found.
    boxes: N x P x 4 float32 (out) -- x, y, w, h around the found keypoints with a positive confidence; 0
    when there are none.
    kept: N x P bool (out) -- the person has at least one of the J keypoints (OpenPose's neck alone is no
    COCO person). Entries past person_counts[n] are not written.
    """
    half = np.float32(0.5)
    zero = np.float32(0.0)
    one = np.float32(1.0)
    stride32 = np.float32(stride)
    scale32 = np.float32(scale)
    pad_x32 = np.float32(pad_x)
    pad_y32 = np.float32(pad_y)
    last_x = np.float32(image_width - 1.0)
    last_y = np.float32(image_height - 1.0)
    for n in range(frames):
        for p in range(person_counts[n]):
            low_x = np.float32(np.inf)
            low_y = np.float32(np.inf)
            high_x = np.float32(-np.inf)
            high_y = np.float32(-np.inf)
            found = False  # any of the J keypoints found
            boxed = False  # any of them found with a positive confidence (the box's keypoints)
            for j in range(keypoint_index.shape[0]):
                k = keypoint_index[j]
                peak = person_parts[n, p, k] if k >= 0 else -1
                if peak < 0:
                    keypoints[n, p, j, 0] = zero
                    keypoints[n, p, j, 1] = zero
                    keypoints[n, p, j, 2] = zero
                    continue
                # Map pixel centres sit at (i + 0.5) * stride - 0.5 in network-input pixels.
                input_x = (refined[n, k, peak, 0] + half) * stride32 - half
                input_y = (refined[n, k, peak, 1] + half) * stride32 - half
                # A map cell at the image edge can centre in the letterbox padding: keep points on the image.
                x = min(max((input_x + half - pad_x32) / scale32 - half, zero), last_x)
                y = min(max((input_y + half - pad_y32) / scale32 - half, zero), last_y)
                keypoints[n, p, j, 0] = x
                keypoints[n, p, j, 1] = y
                confidence = min(peak_scores[n, k, peak], one)
                keypoints[n, p, j, 2] = confidence
                found = True
                if confidence > zero:
                    low_x = min(low_x, x)
                    low_y = min(low_y, y)
                    high_x = max(high_x, x)
                    high_y = max(high_y, y)
                    boxed = True
            kept[n, p] = found
            if boxed:
                boxes[n, p, 0] = low_x
                boxes[n, p, 1] = low_y
                boxes[n, p, 2] = high_x - low_x
                boxes[n, p, 3] = high_y - low_y
            else:
                boxes[n, p, :] = zero
