"""The multi-stream stage graph: many sources, one network, outputs per stream, all running at once.

    decode (a thread per stream) -> stream queue (bounded, one per stream)
        -> batcher + inference (one thread: takes frames round-robin across streams, up to ``batch_size``,
           waiting at most ``batch_wait_ms`` once a batch is started; calls the estimator)
        -> post queue (bounded, one per stream) -> post (a thread per stream: tracker, then the stream's sinks)

Threads overlap because decoding (FFmpeg), inference (ONNX Runtime, OpenVINO) and the Numba parse release
the GIL. Each stream queue has a drop policy declared by the kind of source (``RuntimeConfig.queue_policy``):
a live source drops its oldest queued frame when inference falls behind (counted ``stale``), so latency
stays bounded; a file or image source makes its decoder wait, so nothing is lost. Post queues always wait.

Outputs are sinks (``posestream.pipeline.sinks.base.Sink``). Each stream writes, in this order, to: its
JSON-lines file (``StreamSpec.out_jsonl``, one ``SharedJsonlSink`` per file, shared by the streams naming
it), its overlay (``StreamSpec.overlay``, an ``OverlaySink`` of its own), the runtime's extra sinks
(``Runtime(sinks=...)``, for every stream), then its own extra sinks (``StreamSpec.sinks``). A sink named
twice for one stream is written once.

Streams are isolated: a source that cannot be opened, a decode thread that raises, a sink that raises, or
an estimator error on a stream's frames fails that stream alone (its error is reported and its queued
frames are counted as dropped); the others run on. Live sources reconnect inside the source, per its
``SourceConfig``. A stream's tracker and its sinks' state for it exist from its first frame to its end.

Every frame is accounted for: once the runtime has finished, each stream's delivered frames equal its
processed frames plus its dropped frames (by reason, see ``posestream.pipeline.runtime.metrics.DROP_REASONS``).
``request_stop`` (from a signal handler, say) stops every source, then everything already decoded is
processed and every output flushed and closed before ``wait`` returns.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from queue import Queue
from typing import Callable, Sequence

import numpy as np

from posestream.pipeline.core.errors import PosestreamError
from posestream.pipeline.core.types import Frame, Person
from posestream.pipeline.runtime.metrics import RuntimeMetrics, StreamMetrics
from posestream.pipeline.runtime.outputs import OutputPlan, OverlayTarget, plan_outputs
from posestream.pipeline.sinks.base import Sink, StreamInfo
from posestream.pipeline.sinks.jsonl import SharedJsonlSink
from posestream.pipeline.sinks.overlay import OverlaySink
from posestream.pipeline.sinks.video import check_video_output
from posestream.pipeline.sources.readers import FrameSource, SourceConfig, SourceStats, open_source
from posestream.pipeline.tracking.tracker import PoseTracker, TrackerConfig

Estimate = Callable[[list[np.ndarray]], list[list[Person]]]
# An estimator that keeps per-stream state (top-down's carried boxes) sets ``wants_stream_keys = True``: it is
# then called as ``estimate(images, streams=[key per image])`` and told ``estimate.end_stream(index)`` after a
# stream's last frame. The key is the stream's index for a video stream, whose frames always reach it in order,
# and None for image and folder streams, whose pictures are unrelated (no state carries between them).
DEFAULT_FPS = 25.0  # for overlay videos and pacing of sources that carry no frame rate


@dataclass(frozen=True)
class QueuePolicy:
    capacity: int
    drop_oldest: bool  # full queue: True drops the oldest frame (counted stale), False makes the producer wait


@dataclass(frozen=True)
class RuntimeConfig:
    """How the graph runs; one for all streams."""

    batch_size: int = 1  # most frames per estimator call, taken across streams
    batch_wait_ms: float = 10.0  # how long a started batch waits for more frames before it goes
    queue_size: int = 8  # frames buffered per file or image stream
    live_queue_size: int = 1  # frames buffered per live stream: the newest frame waits, older ones are dropped
    post_queue_size: int = 4  # frames buffered per stream between inference and outputs
    tracking: TrackerConfig | None = TrackerConfig()  # None: no tracking; video streams only either way

    def __post_init__(self) -> None:
        for name in ("batch_size", "queue_size", "live_queue_size", "post_queue_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise PosestreamError(name, f"must be a positive integer, got {value!r}")
        if not self.batch_wait_ms >= 0:
            raise PosestreamError("batch_wait_ms", f"must be >= 0, got {self.batch_wait_ms!r}")

    def queue_policy(self, live: bool) -> QueuePolicy:
        """Live sources drop their oldest frame (latency bounded); files and images block (nothing lost)."""
        if live:
            return QueuePolicy(self.live_queue_size, drop_oldest=True)
        return QueuePolicy(self.queue_size, drop_oldest=False)


@dataclass(frozen=True)
class StreamSpec:
    """One stream: what to read, how, and where its results go."""

    source: str  # a video file or URL, an image, or a folder of images
    name: str = ""  # label in metrics and the summary; "" = the source's file name
    source_config: SourceConfig = SourceConfig()
    out_jsonl: str | None = None  # JSON lines file ("-" = stdout); streams naming the same file share it
    overlay: OverlayTarget | None = None
    sinks: tuple[Sink, ...] = ()  # extra sinks of this stream, after the JSON lines and the overlay
    live: bool | None = None  # None: as the source says; True makes a file behave as a live source
    pace: bool = False  # deliver a file's frames at their timestamps, as a camera would

    @property
    def label(self) -> str:
        return self.name or Path(self.source).name or self.source


@dataclass(frozen=True)
class QueuedFrame:
    frame: Frame
    captured: float  # time.monotonic() when the decode stage got it: frame age is measured from here
    taken: float | None = None  # when the batcher took it from its stream queue: processing time from here


BatchEntry = tuple[int, QueuedFrame]  # (stream index, frame)

@dataclass(frozen=True)
class StreamResult:
    """What one stream did, once the runtime has finished."""

    index: int
    spec: StreamSpec
    state: str  # "ended" or "failed"
    error: str | None
    delivered: int
    processed: int
    dropped: dict[str, int]
    people: int
    seconds: float
    kind: str | None  # the source's kind ("video", "image", "folder"); None if it never opened
    skipped_corrupt: int
    skipped_out_of_order: int
    decode_errors: int
    reconnects: int
    connect_failures: int
    gaps: int
    tracks: int | None  # track IDs handed out; None when not tracked


class StreamQueue:
    """One stream's frames between its decode thread and the batcher, guarded by the shared ``hub``.

    The policy is set when the source has opened (it depends on whether the source is live).
    """

    def __init__(self, hub: threading.Condition, metrics: StreamMetrics) -> None:
        self._hub = hub
        self._metrics = metrics
        self._items: deque[QueuedFrame] = deque()
        self.policy = QueuePolicy(1, drop_oldest=False)
        self.closed = False
        self.discarding = False  # the stream failed: what is queued and what comes is dropped

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: QueuedFrame) -> None:
        with self._hub:
            while len(self._items) >= self.policy.capacity and not self.policy.drop_oldest and not self.discarding:
                self._hub.wait()
            if self.discarding:
                self._metrics.count_dropped("stream_failed")
                return
            if len(self._items) >= self.policy.capacity:
                self._items.popleft()
                self._metrics.count_dropped("stale")
            self._items.append(item)
            self._hub.notify_all()

    def take(self) -> QueuedFrame | None:
        """The oldest frame, or None; the caller holds the hub."""
        if not self._items:
            return None
        item = self._items.popleft()
        self._hub.notify_all()  # a decoder may be waiting for room
        return item

    def close(self) -> None:
        with self._hub:
            self.closed = True
            self._hub.notify_all()

    def discard(self) -> None:
        with self._hub:
            self.discarding = True
            if self._items:
                self._metrics.count_dropped("stream_failed", len(self._items))
                self._items.clear()
            self._hub.notify_all()

    @property
    def finished(self) -> bool:
        return self.closed and not self._items


class Batcher:
    """Takes frames from the stream queues into batches, fairly: one frame per stream per round, resuming
    with the stream after the last one served. A batch goes when full, when ``max_wait`` has passed since
    its first frame, or when no queue can bring more frames."""

    def __init__(self, hub: threading.Condition, queues: Sequence[StreamQueue], max_batch: int, max_wait: float,
                 observe: Callable[[str, float], None] | None = None) -> None:
        self._hub = hub
        self._queues = list(queues)
        self._max_batch = max_batch
        self._max_wait = max_wait
        self._observe = observe
        self._cursor = 0
        self._reported_end = [False] * len(self._queues)

    def _take_round_robin(self, batch: list[BatchEntry]) -> None:
        count = len(self._queues)
        while len(batch) < self._max_batch:
            took = False
            for offset in range(count):
                stream = (self._cursor + offset) % count
                item = self._queues[stream].take()
                if item is not None:
                    batch.append((stream, dataclasses.replace(item, taken=time.monotonic())))
                    took = True
                    if len(batch) == self._max_batch:
                        self._cursor = (stream + 1) % count
                        return
            if not took:
                return

    def _newly_ended(self) -> list[int]:
        ended = []
        for stream, queue in enumerate(self._queues):
            if queue.finished and not self._reported_end[stream]:
                self._reported_end[stream] = True
                ended.append(stream)
        return ended

    def next_batch(self) -> tuple[list[BatchEntry], list[int]] | None:
        """(frames as (stream, item), streams that ended with or before these frames), or None at the end."""
        with self._hub:
            batch: list[BatchEntry] = []
            first_taken: float | None = None
            while True:
                self._take_round_robin(batch)
                if batch and first_taken is None:
                    first_taken = time.monotonic()
                all_finished = all(queue.finished for queue in self._queues)
                if len(batch) >= self._max_batch or (batch and all(q.closed for q in self._queues)):
                    break
                if batch:
                    remaining = first_taken + self._max_wait - time.monotonic()
                    if remaining <= 0:
                        break
                    self._hub.wait(remaining)
                elif all_finished:
                    ended = self._newly_ended()
                    return ([], ended) if ended else None
                else:
                    ended = self._newly_ended()
                    if ended:  # let the ended streams' outputs close now, not at the end of the run
                        return [], ended
                    self._hub.wait(0.5)
            ended = self._newly_ended()
        if self._observe is not None and first_taken is not None:
            self._observe("batch", time.monotonic() - first_taken)
        return batch, ended


_END = object()  # end of a stream on its post queue


class _Stream:
    """Everything the runtime keeps for one stream while it runs."""

    def __init__(self, index: int, spec: StreamSpec, metrics: StreamMetrics, hub: threading.Condition,
                 post_queue_size: int) -> None:
        self.index = index
        self.spec = spec
        self.metrics = metrics
        self.queue = StreamQueue(hub, metrics)
        self.inbox: Queue = Queue(maxsize=post_queue_size)
        self.stop = threading.Event()
        self.failed = threading.Event()
        self.source: FrameSource | None = None
        self.kind: str | None = None
        self.fps: float | None = None
        self.source_stats: SourceStats | None = None
        self.outputs_started = False
        self.tracker: PoseTracker | None = None
        self.sinks: list[tuple[str, Sink]] = []  # (name in held_resources, sink), in writing order; set at start
        self.info: StreamInfo | None = None  # what the sinks are told about this stream, from its first frame
        self.open_sinks: list[tuple[str, Sink]] = []  # those whose open_stream returned, until the stream ends
        self.tracks: int | None = None
        self.fail_lock = threading.Lock()


class Runtime:
    """The stage graph for ``streams``: ``start()``, then ``wait()``; ``request_stop()`` from anywhere.

    ``estimate`` is called from one thread only (the inference stage), with stream keys when it sets
    ``wants_stream_keys`` (see ``Estimate``). ``notify`` receives one line per stream failure, as it happens
    (the CLI prints it). ``sinks`` are written for every stream, after each stream's JSON lines and overlay
    (see the module docstring); the runtime calls ``close()`` on each sink once, when the run is over.
    ``inputs`` are (path, role) of files the run reads besides its sources, such as the model: no output may
    write over them (``posestream.pipeline.runtime.outputs``).
    """

    def __init__(self, streams: Sequence[StreamSpec], estimate: Estimate, config: RuntimeConfig = RuntimeConfig(),
                 metrics: RuntimeMetrics | None = None, notify: Callable[[str], None] | None = None,
                 sinks: Sequence[Sink] = (), inputs: Sequence[tuple[str, str]] = ()) -> None:
        if not streams:
            raise PosestreamError("streams", "no streams to run")
        self.config = config
        self.specs = tuple(streams)
        self._extra_sinks = tuple(sinks)
        _check_sinks("sinks", self._extra_sinks)
        for index, spec in enumerate(self.specs):
            _check_sinks(f"streams[{index}].sinks", spec.sinks)
        self.metrics = metrics or RuntimeMetrics([(spec.label, spec.source) for spec in self.specs])
        if len(self.metrics.streams) != len(self.specs):
            raise ValueError("metrics were made for a different number of streams")
        self._estimate = estimate
        self._stream_keys = bool(getattr(estimate, "wants_stream_keys", False))
        self._notify = notify or (lambda message: None)
        self._hub = threading.Condition()
        self._stop = threading.Event()
        self._streams = [_Stream(i, spec, self.metrics.streams[i], self._hub, config.post_queue_size)
                         for i, spec in enumerate(self.specs)]
        for stream in self._streams:
            stream.metrics.queue_depth = stream.queue.__len__
            self.metrics.queue_readers[f"post:{stream.index}"] = stream.inbox.qsize
        self._inputs = tuple(inputs)
        self._plan: OutputPlan | None = None
        self._sinks: list[Sink] = []  # every sink of the run, once each: each is closed once at the end
        self._threads: list[threading.Thread] = []
        self._started = False

    # ---------------------------------------------------------------------------------------------- control

    def start(self) -> None:
        """Make the streams' sinks (a bad JSON-lines path is an error here, before any thread), then start
        every stage. When that fails, every sink is closed, the caller's extra sinks too."""
        if self._started:
            raise RuntimeError("a Runtime starts once")
        self._started = True
        try:
            self._plan = plan_outputs(self.specs, self._inputs)
            self._make_sinks()
        except PosestreamError:
            # The bad path is the error to report; a failure closing the others would only hide it.
            self._close_sinks()
            raise
        batcher = Batcher(self._hub, [s.queue for s in self._streams], self.config.batch_size,
                          self.config.batch_wait_ms / 1000.0, self.metrics.observe)
        for stream in self._streams:
            self._threads.append(threading.Thread(target=self._decode, args=(stream,), daemon=True,
                                                  name=f"posestream-decode-{stream.index}"))
            self._threads.append(threading.Thread(target=self._post, args=(stream,), daemon=True,
                                                  name=f"posestream-post-{stream.index}"))
        self._threads.append(threading.Thread(target=self._infer, args=(batcher,), daemon=True,
                                              name="posestream-inference"))
        for thread in self._threads:
            thread.start()

    def request_stop(self) -> None:
        """Stop reading every source; what was read is still processed. Safe from any thread or signal handler."""
        self._stop.set()
        for stream in self._streams:
            self._stop_source(stream)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every stage is done (True), or ``timeout`` seconds (False). Closes every sink at the end;
        a sink whose ``close()`` raises (a full disk flushing the JSON lines) fails the streams it served, with
        its error, so that the results still say what every stream did."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            while thread.is_alive():  # short joins: the main thread stays responsive to signals
                if deadline is not None and time.monotonic() >= deadline:
                    return False
                thread.join(0.1)
        sinks = list(self._sinks)
        for sink, error in zip(sinks, self._close_sinks()):
            if error is None:
                continue
            for stream in self._streams:
                if any(sink is own for _, own in stream.sinks):
                    self._fail(stream, _output_failure(stream.spec, error))
        return True

    def pending(self) -> tuple[int, int]:
        """(frames read but not yet through the outputs, outputs still open): what a stop is waiting for."""
        frames = sum(s.delivered - s.processed - sum(s.dropped.values()) for s in self.metrics.snapshot().streams)
        open_outputs = {id(sink) for stream in self._streams for _, sink in list(stream.open_sinks)}
        return max(frames, 0), len(open_outputs)

    def run(self) -> list[StreamResult]:
        self.start()
        self.wait()
        return self.results()

    def results(self) -> list[StreamResult]:
        results = []
        for stream, snapshot in zip(self._streams, self.metrics.snapshot().streams):
            stats = stream.source_stats
            results.append(StreamResult(
                index=stream.index, spec=stream.spec, state=snapshot.state, error=snapshot.error,
                delivered=snapshot.delivered, processed=snapshot.processed, dropped=snapshot.dropped,
                people=snapshot.people, seconds=snapshot.seconds, kind=stream.kind,
                skipped_corrupt=0 if stats is None else stats.skipped_corrupt,
                skipped_out_of_order=0 if stats is None else stats.skipped_out_of_order,
                decode_errors=snapshot.decode_errors, reconnects=snapshot.reconnects,
                connect_failures=snapshot.connect_failures, gaps=snapshot.gaps, tracks=stream.tracks))
        return results

    def held_resources(self, index: int) -> list[str]:
        """What stream ``index`` holds right now: "source", "tracker", and each sink open for it ("jsonl",
        "overlay", an extra sink's class name); empty once it ended."""
        stream = self._streams[index]
        held = [name for name, value in [("source", stream.source), ("tracker", stream.tracker)] if value is not None]
        return held + [name for name, _ in list(stream.open_sinks)]  # a copy: the post thread changes the list

    # ---------------------------------------------------------------------------------------------- failures

    def _stop_source(self, stream: _Stream) -> None:
        stream.stop.set()
        source = stream.source  # read once: the decode thread sets it back to None when it is done
        if source is not None:
            source.request_stop()

    def _fail(self, stream: _Stream, message: str) -> None:
        """Fail one stream: report once, stop its source, drop what it has queued; other streams go on."""
        with stream.fail_lock:
            if stream.failed.is_set():
                return
            stream.failed.set()
        stream.metrics.set_state("failed", message)
        self._notify(message)
        self._stop_source(stream)
        stream.queue.discard()

    # ---------------------------------------------------------------------------------------------- stages

    def _decode(self, stream: _Stream) -> None:
        spec = stream.spec
        try:
            if stream.stop.is_set():
                return
            source = open_source(spec.source, stream.index, spec.source_config)
            with source:
                stream.source, stream.kind, stream.fps = source, source.kind, source.fps
                stream.source_stats = stream.metrics.source_stats = source.stats
                live = spec.live if spec.live is not None else source.live
                stream.queue.policy = self.config.queue_policy(live)
                if stream.stop.is_set():  # a stop that came while the source was opening
                    self._stop_source(stream)
                self._read(stream, source)
        except PosestreamError as error:
            self._fail(stream, str(error))
        except Exception as error:  # a decoder bug or an I/O error PyAV did not wrap: this stream only
            self._fail(stream, f"{spec.source}: decoding stopped: {type(error).__name__}: {error}")
        finally:
            stream.source = None
            stream.queue.close()

    def _read(self, stream: _Stream, source: FrameSource) -> None:
        frames = iter(source)
        paced_from: tuple[float, float] | None = None  # (wall clock, pts) of the first frame
        first = True
        while not stream.stop.is_set():
            started = time.monotonic()
            frame = next(frames, None)
            if frame is None:
                return
            self.metrics.observe("decode", time.monotonic() - started)
            if stream.spec.pace:
                when = frame.pts if frame.pts is not None else frame.index / (stream.fps or DEFAULT_FPS)
                if paced_from is None:
                    paced_from = (time.monotonic(), when)
                delay = paced_from[0] + (when - paced_from[1]) - time.monotonic()
                if delay > 0:
                    stream.stop.wait(delay)  # a stop cuts the wait short; the frame in hand is still processed
            if first:  # a live source knows its frame rate once the first frame came
                first = False
                stream.fps = source.fps
                stream.metrics.set_state("ok")
            stream.metrics.count_delivered()
            stream.queue.put(QueuedFrame(frame, time.monotonic()))

    def _infer(self, batcher: Batcher) -> None:
        ended_streams: set[int] = set()
        try:
            while True:
                taken = batcher.next_batch()
                if taken is None:
                    return
                batch, ended = taken
                now = time.monotonic()
                for _, item in batch:
                    self.metrics.observe("queue", now - item.captured)
                for (stream_index, item), people in self._estimate_isolated(batch):
                    self._streams[stream_index].inbox.put((item, people))
                for stream_index in ended:
                    ended_streams.add(stream_index)
                    if self._stream_keys:
                        self._estimate.end_stream(stream_index)  # type: ignore[attr-defined]
                    self._streams[stream_index].inbox.put(_END)
        except Exception as error:  # a bug in the graph itself: fail every stream rather than hang
            for stream in self._streams:
                self._fail(stream, f"{stream.spec.source}: runtime error: {type(error).__name__}: {error}")
            raise
        finally:
            for stream in self._streams:
                if stream.index not in ended_streams:
                    stream.inbox.put(_END)

    def _estimate_isolated(self, batch: list[BatchEntry]) -> list[tuple[BatchEntry, list[Person]]]:
        """(entry, people) per frame. If the estimator raises on a batch, each stream's frames are tried on
        their own, so one stream's bad frames fail that stream only (dropped as inference_failed)."""
        if not batch:
            return []
        started = time.monotonic()
        try:
            people = self._call_estimate(batch)
        except Exception as error:
            first_error = error
        else:
            self.metrics.observe("inference", time.monotonic() - started)
            return list(zip(batch, people))
        streams = list(dict.fromkeys(stream for stream, _ in batch))
        if len(streams) == 1:
            self._fail_inference(batch, first_error)
            return []
        done = []
        for stream_index in streams:
            part = [entry for entry in batch if entry[0] == stream_index]
            try:
                people = self._call_estimate(part)
            except Exception as error:
                self._fail_inference(part, error)
                continue
            done.extend(zip(part, people))
        return done

    def _call_estimate(self, entries: list[BatchEntry]) -> list[list[Person]]:
        images = [item.frame.image for _, item in entries]
        if self._stream_keys:
            keys = [stream if self._streams[stream].kind == "video" else None for stream, _ in entries]
            return self._estimate(images, streams=keys)  # type: ignore[call-arg]
        return self._estimate(images)

    def _fail_inference(self, part: list[BatchEntry], error: Exception) -> None:
        stream = self._streams[part[0][0]]
        reason = str(error) if isinstance(error, PosestreamError) else f"{type(error).__name__}: {error}"
        stream.metrics.count_dropped("inference_failed", len(part))
        self._fail(stream, f"{stream.spec.source}: inference failed: {reason}")

    def _post(self, stream: _Stream) -> None:
        try:
            while True:
                entry = stream.inbox.get()
                if entry is _END:
                    return
                item, people = entry
                if stream.failed.is_set():
                    stream.metrics.count_dropped("stream_failed")
                    continue
                started = time.monotonic()
                try:
                    people = self._output(stream, item.frame, people)
                except Exception as error:
                    stream.metrics.count_dropped("stream_failed")
                    self._fail(stream, _output_failure(stream.spec, error))
                    continue
                now = time.monotonic()
                self.metrics.observe("post", now - started)
                stream.metrics.count_processed(len(people), age=now - item.captured, processing=now - item.taken)
        finally:
            self._end_stream(stream)

    def _output(self, stream: _Stream, frame: Frame, people: list[Person]) -> list[Person]:
        """Track, then write to every sink of the stream; returns the people as tracked."""
        if not stream.outputs_started:  # the stream's first frame: its per-stream state starts here
            stream.outputs_started = True
            if self.config.tracking is not None and stream.kind == "video":
                stream.tracker = PoseTracker(self.config.tracking, fps=stream.fps)
            stream.info = StreamInfo(index=stream.index, label=stream.spec.label, source=stream.spec.source,
                                     kind=stream.kind or "video", fps=stream.fps)
            for name, sink in stream.sinks:
                sink.open_stream(stream.info)
                stream.open_sinks.append((name, sink))
        if stream.tracker is not None:
            people = stream.tracker.update(people, frame.pts)
        people_for_sinks = tuple(people)  # a tuple: no sink can change the people the next sink sees
        for _, sink in stream.sinks:
            sink.write(stream.info, frame, people_for_sinks)
        return people

    def _end_stream(self, stream: _Stream) -> None:
        """Free the stream's state: close it in each of its open sinks (an mp4 is finished here), drop its
        tracker. A sink that fails to close fails the stream; the other sinks are closed all the same."""
        for _, sink in stream.open_sinks:
            try:
                sink.close_stream(stream.info)
            except Exception as error:
                self._fail(stream, _output_failure(stream.spec, error))
        stream.open_sinks = []
        tracker, stream.tracker = stream.tracker, None
        if tracker is not None:
            stream.tracks = tracker.ids_issued
        stream.metrics.set_state("ended")

    def _make_sinks(self) -> None:
        """Each stream's sinks, in writing order; streams naming one JSON-lines file share its sink."""
        for sink in self._extra_sinks + tuple(sink for spec in self.specs for sink in spec.sinks):
            if not any(sink is already for already in self._sinks):  # by identity: sinks need not be hashable
                self._sinks.append(sink)
        jsonl_by_path: dict[str, SharedJsonlSink] = {}
        for stream in self._streams:
            spec = stream.spec
            named: list[tuple[str, Sink]] = []
            if spec.out_jsonl:
                if spec.out_jsonl not in jsonl_by_path:
                    jsonl_by_path[spec.out_jsonl] = SharedJsonlSink(spec.out_jsonl)  # opens the file: may raise
                    self._sinks.append(jsonl_by_path[spec.out_jsonl])
                named.append(("jsonl", jsonl_by_path[spec.out_jsonl]))
            if spec.overlay is not None:
                if stream.index in self._plan.videos:
                    check_video_output(self._plan.videos[stream.index])  # a bad extension fails now, not at frame 1
                # A video source writes its own (de-duplicated) file; image and folder sources the folder given.
                overlay = OverlaySink(video_path=self._plan.videos.get(stream.index, spec.overlay.path),
                                      image_folder=spec.overlay.path, default_fps=DEFAULT_FPS,
                                      image_names=self._plan.images.get(stream.index))
                self._sinks.append(overlay)
                named.append(("overlay", overlay))
            for sink in self._extra_sinks + spec.sinks:
                if not any(sink is already for _, already in named):
                    named.append((type(sink).__name__, sink))
            stream.sinks = named

    def _close_sinks(self) -> list[Exception | None]:
        """Close every sink once (the first call only); returns what each raised (None: closed), in order."""
        sinks, self._sinks = self._sinks, []
        errors: list[Exception | None] = []
        for sink in sinks:
            try:
                sink.close()
            except Exception as error:
                errors.append(error)
            else:
                errors.append(None)
        return errors


def _check_sinks(where: str, sinks: Sequence[Sink]) -> None:
    """Reject what is not a sink when it is given, rather than at a stream's first frame."""
    for sink in sinks:
        if not isinstance(sink, Sink):
            raise TypeError(f"{where}: {sink!r} is not a sink: it needs open_stream, write, close_stream and close")


def _output_failure(spec: StreamSpec, error: Exception) -> str:
    """The line that reports a sink's error: a PosestreamError names its path itself; anything else is
    named with the stream's source and the exception's type."""
    if isinstance(error, PosestreamError):
        return str(error)
    return f"{spec.source}: output failed: {type(error).__name__}: {error}"
