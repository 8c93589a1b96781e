"""The multi-stream stage graph (pipeline/runtime.py) on real videos written here, the tiny ONNX model on ONNX
Runtime, and real outputs: ordering, batching across streams, drop policies, isolation of failing streams,
per-stream state, the live latency bound, and SIGINT/SIGTERM on a real ``posestream run`` subprocess."""
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
from posestream.pipeline.sources.readers import SourceConfig
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
    folder_as_file = tmp_path / "overlay_is_a_folder.mp4"
    folder_as_file.mkdir()
    specs = [StreamSpec(str(tmp_path / "missing.mp4")), StreamSpec(str(not_video)), StreamSpec(str(good)),
             StreamSpec(str(bad_output), overlay=OverlayTarget(str(folder_as_file))), StreamSpec(str(bad_inference))]
    messages = []
    recorder = RecordingEstimator(estimator, fail_on_size=(144, 192))
    runtime = Runtime(specs, recorder, RuntimeConfig(batch_size=4, batch_wait_ms=20), notify=messages.append)
    results = runtime.run()

    assert [r.state for r in results] == ["failed", "failed", "ended", "failed", "failed"]
    assert "no such file or directory" in results[0].error
    assert "not a readable video" in results[1].error
    assert results[2].processed == 10 and results[2].error is None
    assert str(folder_as_file) in results[3].error and "folder" in results[3].error
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
