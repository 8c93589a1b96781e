"""The multi-stream stage graph (pipeline/runtime/graph.py) on real videos written here, the tiny ONNX model on
ONNX Runtime, and real outputs: ordering, batching across streams, drop policies, isolation of failing streams,
per-stream state, the live latency bound, sinks (order of calls, a raising sink), and SIGINT/SIGTERM on a real
``posestream run`` subprocess."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from posestream.pipeline.core.types import Frame
from posestream.pipeline.runtime.graph import (
    Batcher,
    OverlayTarget,
    QueuedFrame,
    QueuePolicy,
    Runtime,
    RuntimeConfig,
    StreamQueue,
    StreamSpec,
)
from posestream.pipeline.runtime.metrics import RuntimeMetrics, StreamMetrics
from posestream.pipeline.runtime.run import RunConfig, print_summary, run_streams
from posestream.pipeline.sinks.base import StreamInfo
from posestream.pipeline.sinks.callback import CallbackSink
from posestream.pipeline.sinks.records import person_record
from posestream.pipeline.sources.readers import SourceConfig
from posestream.pipeline.tracking.tracker import TrackerConfig
from tests.helpers.videos import count_video_frames, read_jsonl, write_video


class RecordingEstimator:
    """The real estimator, recording the image sizes of each call (streams here have distinct sizes)."""

    def __init__(self, estimate, delay: float = 0.0, fail_on_size: tuple[int, int] | None = None) -> None:
        self._estimate = estimate
        self._delay = delay
        self._fail_on_size = fail_on_size
        self.calls: list[list[tuple[int, int]]] = []

    def __call__(self, images):
        sizes = [image.shape[:2] for image in images]
        self.calls.append(sizes)
        if self._fail_on_size is not None and self._fail_on_size in sizes:
            raise ValueError(f"no model for {self._fail_on_size[1]}x{self._fail_on_size[0]}")
        if self._delay:
            time.sleep(self._delay)  # a slow network, so that live sources outrun inference
        return self._estimate(images)


def check_accounting(results) -> None:
    for result in results:
        assert result.delivered == result.processed + sum(result.dropped.values()), result


# --------------------------------------------------------------------------------------------------------------
# The whole graph on files
# --------------------------------------------------------------------------------------------------------------


def test_every_frame_processed_once_in_order_across_streams(tmp_path, estimator):
    sizes = [(120, 160), (144, 192), (96, 128)]
    lengths = [12, 7, 9]
    videos = [write_video(tmp_path / f"v{i}.mp4", n, width=w, height=h)
              for i, (n, (h, w)) in enumerate(zip(lengths, sizes))]
    jsonl = tmp_path / "people.jsonl"
    specs = [StreamSpec(str(video), out_jsonl=str(jsonl)) for video in videos]
    recorder = RecordingEstimator(estimator)
    runtime = Runtime(specs, recorder, RuntimeConfig(batch_size=4, batch_wait_ms=50, queue_size=3))
    results = runtime.run()

    records = read_jsonl(jsonl)
    for stream, length in enumerate(lengths):
        assert [r["frame"] for r in records if r["stream"] == stream] == list(range(length))
        assert {r["source"] for r in records if r["stream"] == stream} == {str(videos[stream])}
    assert [(r.state, r.processed, r.delivered, r.kind) for r in results] == \
        [("ended", n, n, "video") for n in lengths]
    check_accounting(results)
    assert sum(len(call) for call in recorder.calls) == sum(lengths)
    assert max(len(call) for call in recorder.calls) == 4
    # Frames of different streams went through the network together.
    assert any(len(set(call)) > 1 for call in recorder.calls)
    assert all(runtime.held_resources(i) == [] for i in range(len(specs)))


def test_overlays_of_several_streams_into_one_folder(tmp_path, estimator):
    """Two streams of the same file name get two overlay videos, each with all its frames."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = write_video(tmp_path / "a" / "cam.mp4", 6)
    second = write_video(tmp_path / "b" / "cam.mp4", 4)
    overlays = tmp_path / "overlays"
    specs = [StreamSpec(str(video), overlay=OverlayTarget(str(overlays), folder=True)) for video in (first, second)]
    results = Runtime(specs, estimator, RuntimeConfig(batch_size=2)).run()
    assert [r.state for r in results] == ["ended", "ended"]
    assert sorted(p.name for p in overlays.iterdir()) == ["cam-0.mp4", "cam-1.mp4"]
    assert count_video_frames(overlays / "cam-0.mp4") == 6
    assert count_video_frames(overlays / "cam-1.mp4") == 4


