"""Single-person decoding of heatmaps: one keypoint per map, for top-down crops that hold one person."""
from __future__ import annotations

from numba import njit

from posestream.kernels.peaks import parabola_vertex


@njit(nogil=True, cache=True)
def decode_single(heatmaps, out_xy, out_conf):
    """Per map: the maximum (first in raster order), refined by a per-axis parabola through its neighbours.

    heatmaps: B x C x H x W float32 (channels 0..K-1 read, K = out_xy.shape[1]);
    out_xy: B x K x 2 float32 (out) -- (x, y) in map pixels, pixel centres at integers;
    out_conf: B x K float32 (out) -- the map's maximum.
    As ``refine_peaks``: no fit along an axis at the map border or where the samples are not a maximum, the
    vertex is clamped to half a pixel. NaN pixels are skipped; a map of NaN only gives (-1, -1) and 0.
    """
    height = heatmaps.shape[2]
    width = heatmaps.shape[3]
    for b in range(out_xy.shape[0]):
        for k in range(out_xy.shape[1]):
            heatmap = heatmaps[b, k]
            best_y = -1
            best_x = -1
            best = 0.0
            for y in range(height):
                for x in range(width):
                    value = heatmap[y, x]
                    if value == value and (best_y < 0 or value > best):
                        best = value
                        best_y = y
                        best_x = x
            if best_y < 0:
                out_xy[b, k, 0] = -1.0
                out_xy[b, k, 1] = -1.0
                out_conf[b, k] = 0.0
                continue
            out_xy[b, k, 0], out_xy[b, k, 1] = parabola_vertex(heatmap, best_y, best_x)
            out_conf[b, k] = best
