"""What the multi-stream runtime measures, and the two ways it is shown: a periodic table on stderr and
an HTTP endpoint (Prometheus text on ``/metrics``, stream states as JSON on ``/healthz``).

One ``RuntimeMetrics`` per runtime holds everything: per-stage latency samples in fixed-size rings (memory
stays constant however long a run is), per-stream counters (frames delivered, processed, dropped by
reason), frame age at the output, and callables that read queue depths and source statistics when asked.
Its Prometheus collector lives in a registry of its own, so two runtimes in one process never clash.
"""
from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Iterator

import numpy as np
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from posestream.pipeline.core.errors import PosestreamError
from posestream.pipeline.sources.readers import CONNECTING, RECONNECTING, SourceStats

# decode: reading one frame from the source; queue: a frame's wait in its stream's queue; batch: from the
# first frame of a batch taken to the batch handed to inference; inference: one estimator call (a batch);
# post: tracking and outputs of one frame.
STAGES = ("decode", "queue", "batch", "inference", "post")
STREAM_STATES = ("connecting", "ok", "failed", "ended")
# stale: a live stream's oldest queued frame, pushed out by a newer one; stream_failed: queued after the
# stream failed (its output broke); inference_failed: the estimator raised on the stream's frames.
DROP_REASONS = ("stale", "stream_failed", "inference_failed")
QUANTILES = (50, 99)
QUANTILE_LABELS = ("0.5", "0.99")  # Prometheus' convention for the quantile label
RING_CAPACITY = 1024


class LatencyRing:
    """The last ``capacity`` samples (seconds) in a fixed array; percentiles over them. Thread-safe."""

    def __init__(self, capacity: int = RING_CAPACITY) -> None:
        self._samples = np.zeros(capacity, np.float64)
        self._count = 0  # samples ever added; the ring holds the last min(count, capacity)
        self._lock = threading.Lock()

    def add(self, seconds: float) -> None:
        with self._lock:
            self._samples[self._count % len(self._samples)] = seconds
            self._count += 1

    @property
    def count(self) -> int:
        return self._count

    def samples(self) -> np.ndarray:
        """A copy of the samples held (seconds), in no particular order."""
        with self._lock:
            return self._samples[: min(self._count, len(self._samples))].copy()

    def percentiles(self) -> tuple[float, float] | None:
        """(p50, p99) in seconds over the samples held, or None before the first sample."""
        held = self.samples()
        if held.size == 0:
            return None
        p50, p99 = np.percentile(held, QUANTILES)
        return float(p50), float(p99)


@dataclass(frozen=True)
class StreamSnapshot:
    index: int
    name: str
    source: str
    state: str
    error: str | None
    delivered: int  # frames the decode stage took from the source
    processed: int  # frames through the outputs
    people: int
    dropped: dict[str, int]  # by reason, every reason present
    decode_errors: int
    reconnects: int
    connect_failures: int  # live sources: failed connection attempts, first ones included
    gaps: int  # live sources: outages (a connection lost after frames had come)
    seconds: float  # from the stream's start to its end (or now)
    fps: float  # processed / seconds
    age: tuple[float, float] | None  # frame age at the output (capture -> written), p50 and p99 seconds
    processing: tuple[float, float] | None  # taken from the stream queue -> written (no queueing), p50 and p99
    queue_depth: int


@dataclass(frozen=True)
class RuntimeSnapshot:
    elapsed: float
    streams: tuple[StreamSnapshot, ...]
    stages: dict[str, tuple[float, float] | None]  # p50, p99 seconds
    queue_depths: dict[str, int]  # named queues other than the streams' own (e.g. "post:<stream>")


