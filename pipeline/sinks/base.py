"""The Sink protocol: where the runtime puts each stream's frames and people once they are tracked.

The runtime (``posestream.pipeline.runtime.graph.Runtime``) calls a sink's methods in this order, for each
stream it serves:

    open_stream(stream)                 at the stream's first frame
    write(stream, frame, people)        for every frame, in the stream's order
    close_stream(stream)                when the stream ends (also after it failed), if open_stream returned

and, once the run is over and every stream has ended, ``close()`` once, even on a sink whose streams never
delivered a frame. Streams run at once: a sink that serves several streams is called from several threads
(each stream's post thread) and must be thread-safe; calls for one stream come from one thread, in order.

An exception raised by ``open_stream``, ``write`` or ``close_stream`` fails that stream alone: it is
reported, its remaining frames are counted as dropped (``stream_failed``), and the other streams and sinks
go on. ``close_stream`` is still called on a sink whose ``write`` raised, so it can release what it holds.
An exception from ``close()`` is raised by ``Runtime.wait``, after every other sink was closed.

A sink must not change ``frame.image`` (the next sink draws on the same picture); ``people`` is a tuple,
so one sink cannot change what the next one sees. Any class with these four methods is a sink; nothing
needs to be inherited.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence, runtime_checkable

from posestream.pipeline.core.types import Frame, Person


@dataclass(frozen=True)
class StreamInfo:
    """What a sink is told about one stream when it opens."""

    index: int  # the stream's position in the runtime's streams, as ``Frame.stream``
    label: str  # its name in metrics and the summary: the stream's name, else the source's file name
    source: str  # the video file or URL, image, or folder it reads
    kind: str  # "video", "image" or "folder" (image and folder frames are unrelated pictures)
    fps: float | None  # the source's frame rate; None when it carries none


@runtime_checkable  # so the runtime can reject an object that is not a sink when it is given, not mid-run
class Sink(Protocol):
    """Receives the frames and people of the streams it serves; see the module docstring for when."""

    def open_stream(self, stream: StreamInfo) -> None:
        """``stream`` is about to deliver its first frame: set up what this sink keeps for it."""

    def write(self, stream: StreamInfo, frame: Frame, people: Sequence[Person]) -> None:
        """One frame of ``stream`` and the people found in it (with track IDs when tracked)."""

    def close_stream(self, stream: StreamInfo) -> None:
        """``stream`` has ended: finish what belongs to it (an overlay video is completed here)."""

    def close(self) -> None:
        """The run is over and every stream has ended: release what is shared (a JSON-lines file)."""
