"""``posestream run``: every source at once through the stage graph (``posestream.pipeline.runtime.graph``), then a summary.

Each source is one stream. A stream that fails (unreadable file, decode failure, an output that cannot be
written) is reported as it happens and the others go on; corrupt frames are skipped and counted by the
source, frames a live stream drops to stay current are counted, and every count is in the summary.
Each video stream gets its own ``PoseTracker`` (IDs from 1, keypoint smoothing), created at its first frame
and dropped when it ends; image and folder inputs are taken as unrelated pictures and not tracked.
SIGINT/SIGTERM stop the sources, let the frames in flight through, close every output, then return; the
drain prints its progress, a second signal is acknowledged and changes nothing, a third exits at once
(``SignalStop``).
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from types import FrameType
from typing import Sequence, TextIO

from tqdm import tqdm

from posestream.pipeline.runtime.graph import Estimate, OverlayTarget, Runtime, RuntimeConfig, StreamResult, StreamSpec
from posestream.pipeline.runtime.metrics import MetricsServer, RuntimeMetrics, StatsPrinter
from posestream.pipeline.sinks.base import Sink
from posestream.pipeline.sources.readers import SourceConfig
from posestream.pipeline.tracking.tracker import TrackerConfig

log = logging.getLogger(__name__)

__all__ = ["Estimate", "RunConfig", "StreamReport", "SignalStop", "run_streams", "print_summary"]


@dataclass(frozen=True)
class RunConfig:
    sources: tuple[str, ...] = ()
    out_jsonl: str | None = None  # one file for all streams; "-" is stdout
    out_video: str | None = None  # a file for one video source, else a folder
    batch_size: int = 1  # frames per inference call, across streams
    max_frames: int | None = None
    progress: bool = True
    tracking: TrackerConfig | None = TrackerConfig()  # None: no tracking, every track_id is null
    batch_wait_ms: float = 10.0  # a started batch waits this long for frames of other streams
    queue_size: int = 8  # frames buffered per file stream (the decoder waits when full)
    live_queue_size: int = 1  # frames buffered per live stream (the oldest is dropped when full)
    pace: bool = False  # read files at their frame rate, as a camera would deliver them
    live: bool | None = None  # True: treat every source as live (drop oldest frames when behind)
    # Streams from a config file (posestream.pipeline.config.streams); when given, ``sources``, the outputs,
    # ``max_frames``, ``pace`` and ``live`` above are not used: each spec carries its own.
    streams: tuple[StreamSpec, ...] = ()
    metrics_port: int | None = None  # serve /metrics and /healthz here (0: any free port)
    metrics_host: str = "127.0.0.1"
    stats_interval_s: float = 0.0  # print the metrics table to stderr this often; 0: never

    def stream_specs(self) -> tuple[StreamSpec, ...]:
        if self.streams:
            return self.streams
        single = len(self.sources) == 1
        overlay = OverlayTarget(self.out_video, folder=not single) if self.out_video else None
        source_config = SourceConfig(max_frames=self.max_frames)
        return tuple(StreamSpec(source=spec, source_config=source_config, out_jsonl=self.out_jsonl,
                                overlay=overlay, live=self.live, pace=self.pace) for spec in self.sources)

    def runtime_config(self) -> RuntimeConfig:
        return RuntimeConfig(batch_size=self.batch_size, batch_wait_ms=self.batch_wait_ms, queue_size=self.queue_size,
                             live_queue_size=self.live_queue_size, tracking=self.tracking)


@dataclass
class StreamReport:
    stream: int
    source: str
    frames: int = 0  # processed: through the outputs
    skipped_corrupt: int = 0
    skipped_out_of_order: int = 0  # frames the decoder released late after corrupt data (pts going back)
    people: int = 0
    seconds: float = 0.0
    error: str | None = None
    tracks: int | None = None  # track IDs handed out; None when the stream was not tracked
    name: str = ""
    delivered: int = 0  # frames the source gave; = frames + sum(dropped) at the end
    dropped: dict[str, int] = field(default_factory=dict)  # by reason (posestream.pipeline.runtime.metrics.DROP_REASONS)
    reconnects: int = 0
    connect_failures: int = 0  # live sources: failed connection attempts
    gaps: int = 0  # live sources: outages after frames had come

    @classmethod
    def from_result(cls, result: StreamResult) -> StreamReport:
        return cls(stream=result.index, source=result.spec.source, frames=result.processed,
                   skipped_corrupt=result.skipped_corrupt, skipped_out_of_order=result.skipped_out_of_order,
                   people=result.people, seconds=result.seconds, error=result.error if result.state == "failed"
                   else None, tracks=result.tracks, name=result.spec.name, delivered=result.delivered,
                   dropped={reason: n for reason, n in result.dropped.items() if n}, reconnects=result.reconnects,
                   connect_failures=result.connect_failures, gaps=result.gaps)


class SignalStop:
    """While active (``with``), SIGINT and SIGTERM stop the watched runtime gracefully and never abort it.

    The first signal stops the sources: the frames already read are finished and every output is closed
    (``received`` is its number). A second one is acknowledged (``run_streams`` prints what is left) and the
    drain goes on, because killing the process now would leave every overlay video unfinished. A third exits
    at once with 128 + the first signal's number: outputs already closed stay whole, JSON lines are flushed
    per line, and an overlay video still open keeps the fragments written so far (fragmented MP4).

    Handlers can only be set from the main thread; elsewhere this does nothing.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: int | None = None
        self.count = 0
        self._acknowledge = False  # a second signal came: run_streams says what the stop is waiting for
        self._runtime: Runtime | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> SignalStop:
        if threading.current_thread() is threading.main_thread():
            for number in self.SIGNALS:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous = {}

    def watch(self, runtime: Runtime) -> None:
        self._runtime = runtime
        if self.received is not None:
            runtime.request_stop()

    def take_acknowledgement(self) -> bool:
        """True once after a second signal came."""
        acknowledge, self._acknowledge = self._acknowledge, False
        return acknowledge

    def _handle(self, number: int, frame: FrameType | None) -> None:
        # No print() here: the main thread may be inside a write to sys.stderr (the progress bar), and a
        # reentrant write raises. os.write on the descriptor is safe.
        self.count += 1
        if self.count == 1:
            self.received = number
            if self._runtime is not None:
                self._runtime.request_stop()
        elif self.count == 2:
            self._acknowledge = True
        else:
            os.write(2, b"\nposestream: abandoning the outputs still open; those already closed are complete\n")
            os._exit(128 + (self.received or number))


