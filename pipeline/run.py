"""``posestream run``: sources -> bottom-up estimator -> JSON lines and overlays, stream after stream.

Each source is one stream. A stream that fails (unreadable file, decode failure) is reported and the
others go on; corrupt frames are skipped and counted by the source, and every count is reported.
Each video stream gets its own ``PoseTracker`` (IDs from 1, keypoint smoothing), created when the stream
starts and dropped when it ends; image and folder inputs are taken as unrelated pictures and not tracked.
The concurrent multi-stream runtime (live sources, batching across streams) is a separate stage graph.
"""
from __future__ import annotations

import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TextIO

import numpy as np
from tqdm import tqdm

from pipeline.errors import PosestreamError
from pipeline.sinks import ImageSink, JsonlSink, TrackTrails, VideoSink, draw_people
from pipeline.sources import FrameSource, SourceConfig, open_source
from pipeline.tracking import PoseTracker, TrackerConfig
from pipeline.types import Frame, Person

Estimate = Callable[[list[np.ndarray]], list[list[Person]]]
DEFAULT_FPS = 25.0  # for overlay videos of sources that carry no frame rate


@dataclass(frozen=True)
class RunConfig:
    sources: tuple[str, ...]
    out_jsonl: str | None = None  # one file for all streams; "-" is stdout
    out_video: str | None = None  # a file for one video source, else a folder
    batch_size: int = 1  # frames of one stream per inference call
    max_frames: int | None = None
    progress: bool = True
    tracking: TrackerConfig | None = TrackerConfig()  # None: no tracking, every track_id is null


@dataclass
class StreamReport:
    stream: int
    source: str
    frames: int = 0
    skipped_corrupt: int = 0
    skipped_out_of_order: int = 0  # frames the decoder released late after corrupt data (pts going back)
    people: int = 0
    seconds: float = 0.0
    error: str | None = None
    tracks: int | None = None  # track IDs handed out; None when the stream was not tracked


class _OverlayWriter:
    """Overlay output of one stream: a video file for video sources, annotated images otherwise."""

    def __init__(self, target: Path, source: FrameSource):
        self._target = target
        self._source = source
        self._video: VideoSink | None = None
        self._images: ImageSink | None = None
        self._trails = TrackTrails()

    def write(self, frame: Frame, people: list[Person]) -> None:
        drawn = draw_people(frame.image, people, trails=self._trails.update(people))
        if self._source.kind == "video":
            if self._video is None:
                height, width = frame.image.shape[:2]
                self._video = VideoSink(self._target, self._source.fps or DEFAULT_FPS, width, height)
            self._video.write(drawn)
        else:
            if self._images is None:
                self._images = ImageSink(self._target)
            self._images.write(drawn, frame.source)

    def close(self) -> None:
        if self._video is not None:
            self._video.close()


def _overlay_target(out_video: str, source: FrameSource, single_source: bool) -> Path:
    root = Path(out_video)
    if source.kind != "video":
        return root  # annotated images go into this folder
    return root if single_source else root / f"{Path(source.spec).stem}.mp4"


def _run_stream(source: FrameSource, config: RunConfig, estimate: Estimate, jsonl: JsonlSink | None,
                overlay: _OverlayWriter | None, report: StreamReport) -> None:
    bar = tqdm(total=source.frame_count, unit="frame", desc=Path(source.spec).name or source.spec,
               disable=not config.progress, leave=True, file=sys.stderr)
    started = time.perf_counter()
    tracker = None
    if config.tracking is not None and source.kind == "video":
        tracker = PoseTracker(config.tracking, fps=source.fps)
    try:
        batch: list[Frame] = []
        frames = iter(source)
        while True:
            frame = next(frames, None)
            if frame is not None:
                batch.append(frame)
            if batch and (frame is None or len(batch) == config.batch_size):
                people_per_frame = estimate([f.image for f in batch])
                for done, people in zip(batch, people_per_frame):
                    if tracker is not None:
                        people = tracker.update(people, done.pts)
                    if jsonl is not None:
                        jsonl.write(done, people)
                    if overlay is not None:
                        overlay.write(done, people)
                    report.people += len(people)
                report.frames += len(batch)
                bar.update(len(batch))
                batch = []
            if frame is None:
                break
    finally:
        report.skipped_corrupt = source.stats.skipped_corrupt
        report.skipped_out_of_order = source.stats.skipped_out_of_order
        report.tracks = tracker.ids_issued if tracker is not None else None
        report.seconds = time.perf_counter() - started
        bar.close()


def run_streams(config: RunConfig, estimate: Estimate) -> list[StreamReport]:
    """Run every source in turn; returns one report per stream, failed streams included."""
    reports = []
    with ExitStack() as outputs:
        jsonl = outputs.enter_context(JsonlSink(config.out_jsonl)) if config.out_jsonl else None
        for stream, spec in enumerate(config.sources):
            report = StreamReport(stream=stream, source=spec)
            reports.append(report)
            overlay = None
            try:
                with open_source(spec, stream, SourceConfig(max_frames=config.max_frames)) as source:
                    if config.out_video:
                        target = _overlay_target(config.out_video, source, len(config.sources) == 1)
                        overlay = _OverlayWriter(target, source)
                    try:
                        _run_stream(source, config, estimate, jsonl, overlay, report)
                    finally:
                        if overlay is not None:
                            overlay.close()
            except PosestreamError as error:
                report.error = str(error)
                print(f"posestream: error: {error}", file=sys.stderr)
    return reports


def print_summary(reports: list[StreamReport], timing: dict[str, float], out: TextIO | None = None) -> None:
    out = out or sys.stderr  # looked up per call, so redirected stderr is honoured
    for r in reports:
        if r.error:
            print(f"stream {r.stream} {r.source}: FAILED: {r.error}", file=out)
            continue
        fps = r.frames / r.seconds if r.seconds > 0 else 0.0
        tracks = f", {r.tracks} tracks" if r.tracks is not None else ""
        late = f", {r.skipped_out_of_order} out-of-order frames dropped" if r.skipped_out_of_order else ""
        print(f"stream {r.stream} {r.source}: {r.frames} frames, {r.skipped_corrupt} corrupt frames skipped{late}, "
              f"{r.people} people{tracks}, {fps:.1f} frames/s", file=out)
    if timing.get("frames"):
        print(f"inference {timing['inference_ms_per_frame']:.2f} ms/frame, "
              f"parse {timing['parse_ms_per_frame']:.2f} ms/frame over {timing['frames']} frames"
              + (f", {timing['people_dropped']} people over capacity dropped" if timing.get("people_dropped") else ""),
              file=out)
