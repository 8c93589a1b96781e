"""Frame sources at the I/O edge: a video file or URL (PyAV), a live stream or webcam, one image, or a folder.

``open_source`` decides by what the spec is and returns a ``FrameSource``: iterate it once to get
``posestream.pipeline.core.types.Frame`` values (BGR uint8, contiguous), read ``kind``/``fps``/``frame_count`` for
progress bars, ``live`` to know whether frames arrive in real time, and ``stats`` to learn how many frames
were delivered, how many were skipped as corrupt and, for live sources, how often the connection was lost
and re-opened. Corrupt data inside a video or a folder is skipped and counted; only an input that cannot be
read at all is a ``PosestreamError``. ``request_stop()`` (from any thread) ends an iteration promptly.

Live sources (rtsp://, rtmp://, udp://, srt://, ..., and /dev/videoN webcams) reconnect after an outage
with exponential backoff; see docs/live-sources.md for the options and the counts.
"""
from __future__ import annotations

import logging
import math
import random
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import av.codec.hwaccel
import cv2
import numpy as np

from posestream.pipeline.core.closing import Closing
from posestream.pipeline.core.errors import PosestreamError
from posestream.pipeline.core.types import Frame

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})

# "rtsp://", "http://", "udp://", ... ; a Windows drive ("C:\") has no "//" so it never matches.
_URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")

# URL schemes of streams that run in real time and have no end of their own. http(s) is not among them:
# most http URLs are files, so they are read like files (no reconnect).
LIVE_URL_SCHEMES = frozenset({"rtsp", "rtsps", "rtmp", "rtmps", "rtp", "srt", "udp", "tcp"})
_WEBCAM_DEVICE = re.compile(r"^/dev/video\d+$")

RTSP_TRANSPORTS = ("tcp", "udp")

# A demuxer that keeps failing has lost the stream for good; give up instead of spinning.
_MAX_CONSECUTIVE_DEMUX_ERRORS = 32

# How long FFmpeg probes a live stream before the first frame. Its default made opening our RTSP test
# stream take 2 s; 0.3 s still sees several frames at common camera rates (>= 15 fps), enough for codec,
# size and frame rate (measured on loopback: open in ~0.4 s; 0.1 s also worked, in 0.24 s).
_LIVE_ANALYZE_DURATION_US = 300_000

# Values of SourceStats.state.
CONNECTING, STREAMING, RECONNECTING, ENDED, FAILED = "connecting", "streaming", "reconnecting", "ended", "failed"


