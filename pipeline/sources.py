"""Frame sources at the I/O edge: a video file or URL (PyAV), one image, or a folder of images.

``open_source`` decides by what the spec is and returns a ``FrameSource``: iterate it once to get
``pipeline.types.Frame`` values (BGR uint8, contiguous), read ``kind``/``fps``/``frame_count`` for
progress bars, and ``stats`` to learn how many frames were delivered and how many were skipped as
corrupt. Corrupt data inside a video or a folder is skipped and counted; only an input that cannot be
read at all is a ``PosestreamError``.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np

from pipeline.closing import Closing
from pipeline.errors import PosestreamError
from pipeline.types import Frame

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})

# "rtsp://", "http://", "udp://", ... ; a Windows drive ("C:\") has no "//" so it never matches.
_URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")

# A demuxer that keeps failing has lost the stream for good; give up instead of spinning.
_MAX_CONSECUTIVE_DEMUX_ERRORS = 32


@dataclass(frozen=True)
class SourceConfig:
    """How to read a source.

    ``decode_threads``: 0 lets FFmpeg pick (threaded decode, one thread per core); n > 0 uses n threads.
    ``max_frames``: stop after delivering this many frames (None = all).
    """

    decode_threads: int = 0
    max_frames: int | None = None

    def __post_init__(self) -> None:
        if self.decode_threads < 0:
            raise PosestreamError("decode_threads", f"must be >= 0, got {self.decode_threads}")
        if self.max_frames is not None and self.max_frames < 0:
            raise PosestreamError("max_frames", f"must be >= 0 or None, got {self.max_frames}")


@dataclass
class SourceStats:
    """Counters that grow while a source is read (mutable on purpose; one per source)."""

    delivered: int = 0
    skipped_corrupt: int = 0
    # Frames a damaged stream produced late (pts not after the last delivered one); dropped so pts only grows.
    skipped_out_of_order: int = 0
    last_error: str | None = None


class FrameSource(Closing):
    """Base of all sources: iterable once, yields ``Frame``; closes on ``close()`` or ``with``."""

    kind: str
    spec: str
    stream: int
    config: SourceConfig
    fps: float | None
    frame_count: int | None
    stats: SourceStats

    def __init__(self, spec: str, stream: int, config: SourceConfig) -> None:
        self.spec = spec
        self.stream = stream
        self.config = config
        self.stats = SourceStats()
        self._iterated = False

    def __iter__(self) -> Iterator[Frame]:
        # One pass only: a second pass over a live stream or a half-read container would silently differ.
        if self._iterated:
            raise RuntimeError(f"{self.spec}: a FrameSource can be iterated only once")
        self._iterated = True
        return self._frames()

    def _frames(self) -> Iterator[Frame]:
        raise NotImplementedError

    def _limit_reached(self) -> bool:
        return self.config.max_frames is not None and self.stats.delivered >= self.config.max_frames

    def _capped(self, count: int | None) -> int | None:
        if count is None or self.config.max_frames is None:
            return count
        return min(count, self.config.max_frames)

    def _make_frame(self, source: str, pts: float | None, image: np.ndarray) -> Frame:
        frame = Frame(stream=self.stream, source=source, index=self.stats.delivered, pts=pts, image=image)
        self.stats.delivered += 1
        return frame

    def close(self) -> None:
        """Release the underlying file or connection; safe to call more than once."""


    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r}, kind={self.kind!r}, stream={self.stream})"


def _ffmpeg_reason(error: BaseException) -> str:
    """FFmpeg's own words for an error (strerror), without PyAV's '[Errno …]' prefix and file name."""
    return getattr(error, "strerror", None) or str(error) or type(error).__name__


class VideoSource(FrameSource):
    """A video file or URL decoded with PyAV, packet by packet so that one bad packet costs one frame."""

    kind = "video"

    def __init__(self, spec: str, stream: int, config: SourceConfig) -> None:
        super().__init__(spec, stream, config)
        try:
            self._container = av.open(spec)
        except (av.FFmpegError, OSError) as error:
            raise PosestreamError(spec, f"not a readable video: {_ffmpeg_reason(error)}") from error
        if not self._container.streams.video:
            self._container.close()
            raise PosestreamError(spec, "not a readable video: no video stream")
        self._video = self._container.streams.video[0]
        if self._video.codec_context is None:
            # PyAV leaves no codec context when FFmpeg has no decoder for the stream (or its header is damaged).
            self._container.close()
            raise PosestreamError(spec, "not a readable video: no decoder for its video stream")
        # Threaded decode: frame and slice threads as the codec allows. Must be set before the first decode.
        self._video.thread_type = "AUTO"
        self._video.codec_context.thread_count = config.decode_threads
        self.fps = float(self._video.average_rate) if self._video.average_rate else None
        self.frame_count = self._capped(self._estimate_frame_count())
        self.width = self._video.codec_context.width
        self.height = self._video.codec_context.height
        self._closed = False

    def _estimate_frame_count(self) -> int | None:
        """Frame count from the header, else duration x rate (approximate; for progress bars only)."""
        if self._video.frames and self._video.frames > 0:
            return int(self._video.frames)
        if self._video.duration is not None and self._video.time_base is not None and self.fps:
            return max(0, round(float(self._video.duration * self._video.time_base) * self.fps))
        if self._container.duration is not None and self.fps:
            return max(0, round(self._container.duration / av.time_base * self.fps))
        return None

    def _frames(self) -> Iterator[Frame]:
        if self._limit_reached():
            return
        consecutive_demux_errors = 0
        last_pts: float | None = None
        packets = self._container.demux(self._video)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return
            except av.FFmpegError as error:
                # The demuxer could not read a packet (damaged container data). PyAV ends the generator
                # on an exception, so start a new one; it carries on from the current file position.
                self._count_corrupt(error)
                consecutive_demux_errors += 1
                if consecutive_demux_errors >= _MAX_CONSECUTIVE_DEMUX_ERRORS:
                    log.warning("%s: giving up after %d demux errors in a row", self.spec, consecutive_demux_errors)
                    return
                packets = self._container.demux(self._video)
                continue
            consecutive_demux_errors = 0
            try:
                # The final empty packet from demux() flushes the decoder, so buffered frames come out too.
                decoded = packet.decode()
            except av.FFmpegError as error:
                self._count_corrupt(error)
                continue
            for video_frame in decoded:
                pts = video_frame.time
                if pts is not None and last_pts is not None and pts <= last_pts:
                    # After corrupt packets the decoder's reorder buffer can emit a frame late; showing it
                    # would make time run backwards for trackers and overlays.
                    self.stats.skipped_out_of_order += 1
                    continue
                last_pts = pts if pts is not None else last_pts
                image = np.ascontiguousarray(video_frame.to_ndarray(format="bgr24"))
                yield self._make_frame(self.spec, pts, image)
                if self._limit_reached():
                    return

    def _count_corrupt(self, error: BaseException) -> None:
        self.stats.skipped_corrupt += 1
        self.stats.last_error = _ffmpeg_reason(error)
        log.debug("%s: skipped corrupt data: %s", self.spec, self.stats.last_error)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._container.close()


def read_image(path: Path) -> np.ndarray | None:
    """BGR uint8 HxWx3 (grey and alpha images converted), or None if the file is not a readable image."""
    try:
        data = np.fromfile(path, dtype=np.uint8)  # fromfile + imdecode also handles non-ASCII paths
    except OSError:
        return None
    if data.size == 0:
        return None
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None or image.ndim != 3 or image.shape[2] != 3:
        return None
    return np.ascontiguousarray(image)


class ImageSource(FrameSource):
    """One image file given directly: it must be readable."""

    kind = "image"

    def __init__(self, spec: str, stream: int, config: SourceConfig) -> None:
        super().__init__(spec, stream, config)
        self.fps = None
        self.frame_count = self._capped(1)
        # Read now so that a bad image fails at open time, before any model is loaded.
        self._image = read_image(Path(spec))
        if self._image is None:
            raise PosestreamError(spec, "not a readable image")

    def _frames(self) -> Iterator[Frame]:
        if self._limit_reached() or self._image is None:
            return
        image, self._image = self._image, None
        yield self._make_frame(self.spec, None, image)

    def close(self) -> None:
        self._image = None


class ImageFolderSource(FrameSource):
    """The image files of one folder (not recursive), sorted by name; unreadable ones are skipped and counted."""

    kind = "folder"

    def __init__(self, spec: str, stream: int, config: SourceConfig) -> None:
        super().__init__(spec, stream, config)
        folder = Path(spec)
        try:
            entries = list(folder.iterdir())
        except OSError as error:
            raise PosestreamError(spec, f"cannot list folder: {error.strerror or error}") from error
        self.paths = sorted(
            (path for path in entries if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()),
            key=lambda path: path.name,
        )
        if not self.paths:
            raise PosestreamError(spec, f"no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) in folder")
        self.fps = None
        self.frame_count = self._capped(len(self.paths))

    def _frames(self) -> Iterator[Frame]:
        for path in self.paths:
            if self._limit_reached():
                return
            image = read_image(path)
            if image is None:
                self.stats.skipped_corrupt += 1
                self.stats.last_error = f"{path}: not a readable image"
                log.warning("%s: skipped, not a readable image", path)
                continue
            yield self._make_frame(str(path), None, image)


def is_url(spec: str) -> bool:
    """True for specs with a URL scheme such as rtsp://, http://, udp://, file://."""
    return bool(_URL_SCHEME.match(spec))


def open_source(spec: str, stream: int = 0, config: SourceConfig = SourceConfig()) -> FrameSource:
    """Open ``spec`` as a folder of images, one image, a video file, or a video URL (in that order of checks)."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return ImageFolderSource(str(path), stream, config)
    if path.is_file():
        if path.suffix.lower() in IMAGE_EXTENSIONS:
            return ImageSource(str(path), stream, config)
        return VideoSource(str(path), stream, config)
    if is_url(spec):
        return VideoSource(spec, stream, config)
    if path.exists():
        raise PosestreamError(spec, "not a file, folder or URL")
    raise PosestreamError(spec, "no such file or directory")