DRAIN_REPORT_S = 1.0  # how often a stopping run says what it is still waiting for


def estimator_inputs(estimate: Estimate) -> tuple[tuple[str, str], ...]:
    """(path, role) of the files an estimator read (its ``input_files``), which no output may write over."""
    return tuple(getattr(estimate, "input_files", ()))


def run_streams(config: RunConfig, estimate: Estimate, stop: SignalStop | None = None,
                sinks: Sequence[Sink] = (), inputs: Sequence[tuple[str, str]] = ()) -> list[StreamReport]:
    """Run every stream at once; returns one report per stream, failed streams included. ``sinks`` are
    written for every stream besides the outputs ``config`` names (``Runtime``'s ``sinks``). No output may
    write over a source, the estimator's files (``estimator_inputs``) or ``inputs`` ((path, role) pairs)."""
    specs = config.stream_specs()
    metrics = RuntimeMetrics([(spec.label, spec.source) for spec in specs])
    runtime = Runtime(specs, estimate, config.runtime_config(), metrics, notify=log.error, sinks=sinks,
                      inputs=estimator_inputs(estimate) + tuple(inputs))
    server = MetricsServer(metrics, config.metrics_port, config.metrics_host) \
        if config.metrics_port is not None else None
    printer = None
    bar = tqdm(unit="frame", desc="frames", disable=True)  # shown once the run has started
    try:
        if server is not None:
            log.info("metrics on http://%s:%s/metrics and /healthz", server.host, server.port)
        runtime.start()
        bar = tqdm(unit="frame", desc="frames", disable=not config.progress, file=sys.stderr)
        if stop is not None:
            stop.watch(runtime)
        if config.stats_interval_s > 0:
            printer = StatsPrinter(metrics, config.stats_interval_s)
        shown = 0
        next_drain_report: float | None = None
        while not runtime.wait(0.25):
            processed = sum(s.processed for s in metrics.snapshot().streams)
            bar.update(processed - shown)
            shown = processed
            if stop is not None and stop.received is not None:
                if next_drain_report is None:
                    bar.close()  # the drain's lines replace the bar
                    next_drain_report = 0.0
                acknowledged = stop.take_acknowledgement()
                if acknowledged or time.monotonic() >= next_drain_report:
                    next_drain_report = time.monotonic() + DRAIN_REPORT_S
                    _print_drain(stop.received, *runtime.pending(), again=acknowledged)
        bar.update(sum(s.processed for s in metrics.snapshot().streams) - shown)  # the frames of the last wait
    finally:
        bar.close()
        if printer is not None:
            printer.close()
        if server is not None:
            server.close()
    return [StreamReport.from_result(result) for result in runtime.results()]


