"""Outputs: skeleton overlays, the public JSON-lines record (docs/output-schema.md), overlay video, overlay images.

Every problem with an output path (missing folder, not writable, unknown video format) is a
``PosestreamError`` naming that path.
"""
from __future__ import annotations

import colorsys
import json
import sys
from collections import deque
from fractions import Fraction
from pathlib import Path
from typing import IO, Mapping

import av
import cv2
import numpy as np

from posestream.pipeline.core.closing import Closing
from posestream.pipeline.core.errors import PosestreamError
from posestream.pipeline.core.skeleton import COCO17_NAMES, COCO17_SKELETON
from posestream.pipeline.core.types import Frame, Person


def _limb_colours(count: int) -> tuple[tuple[int, int, int], ...]:
    """``count`` saturated, evenly spaced hues as BGR, so neighbouring limbs are told apart at a glance."""
    colours = []
    for i in range(count):
        red, green, blue = colorsys.hsv_to_rgb(i / count, 0.9, 1.0)
        colours.append((int(blue * 255), int(green * 255), int(red * 255)))
    return tuple(colours)


LIMB_COLOURS_BGR = _limb_colours(len(COCO17_SKELETON))
# A keypoint takes the colour of the first limb that touches it, so a dot matches a limb it sits on.
KEYPOINT_COLOURS_BGR = tuple(
    next(LIMB_COLOURS_BGR[limb] for limb, pair in enumerate(COCO17_SKELETON) if keypoint in pair)
    for keypoint in range(len(COCO17_NAMES))
)
_DOT_OUTLINE_BGR = (0, 0, 0)
_SCORE_TEXT_BGR = (255, 255, 255)
_LEFT_HIP, _RIGHT_HIP = COCO17_NAMES.index("left_hip"), COCO17_NAMES.index("right_hip")


def track_colour(track_id: int) -> tuple[int, int, int]:
    """A bright BGR colour per track ID; golden-ratio hue steps keep consecutive IDs far apart on the wheel."""
    red, green, blue = colorsys.hsv_to_rgb((track_id * 0.6180339887) % 1.0, 0.85, 1.0)
    return int(blue * 255), int(green * 255), int(red * 255)


def trail_point(person: Person) -> tuple[float, float] | None:
    """Where a person's trail runs: the mid-hip, or None when a hip was not found (no jumps to other joints)."""
    keypoints = np.asarray(person.keypoints)
    if keypoints[_LEFT_HIP, 2] <= 0 or keypoints[_RIGHT_HIP, 2] <= 0:
        return None
    middle = 0.5 * (keypoints[_LEFT_HIP, :2] + keypoints[_RIGHT_HIP, :2])
    return float(middle[0]), float(middle[1])


class TrackTrails:
    """The last ``length`` mid-hip positions of each track of one stream, for the overlay.

    Owned by that stream's overlay writer. A track not seen for ``forget_after`` frames is forgotten.
    """

    def __init__(self, length: int = 20, forget_after: int = 30) -> None:
        self.length = length
        self.forget_after = forget_after
        self._points: dict[int, deque[tuple[float, float]]] = {}
        self._last_seen: dict[int, int] = {}
        self._frame = 0

    def update(self, persons: list[Person]) -> dict[int, np.ndarray]:
        """Add this frame's people; returns every remembered track's trail, oldest point first (k x 2)."""
        self._frame += 1
        for person in persons:
            if person.track_id is None:
                continue
            point = trail_point(person)
            if point is None:
                continue
            self._points.setdefault(person.track_id, deque(maxlen=self.length)).append(point)
            self._last_seen[person.track_id] = self._frame
        for track_id in [t for t, seen in self._last_seen.items() if self._frame - seen > self.forget_after]:
            del self._points[track_id], self._last_seen[track_id]
        return {track_id: np.asarray(points) for track_id, points in self._points.items()}


def _stroke_width(image: np.ndarray) -> int:
    """Line thickness that reads well at any size: 3 px on 768x576, 2 px minimum."""
    return max(2, round(min(image.shape[:2]) / 200))


def _draw_trail(canvas: np.ndarray, points: np.ndarray, colour: tuple[int, int, int], thickness: int) -> None:
    """A polyline from oldest to newest point, thin at the old end so the direction of travel shows."""
    pixels = np.round(points).astype(np.int32)
    for k in range(1, len(pixels)):
        width = max(1, round(thickness * k / (len(pixels) - 1)))
        cv2.line(canvas, tuple(pixels[k - 1]), tuple(pixels[k]), colour, width, cv2.LINE_AA)


