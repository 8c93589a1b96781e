"""The whole parse as one call: find_peaks -> refine_peaks -> paf_score_graph -> assign -> connect_parts."""
from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

import numpy as np

from posestream.kernels import cpu as cpu_kernels
from posestream.kernels.assemble import ParseBuffers


@dataclass(frozen=True)
class ParseConfig:
    peak_threshold: float = 0.1  # heatmap value a keypoint needs
    peak_window: int = 1  # NMS window radius in map pixels: a (2w+1)^2 neighbourhood
    refine: str = "parabola"  # sub-pixel refinement: "parabola" (per axis) or "centroid" (weighted)
    refine_window: int = 1  # the centroid's neighbourhood radius in map pixels
    upsample: int = 1  # the caller resizes maps by this factor (bicubic) before the parse; 1 = at the stride
    paf_samples: int = 10  # S
    # How each PAF sample is read: "nearest" pixel, as OpenPose, Lightweight OpenPose and trt_pose do (except on
    # candidates shorter than (S - 1) / 2 px, which are interpolated), or "bilinear" everywhere (about 1.5x the
    # line integral's time; docs/parse.md has the A/B).
    paf_sampling: str = "nearest"
    paf_min_sample_score: float = 0.05
    paf_min_sample_fraction: float = 0.8
    paf_length_prior: bool = True
    min_parts: int = 3
    min_mean_score: float = 0.2  # per-keypoint mean of the person's total, below which it is dropped
    max_peaks: int = 32  # M
    max_people: int = 64  # P

    def __post_init__(self) -> None:
        if self.refine not in ("parabola", "centroid"):
            raise ValueError(f"ParseConfig.refine must be 'parabola' or 'centroid', got {self.refine!r}")
        if self.paf_sampling not in ("nearest", "bilinear"):
            raise ValueError(f"ParseConfig.paf_sampling must be 'nearest' or 'bilinear', got {self.paf_sampling!r}")


@dataclass(frozen=True)
class SkeletonTables:
    """A model's skeleton as the kernels read it (from its sidecar)."""

    num_keypoints: int  # K
    limbs: np.ndarray  # L x 2 int32 keypoint pairs, parents before children
    paf_channels: np.ndarray  # L x 2 int32 (x, y) PAF channels per limb
    redundant: np.ndarray  # L bool: limbs that only complete people

    @property
    def limb_weight(self) -> float:
        """Non-redundant limbs: with K, the most a person's total can reach (see connect_parts)."""
        return float(len(self.limbs) - int(self.redundant.sum()))


def parse_maps(heatmaps, pafs, tables: SkeletonTables, config: ParseConfig, buffers: ParseBuffers,
               ops: ModuleType | None = None) -> None:
    """Parse N frames of maps into ``buffers`` (people in person_counts / person_parts / person_scores).

    ``ops`` is the module whose kernels run the chain: ``kernels.cpu`` (Numba CPU, the default) or a twin with
    the same signatures. ``buffers`` must hold at least N frames.
    """
    if ops is None:
        ops = cpu_kernels
    frames = heatmaps.shape[0]
    ops.find_peaks(heatmaps, tables.num_keypoints, config.peak_threshold, config.peak_window,
                   buffers.peak_counts, buffers.peaks, buffers.peak_scores, buffers.peak_row_mask)
    if config.refine == "centroid":
        ops.refine_peaks_centroid(heatmaps, buffers.peak_counts, buffers.peaks, config.refine_window,
                                  buffers.refined)
    else:
        ops.refine_peaks(heatmaps, buffers.peak_counts, buffers.peaks, buffers.refined)
    ops.paf_score_graph(pafs, tables.limbs, tables.paf_channels, buffers.peak_counts, buffers.refined,
                        config.paf_samples, config.paf_min_sample_score, config.paf_min_sample_fraction,
                        config.paf_length_prior, config.paf_sampling == "nearest", buffers.limb_scores,
                        buffers.paf_scratch)
    ops.assign(buffers.limb_scores, tables.limbs, buffers.peak_counts, frames,
               buffers.match_counts, buffers.matches, buffers.match_scores, buffers.assign_scratch)
    ops.connect_parts(buffers.matches, buffers.match_scores, buffers.match_counts, tables.limbs, tables.redundant,
                      buffers.peak_scores, frames, config.min_parts, config.min_mean_score, tables.limb_weight,
                      buffers.person_counts, buffers.person_parts, buffers.person_scores, buffers.people_dropped,
                      buffers.connect_scratch)
