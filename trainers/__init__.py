"""Training, laid out like torchvision's references/: one folder per model family, each with a thin
train.py (``train_one_epoch``, ``evaluate``, ``main``), the posestream CLI's ``train`` and
``train-deeppose`` commands calling its ``main``.

heatmap_paf/: the bottom-up heatmap + PAF networks (their torch modules are
posestream.pipeline.networks'). deeppose/: the DeepPose regression cascade. common/: what both share
(run folder, config reading, sampling, augmentation). export/: checkpoint -> ONNX, ONNX -> INT8.
configs/: working TOML configs. Imports run one way: trainers may import pipeline and kernels, never
the reverse.
"""