# --------------------------------------------------------------------------------------------------------------
# Batcher and queues on their own
# --------------------------------------------------------------------------------------------------------------


def queued(stream: int, index: int) -> QueuedFrame:
    frame = Frame(stream=stream, source=f"s{stream}", index=index, pts=None, image=np.zeros((2, 2, 3), np.uint8))
    return QueuedFrame(frame, time.monotonic())


def make_queues(hub: threading.Condition, counts: list[int], policy: QueuePolicy = QueuePolicy(100, False)):
    queues = []
    for stream, count in enumerate(counts):
        queue = StreamQueue(hub, StreamMetrics(stream, f"s{stream}", f"s{stream}"))
        queue.policy = policy
        for index in range(count):
            queue.put(queued(stream, index))
        queues.append(queue)
    return queues


def test_batcher_takes_streams_round_robin():
    hub = threading.Condition()
    queues = make_queues(hub, [6, 6, 2])
    for queue in queues:
        queue.close()
    batcher = Batcher(hub, queues, max_batch=4, max_wait=1.0)
    batches = []
    while (taken := batcher.next_batch()) is not None:
        batch, _ = taken
        if batch:
            batches.append([(stream, item.frame.index) for stream, item in batch])
    assert batches[0] == [(0, 0), (1, 0), (2, 0), (0, 1)]
    assert batches[1] == [(1, 1), (2, 1), (0, 2), (1, 2)]  # resumes after the stream served last
    assert batches[2] == [(0, 3), (1, 3), (0, 4), (1, 4)]  # stream 2 is empty: the others share the batch
    assert batches[3] == [(0, 5), (1, 5)]  # no more frames can come: goes at once, not full
    for stream, count in enumerate([6, 6, 2]):  # every frame once, in order
        assert [i for batch in batches for s, i in batch if s == stream] == list(range(count))


def test_batcher_waits_at_most_max_wait_for_a_full_batch():
    hub = threading.Condition()
    queues = make_queues(hub, [1, 0])
    batcher = Batcher(hub, queues, max_batch=4, max_wait=0.15)
    started = time.monotonic()
    batch, ended = batcher.next_batch()
    waited = time.monotonic() - started
    assert [(s, item.frame.index) for s, item in batch] == [(0, 0)] and ended == []
    assert 0.14 <= waited < 0.6, waited

    # A frame that arrives during the wait joins the batch, which then still waits for the rest.
    queues[0].put(queued(0, 1))
    late = threading.Timer(0.05, lambda: queues[1].put(queued(1, 0)))
    late.start()
    started = time.monotonic()
    batch, _ = batcher.next_batch()
    late.join()
    assert [(s, item.frame.index) for s, item in batch] == [(0, 1), (1, 0)]
    assert 0.14 <= time.monotonic() - started < 0.6

    # Once every queue is closed the batcher neither waits nor returns anything more.
    for queue in queues:
        queue.close()
    started = time.monotonic()
    assert batcher.next_batch() == ([], [0, 1])
    assert batcher.next_batch() is None
    assert time.monotonic() - started < 0.1


def test_drop_oldest_queue_keeps_the_newest_and_counts_the_rest():
    hub = threading.Condition()
    metrics = StreamMetrics(0, "live", "live")
    queue = StreamQueue(hub, metrics)
    queue.policy = QueuePolicy(2, drop_oldest=True)
    for index in range(7):
        queue.put(queued(0, index))  # never blocks
    with hub:
        kept = [queue.take().frame.index, queue.take().frame.index]
    assert kept == [5, 6]
    assert metrics.snapshot().dropped == {"stale": 5, "stream_failed": 0, "inference_failed": 0}


