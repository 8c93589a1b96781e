"""posestream: real-time multi-stream 2D human pose.

The repository root is this package (pyproject maps ``posestream`` to it): ``posestream.pipeline`` (I/O, stages,
runtime, CLI), ``posestream.kernels`` (the parse as pure array functions) and ``posestream.trainers`` (PyTorch
training and export). docs/architecture.md has the map; ``posestream.pipeline.api`` documents what is
re-exported here.
"""
from posestream.pipeline.api import estimate, load_estimator, run_streams
from posestream.pipeline.core.errors import PosestreamError
from posestream.pipeline.core.types import Frame, Person
from posestream.pipeline.runtime.run import StreamReport
from posestream.pipeline.sinks.base import Sink, StreamInfo
from posestream.pipeline.sinks.callback import CallbackSink

__all__ = ["CallbackSink", "Frame", "Person", "PosestreamError", "Sink", "StreamInfo", "StreamReport", "estimate",
           "load_estimator", "run_streams"]