def draw_people(
    image: np.ndarray,
    persons: list[Person],
    min_confidence: float = 0.1,
    draw_scores: bool = True,
    trails: Mapping[int, np.ndarray] | None = None,
) -> np.ndarray:
    """A copy of ``image`` (H x W x 3 uint8 BGR) with each person's COCO-17 skeleton drawn on it.

    A limb is drawn when both its keypoints have confidence >= ``min_confidence``; a keypoint dot likewise.
    Keypoints with confidence 0 (not found) are never drawn. With ``draw_scores`` the person score is
    written just above the person's box. A person with a ``track_id`` also gets a thin box and the label
    ``#ID`` in that ID's colour (``track_colour``), and, when ``trails`` has its ID, its trail (k x 2 points,
    oldest first) under the skeleton.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"draw_people needs an H x W x 3 uint8 image, got {image.shape} {image.dtype}")
    canvas = image.copy()
    image_thickness = _stroke_width(canvas)
    font_scale = max(0.45, image_thickness / 5)
    if trails:
        for person in persons:
            points = trails.get(person.track_id) if person.track_id is not None else None
            if points is not None and len(points) >= 2:
                _draw_trail(canvas, points, track_colour(person.track_id), image_thickness)
    for person in persons:
        # Small (far) people get thinner strokes so dots do not hide their limbs.
        thickness = max(1, min(image_thickness, round(person.bbox[3] / 40)))
        dot_radius = max(2, min(image_thickness + 1, round(person.bbox[3] / 30)))
        keypoints = np.asarray(person.keypoints, dtype=np.float32)
        if keypoints.shape != (len(COCO17_NAMES), 3):
            raise ValueError(f"Person.keypoints must be (17, 3), got {keypoints.shape}")
        shown = (keypoints[:, 2] >= min_confidence) & (keypoints[:, 2] > 0) & np.isfinite(keypoints).all(axis=1)
        points = [(int(round(x)), int(round(y))) for x, y in keypoints[:, :2]]
        for (start, end), colour in zip(COCO17_SKELETON, LIMB_COLOURS_BGR):
            if shown[start] and shown[end]:
                cv2.line(canvas, points[start], points[end], colour, thickness, cv2.LINE_AA)
        for index in np.flatnonzero(shown):
            # A dark ring keeps the dot visible on bright clothes and on its own limb colour.
            cv2.circle(canvas, points[index], dot_radius + 1, _DOT_OUTLINE_BGR, -1, cv2.LINE_AA)
            cv2.circle(canvas, points[index], dot_radius, KEYPOINT_COLOURS_BGR[index], -1, cv2.LINE_AA)
        tracked = person.track_id is not None
        if tracked and shown.any():
            x, y, w, h = (int(round(value)) for value in person.bbox)
            cv2.rectangle(canvas, (x, y), (x + w, y + h), track_colour(person.track_id), 1, cv2.LINE_AA)
        if (draw_scores or tracked) and shown.any():
            x, y = person.bbox[0], person.bbox[1]
            origin = (int(round(x)), max(int(round(y)) - 2 * thickness, 12))
            parts = ([f"#{person.track_id}"] if tracked else []) + ([f"{person.score:.2f}"] if draw_scores else [])
            text = " ".join(parts)
            colour = track_colour(person.track_id) if tracked else _SCORE_TEXT_BGR
            # The ID label is drawn at least 2 px thick so its colour reads at a glance.
            text_thickness = max(2 if tracked else 1, thickness - 1)
            cv2.putText(canvas, text, origin, cv2.FONT_HERSHEY_SIMPLEX, font_scale, _DOT_OUTLINE_BGR,
                        text_thickness + 2 if tracked else thickness + 1, cv2.LINE_AA)
            cv2.putText(canvas, text, origin, cv2.FONT_HERSHEY_SIMPLEX, font_scale, colour, text_thickness,
                        cv2.LINE_AA)
    return canvas


def _ensure_output_folder(path: Path, shown_as: str) -> None:
    """Create the output file's folder (as ``mkdir -p`` would); fail naming the output when that cannot be."""
    folder = path.parent if str(path.parent) else Path(".")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise PosestreamError(shown_as, f"cannot create output folder {folder}: {_reason(error)}") from error


