"""Training the bottom-up heatmap + PAF networks (posestream.pipeline.networks.heatmap_paf).

train.py: ``posestream train`` (``train_one_epoch``, ``evaluate``, ``main``). config.py: the TOML config.
datasets.py: COCO, LSP/LSPET and mosaic sources and the training set. targets.py: heatmaps, PAFs and
masks from people. loss.py: the masked squared-error loss. estimator.py: the network in training as a
pipeline estimator, for validation. soft_argmax.py: the torch twin of kernels.softargmax.
"""
