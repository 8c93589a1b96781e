"""Parse kernels: pure functions over arrays, preallocated outputs plus counts, fixed capacities.

The chain is trt_pose's: find_peaks -> refine_peaks -> paf_score_graph -> assign -> connect_parts.
refine_peaks_centroid is the weighted-centroid alternative to the parabola fit; softargmax reads one
keypoint per map (single-person heatmaps; trainers/heatmap_paf/soft_argmax.py is its differentiable torch twin).
Every function is batched over frames and writes into arrays the caller allocated once
(``allocate_parse_buffers``), so the hot path allocates nothing and holds no Python objects.

Shape glossary (the one place these letters are defined):
    N  frames in a batch
    C  heatmap channels: K keypoint maps, plus one background map when the model has it
       (kernels read only the first K)
    K  keypoint types
    L  limbs: keypoint pairs, each with an (x, y) pair of PAF channels; the PAF tensor has 2L channels
    M  capacity: peaks kept per keypoint type per frame (the M best when more are found)
    P  capacity: people per frame
    H, W  map height and width
    S  samples along a candidate limb in the PAF line integral
    B  crops (person boxes) in a top-down batch; boxes are (B, 4) [cx, cy, w, h] in image pixels
    h, w  crop height and width: a top-down network's input (kernels/crop.py)

Coordinates are (x, y) in map pixels, pixel centres at integers; peaks as found are integer (y, x)
indices, refined peaks are float (x, y). "Missing" is -1 for indices and 0 for scores.
"""
from posestream.kernels.assemble import (
                              MAX_MAP_WIDTH,
                              AssignScratch,
                              ConnectScratch,
                              ParseBuffers,
                              allocate_assign_scratch,
                              allocate_connect_scratch,
                              allocate_parse_buffers,
                              assign,
                              connect_parts,
)
from posestream.kernels.chain import ParseConfig, SkeletonTables, parse_maps
from posestream.kernels.paf import PafScratch, allocate_paf_scratch, paf_score_graph
from posestream.kernels.peaks import find_peaks, refine_peaks, refine_peaks_centroid, softargmax
from posestream.kernels.people import people_to_image

__all__ = [
    "MAX_MAP_WIDTH", "AssignScratch", "ConnectScratch", "PafScratch", "ParseBuffers", "ParseConfig", "SkeletonTables",
    "allocate_assign_scratch", "allocate_connect_scratch", "allocate_paf_scratch", "allocate_parse_buffers", "assign",
    "connect_parts",
    "find_peaks", "paf_score_graph", "parse_maps", "people_to_image", "refine_peaks", "refine_peaks_centroid",
    "softargmax",
]