class StreamMetrics:
    """Counters of one stream. Stage threads update them; snapshots read them. One lock per stream."""

    def __init__(self, index: int, name: str, source: str, ring_capacity: int = RING_CAPACITY) -> None:
        self.index = index
        self.name = name
        self.source = source
        self._lock = threading.Lock()
        self._state = "connecting"
        self._error: str | None = None
        self._delivered = 0
        self._processed = 0
        self._people = 0
        self._dropped = dict.fromkeys(DROP_REASONS, 0)
        self._started: float | None = None
        self._ended: float | None = None
        self.age = LatencyRing(ring_capacity)  # capture by the decode stage -> output written
        self.processing = LatencyRing(ring_capacity)  # taken from the stream queue -> output written
        # Set by the runtime once the source is open: readers of its statistics and of the queue depth.
        self.source_stats: SourceStats | None = None
        self.queue_depth: Callable[[], int] = lambda: 0

    @property
    def state(self) -> str:
        """connecting (no frame yet, or a live source in an outage), ok, failed or ended."""
        stats = self.source_stats
        if self._state == "ok" and stats is not None and stats.state in (CONNECTING, RECONNECTING):
            return "connecting"
        return self._state

    @property
    def error(self) -> str | None:
        return self._error

    def set_state(self, state: str, error: str | None = None) -> None:
        if state not in STREAM_STATES:
            raise ValueError(f"unknown stream state {state!r}")
        with self._lock:
            if self._state == "failed" and state == "ended":
                return  # a failed stream stays failed when its threads wind down
            self._state = state
            if error is not None:
                self._error = error
            now = time.monotonic()
            if state == "ok" and self._started is None:
                self._started = now
            if state in ("failed", "ended"):
                self._ended = now

    def count_delivered(self) -> None:
        with self._lock:
            self._delivered += 1

    def count_processed(self, people: int, age: float, processing: float) -> None:
        with self._lock:
            self._processed += 1
            self._people += people
        self.age.add(age)
        self.processing.add(processing)

    def count_dropped(self, reason: str, frames: int = 1) -> None:
        if reason not in self._dropped:
            raise ValueError(f"unknown drop reason {reason!r}")
        with self._lock:
            self._dropped[reason] += frames

    def snapshot(self) -> StreamSnapshot:
        with self._lock:
            now = time.monotonic()
            started = self._started
            seconds = 0.0 if started is None else (self._ended or now) - started
            processed = self._processed
            values = dict(state=self.state, error=self._error, delivered=self._delivered, processed=processed,
                          people=self._people, dropped=dict(self._dropped))
        stats = self.source_stats
        # A source counts each decode problem once: skipped (undecodable) or delivered concealed.
        decode_errors = 0 if stats is None else stats.skipped_corrupt + stats.decode_errors
        return StreamSnapshot(index=self.index, name=self.name, source=self.source, seconds=seconds,
                              fps=processed / seconds if seconds > 0 else 0.0, age=self.age.percentiles(),
                              processing=self.processing.percentiles(), decode_errors=decode_errors,
                              reconnects=0 if stats is None else stats.reconnects,
                              connect_failures=0 if stats is None else stats.connect_failures,
                              gaps=0 if stats is None else stats.gaps, queue_depth=self.queue_depth(),
                              **values)


class RuntimeMetrics:
    """Everything one runtime measures. ``registry`` serves it to Prometheus; ``snapshot`` to everyone else."""

    def __init__(self, streams: list[tuple[str, str]], ring_capacity: int = RING_CAPACITY) -> None:
        """``streams``: (name, source) per stream, in stream order."""
        self.started = time.monotonic()
        self.streams = [StreamMetrics(i, name, source, ring_capacity) for i, (name, source) in enumerate(streams)]
        self.stages = {stage: LatencyRing(ring_capacity) for stage in STAGES}
        self.queue_readers: dict[str, Callable[[], int]] = {}
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_RuntimeCollector(self))

    def observe(self, stage: str, seconds: float) -> None:
        self.stages[stage].add(seconds)

    def snapshot(self) -> RuntimeSnapshot:
        return RuntimeSnapshot(
            elapsed=time.monotonic() - self.started,
            streams=tuple(stream.snapshot() for stream in self.streams),
            stages={stage: ring.percentiles() for stage, ring in self.stages.items()},
            queue_depths={name: read() for name, read in list(self.queue_readers.items())})

    def health(self) -> dict:
        """The /healthz body: every stream's state (and error), and whether any stream is still running."""
        streams = [{"stream": s.index, "name": s.name, "state": s.state, "error": s.error} for s in self.streams]
        running = any(s["state"] in ("connecting", "ok") for s in streams)
        return {"running": running, "streams": streams}


