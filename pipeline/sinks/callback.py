"""``CallbackSink``: the people of every frame handed to a function of yours, as a Sink."""
from __future__ import annotations

import threading
from typing import Callable, Sequence

from posestream.pipeline.core.types import Frame, Person
from posestream.pipeline.sinks.base import StreamInfo

FrameCallback = Callable[[Frame, Sequence[Person]], None]


class CallbackSink:
    """Calls ``fn(frame, people)`` for each frame of every stream it serves, after tracking.

    ``frame.stream`` is the stream's index and ``frame.source`` its source; frames of one stream come in
    order. Calls are serialised with a lock, so ``fn`` need not be thread-safe even when several streams run
    at once; a slow ``fn`` therefore holds up every stream this sink serves. An exception from ``fn`` fails
    that frame's stream (as any sink error does); the other streams go on. ``fn`` must not change
    ``frame.image``, which the sinks after it still see.
    """

    def __init__(self, fn: FrameCallback) -> None:
        self._fn = fn
        self._lock = threading.Lock()

    def open_stream(self, stream: StreamInfo) -> None:
        """Nothing to set up: the function is called per frame only."""

    def write(self, stream: StreamInfo, frame: Frame, people: Sequence[Person]) -> None:
        with self._lock:
            self._fn(frame, people)

    def close_stream(self, stream: StreamInfo) -> None:
        """Nothing to finish per stream."""

    def close(self) -> None:
        """Nothing to release."""