def test_blocking_queue_makes_the_producer_wait_and_loses_nothing():
    hub = threading.Condition()
    metrics = StreamMetrics(0, "file", "file")
    queue = StreamQueue(hub, metrics)
    queue.policy = QueuePolicy(2, drop_oldest=False)
    producer = threading.Thread(target=lambda: [queue.put(queued(0, i)) for i in range(5)])
    producer.start()
    time.sleep(0.2)
    assert len(queue) == 2 and producer.is_alive()  # waiting for room
    taken = []
    while len(taken) < 5:
        with hub:
            item = queue.take()
            if item is None:
                hub.wait(0.05)
                continue
        taken.append(item.frame.index)
    producer.join(2)
    assert taken == [0, 1, 2, 3, 4]
    assert sum(metrics.snapshot().dropped.values()) == 0


# --------------------------------------------------------------------------------------------------------------
# Isolation, per-stream state, live latency
# --------------------------------------------------------------------------------------------------------------


def test_failing_streams_beside_good_ones(tmp_path, estimator):
    good = write_video(tmp_path / "good.mp4", 10)
    bad_output = write_video(tmp_path / "bad_output.mp4", 10, width=128, height=96)
    bad_inference = write_video(tmp_path / "bad_inference.mp4", 10, width=192, height=144)
    not_video = tmp_path / "notes.mp4"
    not_video.write_text("not a video\n" * 10)
    # An output path that is bad from the start fails the run at start (tests/pipeline/cli/test_data_safety.py);
    # this one breaks mid-run, as a full disk would.
    breaking_output = RaisingSink("write", on_stream=3, at_frame=2)
    specs = [StreamSpec(str(tmp_path / "missing.mp4")), StreamSpec(str(not_video)), StreamSpec(str(good)),
             StreamSpec(str(bad_output), sinks=(breaking_output,)), StreamSpec(str(bad_inference))]
    messages = []
    recorder = RecordingEstimator(estimator, fail_on_size=(144, 192))
    runtime = Runtime(specs, recorder, RuntimeConfig(batch_size=4, batch_wait_ms=20), notify=messages.append)
    results = runtime.run()

    assert [r.state for r in results] == ["failed", "failed", "ended", "failed", "failed"]
    assert "no such file or directory" in results[0].error
    assert "not a readable video" in results[1].error
    assert results[2].processed == 10 and results[2].error is None
    assert "sink broke in write" in results[3].error and results[3].processed == 2
    assert results[3].dropped["stream_failed"] >= 1
    assert "inference failed" in results[4].error and "192x144" in results[4].error
    assert results[4].dropped["inference_failed"] >= 1
    assert len(messages) == 4  # one line per failed stream
    check_accounting(results)
    assert all(runtime.held_resources(i) == [] for i in range(len(specs)))


def test_stream_state_is_freed_when_the_stream_ends(tmp_path, estimator):
    short = write_video(tmp_path / "short.mp4", 3)
    long = write_video(tmp_path / "long.mp4", 40, fps=20.0)
    overlays = tmp_path / "overlays"
    specs = [StreamSpec(str(short), overlay=OverlayTarget(str(overlays), folder=True)),
             StreamSpec(str(long), overlay=OverlayTarget(str(overlays), folder=True), pace=True)]
    runtime = Runtime(specs, estimator, RuntimeConfig(batch_size=2, batch_wait_ms=5))
    runtime.start()
    deadline = time.monotonic() + 10
    while runtime.metrics.streams[0].state != "ended" and time.monotonic() < deadline:
        time.sleep(0.02)
    held_while_running = runtime.held_resources(1)
    assert runtime.held_resources(0) == []  # tracker dropped, overlay closed, source closed
    assert count_video_frames(overlays / "short.mp4") == 3  # finished and playable while the other runs
    runtime.wait()
    assert runtime.metrics.streams[1].state == "ended"
    assert {"source", "tracker", "overlay"} <= set(held_while_running)
    assert runtime.held_resources(1) == []
    assert [r.tracks is not None for r in runtime.results()] == [True, True]


def test_live_stream_frame_age_stays_bounded_when_inference_is_slow(tmp_path, estimator):
    """A file paced at 30 frames/s and flagged live, into a network that takes 100 ms a batch: old frames
    are dropped (counted), and the p99 age at the output stays under 2 x batch window + inference time."""
    video = write_video(tmp_path / "camera.mp4", 60, fps=30.0)
    wait_ms, delay = 100.0, 0.1
    specs = [StreamSpec(str(video), live=True, pace=True)]
    runtime = Runtime(specs, RecordingEstimator(estimator, delay=delay), RuntimeConfig(batch_size=2,
                                                                                       batch_wait_ms=wait_ms))
    results = runtime.run()
    snapshot = runtime.metrics.snapshot()
    inference_p50 = snapshot.stages["inference"][0]
    age_p50, age_p99 = snapshot.streams[0].age
    bound = 2 * wait_ms / 1000 + inference_p50
    assert results[0].delivered == 60
    assert results[0].dropped["stale"] > 10  # ~3 frames arrive per 100 ms batch of at most 2
    check_accounting(results)
    assert age_p99 < bound, (age_p50, age_p99, bound)