class _RuntimeCollector(Collector):
    """Turns a snapshot into Prometheus metric families at scrape time (no second set of counters)."""

    def __init__(self, metrics: RuntimeMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        snapshot = self._metrics.snapshot()
        labels = ["stream", "name"]
        delivered = CounterMetricFamily("posestream_frames_delivered", "Frames taken from the source", labels=labels)
        processed = CounterMetricFamily("posestream_frames_processed", "Frames through the outputs", labels=labels)
        people = CounterMetricFamily("posestream_people", "People output", labels=labels)
        dropped = CounterMetricFamily("posestream_frames_dropped", "Frames dropped, by reason",
                                      labels=labels + ["reason"])
        decode_errors = CounterMetricFamily("posestream_decode_errors", "Corrupt or undecodable data skipped",
                                            labels=labels)
        reconnects = CounterMetricFamily("posestream_reconnects", "Live source reconnections", labels=labels)
        connect_failures = CounterMetricFamily("posestream_connect_failures",
                                               "Live source connection attempts that failed", labels=labels)
        gaps = CounterMetricFamily("posestream_gaps", "Live source outages after frames had come", labels=labels)
        fps = GaugeMetricFamily("posestream_stream_fps", "Frames per second since the stream started", labels=labels)
        state = GaugeMetricFamily("posestream_stream_state", "1 for the stream's current state",
                                  labels=labels + ["state"])
        depth = GaugeMetricFamily("posestream_queue_depth", "Frames waiting in a queue", labels=["queue"])
        age = GaugeMetricFamily("posestream_frame_age_seconds", "Capture to output, over recent frames",
                                labels=labels + ["quantile"])
        processing = GaugeMetricFamily("posestream_frame_processing_seconds",
                                       "Taken from the stream queue to output, over recent frames",
                                       labels=labels + ["quantile"])
        latency = GaugeMetricFamily("posestream_stage_latency_seconds", "Stage latency over recent samples",
                                    labels=["stage", "quantile"])
        for s in snapshot.streams:
            ids = [str(s.index), s.name]
            delivered.add_metric(ids, s.delivered)
            processed.add_metric(ids, s.processed)
            people.add_metric(ids, s.people)
            for reason, count in s.dropped.items():
                dropped.add_metric(ids + [reason], count)
            decode_errors.add_metric(ids, s.decode_errors)
            reconnects.add_metric(ids, s.reconnects)
            connect_failures.add_metric(ids, s.connect_failures)
            gaps.add_metric(ids, s.gaps)
            fps.add_metric(ids, s.fps)
            for name in STREAM_STATES:
                state.add_metric(ids + [name], 1.0 if s.state == name else 0.0)
            depth.add_metric([f"stream:{s.index}"], s.queue_depth)
            for family, values in ((age, s.age), (processing, s.processing)):
                if values is not None:
                    for quantile, value in zip(QUANTILE_LABELS, values):
                        family.add_metric(ids + [quantile], value)
        for name, value in snapshot.queue_depths.items():
            depth.add_metric([name], value)
        for stage, values in snapshot.stages.items():
            if values is not None:
                for quantile, value in zip(QUANTILE_LABELS, values):
                    latency.add_metric([stage, quantile], value)
        yield from (delivered, processed, people, dropped, decode_errors, reconnects, connect_failures, gaps, fps,
                    state, depth, age, processing, latency)


def _ms(values: tuple[float, float] | None) -> str:
    return "-" if values is None else f"{1000 * values[0]:.0f}/{1000 * values[1]:.0f}"


def format_table(snapshot: RuntimeSnapshot) -> str:
    """A compact multi-line table: one line of stage latencies, then one line per stream."""
    stages = "  ".join(f"{stage} {_ms(snapshot.stages[stage])}" for stage in STAGES)
    lines = [f"posestream {snapshot.elapsed:7.1f} s  stage p50/p99 ms: {stages}",
             f"{'stream':<24} {'state':<10} {'fps':>6} {'frames':>7} {'dropped':>7} {'age ms':>9} "
             f"{'queue':>5} {'errors':>6} {'reconn':>6}"]
    for s in snapshot.streams:
        label = f"{s.index} {s.name}"[:24]
        lines.append(f"{label:<24} {s.state:<10} {s.fps:6.1f} {s.processed:7d} {sum(s.dropped.values()):7d} "
                     f"{_ms(s.age):>9} {s.queue_depth:5d} {s.decode_errors:6d} {s.reconnects:6d}")
    return "\n".join(lines)


class StatsPrinter:
    """Prints ``format_table`` to stderr every ``interval`` seconds from a daemon thread, until closed."""

    def __init__(self, metrics: RuntimeMetrics, interval: float,
                 out: Callable[[], object] = lambda: sys.stderr) -> None:
        if not interval > 0:
            raise ValueError(f"stats interval must be > 0, got {interval}")
        self._metrics = metrics
        self._interval = interval
        self._out = out  # looked up per print, so a redirected stderr is honoured
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="posestream-stats", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            print(format_table(self._metrics.snapshot()), file=self._out(), flush=True)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


class MetricsServer:
    """``/metrics`` (Prometheus text) and ``/healthz`` (200, JSON stream states) on ``host:port``.

    Port 0 picks a free port; ``port`` tells which. Serves from daemon threads until ``close()``.
    """

    def __init__(self, metrics: RuntimeMetrics, port: int, host: str = "127.0.0.1") -> None:
        def prometheus_text() -> tuple[bytes, str]:
            return generate_latest(metrics.registry), CONTENT_TYPE_LATEST

        def health() -> tuple[bytes, str]:
            return json.dumps(metrics.health()).encode(), "application/json"

        routes = {"/metrics": prometheus_text, "/healthz": health}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the name http.server calls)
                route = routes.get(self.path.split("?", 1)[0])
                if route is None:
                    self.send_error(404, "not found: try /metrics or /healthz")
                    return
                body, content_type = route()
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args) -> None:  # noqa: A002 (the signature http.server uses)
                """Scrapes are routine; keep them off stderr, where the summary goes."""

        try:
            self._server = ThreadingHTTPServer((host, port), Handler)
        except OSError as error:
            raise PosestreamError(f"{host}:{port}", f"cannot serve metrics: {error.strerror or error}") from None
        self._server.daemon_threads = True
        self.host = host
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="posestream-metrics", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
