"""JSON-lines output: ``JsonlSink`` writes one file (or stdout), ``SharedJsonlSink`` is that file as a Sink
shared by every stream that names it."""
from __future__ import annotations

import json
import sys
import threading
from pathlib import Path
from typing import IO, Sequence

from posestream.pipeline.core.closing import Closing
from posestream.pipeline.core.errors import PosestreamError
from posestream.pipeline.core.types import Frame, Person
from posestream.pipeline.sinks.base import StreamInfo
from posestream.pipeline.sinks.files import ensure_output_folder, error_reason
from posestream.pipeline.sinks.records import frame_record


class JsonlSink(Closing):
    """Writes one JSON object per frame and line; ``"-"`` writes to stdout. Flushed after every line.

    One writer at a time; ``SharedJsonlSink`` is this file for several streams' threads.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._owns_file = self.path != "-"
        if self._owns_file:
            ensure_output_folder(Path(self.path), self.path)
            try:
                self._file: IO[str] = open(self.path, "w", encoding="utf-8")
            except OSError as error:
                raise PosestreamError(self.path, f"cannot write: {error_reason(error)}") from error
        else:
            self._file = sys.stdout
        self._closed = False

    def write(self, frame: Frame, persons: Sequence[Person]) -> None:
        # allow_nan=False: a NaN would make the line invalid JSON for every reader downstream.
        line = json.dumps(frame_record(frame, persons), separators=(",", ":"), allow_nan=False)
        try:
            self._file.write(line + "\n")
            # Flush per line: results are visible to `tail -f` and survive a killed process.
            self._file.flush()
        except OSError as error:
            raise PosestreamError(self.path, f"cannot write: {error_reason(error)}") from error

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self._owns_file:
                self._file.close()
            else:
                self._file.flush()
        except OSError as error:
            raise PosestreamError(self.path, f"cannot write: {error_reason(error)}") from error


class SharedJsonlSink:
    """The JSON-lines output as a Sink: one file (``"-"``: stdout) for every stream it serves.

    The file is opened here, so a bad path is an error before any stream starts. Post threads of several
    streams write to it: one whole line per write, under a lock, flushed per line; lines of different
    streams interleave in the order they were written. The file stays open until ``close()``.
    """

    def __init__(self, path: str | Path) -> None:
        self._file = JsonlSink(path)
        self._lock = threading.Lock()

    @property
    def path(self) -> str:
        return self._file.path

    def open_stream(self, stream: StreamInfo) -> None:
        """Nothing per stream: every stream writes to the one file."""

    def write(self, stream: StreamInfo, frame: Frame, people: Sequence[Person]) -> None:
        with self._lock:
            self._file.write(frame, people)

    def close_stream(self, stream: StreamInfo) -> None:
        """Nothing per stream: the file stays open for the streams still running."""

    def close(self) -> None:
        with self._lock:
            self._file.close()