def test_a_file_stream_loses_nothing_when_inference_is_slow(tmp_path, estimator):
    video = write_video(tmp_path / "file.mp4", 12)
    results = Runtime([StreamSpec(str(video))], RecordingEstimator(estimator, delay=0.02),
                      RuntimeConfig(batch_size=2, queue_size=2)).run()
    assert (results[0].processed, results[0].dropped["stale"]) == (12, 0)


def test_request_stop_drains_and_closes_outputs(tmp_path, estimator):
    video = write_video(tmp_path / "long.mp4", 200, fps=25.0)
    jsonl, overlay = tmp_path / "people.jsonl", tmp_path / "overlay.mp4"
    runtime = Runtime([StreamSpec(str(video), out_jsonl=str(jsonl), overlay=OverlayTarget(str(overlay)), pace=True)],
                      estimator, RuntimeConfig())
    runtime.start()
    time.sleep(0.6)
    runtime.request_stop()
    assert runtime.wait(timeout=10)
    result = runtime.results()[0]
    assert 3 <= result.processed < 200
    check_accounting([result])
    assert len(read_jsonl(jsonl)) == result.processed == count_video_frames(overlay)


def test_health_reports_a_stream_that_never_opened(tmp_path, estimator):
    metrics = RuntimeMetrics([("gone", "gone.mp4")])
    runtime = Runtime([StreamSpec(str(tmp_path / "gone.mp4"), name="gone")], estimator, metrics=metrics)
    runtime.run()
    assert metrics.health() == {"running": False, "streams": [
        {"stream": 0, "name": "gone", "state": "failed",
         "error": f"{tmp_path / 'gone.mp4'}: no such file or directory"}]}


# --------------------------------------------------------------------------------------------------------------
# Live RTSP streams (GStreamer's server on loopback, tests/rtsp.py) in the graph
# --------------------------------------------------------------------------------------------------------------


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def test_live_streams_reconnect_and_a_dead_one_fails_beside_them(tmp_path, estimator):
    from tests.helpers.rtsp import BlackHole, RtspServer, rtsp_server_unavailable

    reason = rtsp_server_unavailable()
    if reason:
        pytest.skip(reason)
    quick = SourceConfig(open_timeout_s=2.0, read_timeout_s=1.0, backoff_initial_s=0.2, backoff_max_s=0.5)
    hopeless = SourceConfig(open_timeout_s=0.5, read_timeout_s=0.5, backoff_initial_s=0.1, backoff_max_s=0.2,
                            max_reconnects=1)
    video = write_video(tmp_path / "file.mp4", 400, fps=20.0)
    with RtspServer(streams=2, size="160x120", fps=15) as server, BlackHole() as hole:
        specs = [StreamSpec(server.url(0), name="cam0", source_config=quick),
                 StreamSpec(server.url(1), name="cam1", source_config=quick),
                 StreamSpec(hole.url(), name="hole", source_config=hopeless),
                 StreamSpec(str(video), name="file", pace=True)]
        runtime = Runtime(specs, estimator, RuntimeConfig(batch_size=4, batch_wait_ms=20))
        streams = runtime.metrics.streams
        runtime.start()
        try:
            wait_for(lambda: min(streams[0].snapshot().processed, streams[1].snapshot().processed) >= 10, 20,
                     "frames from both cameras")
            wait_for(lambda: streams[2].state == "failed", 10, "the dead camera to give up")
            before = [streams[i].snapshot().processed for i in (0, 1, 3)]
            server.restart(down_for_s=0.5)
            wait_for(lambda: all(streams[i].snapshot().processed >= n + 10 for i, n in zip((0, 1), before)), 20,
                     "frames after the server came back")
            assert streams[3].snapshot().processed > before[2]  # the file stream went on meanwhile
        finally:
            runtime.request_stop()
            assert runtime.wait(timeout=10)
    results = runtime.results()
    assert [r.state for r in results] == ["ended", "ended", "failed", "ended"]
    assert results[0].reconnects >= 1 and results[1].reconnects >= 1
    assert results[2].processed == 0 and hole.url() in results[2].error
    check_accounting(results)
    assert all(runtime.held_resources(i) == [] for i in range(len(specs)))


