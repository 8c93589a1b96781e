"""Training the DeepPose cascade (Toshev & Szegedy 2014): joint regression, then refinement stages.

train.py: ``posestream train-deeppose`` (``train_one_epoch``, ``evaluate``, ``main``), one stage after
another. config.py: the TOML config. model.py: the networks (``DEEPPOSE_MODELS``), box normalisation and
running the cascade. data.py: the image bank, stage samples, jitter statistics and key sampler.
checkpoint.py: the per-stage checkpoint format.
"""
