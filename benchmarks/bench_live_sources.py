"""Live sources against the real GStreamer RTSP server on loopback (tests/rtsp_server.py): how long a
reconnect takes after the server restarts, how an open against a silent server is bounded, and what
decoding N concurrent RTSP streams costs in CPU.

- reconnect: the server is killed while a source streams, stays down ``--down`` seconds and starts again on
  the same port; measured from the new server's READY to the source's first frame, and the gap the source
  counts. With the default backoff (0.5 s doubling, +-20 %) and with a short one (0.2 s, capped at 1 s).
- open timeout: a TCP server that accepts and never answers; time until the open fails, per open timeout.
- streams: N streams (default 8) of 640x360 at 25 fps read in N threads for ``--seconds``; frames per
  second per stream, and this process's CPU time per decoded frame (decode + BGR conversion, all threads).
  The server's own CPU (encoding) is reported beside it from /proc. CPU percentages are of one core.

    python -m benchmarks.bench_live_sources [--out benchmarks/results/live_sources.json] [--quick]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path

from posestream.pipeline.core.errors import PosestreamError
from posestream.pipeline.sources.readers import SourceConfig, open_source
from tests.helpers.rtsp import BlackHole, RtspServer, rtsp_server_unavailable

REPO = Path(__file__).resolve().parents[1]

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def first_frame_after(reader_times: list[float], after: float, timeout_s: float) -> float | None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        later = [t for t in reader_times if t > after]
        if later:
            return min(later)
        time.sleep(0.005)
    return None


def measure_reconnect(config: SourceConfig, down_for_s: float, trials: int) -> dict:
    ready_to_frame, gaps = [], []
    for _ in range(trials):
        with RtspServer(size="320x180", fps=25) as server:
            source = open_source(server.url(), 0, config)
            arrivals: list[float] = []
            reader = threading.Thread(target=lambda: arrivals.extend(time.monotonic() for _ in source), daemon=True)
            reader.start()
            if first_frame_after(arrivals, 0.0, 15) is None:
                raise RuntimeError(f"no first frame: {source.stats}")
            time.sleep(0.5)
            server.restart(down_for_s)
            back_at = time.monotonic()
            first = first_frame_after(arrivals, back_at, 30)
            source.request_stop()
            reader.join(10)
            if first is None:
                raise RuntimeError(f"no frame after the restart: {source.stats}")
            ready_to_frame.append(first - back_at)
            gaps.append(source.stats.gap_seconds)
    return {"down_s": down_for_s, "trials": trials, "ready_to_first_frame_s": ready_to_frame,
            "median_ready_to_first_frame_s": statistics.median(ready_to_frame), "gap_seconds": gaps,
            "backoff_initial_s": config.backoff_initial_s, "backoff_max_s": config.backoff_max_s}


def measure_open_timeout(open_timeout_s: float, trials: int) -> dict:
    waited = []
    with BlackHole() as hole:
        for _ in range(trials):
            started = time.monotonic()
            try:
                open_source(hole.url(), 0, SourceConfig(open_timeout_s=open_timeout_s, reconnect=False))
            except PosestreamError as error:
                message = error.problem
            waited.append(time.monotonic() - started)
    return {"open_timeout_s": open_timeout_s, "waited_s": waited, "median_waited_s": statistics.median(waited),
            "error": message}


def process_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def measure_streams(count: int, seconds: float, size: str, fps: int) -> dict:
    with RtspServer(streams=count, size=size, fps=fps) as server:
        sources = [open_source(server.url(i), i, SourceConfig()) for i in range(count)]
        counts = [0] * count
        first_at: list[float | None] = [None] * count

        def read(i: int) -> None:
            for _ in sources[i]:
                if first_at[i] is None:
                    first_at[i] = time.monotonic()
                counts[i] += 1

        threads = [threading.Thread(target=read, args=(i,), daemon=True) for i in range(count)]
        for thread in threads:
            thread.start()
        while any(t is None for t in first_at):  # measure the steady state, after every stream connected
            time.sleep(0.01)
        time.sleep(0.5)
        frames_before, cpu_before = sum(counts), time.process_time()
        server_cpu_before, wall_before = process_cpu_seconds(server.pid), time.monotonic()
        per_stream_before = list(counts)
        time.sleep(seconds)
        wall = time.monotonic() - wall_before
        frames = sum(counts) - frames_before
        cpu = time.process_time() - cpu_before
        server_cpu = process_cpu_seconds(server.pid) - server_cpu_before
        per_stream_fps = [(c - b) / wall for c, b in zip(counts, per_stream_before)]
        for source in sources:
            source.request_stop()
        for thread in threads:
            thread.join(10)
        errors = sum(s.stats.decode_errors + s.stats.skipped_corrupt for s in sources)
    return {"streams": count, "size": size, "source_fps": fps, "seconds": wall,
            "fps_per_stream": per_stream_fps, "min_fps_per_stream": min(per_stream_fps),
            "client_cpu_percent": 100 * cpu / wall, "client_cpu_ms_per_frame": 1000 * cpu / max(frames, 1),
            "server_cpu_percent": 100 * server_cpu / wall, "decode_problems": errors}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/live_sources.json"))
    parser.add_argument("--quick", action="store_true", help="fewer trials, shorter stream run")
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--down", type=float, default=1.0, help="seconds the server stays down")
    args = parser.parse_args()
    reason = rtsp_server_unavailable()
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    trials = 2 if args.quick else 5
    results: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()}}
    results["reconnect"] = {
        "default_backoff": measure_reconnect(SourceConfig(), args.down, trials),
        "short_backoff": measure_reconnect(SourceConfig(backoff_initial_s=0.2, backoff_max_s=1.0), args.down, trials),
    }
    results["open_timeout"] = [measure_open_timeout(t, 3) for t in (1.0, 2.0)]
    results["streams"] = measure_streams(args.streams, 5.0 if args.quick else 15.0, "640x360", 25)

    print(f"reconnect after a {args.down:g} s server restart, READY -> first frame (median of {trials}):")
    for name, row in results["reconnect"].items():
        print(f"  {name:<16} {row['median_ready_to_first_frame_s']:.2f} s  "
              f"(all: {', '.join(f'{v:.2f}' for v in row['ready_to_first_frame_s'])}; "
              f"gaps {', '.join(f'{v:.2f}' for v in row['gap_seconds'])} s)")
    print("open against a silent server:")
    for row in results["open_timeout"]:
        print(f"  open_timeout {row['open_timeout_s']:g} s -> failed after {row['median_waited_s']:.2f} s: {row['error']}")
    s = results["streams"]
    print(f"{s['streams']} streams {s['size']} @ {s['source_fps']} fps for {s['seconds']:.0f} s on {os.cpu_count()} CPUs: "
          f"min {s['min_fps_per_stream']:.1f} fps/stream, client CPU {s['client_cpu_percent']:.0f} % of a core "
          f"({s['client_cpu_ms_per_frame']:.2f} ms/frame), server CPU {s['server_cpu_percent']:.0f} % of a core, "
          f"decode problems {s['decode_problems']}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
