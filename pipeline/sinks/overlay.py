"""The overlay output as a Sink: each frame with its people drawn on it, as a video file for a video
stream and as annotated images for an image or folder stream."""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Mapping, Sequence

from posestream.pipeline.core.errors import PosestreamError
from posestream.pipeline.core.types import Frame, Person
from posestream.pipeline.sinks.base import StreamInfo
from posestream.pipeline.sinks.draw import TrackTrails, draw_people
from posestream.pipeline.sinks.images import ImageSink
from posestream.pipeline.sinks.video import VideoSink

DEFAULT_OVERLAY_FPS = 25.0  # for a video source that carries no frame rate


class OverlaySink:
    """The overlay of one stream: a video source writes the video file ``video_path`` (finished when the
    stream ends), an image or folder source writes ``<image_folder>/<input stem>.jpg`` per picture (or the
    name ``image_names`` gives it).

    Serves one stream: its files and its track trails belong to that stream, so a second stream that opens
    it fails (give each stream its own). The video file is created at the first frame, whose size it takes.
    """

    def __init__(self, video_path: str | Path, image_folder: str | Path,
                 default_fps: float = DEFAULT_OVERLAY_FPS, image_names: Mapping[str, Path] | None = None) -> None:
        self.video_path = Path(video_path)
        self.image_folder = Path(image_folder)
        self._image_names = image_names  # input image (real path) -> annotated image; see ImageSink
        self._default_fps = default_fps
        self._lock = threading.Lock()  # guards the one-stream check; writes come from that stream's thread
        self._stream: StreamInfo | None = None
        self._trails = TrackTrails()
        self._video: VideoSink | None = None
        self._images: ImageSink | None = None

    def open_stream(self, stream: StreamInfo) -> None:
        with self._lock:
            if self._stream is not None:
                raise PosestreamError(str(self.video_path if stream.kind == "video" else self.image_folder),
                                      f"this overlay already serves stream {self._stream.index}; "
                                      f"each stream needs its own overlay")
            self._stream = stream

    def write(self, stream: StreamInfo, frame: Frame, people: Sequence[Person]) -> None:
        drawn = draw_people(frame.image, people, trails=self._trails.update(people))
        if stream.kind == "video":
            if self._video is None:
                height, width = frame.image.shape[:2]
                self._video = VideoSink(self.video_path, stream.fps or self._default_fps, width, height)
            self._video.write(drawn)
        else:
            if self._images is None:
                self._images = ImageSink(self.image_folder, self._image_names)
            self._images.write(drawn, frame.source)

    def close_stream(self, stream: StreamInfo) -> None:
        """Finish the video: the encoder drains its held-back frames and the container is completed."""
        self._close_video()

    def close(self) -> None:
        """Nothing left once the stream closed; a video still open (a stream never closed) is finished."""
        self._close_video()

    def _close_video(self) -> None:
        video, self._video = self._video, None
        if video is not None:
            video.close()
