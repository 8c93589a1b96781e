"""posestream: real-time multi-stream 2D human pose.

The repository root is this package (pyproject maps ``posestream`` to it): ``posestream.pipeline`` (I/O, stages,
runtime, CLI), ``posestream.kernels`` (the parse as pure array functions) and ``posestream.trainers`` (PyTorch
training and export). docs/architecture.md has the map.
"""
