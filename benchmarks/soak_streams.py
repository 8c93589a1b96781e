"""Soak: N live RTSP cameras through ``posestream run --config`` for many minutes; does memory stay flat?

A real GStreamer RTSP server on loopback (tests/rtsp_server.py) serves ``--streams`` test-pattern cameras.
``posestream run`` reads them all as one process (decode threads, cross-stream batching, tracking, JSON lines
per stream, Prometheus metrics). Every ``--sample-s`` seconds this script records the run's resident memory
(VmRSS from /proc) and its frame counters (from /metrics). Every ``--restart-every-s`` seconds the server is
killed and started again, so every stream goes through a reconnect, its tracker keeps going, and the
reconnect path is part of what is soaked. At the end the run gets SIGINT and must exit 130 after flushing.

Memory growth is measured after warm-up: the median RSS over the ``--window-s`` seconds after ``--warmup-s``
against the median over the last ``--window-s`` seconds; a least-squares slope over all post-warm-up samples
is reported beside it. Target (issue 4): growth < 5 %.

    python -m benchmarks.soak_streams [--streams 16] [--minutes 10] [--out benchmarks/results/soak.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from posestream.pipeline.evaluation.common import format_table
from tests.helpers.rtsp import RtspServer, free_port, rtsp_server_unavailable

REPO = Path(__file__).resolve().parents[1]

COUNTER_LINE = re.compile(r'^(posestream_[a-z_]+?)(?:_total)?\{([^}]*)\} ([0-9.eE+-]+)$')


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--size", default="320x180", help="camera picture size, WIDTHxHEIGHT")
    parser.add_argument("--fps", type=int, default=10, help="frames per second of every camera")
    parser.add_argument("--model", default="hpe-0001")
    parser.add_argument("--input-height", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--warmup-s", type=float, default=60.0)
    parser.add_argument("--window-s", type=float, default=30.0)
    parser.add_argument("--sample-s", type=float, default=5.0)
    parser.add_argument("--restart-every-s", type=float, default=120.0, help="server restarts (0: never)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/soak.json")
    return parser.parse_args(argv)


def write_config(folder: Path, server: RtspServer, args: argparse.Namespace, metrics_port: int) -> Path:
    lines = [
        f'model = "{args.model}"', f"input_height = {args.input_height}", f"batch = {args.batch}",
        "batch_wait_ms = 20", "live_queue_size = 1", f"metrics_port = {metrics_port}",
        'metrics_host = "127.0.0.1"', "stats_interval_s = 60", "",
        "[tracking]", "enabled = true", "",
        "[defaults]", 'rtsp_transport = "tcp"', "open_timeout_s = 5.0", "read_timeout_s = 3.0",
        "backoff_initial_s = 0.5", "backoff_max_s = 4.0", "",
    ]
    for i in range(args.streams):
        lines += ["[[streams]]", f'name = "cam{i:02d}"', f'url = "{server.url(i)}"',
                  f'outputs = {{ jsonl = "{folder / f"cam{i:02d}.jsonl"}" }}', ""]
    path = folder / "soak.toml"
    path.write_text("\n".join(lines))
    return path


def resident_mib(pid: int) -> float | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    return int(match.group(1)) / 1024 if match else None


def scrape_counters(port: int) -> dict[str, float]:
    """Sums over streams of the per-stream counters: delivered, processed, dropped (by reason), reconnects."""
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return {}
    totals: dict[str, float] = {}
    for line in text.splitlines():
        match = COUNTER_LINE.match(line)
        if not match:
            continue
        name, labels, value = match.groups()
        if name not in ("posestream_frames_delivered", "posestream_frames_processed", "posestream_frames_dropped",
                        "posestream_reconnects", "posestream_decode_errors", "posestream_people"):
            continue
        key = name.removeprefix("posestream_")
        reason = re.search(r'reason="([a-z_]+)"', labels)
        if reason:
            key = f"{key}.{reason.group(1)}"
        totals[key] = totals.get(key, 0.0) + float(value)
    return totals


def slope_per_minute(times: list[float], values: list[float]) -> float:
    mean_t, mean_v = statistics.fmean(times), statistics.fmean(values)
    spread = sum((t - mean_t) ** 2 for t in times)
    return 60.0 * sum((t - mean_t) * (v - mean_v) for t, v in zip(times, values)) / spread if spread else 0.0


def summarise(samples: list[dict], args: argparse.Namespace) -> dict:
    after_warmup = [s for s in samples if s["t"] >= args.warmup_s and s["rss_mib"] is not None]
    end_t = samples[-1]["t"]
    start_window = [s["rss_mib"] for s in after_warmup if s["t"] < args.warmup_s + args.window_s]
    end_window = [s["rss_mib"] for s in after_warmup if s["t"] >= end_t - args.window_s]
    baseline, final = statistics.median(start_window), statistics.median(end_window)
    first, last = samples[0]["counters"], samples[-1]["counters"]
    seconds = samples[-1]["t"] - samples[0]["t"]
    return {
        "rss_baseline_mib": round(baseline, 1), "rss_final_mib": round(final, 1),
        "rss_max_after_warmup_mib": round(max(s["rss_mib"] for s in after_warmup), 1),
        "rss_growth": round(final / baseline - 1.0, 4),
        "rss_slope_mib_per_min": round(slope_per_minute([s["t"] for s in after_warmup],
                                                        [s["rss_mib"] for s in after_warmup]), 3),
        "processed_fps": round((last.get("frames_processed", 0) - first.get("frames_processed", 0)) / seconds, 2),
        "delivered_fps": round((last.get("frames_delivered", 0) - first.get("frames_delivered", 0)) / seconds, 2),
        "final_counters": last,
    }


def plot(samples: list[dict], restarts: list[float], args: argparse.Namespace, path: Path) -> None:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 4.5))
    axes = figure.subplots()
    minutes = [s["t"] / 60 for s in samples if s["rss_mib"] is not None]
    axes.plot(minutes, [s["rss_mib"] for s in samples if s["rss_mib"] is not None], label="resident memory")
    axes.axvline(args.warmup_s / 60, color="grey", linestyle=":", label="end of warm-up")
    for i, restart in enumerate(restarts):
        axes.axvline(restart / 60, color="tab:red", alpha=0.4, label="RTSP server restart" if i == 0 else None)
    axes.set_xlabel("minutes")
    axes.set_ylabel("MiB")
    axes.set_ylim(bottom=0)
    axes.set_title(f"posestream run: {args.streams} RTSP streams, {args.size} at {args.fps} fps")
    axes.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    why_not = rtsp_server_unavailable()
    if why_not:
        print(f"cannot soak: {why_not}", file=sys.stderr)
        return 2
    posestream = Path(sys.executable).parent / "posestream"
    metrics_port = free_port()
    samples: list[dict] = []
    restarts: list[float] = []
    with tempfile.TemporaryDirectory(prefix="posestream-soak-") as folder, \
            RtspServer(streams=args.streams, size=args.size, fps=args.fps) as server:
        config = write_config(Path(folder), server, args, metrics_port)
        log_path = Path(folder) / "run.log"
        with open(log_path, "w") as log:
            run = subprocess.Popen([str(posestream), "run", "--config", str(config)], stdout=log,
                                   stderr=subprocess.STDOUT, cwd=REPO)
            started = time.monotonic()
            next_restart = args.restart_every_s or float("inf")
            duration = args.minutes * 60
            print(f"soaking {args.streams} streams for {args.minutes:g} min (pid {run.pid}); "
                  f"a sample every {args.sample_s:g} s", flush=True)
            while (now := time.monotonic() - started) < duration and run.poll() is None:
                samples.append({"t": round(now, 1), "rss_mib": resident_mib(run.pid),
                                "counters": scrape_counters(metrics_port)})
                if now >= next_restart:
                    server.restart(down_for_s=2.0)
                    restarts.append(round(now, 1))
                    next_restart += args.restart_every_s
                if len(samples) % 12 == 0:
                    counters = samples[-1]["counters"]
                    print(f"  {now / 60:5.1f} min  RSS {samples[-1]['rss_mib']:.0f} MiB  processed "
                          f"{counters.get('frames_processed', 0):.0f}  delivered {counters.get('frames_delivered', 0):.0f}",
                          flush=True)
                time.sleep(max(0.0, args.sample_s - (time.monotonic() - started - now)))
            crashed = run.poll() is not None
            if not crashed:
                run.send_signal(signal.SIGINT)
            try:
                exit_code = run.wait(timeout=60)
            except subprocess.TimeoutExpired:
                run.kill()
                exit_code = run.wait()
        log_tail = log_path.read_text()[-3000:]
        jsonl_lines = sum(sum(1 for _ in open(p)) for p in Path(folder).glob("cam*.jsonl"))

    result = {
        "benchmark": "soak_streams", "streams": args.streams, "minutes": args.minutes, "size": args.size,
        "fps": args.fps, "model": args.model, "input_height": args.input_height, "batch": args.batch,
        "warmup_s": args.warmup_s, "window_s": args.window_s, "restarts_at_s": restarts,
        "crashed_before_end": crashed, "exit_code": exit_code, "jsonl_lines": jsonl_lines,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        **summarise(samples, args), "samples": samples, "run_log_tail": log_tail,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    plot(samples, restarts, args, args.out.with_suffix(".png"))
    counters = result["final_counters"]
    print(format_table([
        ["streams x minutes", f"{args.streams} x {args.minutes:g}"],
        ["RSS after warm-up / at end (MiB)", f"{result['rss_baseline_mib']} / {result['rss_final_mib']}"],
        ["RSS growth (target < 5 %)", f"{100 * result['rss_growth']:.2f} %"],
        ["RSS slope after warm-up (MiB/min)", result["rss_slope_mib_per_min"]],
        ["frames delivered / processed", f"{counters.get('frames_delivered', 0):.0f} / "
                                         f"{counters.get('frames_processed', 0):.0f}"],
        ["dropped stale / failed", f"{counters.get('frames_dropped.stale', 0):.0f} / "
                                   f"{counters.get('frames_dropped.stream_failed', 0):.0f}"],
        ["reconnects (server restarts)", f"{counters.get('reconnects', 0):.0f} ({len(restarts)})"],
        ["JSON lines written", jsonl_lines],
        ["exit code (SIGINT: 130)", exit_code],
    ]))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    return 0 if exit_code == 130 and not crashed else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
