"""Runtime metrics (pipeline/metrics.py): bounded latency rings, the stderr table, and the HTTP endpoint
(Prometheus text on /metrics, stream states on /healthz) served on an ephemeral loopback port while a real
runtime runs."""
from __future__ import annotations

import io
import json
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from posestream.pipeline.runtime.graph import Runtime, RuntimeConfig, StreamSpec
from posestream.pipeline.runtime.metrics import LatencyRing, MetricsServer, RuntimeMetrics, StatsPrinter, format_table
from tests.helpers.videos import write_video


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read().decode()


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """Prometheus text -> {(sample name, sorted labels): value}."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_latency_ring_keeps_only_the_last_samples():
    ring = LatencyRing(capacity=100)
    assert ring.percentiles() is None
    for value in range(1000):
        ring.add(float(value))
    assert ring.count == 1000
    p50, p99 = ring.percentiles()
    assert p50 == pytest.approx(np.percentile(np.arange(900, 1000), 50))  # the last 100 only
    assert p99 == pytest.approx(np.percentile(np.arange(900, 1000), 99))
    assert len(ring.samples()) == 100  # a fixed size however many samples came


def test_endpoint_serves_prometheus_text_and_health_while_running(tmp_path, estimator):  # noqa: F811
    good = write_video(tmp_path / "good.mp4", 30, fps=20.0)
    specs = [StreamSpec(str(good), name="door", pace=True), StreamSpec(str(tmp_path / "gone.mp4"), name="gone")]
    runtime = Runtime(specs, estimator, RuntimeConfig())
    # A second runtime's metrics in the same process: registries are per runtime, nothing clashes.
    other = RuntimeMetrics([("other", "other.mp4")])
    server, other_server = MetricsServer(runtime.metrics, 0), MetricsServer(other, 0)
    try:
        assert server.port > 0 and other_server.port not in (0, server.port)
        runtime.start()
        deadline = time.monotonic() + 10
        while runtime.metrics.streams[0].snapshot().processed < 5 and time.monotonic() < deadline:
            time.sleep(0.02)
        status, content_type, text = get(f"http://127.0.0.1:{server.port}/metrics")
        assert status == 200 and content_type.startswith("text/plain")
        values = samples(text)
        door = (("name", "door"), ("stream", "0"))
        assert values[("posestream_frames_processed_total", door)] >= 5
        processed = values[("posestream_frames_processed_total", door)]
        assert values[("posestream_frames_delivered_total", door)] >= processed
        assert values[("posestream_frames_dropped_total", tuple(sorted(door + (("reason", "stale"),))))] == 0
        assert values[("posestream_stream_state", tuple(sorted(door + (("state", "ok"),))))] == 1
        assert values[("posestream_stream_state", (("name", "gone"), ("state", "failed"), ("stream", "1")))] == 1
        assert values[("posestream_stream_fps", door)] > 0
        assert ("posestream_stage_latency_seconds", (("quantile", "0.99"), ("stage", "inference"))) in values
        assert ("posestream_frame_age_seconds", tuple(sorted(door + (("quantile", "0.5"),)))) in values
        assert ("posestream_queue_depth", (("queue", "stream:0"),)) in values

        status, content_type, body = get(f"http://127.0.0.1:{server.port}/healthz")
        assert status == 200 and content_type == "application/json"
        health = json.loads(body)
        assert health["running"] is True
        assert [(s["name"], s["state"]) for s in health["streams"]] == [("door", "ok"), ("gone", "failed")]
        assert "no such file or directory" in health["streams"][1]["error"]

        status, _, other_text = get(f"http://127.0.0.1:{other_server.port}/metrics")
        assert status == 200 and 'name="other"' in other_text and 'name="door"' not in other_text
        assert get(f"http://127.0.0.1:{server.port}/nothing")[0] == 404

        runtime.wait()
        health = json.loads(get(f"http://127.0.0.1:{server.port}/healthz")[2])
        assert health["running"] is False
        assert [s["state"] for s in health["streams"]] == ["ended", "failed"]
    finally:
        runtime.request_stop()
        runtime.wait()
        server.close()
        other_server.close()


def test_port_in_use_is_a_clear_error():
    metrics = RuntimeMetrics([("a", "a.mp4")])
    first = MetricsServer(metrics, 0)
    try:
        from posestream.pipeline.core.errors import PosestreamError

        with pytest.raises(PosestreamError, match=f"127.0.0.1:{first.port}: cannot serve metrics"):
            MetricsServer(metrics, first.port)
    finally:
        first.close()


def test_stats_table_printed_periodically(tmp_path, estimator):  # noqa: F811
    video = write_video(tmp_path / "clip.mp4", 10)
    runtime = Runtime([StreamSpec(str(video), name="clip")], estimator)
    out = io.StringIO()
    printer = StatsPrinter(runtime.metrics, 0.05, out=lambda: out)
    runtime.run()
    time.sleep(0.12)
    printer.close()
    tables = out.getvalue()
    assert tables.count("stage p50/p99 ms") >= 2
    last = format_table(runtime.metrics.snapshot())
    assert "0 clip" in last and "ended" in last
    row = next(line for line in last.splitlines() if line.startswith("0 clip"))
    assert row.split()[4] == "10"  # frames


def test_connect_failures_and_gaps_are_in_metrics_and_the_summary(estimator, capsys):  # noqa: F811
    from prometheus_client import generate_latest

    from posestream.pipeline.runtime.run import StreamReport, print_summary
    from posestream.pipeline.sources.readers import SourceConfig
    from tests.helpers.rtsp import free_port

    url = f"rtsp://127.0.0.1:{free_port()}/nobody"  # connection refused: a temporary failure, retried twice
    config = SourceConfig(max_reconnects=2, backoff_initial_s=0.05, backoff_max_s=0.1, open_timeout_s=1.0)
    metrics = RuntimeMetrics([("camera", url)])
    runtime = Runtime([StreamSpec(url, name="camera", source_config=config)], estimator, metrics=metrics)
    [result] = runtime.run()
    assert result.state == "failed" and result.connect_failures == 3 and result.gaps == 0
    found = samples(generate_latest(metrics.registry).decode())
    labels = (("name", "camera"), ("stream", "0"))
    assert found[("posestream_connect_failures_total", labels)] == 3
    assert found[("posestream_gaps_total", labels)] == 0
    report = StreamReport.from_result(result)
    print_summary([StreamReport(stream=0, source=url, frames=5, gaps=2, connect_failures=3, reconnects=2,
                                seconds=1.0)], {})
    assert "2 reconnects, 2 outages, 3 failed connection attempts" in capsys.readouterr().err
    assert report.connect_failures == 3
