"""What both training families share, so neither imports the other.

run.py: the run folder, device, seed, optimiser, learning-rate schedule, metrics.jsonl and PNG curves.
config.py: reading a TOML config into checked dataclass sections, and expanding its paths.
sampling.py: the resumable key sampler and the torch loader. augment.py: the affine warp and colour
jitter of a training sample.
"""