@dataclass(frozen=True)
class SourceConfig:
    """How to read a source.

    ``decode_threads``: 0 lets FFmpeg pick (threaded decode, one thread per core); n > 0 uses n threads.
    ``max_frames``: stop after delivering this many frames (None = all).
    ``hwaccel``: decode on this FFmpeg hardware device type (e.g. "cuda"), falling back to software when the
    codec or device cannot; None decodes in software.

    Live sources only (rtsp://, udp://, ..., /dev/videoN):
    ``rtsp_transport``: "tcp" (RTP interleaved in the RTSP connection) or "udp" (RTP on UDP ports).
    ``open_timeout_s``: connecting (and probing the stream) gives up after this long without an answer.
    ``read_timeout_s``: a connection that brings no data for this long is lost.
    ``reconnect``: re-open after a lost connection or a failed first connection; without it the first
    connection is made by ``open_source`` (an unreachable stream is a ``PosestreamError`` there) and the
    iteration ends when the connection does.
    ``backoff_initial_s``, ``backoff_max_s``, ``backoff_jitter``: the wait before retry k is
    ``min(backoff_max_s, backoff_initial_s * 2**(k-1))``, jittered by +-``backoff_jitter`` (a fraction).
    ``max_reconnects``: how many retries in a row (without a frame in between) before the source gives up
    with a ``PosestreamError``; None retries forever, 0 is the same as ``reconnect=False``.
    """

    decode_threads: int = 0
    max_frames: int | None = None
    hwaccel: str | None = None
    rtsp_transport: str = "tcp"
    open_timeout_s: float = 5.0
    read_timeout_s: float = 5.0
    reconnect: bool = True
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 10.0
    backoff_jitter: float = 0.2
    max_reconnects: int | None = None

    def __post_init__(self) -> None:
        if self.decode_threads < 0:
            raise PosestreamError("decode_threads", f"must be >= 0, got {self.decode_threads}")
        if self.max_frames is not None and self.max_frames < 0:
            raise PosestreamError("max_frames", f"must be >= 0 or None, got {self.max_frames}")
        if self.hwaccel is not None and self.hwaccel not in _hardware_device_types():
            raise PosestreamError("hwaccel", f"must be one of {', '.join(_hardware_device_types()) or '(none)'} "
                                             f"(this PyAV's hardware device types) or None, got {self.hwaccel!r}")
        if self.rtsp_transport not in RTSP_TRANSPORTS:
            raise PosestreamError("rtsp_transport", f"must be one of {', '.join(RTSP_TRANSPORTS)}, "
                                                    f"got {self.rtsp_transport!r}")
        for name in ("open_timeout_s", "read_timeout_s", "backoff_initial_s", "backoff_max_s"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise PosestreamError(name, f"must be a number of seconds > 0, got {value!r}")
        if self.backoff_max_s < self.backoff_initial_s:
            raise PosestreamError("backoff_max_s", f"must be >= backoff_initial_s ({self.backoff_initial_s}), "
                                                   f"got {self.backoff_max_s}")
        if not (isinstance(self.backoff_jitter, (int, float)) and 0 <= self.backoff_jitter < 1):
            raise PosestreamError("backoff_jitter", f"must be a fraction in [0, 1), got {self.backoff_jitter!r}")
        if self.max_reconnects is not None and self.max_reconnects < 0:
            raise PosestreamError("max_reconnects", f"must be >= 0 or None, got {self.max_reconnects}")

    @property
    def retries_allowed(self) -> bool:
        """Whether a live source re-opens at all (``reconnect`` on and not zero retries)."""
        return self.reconnect and self.max_reconnects != 0


def backoff_delay_range(retry: int, initial_s: float, max_s: float, jitter: float) -> tuple[float, float]:
    """(shortest, longest) wait before retry number ``retry`` (1 = the first retry): exponential, capped at
    ``max_s``, spread by +-``jitter`` so that many streams that lost one server do not retry in lockstep."""
    if retry < 1:
        raise ValueError(f"retry counts from 1, got {retry}")
    base = min(max_s, initial_s * 2.0 ** min(retry - 1, 62))  # the exponent cap keeps the float finite
    return min(max_s, base * (1 - jitter)), min(max_s, base * (1 + jitter))


@dataclass
class SourceStats:
    """Counters that grow while a source is read (mutable on purpose; one per source).

    Written by the thread that iterates the source; other threads may read them at any time.
    ``skipped_corrupt``: packets or images that could not be decoded and were skipped.
    ``decode_errors``: frames the decoder delivered although it had to conceal damaged data (they are
    delivered, not skipped; FFmpeg marks them corrupt). So every decode problem is in exactly one of the two.
    ``skipped_out_of_order``: frames a damaged stream produced late (pts not after the last delivered one);
    dropped so pts only grows.
    Live sources: ``connect_failures`` counts failed connection attempts (first ones included);
    ``reconnects`` successful re-opens after a lost connection; ``gaps`` outages (a connection lost after
    frames had come); ``gap_seconds`` the time from the last frame before each outage to the first after it.
    ``state``: "connecting" (no frame yet), "streaming", "reconnecting" (in an outage), then "ended" or
    "failed" (gave up; the iteration raised).
    """

    delivered: int = 0
    skipped_corrupt: int = 0
    skipped_out_of_order: int = 0
    decode_errors: int = 0
    connect_failures: int = 0
    reconnects: int = 0
    gaps: int = 0
    gap_seconds: float = 0.0
    state: str = STREAMING
    last_error: str | None = None


class FrameSource(Closing):
    """Base of all sources: iterable once, yields ``Frame``; closes on ``close()`` or ``with``.

    ``live`` is True for sources that deliver frames in real time (cameras, network streams): frames not
    taken in time are gone, and the source may reconnect. ``request_stop()`` may be called from any thread.
    """

    kind: str
    live: bool = False
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
        self._stop = threading.Event()

    def __iter__(self) -> Iterator[Frame]:
        # One pass only: a second pass over a live stream or a half-read container would silently differ.
        if self._iterated:
            raise RuntimeError(f"{self.spec}: a FrameSource can be iterated only once")
        self._iterated = True
        return self._tracked(self._frames())

    def _tracked(self, frames: Iterator[Frame]) -> Iterator[Frame]:
        """``frames``, with ``stats.state`` set to "ended" or "failed" when they stop coming."""
        try:
            yield from frames
        except Exception:
            self.stats.state = FAILED
            raise
        if self.stats.state != FAILED:
            self.stats.state = ENDED

    def _frames(self) -> Iterator[Frame]:
        raise NotImplementedError

    def request_stop(self) -> None:
        """Make the iteration end soon: at once between frames, within the read timeout of a blocked read,
        at once during a reconnect wait. Thread-safe; frames already delivered stay delivered."""
        self._stop.set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def _limit_reached(self) -> bool:
        return self.config.max_frames is not None and self.stats.delivered >= self.config.max_frames

    def _done(self) -> bool:
        return self._stop.is_set() or self._limit_reached()

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


def _hardware_device_types() -> list[str]:
    """FFmpeg hardware device types this PyAV can decode on (whether such a device is present or not)."""
    return list(av.codec.hwaccel.hwdevices_available())


def _hardware_decoder(config: SourceConfig) -> av.codec.hwaccel.HWAccel | None:
    """The hardware decoder ``config.hwaccel`` asks for, checked once: a missing device (no GPU, no driver)
    is a ``PosestreamError`` naming ``hwaccel`` here rather than an obscure failure at open."""
    if config.hwaccel is None:
        return None
    # Software fallback: a codec the device cannot decode still decodes, only slower.
    hwaccel = av.codec.hwaccel.HWAccel(device_type=config.hwaccel, allow_software_fallback=True)
    try:
        hwaccel.create(av.Codec("h264", "r"))  # H.264 as the probe: the codec every such device decodes
    except (av.FFmpegError, OSError, NotImplementedError) as error:
        raise PosestreamError("hwaccel", f"cannot decode on {config.hwaccel!r} (no usable device or driver?): "
                                         f"{_ffmpeg_reason(error)}") from error
    return hwaccel


def _video_stream(container: av.container.InputContainer, spec: str,
                  config: SourceConfig) -> av.video.stream.VideoStream:
    """The first video stream, set up for threaded decode; closes ``container`` and raises if there is none."""
    if not container.streams.video:
        container.close()
        raise PosestreamError(spec, "not a readable video: no video stream")
    video = container.streams.video[0]
    if video.codec_context is None:
        # PyAV leaves no codec context when FFmpeg has no decoder for the stream (or its header is damaged).
        container.close()
        raise PosestreamError(spec, "not a readable video: no decoder for its video stream")
    # Threaded decode: frame and slice threads as the codec allows. Must be set before the first decode.
    video.thread_type = "AUTO"
    video.codec_context.thread_count = config.decode_threads
    return video


class _DecodingSource(FrameSource):
    """What file and live video sources share: decoding packets, counting what could not be decoded."""

    def _decoded(self, packet: av.Packet) -> list[av.VideoFrame]:
        try:
            # The final empty packet from demux() flushes the decoder, so buffered frames come out too.
            frames = packet.decode()
        except av.FFmpegError as error:
            self._count_corrupt(error)
            return []
        for frame in frames:
            if frame.is_corrupt:
                self.stats.decode_errors += 1
                self.stats.last_error = "the decoder concealed damaged data in a frame"
        return frames

    def _count_corrupt(self, error: BaseException) -> None:
        self.stats.skipped_corrupt += 1
        self.stats.last_error = _ffmpeg_reason(error)
        log.debug("%s: skipped corrupt data: %s", self.spec, self.stats.last_error)


class VideoSource(_DecodingSource):
    """A video file or URL decoded with PyAV, packet by packet so that one bad packet costs one frame."""

    kind = "video"

    def __init__(self, spec: str, stream: int, config: SourceConfig) -> None:
        super().__init__(spec, stream, config)
        # A URL (an http file, say) gets the timeouts so that a dead server cannot hang the run; a local
        # file does not (a slow disk is not an error).
        timeout = (config.open_timeout_s, config.read_timeout_s) if is_url(spec) else None
        hardware = _hardware_decoder(config)
        try:
            self._container = av.open(spec, timeout=timeout, hwaccel=hardware)
        except (av.FFmpegError, OSError) as error:
            raise PosestreamError(spec, f"not a readable video: {_ffmpeg_reason(error)}") from error
        self._video = _video_stream(self._container, spec, config)
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
        if self._done():
            return
        consecutive_demux_errors = 0
        last_pts: float | None = None
        packets = self._container.demux(self._video)
        while not self._stop.is_set():
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
            for video_frame in self._decoded(packet):
                pts = video_frame.time
                if pts is not None and last_pts is not None and pts <= last_pts:
                    # After corrupt packets the decoder's reorder buffer can emit a frame late; showing it
                    # would make time run backwards for trackers and overlays.
                    self.stats.skipped_out_of_order += 1
                    continue
                last_pts = pts if pts is not None else last_pts
                image = np.ascontiguousarray(video_frame.to_ndarray(format="bgr24"))
                yield self._make_frame(self.spec, pts, image)
                if self._done():
                    return

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._container.close()


class LiveVideoSource(_DecodingSource):
    """A live stream (RTSP, RTMP, UDP, SRT, ...) or a V4L2 webcam, re-opened after outages.

    Connecting happens in the iteration (so ``request_stop`` can end it), unless reconnecting is off: then
    ``open_source`` connects and fails like a file would. ``fps``/``width``/``height`` are None until the
    first connection. ``Frame.pts`` is seconds on this source's own clock (started when it was created):
    within one connection it follows the stream's timestamps (smooth, unaffected by network jitter); each
    new connection is anchored at the wall-clock time of its first frame, because servers restart their
    timestamps on a new session. So pts only grows, also across reconnects, and an outage shows as a jump.
    """

    kind = "video"
    live = True

    def __init__(self, spec: str, stream: int, config: SourceConfig, webcam: bool = False) -> None:
        super().__init__(spec, stream, config)
        self.webcam = webcam
        self.fps: float | None = None
        self.frame_count = None
        self.width: int | None = None
        self.height: int | None = None
        self.stats.state = CONNECTING
        self._clock_start = time.monotonic()
        self._random = random.Random()  # jitter; one generator per source, no shared state
        self._container_lock = threading.Lock()
        self._container: av.container.InputContainer | None = None
        self._iteration: Iterator[Frame] | None = None
        self._reading_thread: int | None = None  # the thread that iterates (a generator runs in one thread)
        self._last_pts: float | None = None
        self._last_frame_clock: float | None = None
        self._outage_from: float | None = None  # clock time of the last frame before the current outage
        if webcam and not Path(spec).exists():
            raise PosestreamError(spec, "no such video device")
        self._hardware = _hardware_decoder(config)
        if not config.retries_allowed:
            self._container = self._connect()

    def __iter__(self) -> Iterator[Frame]:
        self._iteration = super().__iter__()
        return self._iteration

    def _clock(self) -> float:
        return time.monotonic() - self._clock_start

    def _ffmpeg_options(self) -> dict[str, str]:
        options = {"analyzeduration": str(_LIVE_ANALYZE_DURATION_US)}
        if self.webcam:
            return options
        timeout_us = str(round(self.config.read_timeout_s * 1_000_000))
        if self.spec.lower().startswith(("rtsp://", "rtsps://")):
            options["rtsp_transport"] = self.config.rtsp_transport
            # The RTSP demuxer's socket I/O timeout (FFmpeg >= 5 calls it "timeout"; it was "stimeout").
            options["timeout"] = timeout_us
        else:
            options["rw_timeout"] = timeout_us  # the same for any other network protocol
        return options

    def _connect(self) -> av.container.InputContainer:
        """One connection attempt; a ``PosestreamError`` that says why it failed."""
        started = time.monotonic()
        try:
            # PyAV's timeouts interrupt FFmpeg wherever it blocks: opening, probing, each read.
            container = av.open(self.spec, format="v4l2" if self.webcam else None, options=self._ffmpeg_options(),
                                timeout=(self.config.open_timeout_s, self.config.read_timeout_s),
                                hwaccel=self._hardware)
        except (av.FFmpegError, OSError) as error:
            waited = time.monotonic() - started
            if waited >= 0.9 * self.config.open_timeout_s:
                # FFmpeg reports an interrupted open as "Invalid data" or "Immediate exit requested".
                reason = f"no answer within the open timeout ({self.config.open_timeout_s:g} s)"
            else:
                reason = _ffmpeg_reason(error)
            raise PosestreamError(self.spec, f"cannot connect: {reason}") from error
        video = _video_stream(container, self.spec, self.config)
        self.fps = float(video.average_rate) if video.average_rate else self.fps
        self.width = video.codec_context.width or self.width
        self.height = video.codec_context.height or self.height
        return container

    def _frames(self) -> Iterator[Frame]:
        self._reading_thread = threading.get_ident()
        retries = 0  # retries since the last delivered frame
        first_attempt = self._container is None
        connected_before = False
        try:
            while not self._done():
                if self._container is None:
                    if not first_attempt:
                        if self.config.max_reconnects is not None and retries >= self.config.max_reconnects:
                            raise PosestreamError(self.spec, f"gave up after {retries} retries (max_reconnects); "
                                                             f"last error: {self.stats.last_error}")
                        retries += 1
                        if self._stop.wait(self._retry_delay(retries)):
                            return
                    first_attempt = False
                    try:
                        container = self._connect()
                    except PosestreamError as error:
                        self.stats.connect_failures += 1
                        self.stats.last_error = error.problem
                        log.warning("%s: %s; retrying", self.spec, error.problem)
                        continue
                    with self._container_lock:
                        self._container = container
                    if connected_before:
                        self.stats.reconnects += 1
                        log.info("%s: reconnected", self.spec)
                connected_before = True
                for frame in self._read_connection(self._container):
                    retries = 0
                    yield frame
                    if self._done():
                        return
                self._close_container()
                if self._done():
                    return
                if not self.config.retries_allowed:
                    log.warning("%s: connection ended: %s", self.spec, self.stats.last_error)
                    return
                self._start_outage()
        finally:
            self._close_container()
            if self._outage_from is not None:
                self.stats.gap_seconds += self._clock() - self._outage_from
                self._outage_from = None

    def _retry_delay(self, retry: int) -> float:
        shortest, longest = backoff_delay_range(retry, self.config.backoff_initial_s, self.config.backoff_max_s,
                                                self.config.backoff_jitter)
        return self._random.uniform(shortest, longest)

    def _start_outage(self) -> None:
        """The connection ended without a stop request: an outage begins (if frames had come before it)."""
        log.warning("%s: connection lost: %s; reconnecting", self.spec, self.stats.last_error)
        if self._outage_from is None and self._last_frame_clock is not None:
            self.stats.gaps += 1
            self._outage_from = self._last_frame_clock
        self.stats.state = RECONNECTING if self._last_frame_clock is not None else CONNECTING

    def _read_connection(self, container: av.container.InputContainer) -> Iterator[Frame]:
        """Frames of one connection until it ends (end of stream, error, read timeout) or a stop request;
        the reason it ended is left in ``stats.last_error``."""
        video = container.streams.video[0]
        packets = container.demux(video)
        demux_errors_in_row = 0
        offset: float | None = None  # this connection's stream time -> source clock
        while not self._done():
            read_started = time.monotonic()
            try:
                packet = next(packets)
            except StopIteration:
                self.stats.last_error = "the stream ended"
                return
            except (av.FFmpegError, OSError) as error:
                waited = time.monotonic() - read_started
                if waited >= 0.9 * self.config.read_timeout_s:
                    self.stats.last_error = f"no data within the read timeout ({self.config.read_timeout_s:g} s)"
                    return
                if not isinstance(error, av.InvalidDataError):
                    self.stats.last_error = _ffmpeg_reason(error)
                    return
                # Damaged data while the connection stands: skip it, as in a file.
                self._count_corrupt(error)
                demux_errors_in_row += 1
                if demux_errors_in_row >= _MAX_CONSECUTIVE_DEMUX_ERRORS:
                    self.stats.last_error = f"{demux_errors_in_row} demux errors in a row"
                    return
                packets = container.demux(video)
                continue
            demux_errors_in_row = 0
            for video_frame in self._decoded(packet):
                now = self._clock()
                stream_time = video_frame.time
                if stream_time is None:
                    # No timestamp (the first RTP packets before the clock is known): one frame period on.
                    pts = now if self._last_pts is None else self._last_pts + 1.0 / (self.fps or 25.0)
                else:
                    if offset is None:
                        offset = max(now, (self._last_pts or 0.0) + 1e-3) - stream_time
                    pts = stream_time + offset
                if self._last_pts is not None and pts <= self._last_pts:
                    self.stats.skipped_out_of_order += 1
                    continue
                image = np.ascontiguousarray(video_frame.to_ndarray(format="bgr24"))
                self._note_frame(now, pts)
                yield self._make_frame(self.spec, pts, image)
                if self._done():
                    return

    def _note_frame(self, now: float, pts: float) -> None:
        if self._outage_from is not None:
            self.stats.gap_seconds += now - self._outage_from
            self._outage_from = None
        self._last_pts = pts
        self._last_frame_clock = now
        self.stats.state = STREAMING

    def _close_container(self) -> None:
        with self._container_lock:
            container, self._container = self._container, None
        if container is not None:
            container.close()

    def close(self) -> None:
        """Stop and release the connection. Called from another thread than the one iterating, it only
        requests the stop: the iterating thread releases the connection itself, within the read timeout."""
        self.request_stop()
        if self._reading_thread not in (None, threading.get_ident()):
            return
        if self._iteration is not None:
            self._iteration.close()  # runs the iteration's cleanup (closing the container) now
        self._close_container()


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
        if self._done() or self._image is None:
            return
        image, self._image = self._image, None
        yield self._make_frame(self.spec, None, image)

    def close(self) -> None:
        self._image = None


def list_image_files(folder: Path) -> list[Path]:
    """The image files of ``folder`` (not recursive, by extension), sorted by name: what an image folder
    source reads. Raises OSError when the folder cannot be listed."""
    return sorted((path for path in folder.iterdir() if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()),
                  key=lambda path: path.name)


class ImageFolderSource(FrameSource):
    """The image files of one folder (not recursive), sorted by name; unreadable ones are skipped and counted."""

    kind = "folder"

    def __init__(self, spec: str, stream: int, config: SourceConfig) -> None:
        super().__init__(spec, stream, config)
        try:
            self.paths = list_image_files(Path(spec))
        except OSError as error:
            raise PosestreamError(spec, f"cannot list folder: {error.strerror or error}") from error
        if not self.paths:
            raise PosestreamError(spec, f"no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) in folder")
        self.fps = None
        self.frame_count = self._capped(len(self.paths))

    def _frames(self) -> Iterator[Frame]:
        for path in self.paths:
            if self._done():
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


def is_live_spec(spec: str) -> bool:
    """True for a live stream URL (rtsp://, rtmp://, udp://, srt://, ...) or a webcam device (/dev/videoN)."""
    if _WEBCAM_DEVICE.match(spec):
        return True
    return is_url(spec) and spec.split("://", 1)[0].lower() in LIVE_URL_SCHEMES


def open_source(spec: str, stream: int = 0, config: SourceConfig = SourceConfig()) -> FrameSource:
    """Open ``spec`` as a webcam, a live stream URL, a folder of images, one image, a video file, or another
    video URL (in that order of checks)."""
    if _WEBCAM_DEVICE.match(spec):
        return LiveVideoSource(spec, stream, config, webcam=True)
    if is_live_spec(spec):
        return LiveVideoSource(spec, stream, config)
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
