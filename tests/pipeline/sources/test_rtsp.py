"""Live sources against a real RTSP server on loopback (GStreamer's, see tests/rtsp_server.py) and real faults:
the server killed and restarted, connections dropped, bytes corrupted, a server that never answers, a stall.

Tests that need the server skip with the reason when the system python lacks GStreamer's RTSP bindings
(CI installs them in .ci/run and sets POSESTREAM_REQUIRE_RTSP=1, which turns the skip into a failure).
The rest (backoff schedule, config checks, unreachable URLs) always run.
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, replace

import numpy as np
import pytest

from posestream.pipeline.core.errors import PosestreamError
from posestream.pipeline.sources.readers import SourceConfig, backoff_delay_range, is_live_spec, open_source
from tests.helpers.rtsp import BlackHole, FaultProxy, RtspServer, rtsp_server_unavailable

FPS = 15
WIDTH, HEIGHT = 320, 180
# Short timeouts and backoff so that faults resolve within seconds.
FAST = SourceConfig(open_timeout_s=2.0, read_timeout_s=1.5, backoff_initial_s=0.2, backoff_max_s=1.0)


@pytest.fixture(scope="module")
def rtsp_available() -> None:
    reason = rtsp_server_unavailable()
    if reason and os.environ.get("POSESTREAM_REQUIRE_RTSP") == "1":  # set by .ci/run after installing it
        pytest.fail(f"POSESTREAM_REQUIRE_RTSP=1 but {reason}")
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="module")
def server(rtsp_available):
    """One server with 8 mounts for the tests that do not kill it (each client gets its own encoder)."""
    with RtspServer(streams=8, size=f"{WIDTH}x{HEIGHT}", fps=FPS) as running:
        yield running


@dataclass
class Arrival:
    at: float  # time.monotonic() when the frame came out of the source
    index: int
    pts: float
    shape: tuple[int, ...]


class Reader(threading.Thread):
    """Iterates a source in its own thread, noting when each frame arrives; keeps the error if one ends it."""

    def __init__(self, source):
        super().__init__(daemon=True)
        self.source = source
        self.arrivals: list[Arrival] = []
        self.error: BaseException | None = None
        self.ended_at: float | None = None

    def run(self) -> None:
        try:
            for frame in self.source:
                self.arrivals.append(Arrival(time.monotonic(), frame.index, frame.pts, frame.image.shape))
        except Exception as error:  # noqa: BLE001 - handed to the test
            self.error = error
        finally:
            self.ended_at = time.monotonic()

    def wait_for_frames(self, count: int, timeout_s: float, after: float = 0.0) -> bool:
        """True once ``count`` frames have arrived later than ``after`` (monotonic time)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if sum(1 for arrival in self.arrivals if arrival.at > after) >= count:
                return True
            time.sleep(0.02)
        return False

    def stop(self, timeout_s: float = 10.0) -> None:
        self.source.request_stop()
        self.join(timeout_s)
        assert not self.is_alive(), "the source did not stop"


def assert_continuous(arrivals: list[Arrival]) -> None:
    assert [a.index for a in arrivals] == list(range(len(arrivals)))
    assert all(np.diff([a.pts for a in arrivals]) > 0), "pts must grow"


# --- no server needed ---------------------------------------------------------------------------------------

def test_backoff_doubles_from_initial_up_to_the_cap_with_jitter():
    assert backoff_delay_range(1, 0.5, 10.0, 0.0) == (0.5, 0.5)
    assert backoff_delay_range(2, 0.5, 10.0, 0.0) == (1.0, 1.0)
    assert backoff_delay_range(4, 0.5, 10.0, 0.0) == (4.0, 4.0)
    assert backoff_delay_range(6, 0.5, 10.0, 0.0) == (10.0, 10.0)  # 16 s capped
    assert backoff_delay_range(3, 0.5, 10.0, 0.2) == pytest.approx((1.6, 2.4))
    assert backoff_delay_range(5, 0.5, 10.0, 0.2) == pytest.approx((6.4, 9.6))  # 8 s +-20 %
    assert backoff_delay_range(6, 0.5, 10.0, 0.2) == pytest.approx((8.0, 10.0))  # 10 s (capped) +-20 %, capped
    assert backoff_delay_range(10_000, 0.5, 10.0, 0.2) == pytest.approx((8.0, 10.0))  # no overflow
    with pytest.raises(ValueError):
        backoff_delay_range(0, 0.5, 10.0, 0.2)


@pytest.mark.parametrize("field, value", [
    ("rtsp_transport", "http"), ("open_timeout_s", 0), ("read_timeout_s", -1.0), ("read_timeout_s", float("nan")),
    ("backoff_initial_s", 0.0), ("backoff_jitter", 1.0), ("backoff_jitter", -0.1), ("max_reconnects", -1),
    ("hwaccel", "no-such-device"),
])
def test_bad_live_options_name_the_field(field, value):
    with pytest.raises(PosestreamError) as caught:
        SourceConfig(**{field: value})
    assert caught.value.subject == field