# --------------------------------------------------------------------------------------------------------------
# Sinks: extra outputs beside the JSON lines and the overlay
# --------------------------------------------------------------------------------------------------------------


class RecordingSink:
    """A sink written here, inheriting nothing: records every call as (method, stream, frame index)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int | None, int | None]] = []
        self.people: dict[tuple[int, int], list[dict]] = {}
        self._lock = threading.Lock()  # it serves several streams, so it is called from several threads

    def open_stream(self, stream: StreamInfo) -> None:
        with self._lock:
            self.calls.append(("open_stream", stream.index, None))

    def write(self, stream: StreamInfo, frame: Frame, people) -> None:
        with self._lock:
            self.calls.append(("write", stream.index, frame.index))
            self.people[stream.index, frame.index] = [person_record(person) for person in people]

    def close_stream(self, stream: StreamInfo) -> None:
        with self._lock:
            self.calls.append(("close_stream", stream.index, None))

    def close(self) -> None:
        with self._lock:
            self.calls.append(("close", None, None))

    def of_stream(self, index: int) -> list[tuple[str, int | None]]:
        return [(method, frame) for method, stream, frame in self.calls if stream == index]


class RaisingSink:
    """Raises from ``method`` for stream ``on_stream`` (for ``write``: at its frame ``at_frame``)."""

    def __init__(self, method: str, on_stream: int, at_frame: int = 3) -> None:
        self.method, self.on_stream, self.at_frame = method, on_stream, at_frame
        self.closed_streams: list[int] = []
        self.closes = 0

    def _maybe_raise(self, method: str, stream: StreamInfo, frame: Frame | None = None) -> None:
        if method == self.method and stream.index == self.on_stream and (frame is None or
                                                                         frame.index == self.at_frame):
            raise OSError(f"sink broke in {method}")

    def open_stream(self, stream: StreamInfo) -> None:
        self._maybe_raise("open_stream", stream)

    def write(self, stream: StreamInfo, frame: Frame, people) -> None:
        self._maybe_raise("write", stream, frame)

    def close_stream(self, stream: StreamInfo) -> None:
        self.closed_streams.append(stream.index)
        self._maybe_raise("close_stream", stream)

    def close(self) -> None:
        self.closes += 1


def test_callback_sink_gets_every_frame_of_each_stream_in_order_with_the_json_people(tmp_path, estimator):
    lengths = [12, 9]
    videos = [write_video(tmp_path / "v0.mp4", lengths[0]), write_video(tmp_path / "v1.mp4", lengths[1],
                                                                         width=192, height=144)]
    jsonl = tmp_path / "people.jsonl"
    received: list[tuple[int, int, list[dict]]] = []
    callback = CallbackSink(lambda frame, people: received.append(
        (frame.stream, frame.index, [person_record(person) for person in people])))
    specs = [StreamSpec(str(video), out_jsonl=str(jsonl)) for video in videos]
    # The tiny model's "people" score low: a tracker that takes them, so the sinks get track IDs to compare.
    tracking = TrackerConfig(high_score=0.05, new_track_score=0.05, min_hits=1)
    results = Runtime(specs, estimator, RuntimeConfig(batch_size=2, tracking=tracking), sinks=[callback]).run()

    assert [r.state for r in results] == ["ended", "ended"]
    for stream, length in enumerate(lengths):
        assert [index for s, index, _ in received if s == stream] == list(range(length))
    from_json = {(r["stream"], r["frame"]): r["persons"] for r in read_jsonl(jsonl)}
    assert {(s, index): people for s, index, people in received} == from_json
    assert sum(len(people) for _, _, people in received) > 0  # the tiny model finds "people": a real comparison
    assert any(person["track_id"] is not None for _, _, people in received for person in people)


def test_sink_calls_come_in_order_and_each_sink_closes_once(tmp_path, estimator):
    videos = [write_video(tmp_path / "v0.mp4", 5), write_video(tmp_path / "v1.mp4", 7)]
    everywhere, only_stream_1 = RecordingSink(), RecordingSink()
    # ``everywhere`` is also named by stream 0 itself: a sink given twice is still written once per frame.
    specs = [StreamSpec(str(videos[0]), sinks=(everywhere,)), StreamSpec(str(videos[1]), sinks=(only_stream_1,))]
    runtime = Runtime(specs, estimator, RuntimeConfig(batch_size=2), sinks=[everywhere])
    results = runtime.run()

    assert [r.state for r in results] == ["ended", "ended"]
    for stream, length in [(0, 5), (1, 7)]:
        assert everywhere.of_stream(stream) == \
            [("open_stream", None)] + [("write", i) for i in range(length)] + [("close_stream", None)]
    assert only_stream_1.of_stream(0) == []
    assert only_stream_1.of_stream(1) == \
        [("open_stream", None)] + [("write", i) for i in range(7)] + [("close_stream", None)]
    for sink in (everywhere, only_stream_1):
        assert [call[0] for call in sink.calls].count("close") == 1
        assert sink.calls[-1] == ("close", None, None)  # after every stream closed
    assert all(runtime.held_resources(i) == [] for i in range(len(specs)))


def test_held_resources_names_the_open_sinks(tmp_path, estimator):
    video = write_video(tmp_path / "long.mp4", 40, fps=20.0)
    jsonl, overlay = tmp_path / "people.jsonl", tmp_path / "overlay.mp4"
    seen_first = threading.Event()
    runtime = Runtime([StreamSpec(str(video), out_jsonl=str(jsonl), overlay=OverlayTarget(str(overlay)), pace=True)],
                      estimator, RuntimeConfig(), sinks=[CallbackSink(lambda frame, people: seen_first.set())])
    runtime.start()
    assert seen_first.wait(10)
    held = runtime.held_resources(0)
    runtime.request_stop()
    assert runtime.wait(timeout=10)
    assert held == ["source", "tracker", "jsonl", "overlay", "CallbackSink"]
    assert runtime.held_resources(0) == []


@pytest.mark.parametrize("method", ["open_stream", "write", "close_stream"])
def test_a_sink_that_raises_fails_its_stream_only(tmp_path, estimator, method):
    videos = [write_video(tmp_path / "v0.mp4", 8), write_video(tmp_path / "v1.mp4", 8, width=192, height=144)]
    jsonl = tmp_path / "people.jsonl"
    raising, recording = RaisingSink(method, on_stream=1), RecordingSink()
    specs = [StreamSpec(str(video), out_jsonl=str(jsonl)) for video in videos]
    messages = []
    results = Runtime(specs, estimator, RuntimeConfig(batch_size=2), notify=messages.append,
                      sinks=[raising, recording]).run()

    assert [r.state for r in results] == ["ended", "failed"]
    assert results[0].processed == 8 and results[0].error is None
    assert f"{videos[1]}: output failed: OSError: sink broke in {method}" == results[1].error
    assert messages == [results[1].error]
    check_accounting(results)
    records = read_jsonl(jsonl)
    assert [r["frame"] for r in records if r["stream"] == 0] == list(range(8))
    # The sinks after the raising one miss that frame; every opened stream is closed, the sink once.
    assert recording.of_stream(0)[-1] == ("close_stream", None)
    if method == "open_stream":  # stream 1 failed before the sinks after the raising one were opened
        assert recording.of_stream(1) == [] and raising.closed_streams == [0]
    else:
        assert recording.of_stream(1)[-1] == ("close_stream", None) and sorted(raising.closed_streams) == [0, 1]
    assert raising.closes == 1


def test_run_streams_passes_sinks_and_the_summary_counts_the_failed_streams_frames(tmp_path, estimator, capsys):
    videos = [write_video(tmp_path / "v0.mp4", 10), write_video(tmp_path / "v1.mp4", 10, width=192, height=144)]
    jsonl = tmp_path / "people.jsonl"

    def fail_on_stream_1(frame: Frame, people) -> None:
        if frame.stream == 1 and frame.index == 4:
            raise ValueError("the callback gave up")

    config = RunConfig(sources=tuple(str(video) for video in videos), out_jsonl=str(jsonl), batch_size=2,
                       progress=False)
    reports = run_streams(config, estimator, sinks=[CallbackSink(fail_on_stream_1)])

    assert reports[0].error is None and reports[0].frames == 10 and reports[0].dropped == {}
    assert reports[1].error == f"{videos[1]}: output failed: ValueError: the callback gave up"
    assert reports[1].frames == 4  # frames 0-3; frame 4 raised
    assert reports[1].dropped == {"stream_failed": reports[1].delivered - 4}
    records = read_jsonl(jsonl)
    assert [r["frame"] for r in records if r["stream"] == 0] == list(range(10))
    # The JSON lines come before the callback, so frame 4's line was written before the callback raised.
    assert [r["frame"] for r in records if r["stream"] == 1] == list(range(5))
    print_summary(reports, {})
    summary = capsys.readouterr().err
    assert f"stream 0 {videos[0]}: 10 frames" in summary
    assert f"stream 1 {videos[1]}: FAILED after 4 frames (error above)" in summary  # the error line came live


def test_runtime_rejects_an_object_that_is_not_a_sink(tmp_path):
    with pytest.raises(TypeError, match="is not a sink"):
        Runtime([StreamSpec(str(tmp_path / "v.mp4"))], lambda images: [[] for _ in images],
                sinks=[lambda frame, people: None])
    with pytest.raises(TypeError, match=r"streams\[0\].sinks"):
        Runtime([StreamSpec(str(tmp_path / "v.mp4"), sinks=(object(),))], lambda images: [[] for _ in images])


# --------------------------------------------------------------------------------------------------------------
# Signals on a real `posestream run`
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("signal_number, exit_code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
                         ids=["SIGINT", "SIGTERM"])
def test_signal_stops_run_with_playable_outputs(tmp_path, tiny_model, signal_number, exit_code):
    video = write_video(tmp_path / "camera.mp4", 300, fps=25.0)  # 12 s when paced
    jsonl, overlay = tmp_path / "people.jsonl", tmp_path / "overlay.mp4"
    script = Path(sys.executable).with_name("posestream")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "posestream.pipeline.cli"]
    process = subprocess.Popen(command + ["run", str(video), "--model", str(tiny_model), "--pace", "--no-progress",
                                          "--out-jsonl", str(jsonl), "--out-video", str(overlay)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            if jsonl.exists() and len(jsonl.read_text().splitlines()) >= 5:
                break
            time.sleep(0.05)
        assert process.poll() is None, process.communicate()
        process.send_signal(signal_number)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == exit_code, stderr
    assert f"stopped by {signal.Signals(signal_number).name}" in stderr
    assert "Traceback" not in stderr
    written = len(read_jsonl(jsonl))
    assert 5 <= written < 300
    assert f"stream 0 {video}: {written} frames" in stderr  # the summary is printed
    assert count_video_frames(overlay) == written  # the mp4 was finished: every frame plays


# --------------------------------------------------------------------------------------------------------------
# posestream bench (pipeline/bench.py), kept tiny
# --------------------------------------------------------------------------------------------------------------


def test_bench_command_writes_table_json_and_plot(tmp_path, tiny_model, capsys):
    from posestream.pipeline.cli.main import main

    video = write_video(tmp_path / "clip.mp4", 8)
    out_json = tmp_path / "results" / "pipeline.json"
    code = main(["bench", "--video", str(video), "--model", str(tiny_model), "--streams", "1,2",
                 "--frames-per-stream", "8", "--repeats", "1", "--batch", "2", "--out-json", str(out_json)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    result = json.loads(out_json.read_text())
    assert [row["streams"] for row in result["rows"]] == [1, 2]
    assert [row["frames"] for row in result["rows"]] == [8, 16]  # every frame of every stream
    for row in result["rows"]:
        assert row["fps"] > 0 and row["efficiency"] > 0
        assert row["latency_p99_ms"] >= row["latency_p50_ms"] > 0
        assert row["latency_p50_ms"] >= row["processing_p50_ms"] > 0
        assert row["efficiency"] == pytest.approx(row["fps"] / row["stages_alone_fps"][row["slowest_stage"]])
    assert set(result["stages_alone_fps"]) == {"decode", "inference", "post"}
    assert result["model"]["name"] == "tiny-pose" and result["model"]["backend"] == "onnxruntime"
    assert "efficiency" in captured.out and "streams" in captured.out
    png = out_json.with_suffix(".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
