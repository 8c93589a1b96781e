"""The Numba CPU kernels under the names their CUDA twins have in ``kernels.cuda``: code that runs either twin
(``parse_maps(..., ops=...)``, the parity tests) takes this module or that one."""
from posestream.kernels.assemble import allocate_parse_buffers, assign, connect_parts
from posestream.kernels.paf import paf_score_graph
from posestream.kernels.peaks import find_peaks, refine_peaks, refine_peaks_centroid, softargmax

__all__ = ["allocate_parse_buffers", "assign", "connect_parts", "find_peaks", "paf_score_graph", "refine_peaks",
           "refine_peaks_centroid", "softargmax"]
