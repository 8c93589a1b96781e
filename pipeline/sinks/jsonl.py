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
from posestream.pipeline.sinks.files import check_output_file, error_reason
from posestream.pipeline.sinks.records import frame_record


class JsonlSink(Closing):
    """Writes one JSON object per frame and line; ``"-"`` writes to stdout. Flushed after every line.

    The path is checked here (its folder is created; a folder or a file that cannot be written is an error),
    but the file is opened, and an existing one replaced, only at the first line: a run that fails before
    its first frame leaves yesterday's results as they were. Opening at the first line rather than writing a
    temporary file renamed at the end keeps results visible to ``tail -f`` and on disk if the process is
    killed. One writer at a time; ``SharedJsonlSink`` is this file for several streams' threads.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._owns_file = self.path != "-"
        self._file: IO[str] | None = None if self._owns_file else sys.stdout
        if self._owns_file:
            check_output_file(Path(self.path), self.path)
        self._closed = False
        self.lines = 0

    def write(self, frame: Frame, persons: Sequence[Person]) -> None:
        # allow_nan=False: a NaN would make the line invalid JSON for every reader downstream.
        line = json.dumps(frame_record(frame, persons), separators=(",", ":"), allow_nan=False)
        try:
            if self._file is None:
                self._file = open(self.path, "w", encoding="utf-8")
            self._file.write(line + "\n")
            # Flush per line: results are visible to `tail -f` and survive a killed process.
            self._file.flush()
        except OSError as error:
            raise PosestreamError(self.path, f"cannot write: {error_reason(error)}") from error
        self.lines += 1

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self._file is None:
                return  # no line came: an existing file is left as it was
            if self._owns_file:
                self._file.close()
            else:
                self._file.flush()
        except OSError as error:
            raise PosestreamError(self.path, f"cannot write: {error_reason(error)}") from error


class SharedJsonlSink:
    """The JSON-lines output as a Sink: one file (``"-"``: stdout) for every stream it serves.

    The path is checked here, so a bad one is an error before any stream starts; the file is opened at the
    first line (``JsonlSink``). Post threads of several
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