def _reason(error: BaseException) -> str:
    """The OS's or FFmpeg's own words (strerror), without the '[Errno …]' prefix and file name."""
    return getattr(error, "strerror", None) or str(error) or type(error).__name__


def person_record(person: Person) -> dict:
    """One person in the public schema: pixels rounded to 2 decimals, score and confidences to 4."""
    keypoints = np.asarray(person.keypoints, dtype=np.float64)
    if keypoints.shape != (len(COCO17_NAMES), 3):
        raise ValueError(f"Person.keypoints must be (17, 3), got {keypoints.shape}")
    return {
        "score": round(float(person.score), 4),
        "bbox": [round(float(value), 2) for value in person.bbox],
        "keypoints": [[round(float(x), 2), round(float(y), 2), round(float(c), 4)] for x, y, c in keypoints],
        "track_id": None if person.track_id is None else int(person.track_id),
    }


def frame_record(frame: Frame, persons: list[Person]) -> dict:
    """One frame's line of the JSON-lines output (docs/output-schema.md)."""
    return {
        "stream": int(frame.stream),
        "source": str(frame.source),
        "frame": int(frame.index),
        "pts": None if frame.pts is None else round(float(frame.pts), 6),
        "persons": [person_record(person) for person in persons],
    }


class JsonlSink(Closing):
    """Writes one JSON object per frame and line; ``"-"`` writes to stdout. Flushed after every line."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._owns_file = self.path != "-"
        if self._owns_file:
            _ensure_output_folder(Path(self.path), self.path)
            try:
                self._file: IO[str] = open(self.path, "w", encoding="utf-8")
            except OSError as error:
                raise PosestreamError(self.path, f"cannot write: {_reason(error)}") from error
        else:
            self._file = sys.stdout
        self._closed = False

    def write(self, frame: Frame, persons: list[Person]) -> None:
        # allow_nan=False: a NaN would make the line invalid JSON for every reader downstream.
        line = json.dumps(frame_record(frame, persons), separators=(",", ":"), allow_nan=False)
        try:
            self._file.write(line + "\n")
            # Flush per line: results are visible to `tail -f` and survive a killed process.
            self._file.flush()
        except OSError as error:
            raise PosestreamError(self.path, f"cannot write: {_reason(error)}") from error

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
            raise PosestreamError(self.path, f"cannot write: {_reason(error)}") from error


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
        _ensure_output_folder(Path(self.path), self.path)
        if Path(self.path).is_dir():
            raise PosestreamError(self.path, "is a folder, not a video file")
        self.width, self.height = int(width), int(height)
        # Fraction, not float: 29.97 becomes 2997/100 and 30000/1001 stays exact.
        self.rate = Fraction(fps).limit_denominator(1001)
        self.codec = pick_video_encoder()
        try:
            self._container = av.open(self.path, mode="w")
        except (av.FFmpegError, OSError, ValueError) as error:
            raise PosestreamError(self.path, f"cannot write video: {_reason(error)}") from error
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
            raise PosestreamError(self.path, f"cannot write video: {_reason(error)}") from error
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
            raise PosestreamError(self.path, f"cannot write video: {_reason(error)}") from error

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
                raise PosestreamError(self.path, f"cannot write video: {_reason(error)}") from error


class ImageSink(Closing):
    """Annotated images for image inputs: ``<directory>/<original stem>.jpg``; creates the directory.

    Two inputs with the same stem (a.png, a.jpg) write the same output; the later one wins.
    """

    JPEG_QUALITY = 92

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise PosestreamError(str(self.directory), f"cannot create output folder: {_reason(error)}") from error

    def write(self, image_bgr: np.ndarray, source: str | Path) -> Path:
        """Write ``image_bgr`` as the JPEG for input ``source``; returns the path written."""
        target = self.directory / f"{Path(source).stem}.jpg"
        ok, encoded = cv2.imencode(".jpg", image_bgr, [cv2.IMWRITE_JPEG_QUALITY, self.JPEG_QUALITY])
        if not ok:
            raise PosestreamError(str(target), "could not encode the image as JPEG")
        try:
            # tofile rather than cv2.imwrite: imwrite reports failure only as False, without the reason.
            encoded.tofile(target)
        except OSError as error:
            raise PosestreamError(str(target), f"cannot write: {_reason(error)}") from error
        return target

    def close(self) -> None:
        """Nothing to flush: each image is complete when written. Present so all sinks close alike."""

