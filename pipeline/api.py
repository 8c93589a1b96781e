"""The Python API, re-exported from ``posestream``: build an estimator from a model name, run it on images, and
run streams with a callback for their results.

    import posestream

    estimator = posestream.load_estimator()                      # the built-in default model
    people = posestream.estimate(["photo.jpg"], estimator)[0]    # Person objects in image pixels

    def show(frame, people):
        print(frame.stream, frame.index, len(people))

    reports = posestream.run_streams(["video.mp4", "rtsp://camera/stream"], on_frame=show, estimator=estimator)

Everything here is a thin layer over the same parts the ``posestream`` command uses, so a model name, a
stream and a result mean the same in both.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from posestream.pipeline.core.errors import PosestreamError
from posestream.pipeline.core.types import Person
from posestream.pipeline.estimators.create import EstimatorSettings, create_estimator
from posestream.pipeline.runtime.graph import Estimate
from posestream.pipeline.runtime.run import RunConfig, StreamReport
from posestream.pipeline.runtime.run import run_streams as _run_streams
from posestream.pipeline.sinks.base import Sink
from posestream.pipeline.sinks.callback import CallbackSink, FrameCallback
from posestream.pipeline.sources.readers import read_image
from posestream.pipeline.tracking.tracker import TrackerConfig


def load_estimator(model: str | None = None, *, backend: str = "auto", device: str | None = None,
                   input_height: int | None = None, threads: int = 0, mode: str = "bottom-up",
                   batch: int = 1) -> Estimate:
    """An estimator for ``model`` (a built-in name such as ``"hpe-0001"``, a ``.pose.json`` sidecar, or a model
    file with its sidecar beside it; None: the built-in default). Call it with a list of BGR uint8 images to
    get each image's people. ``batch`` is the most images per network call."""
    return create_estimator(EstimatorSettings(model=model, backend=backend, device=device, input_height=input_height,
                                              threads=threads, mode=mode, max_batch=batch))


def estimate(images: Iterable[np.ndarray | str | Path], estimator: Estimate | None = None) -> list[list[Person]]:
    """The people in each image: H x W x 3 uint8 BGR arrays (OpenCV's order) or image files."""
    estimator = estimator or load_estimator()
    pictures = []
    for image in images:
        if isinstance(image, (str, Path)):
            picture = read_image(Path(image))
            if picture is None:
                raise PosestreamError(str(image), "not a readable image")
            pictures.append(picture)
        else:
            pictures.append(np.ascontiguousarray(image))
    return estimator(pictures) if pictures else []


def run_streams(sources: Sequence[str], on_frame: FrameCallback | None = None, *, estimator: Estimate | None = None,
                sinks: Sequence[Sink] = (), out_jsonl: str | None = None, out_video: str | None = None,
                batch: int = 1, tracking: bool = True, max_frames: int | None = None,
                live: bool | None = None) -> list[StreamReport]:
    """Run every source at once (video files or URLs, images, image folders), as ``posestream run`` does.

    ``on_frame(frame, people)`` is called for each frame of every stream after tracking (one call at a time);
    ``sinks`` are further outputs (see ``posestream.Sink``). Returns one report per stream; a failing stream
    does not stop the others, and its report says why it failed.
    """
    estimator = estimator or load_estimator(batch=batch)
    extra = list(sinks) + ([CallbackSink(on_frame)] if on_frame is not None else [])
    config = RunConfig(sources=tuple(sources), out_jsonl=out_jsonl, out_video=out_video, batch_size=batch,
                       max_frames=max_frames, progress=False, tracking=TrackerConfig() if tracking else None,
                       live=live)
    return _run_streams(config, estimator, sinks=extra)