def test_backoff_max_below_initial_is_rejected():
    with pytest.raises(PosestreamError, match="backoff_max_s"):
        SourceConfig(backoff_initial_s=5.0, backoff_max_s=1.0)


def test_live_specs_are_told_apart_from_files():
    assert is_live_spec("rtsp://cam.local/stream1")
    assert is_live_spec("RTSP://cam.local/stream1")
    assert is_live_spec("udp://239.0.0.1:1234")
    assert is_live_spec("/dev/video0")
    assert not is_live_spec("http://example.com/clip.mp4")  # read like a file
    assert not is_live_spec("/data/rtsp/clip.mp4")
    assert not is_live_spec("/dev/video0/x")


def test_missing_webcam_is_a_clear_error():
    with pytest.raises(PosestreamError) as caught:
        open_source("/dev/video97", 0, SourceConfig())
    assert str(caught.value) == "/dev/video97: no such video device"


def test_unreachable_stream_is_retried_then_given_up():
    url = "rtsp://127.0.0.1:1/nothing-listens-here"  # refused at once
    config = SourceConfig(max_reconnects=2, backoff_initial_s=0.05, backoff_max_s=0.1)
    source = open_source(url, 0, config)  # connecting happens in the iteration, so nothing fails here
    assert source.live and source.stats.state == "connecting"
    with pytest.raises(PosestreamError) as caught:
        list(source)
    assert caught.value.subject == url
    assert "gave up after 2 retries" in caught.value.problem and "Connection refused" in caught.value.problem
    assert source.stats.connect_failures == 3  # the first attempt and two retries
    assert source.stats.state == "failed"
    assert source.stats.delivered == source.stats.reconnects == source.stats.gaps == 0


def test_request_stop_ends_a_reconnect_wait_at_once():
    source = open_source("rtsp://127.0.0.1:1/nothing-listens-here", 0,
                         SourceConfig(backoff_initial_s=30.0, backoff_max_s=30.0))
    reader = Reader(source)
    reader.start()
    deadline = time.monotonic() + 5
    while source.stats.connect_failures == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    asked = time.monotonic()
    reader.stop()
    assert reader.ended_at - asked < 0.5
    assert reader.error is None and source.stats.state == "ended"


def test_open_timeout_bounds_a_server_that_never_answers():
    with BlackHole() as hole:
        started = time.monotonic()
        with pytest.raises(PosestreamError) as caught:
            open_source(hole.url(), 0, replace(FAST, open_timeout_s=1.0, reconnect=False))
        waited = time.monotonic() - started
    assert caught.value.problem == "cannot connect: no answer within the open timeout (1 s)"
    assert 0.9 <= waited <= 2.0


# --- against the real server --------------------------------------------------------------------------------

def test_frames_flow_from_an_rtsp_stream(server):
    with open_source(server.url(0), 0, replace(FAST, max_frames=20)) as source:
        assert source.live and source.kind == "video"
        frames = list(source)
    assert len(frames) == 20
    assert [frame.index for frame in frames] == list(range(20))
    assert all(frame.image.shape == (HEIGHT, WIDTH, 3) and frame.image.dtype == np.uint8 for frame in frames)
    assert all(frame.image.flags.c_contiguous for frame in frames)
    steps = np.diff([frame.pts for frame in frames])
    assert all(steps > 0)
    assert np.median(steps) == pytest.approx(1 / FPS, rel=0.1)  # the stream's own timing, not arrival jitter
    assert source.fps == pytest.approx(FPS)
    assert (source.width, source.height) == (WIDTH, HEIGHT)
    stats = source.stats
    assert stats.delivered == 20 and stats.state == "ended"
    assert stats.reconnects == stats.gaps == stats.connect_failures == 0
    assert stats.skipped_corrupt == stats.decode_errors == 0


def test_reconnects_after_the_server_restarts_on_the_same_port(rtsp_available):
    down_for_s = 1.0
    with RtspServer(size=f"{WIDTH}x{HEIGHT}", fps=FPS) as restarting:
        source = open_source(restarting.url(), 0, FAST)
        reader = Reader(source)
        reader.start()
        try:
            assert reader.wait_for_frames(10, timeout_s=10), f"no frames at first: {source.stats}"
            killed_at = time.monotonic()
            restarting.kill()
            time.sleep(down_for_s)
            restarting.start()
            back_at = time.monotonic()
            assert reader.wait_for_frames(10, timeout_s=15, after=back_at), f"no frames after restart: {source.stats}"
        finally:
            reader.stop()
    assert reader.error is None
    stats = source.stats
    assert stats.reconnects >= 1 and stats.gaps == 1
    assert stats.connect_failures >= 1  # tried while the server was down
    last_before = max(a.at for a in reader.arrivals if a.at <= killed_at)
    first_after = min(a.at for a in reader.arrivals if a.at > back_at)
    assert stats.gap_seconds == pytest.approx(first_after - last_before, abs=0.3)
    assert stats.gap_seconds >= down_for_s
    # Frames flow again within the longest backoff wait (+ jitter) and a second to open the stream.
    assert first_after - back_at <= FAST.backoff_max_s * (1 + FAST.backoff_jitter) + 1.0
    assert_continuous(reader.arrivals)
    assert all(a.shape == (HEIGHT, WIDTH, 3) for a in reader.arrivals)


