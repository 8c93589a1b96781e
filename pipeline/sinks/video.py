"""Overlay video files, written with PyAV."""
from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from posestream.pipeline.core.closing import Closing
from posestream.pipeline.core.errors import PosestreamError
from posestream.pipeline.sinks.files import check_output_file, ensure_output_folder, error_reason


def pick_video_encoder() -> str:
    """libx264 where PyAV's bundled FFmpeg has it (the PyPI wheels do), else FFmpeg's own MPEG-4 part 2."""
    try:
        av.Codec("libx264", "w")
        return "libx264"
    except (av.codec.codec.UnknownCodecError, ValueError):
        return "mpeg4"


def _even(value: int) -> int:
    return value + (value % 2)


# MP4 and QuickTime files normally get their index (moov) only when closed, so a killed process leaves an
# unplayable file. Fragmented, a file is a short header plus self-contained fragments, one per keyframe:
# what was written up to the last whole fragment plays after SIGKILL, OOM or a crash.
FRAGMENTED_SUFFIXES = frozenset({".mp4", ".m4v", ".mov"})
FRAGMENTED_MOVFLAGS = "frag_keyframe+empty_moov+default_base_moof"
KEYFRAME_INTERVAL_S = 2.0  # a keyframe, hence a fragment, this often: at most this much is lost to a kill


def container_options(path: str | Path) -> dict[str, str]:
    """The muxer options of an overlay file: fragmented for MP4 and QuickTime (see FRAGMENTED_MOVFLAGS)."""
    if Path(path).suffix.lower() not in FRAGMENTED_SUFFIXES:
        return {}
    # flush_packets: each fragment goes to the file when it is complete, not when the 32 KiB buffer fills.
    return {"movflags": FRAGMENTED_MOVFLAGS, "flush_packets": "1"}


def check_video_output(path: str | Path) -> None:
    """Fail now, naming ``path``, if an overlay video cannot be written there: the folder and permissions
    (``check_output_file``), then the container the extension names, with our encoder, tried on one small
    frame in memory. Nothing is created but the folder."""
    shown = str(path)
    check_output_file(Path(path), shown)
    memory = io.BytesIO()
    memory.name = Path(path).name  # FFmpeg picks the container from the name, as it will for the file
    try:
        with av.open(memory, mode="w", options=container_options(path)) as container:
            stream = container.add_stream(pick_video_encoder(), rate=25)
            stream.width, stream.height, stream.pix_fmt = 16, 16, "yuv420p"
            frame = av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="bgr24")
            container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
    except (av.FFmpegError, OSError, ValueError) as error:
        suffixes = ", ".join(sorted(FRAGMENTED_SUFFIXES | {".mkv", ".avi"}))
        raise PosestreamError(shown, f"cannot write video: {error_reason(error)} (video outputs: {suffixes})") from None


class VideoSink(Closing):
    """An overlay video written with PyAV: H.264 (libx264) or MPEG-4, yuv420p.

    yuv420p needs even sizes, so an odd width or height is padded by one replicated pixel.
    The container follows the file extension (.mp4, .mkv, .avi, ...); MP4 and QuickTime are written
    fragmented, with a keyframe every ``KEYFRAME_INTERVAL_S``, so that a killed run leaves a playable file.
    """

    def __init__(self, path: str | Path, fps: float | Fraction, width: int, height: int) -> None:
        self.path = str(path)
        if not fps or fps <= 0 or not np.isfinite(float(fps)):
            raise PosestreamError(self.path, f"video frame rate must be > 0, got {fps}")
        if width < 1 or height < 1:
            raise PosestreamError(self.path, f"video size must be positive, got {width}x{height}")
        ensure_output_folder(Path(self.path), self.path)
        if Path(self.path).is_dir():
            raise PosestreamError(self.path, "is a folder, not a video file")
        self.width, self.height = int(width), int(height)
        # Fraction, not float: 29.97 becomes 2997/100 and 30000/1001 stays exact.
        self.rate = Fraction(fps).limit_denominator(1001)
        self.codec = pick_video_encoder()
        try:
            self._container = av.open(self.path, mode="w", options=container_options(self.path))
        except (av.FFmpegError, OSError, ValueError) as error:
            raise PosestreamError(self.path, f"cannot write video: {error_reason(error)}") from error
        try:
            self._stream = self._container.add_stream(self.codec, rate=self.rate)
            self._stream.width = _even(self.width)
            self._stream.height = _even(self.height)
            self._stream.pix_fmt = "yuv420p"
            self._stream.codec_context.gop_size = max(1, round(KEYFRAME_INTERVAL_S * float(self.rate)))
            if self.codec == "libx264":
                # veryfast keeps encoding well under real time; crf 23 is x264's default quality.
                self._stream.options = {"preset": "veryfast", "crf": "23"}
            else:
                # mpeg4's default 200 kbit/s is blocky; about 0.2 bit per pixel looks clean for overlays.
                self._stream.bit_rate = int(0.2 * self._stream.width * self._stream.height * float(self.rate))
        except (av.FFmpegError, ValueError) as error:
            self._container.close()
            raise PosestreamError(self.path, f"cannot write video: {error_reason(error)}") from error
        self.frames_written = 0
        self._closed = False

    def write(self, image_bgr: np.ndarray) -> None:
        """Append one H x W x 3 uint8 BGR picture of the size given at construction."""
        if self._closed:
            raise RuntimeError(f"{self.path}: write after close")
        if image_bgr.shape != (self.height, self.width, 3) or image_bgr.dtype != np.uint8:
            raise ValueError(
                f"{self.path}: expected {self.height}x{self.width}x3 uint8, got {image_bgr.shape} {image_bgr.dtype}"
            )
        pad_bottom, pad_right = self._stream.height - self.height, self._stream.width - self.width
        if pad_bottom or pad_right:
            image_bgr = cv2.copyMakeBorder(image_bgr, 0, pad_bottom, 0, pad_right, cv2.BORDER_REPLICATE)
        video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image_bgr), format="bgr24")
        video_frame.pts = self.frames_written
        video_frame.time_base = 1 / self.rate
        self._encode(video_frame)
        self.frames_written += 1

    def _encode(self, video_frame: av.VideoFrame | None) -> None:
        # PyAV opens the file at the first mux, so a bad path (a folder, no permission) surfaces here too.
        try:
            self._container.mux(self._stream.encode(video_frame))
        except (av.FFmpegError, OSError) as error:
            raise PosestreamError(self.path, f"cannot write video: {error_reason(error)}") from error

    def close(self) -> None:
        """Drain the encoder (it holds back frames for look-ahead) and finish the container."""
        if self._closed:
            return
        self._closed = True
        try:
            self._encode(None)
        finally:
            try:
                self._container.close()
            except (av.FFmpegError, OSError) as error:
                raise PosestreamError(self.path, f"cannot write video: {error_reason(error)}") from error