def _print_drain(signal_number: int, frames: int, outputs: int, again: bool) -> None:
    name = signal.Signals(signal_number).name
    line = f"posestream: stopping ({name}): finishing {frames} frames, closing {outputs} outputs"
    print(line + ("; press again to abandon outputs" if again else ""), file=sys.stderr, flush=True)


def print_summary(reports: list[StreamReport], timing: dict[str, float], out: TextIO | None = None) -> None:
    out = out or sys.stderr  # looked up per call, so redirected stderr is honoured
    for r in reports:
        label = f"stream {r.stream} [{r.name}] {r.source}" if r.name else f"stream {r.stream} {r.source}"
        if r.error:
            # The error line itself was printed when the stream failed; one line per error, not two.
            print(f"{label}: FAILED after {r.frames} frames (error above)", file=out)
            continue
        fps = r.frames / r.seconds if r.seconds > 0 else 0.0
        tracks = f", {r.tracks} tracks" if r.tracks is not None else ""
        late = f", {r.skipped_out_of_order} out-of-order frames dropped" if r.skipped_out_of_order else ""
        dropped = ""
        if sum(r.dropped.values()):
            reasons = ", ".join(f"{reason} {count}" for reason, count in r.dropped.items())
            dropped = f", {sum(r.dropped.values())} frames dropped ({reasons})"
        reconnects = f", {r.reconnects} reconnects" if r.reconnects else ""
        if r.gaps or r.connect_failures:
            reconnects += f", {r.gaps} outages, {r.connect_failures} failed connection attempts"
        print(f"{label}: {r.frames} frames, {r.skipped_corrupt} corrupt frames skipped{late}{dropped}, "
              f"{r.people} people{tracks}, {fps:.1f} frames/s{reconnects}", file=out)
    if timing.get("frames"):
        print(f"inference {timing['inference_ms_per_frame']:.2f} ms/frame, "
              f"parse {timing['parse_ms_per_frame']:.2f} ms/frame over {timing['frames']} frames"
              + (f", {timing['people_dropped']} people over capacity dropped" if timing.get("people_dropped") else ""),
              file=out)
    if "detect_ms_per_frame" in timing:  # top-down mode
        print(f"top-down: detect {timing['detect_ms_per_frame']:.2f} ms/frame on {timing['detector_frames']} "
              f"frames, crop {timing['crop_ms_per_frame']:.2f} ms/frame, {timing['crops']} crops", file=out)