def test_a_dropped_connection_is_reopened(server):
    with FaultProxy(server.port) as proxy:
        source = open_source(proxy.url(1), 1, FAST)
        reader = Reader(source)
        reader.start()
        try:
            assert reader.wait_for_frames(5, timeout_s=10)
            dropped_at = time.monotonic()
            proxy.drop_connections()
            assert reader.wait_for_frames(10, timeout_s=10, after=dropped_at + 0.1)
        finally:
            reader.stop()
    assert reader.error is None
    assert source.stats.reconnects == 1 and source.stats.gaps == 1
    assert 0 < source.stats.gap_seconds < 3.0
    assert_continuous(reader.arrivals)


def test_server_that_never_answers_gives_up_while_another_stream_flows(server):
    good = Reader(open_source(server.url(2), 2, FAST))
    good.start()
    try:
        assert good.wait_for_frames(3, timeout_s=10)
        with BlackHole() as hole:
            hung = open_source(hole.url(), 0, replace(FAST, open_timeout_s=1.0, max_reconnects=2,
                                                      backoff_initial_s=0.1, backoff_max_s=0.2))
            started = time.monotonic()
            with pytest.raises(PosestreamError) as caught:
                list(hung)
            ended = time.monotonic()
            connections = hole.connections
    finally:
        good.stop()
    assert "gave up after 2 retries" in caught.value.problem
    assert "no answer within the open timeout (1 s)" in caught.value.problem
    assert hung.stats.connect_failures == 3 and connections == 3
    assert hung.stats.state == "failed" and hung.stats.delivered == 0
    # Three opens of about 1 s each plus two short waits: each attempt was cut at the open timeout.
    assert 2.7 <= ended - started <= 5.0
    # The good stream did not wait for the hung one: frames kept coming at about its rate meanwhile.
    during = [a for a in good.arrivals if started < a.at < ended]
    assert len(during) >= 0.5 * FPS * (ended - started)
    assert good.error is None


def test_corrupted_rtp_payloads_are_survived_and_counted(server):
    with FaultProxy(server.port, corrupt_fraction=0.3, bytes_per_packet=16, seed=3) as proxy:
        with open_source(proxy.url(3), 3, replace(FAST, max_frames=45)) as source:
            frames = list(source)
        assert proxy.corrupted_packets > 0
    stats = source.stats
    assert len(frames) == 45  # frames kept coming
    assert stats.decode_errors + stats.skipped_corrupt > 0
    assert "the decoder concealed" in stats.last_error or "Invalid data" in stats.last_error
    assert all(np.diff([frame.pts for frame in frames]) > 0)
    assert [frame.index for frame in frames] == list(range(45))


def test_eight_streams_in_eight_threads_all_deliver(server):
    readers = [Reader(open_source(server.url(i), i, replace(FAST, max_frames=30))) for i in range(8)]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join(20)
    assert not any(reader.is_alive() for reader in readers)
    for reader in readers:
        assert reader.error is None
        assert len(reader.arrivals) == 30
        assert_continuous(reader.arrivals)


def test_request_stop_ends_a_blocked_read_within_the_read_timeout(server):
    config = replace(FAST, read_timeout_s=2.0)
    with FaultProxy(server.port) as proxy:
        source = open_source(proxy.url(4), 4, config)
        reader = Reader(source)
        reader.start()
        assert reader.wait_for_frames(5, timeout_s=10)
        proxy.stall()
        time.sleep(0.5)  # the buffered frames drain; the read now blocks on a silent connection
        asked = time.monotonic()
        reader.stop()
    assert reader.ended_at - asked <= config.read_timeout_s + 1.0
    assert reader.error is None
    assert source.stats.state == "ended" and source.stats.gaps == 0 and source.stats.reconnects == 0


def test_udp_transport_delivers_frames(server):
    with open_source(server.url(5), 5, replace(FAST, rtsp_transport="udp", max_frames=15)) as source:
        frames = list(source)
    assert len(frames) == 15
    assert all(frame.image.shape == (HEIGHT, WIDTH, 3) for frame in frames)
    assert all(np.diff([frame.pts for frame in frames]) > 0)
