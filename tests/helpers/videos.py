"""Real video files written for tests, and what they and the JSON lines hold."""
from __future__ import annotations

import json
import struct
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from posestream.pipeline.sinks.video import VideoSink


def write_video(path: Path, frames: int, width: int = 160, height: int = 120, fps: float = 10.0) -> Path:
    """A real H.264 (or MPEG-4) video: a bright square moving over a dark background; frame i's square
    position encodes i, so a test can tell frames apart."""
    with VideoSink(path, fps, width, height) as sink:
        for i in range(frames):
            image = np.full((height, width, 3), 30, np.uint8)
            x = (4 * i) % (width - 24)
            image[height // 3: height // 3 + 24, x: x + 24] = (40, 220, 250)
            sink.write(image)
    return path


def count_video_frames(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


SQUARE_VIDEO_FRAMES = 30


def write_moving_square_mp4(path: Path, frames: int = SQUARE_VIDEO_FRAMES) -> None:
    """H.264 in MP4, 320x240 at 10 fps, a keyframe every 10 frames, a green square sliding right."""
    if "libx264" not in av.codecs_available:
        pytest.skip("PyAV's FFmpeg has no libx264 encoder")
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(10))
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        stream.options = {"g": "10", "preset": "veryfast"}
        for i in range(frames):
            image = np.full((240, 320, 3), 40, np.uint8)
            image[80:160, 8 * i : 8 * i + 80] = (0, 255, 0)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")))
        container.mux(stream.encode(None))


def mp4_box_span(data: bytes, box_type: bytes) -> tuple[int, int]:
    """(start, end) of the payload of a top-level MP4 box, so damage can go into the media data only."""
    offset = 0
    while offset + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        if kind == box_type:
            return offset + 8, offset + size
        offset += size
    raise AssertionError(f"no {box_type!r} box")


def damage(data: bytes, at: int, length: int, seed: int = 7) -> bytes:
    garbage = np.random.default_rng(seed).integers(0, 256, length, dtype=np.uint8).tobytes()
    return data[:at] + garbage + data[at + length :]
