"""Overlay video files, written with PyAV."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from posestream.pipeline.core.closing import Closing
from posestream.pipeline.core.errors import PosestreamError
from posestream.pipeline.sinks.files import ensure_output_folder, error_reason


def pick_video_encoder() -> str:
    """libx264 where PyAV's bundled FFmpeg has it (the PyPI wheels do), else FFmpeg's own MPEG-4 part 2."""
    try:
        av.Codec("libx264", "w")
        return "libx264"
    except (av.codec.codec.UnknownCodecError, ValueError):
        return "mpeg4"


def _even(value: int) -> int:
    return value + (value % 2)


class VideoSink(Closing):
    """An overlay video written with PyAV: H.264 (libx264) or MPEG-4, yuv420p.

    yuv420p needs even sizes, so an odd width or height is padded by one replicated pixel.
    The container follows the file extension (.mp4, .mkv, .avi, ...).
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
            self._container = av.open(self.path, mode="w")
        except (av.FFmpegError, OSError, ValueError) as error:
            raise PosestreamError(self.path, f"cannot write video: {error_reason(error)}") from error
        try:
            self._stream = self._container.add_stream(self.codec, rate=self.rate)
            self._stream.width = _even(self.width)
            self._stream.height = _even(self.height)
            self._stream.pix_fmt = "yuv420p"
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
