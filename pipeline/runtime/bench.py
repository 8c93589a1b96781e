"""``posestream bench`` (and benchmarks/bench_pipeline.py): throughput, latency and pipeline efficiency of the
multi-stream runtime on N copies of one video.

In one run, first each stage alone on the same frames: decode (PyAV, one source), inference (the estimator
at the chosen batch: letterbox, network, parse) and post (tracking, JSON lines, and the overlay video when
asked). Then the whole graph with N = 1, 2, 4, ... file streams of the video. Per N: aggregate frames per
second (all frames processed / wall time from start to last output closed), frame latency p50/p99 (capture
by the decode stage to output written: file streams are decoded far ahead of inference and wait in their
full queues, so this is mostly queueing), processing time p50/p99 (taken from the stream queue to output
written: batch wait, inference, outputs), and pipeline efficiency = aggregate fps / fps of the slowest stage
alone, measured right before and after each graph run (load on a shared machine drifts). Medians over
repeats. Prints a table, writes JSON and a PNG plot of fps and latency against N.
"""
from __future__ import annotations

import os
import platform
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from posestream.pipeline.core.errors import PosestreamError
from posestream.pipeline.core.types import Frame, Person
from posestream.pipeline.runtime.graph import Estimate, OverlayTarget, Runtime, RuntimeConfig, StreamSpec
from posestream.pipeline.sinks.draw import TrackTrails, draw_people
from posestream.pipeline.sinks.jsonl import JsonlSink
from posestream.pipeline.sinks.video import VideoSink
from posestream.pipeline.sources.readers import SourceConfig, open_source
from posestream.pipeline.tracking.tracker import PoseTracker, TrackerConfig

TARGET_EFFICIENCY = 0.9  # the target


@dataclass(frozen=True)
class BenchConfig:
    video: str
    stream_counts: tuple[int, ...] = (1, 2, 4, 8, 16)
    frames_per_stream: int = 48
    repeats: int = 3
    batch_size: int = 4
    batch_wait_ms: float = 10.0
    queue_size: int = 8
    overlay: bool = False  # also write an overlay video per stream (H.264 encoding is a large part of post)
    tracking: bool = True

    def __post_init__(self) -> None:
        if not self.stream_counts or min(self.stream_counts) < 1:
            raise PosestreamError("--streams", f"need stream counts >= 1, got {self.stream_counts}")
        for name in ("frames_per_stream", "repeats", "batch_size"):
            if getattr(self, name) < 1:
                raise PosestreamError(name, f"must be >= 1, got {getattr(self, name)}")


def _decode(video: str, frames: int) -> list[Frame]:
    with open_source(video, 0, SourceConfig(max_frames=frames)) as source:
        decoded = list(source)
    if not decoded:
        raise PosestreamError(video, "no frames decoded")
    return decoded


def _post_alone(frames: list[Frame], people: list[list[Person]], fps: float | None, config: BenchConfig,
                folder: Path) -> tuple[int, float]:
    tracker = PoseTracker(TrackerConfig(), fps=fps) if config.tracking else None
    trails = TrackTrails()
    started = time.perf_counter()
    with JsonlSink(folder / "post.jsonl") as jsonl:
        video = None
        if config.overlay:
            height, width = frames[0].image.shape[:2]
            video = VideoSink(folder / "post.mp4", fps or 25.0, width, height)
        for frame, found in zip(frames, people):
            if tracker is not None:
                found = tracker.update(found, frame.pts)
            jsonl.write(frame, found)
            if video is not None:
                video.write(draw_people(frame.image, found, trails=trails.update(found)))
        if video is not None:
            video.close()
    return len(frames), time.perf_counter() - started


def _graph_run(estimate: Estimate, config: BenchConfig, streams: int, folder: Path) -> dict:
    overlay = OverlayTarget(str(folder / "overlays"), folder=True) if config.overlay else None
    specs = [StreamSpec(config.video, name=f"s{i}", source_config=SourceConfig(max_frames=config.frames_per_stream),
                        out_jsonl=str(folder / "graph.jsonl"), overlay=overlay) for i in range(streams)]
    runtime = Runtime(specs, estimate, RuntimeConfig(batch_size=config.batch_size, batch_wait_ms=config.batch_wait_ms,
                                                     queue_size=config.queue_size,
                                                     tracking=TrackerConfig() if config.tracking else None))
    started = time.perf_counter()
    results = runtime.run()
    seconds = time.perf_counter() - started
    failed = [r for r in results if r.state == "failed"]
    if failed:
        raise PosestreamError(config.video, f"benchmark stream failed: {failed[0].error}")
    ages = np.concatenate([stream.age.samples() for stream in runtime.metrics.streams])
    processing = np.concatenate([stream.processing.samples() for stream in runtime.metrics.streams])
    inference = runtime.metrics.stages["inference"]
    processed = sum(r.processed for r in results)
    return {"frames": processed, "seconds": seconds, "fps": processed / seconds,
            "latency_p50_ms": 1000 * float(np.percentile(ages, 50)),
            "latency_p99_ms": 1000 * float(np.percentile(ages, 99)),
            "processing_p50_ms": 1000 * float(np.percentile(processing, 50)),
            "processing_p99_ms": 1000 * float(np.percentile(processing, 99)),
            "mean_batch": processed / max(1, inference.count)}


class _StagesAlone:
    """Each stage on its own over the same frames: decode, inference (at the graph's batch size), post."""

    def __init__(self, config: BenchConfig, estimate: Estimate, frames: list[Frame], fps: float | None,
                 folder: Path) -> None:
        self._config = config
        self._estimate = estimate
        self._frames = frames
        self._fps = fps
        self._folder = folder
        self._people: list[list[Person]] = []

    def decode(self) -> tuple[int, float]:
        started = time.perf_counter()
        count = len(_decode(self._config.video, len(self._frames)))
        return count, time.perf_counter() - started

    def inference(self) -> tuple[int, float]:
        images = [frame.image for frame in self._frames]
        batch = self._config.batch_size
        people = []
        started = time.perf_counter()
        for i in range(0, len(images), batch):
            people.extend(self._estimate(images[i:i + batch]))
        seconds = time.perf_counter() - started
        self._people = people
        return len(images), seconds

    def post(self) -> tuple[int, float]:
        if not self._people:
            self.inference()
        return _post_alone(self._frames, self._people, self._fps, self._config, self._folder)

    def measure(self) -> dict[str, float]:
        """frames/s of each stage, measured once each."""
        rates = {}
        for name in STAGES_ALONE:
            frames, seconds = getattr(self, name)()
            rates[name] = frames / seconds
        return rates


STAGES_ALONE = ("decode", "inference", "post")


def run_bench(config: BenchConfig, estimate: Estimate, describe: dict | None = None,
              progress: Callable[[str], None] = lambda line: None) -> dict:
    """Measure; returns the result as plain data (what the JSON file holds).

    Load on a shared machine drifts, so every run of the graph is paired with the stages alone measured
    right before and right after it: that run's ceiling is the slowest stage's mean of the two, its
    efficiency its fps over that ceiling, and a row reports the medians over its repeats.
    """
    load_at_start = os.getloadavg()[0]  # other work on the machine skews absolute numbers; recorded
    alone_frames = max(config.frames_per_stream, 4 * config.batch_size)
    frames = _decode(config.video, alone_frames)  # also warms the file cache
    with open_source(config.video) as source:
        fps = source.fps
    for size in range(1, config.batch_size + 1):  # compile every batch size the graph may send, before timing
        estimate([frame.image for frame in frames[:size]])

    all_stage_runs: dict[str, list[float]] = {name: [] for name in STAGES_ALONE}
    rows = []
    with tempfile.TemporaryDirectory(prefix="posestream-bench-") as scratch:
        folder = Path(scratch)
        stages = _StagesAlone(config, estimate, frames, fps, folder)
        after = stages.measure()
        for streams in config.stream_counts:
            runs = []
            for _ in range(config.repeats):
                before = after
                run = _graph_run(estimate, config, streams, folder)
                after = stages.measure()
                alone = {name: (before[name] + after[name]) / 2 for name in STAGES_ALONE}
                slowest = min(alone, key=alone.get)
                run.update(stages_alone_fps=alone, slowest_stage=slowest, efficiency=run["fps"] / alone[slowest])
                runs.append(run)
                for name, rate in after.items():
                    all_stage_runs[name].append(rate)
            row = {"streams": streams, "frames": runs[0]["frames"]}
            for key in ("fps", "efficiency", "latency_p50_ms", "latency_p99_ms", "processing_p50_ms",
                        "processing_p99_ms", "mean_batch", "seconds"):
                row[key] = statistics.median(run[key] for run in runs)
            row["stages_alone_fps"] = {name: statistics.median(run["stages_alone_fps"][name] for run in runs)
                                       for name in STAGES_ALONE}
            row["slowest_stage"] = min(row["stages_alone_fps"], key=row["stages_alone_fps"].get)
            row["runs"] = [{key: run[key] for key in ("fps", "efficiency", "slowest_stage")} for run in runs]
            rows.append(row)
            progress(f"{streams} streams: {row['fps']:.1f} frames/s (slowest stage alone: {row['slowest_stage']} "
                     f"{row['stages_alone_fps'][row['slowest_stage']]:.1f}), latency p50 "
                     f"{row['latency_p50_ms']:.0f} ms, efficiency {row['efficiency']:.2f}")
    overall = {name: statistics.median(rates) for name, rates in all_stage_runs.items()}
    return {
        "benchmark": "pipeline",
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average_1min": {"start": load_at_start, "end": os.getloadavg()[0]}},
        "model": describe or {},
        "config": {**asdict(config), "stream_counts": list(config.stream_counts), "frames_alone": alone_frames},
        "stages_alone_fps": overall,
        "stages_alone_runs": all_stage_runs,
        "slowest_stage": min(overall, key=overall.get),
        "target_efficiency": TARGET_EFFICIENCY,
        "rows": rows,
    }


def format_table(result: dict) -> str:
    stages = result["stages_alone_fps"]
    config = result["config"]
    lines = [f"pipeline benchmark: {Path(config['video']).name}, {config['frames_per_stream']} frames per stream, "
             f"batch {config['batch_size']}, wait {config['batch_wait_ms']:g} ms, median of {config['repeats']}",
             "stages alone, median of all measurements (frames/s): "
             + ", ".join(f"{name} {fps:.1f}" for name, fps in stages.items()) + f"; slowest: {result['slowest_stage']}",
             "latency: decode -> output (includes waiting in the file queues); processing: dequeued -> output",
             f"{'streams':>7} | {'fps':>7} | {'slowest alone':>17} | {'latency p50/p99 ms':>18} | "
             f"{'processing p50/p99 ms':>21} | {'batch':>5} | {'efficiency':>10}"]
    for row in result["rows"]:
        alone = f"{row['slowest_stage']} {row['stages_alone_fps'][row['slowest_stage']]:.1f}"
        latency = f"{row['latency_p50_ms']:.0f} / {row['latency_p99_ms']:.0f}"
        processing = f"{row['processing_p50_ms']:.0f} / {row['processing_p99_ms']:.0f}"
        lines.append(f"{row['streams']:>7} | {row['fps']:>7.1f} | {alone:>17} | {latency:>18} | {processing:>21} | "
                     f"{row['mean_batch']:>5.2f} | {row['efficiency']:>10.2f}")
    best = max(row["efficiency"] for row in result["rows"])
    lines.append(f"target efficiency >= {result['target_efficiency']}: best {best:.2f}")
    return "\n".join(lines)


def plot(result: dict, path: str | Path) -> None:
    """fps (with the slowest stage alone as the ceiling) and latencies against the number of streams."""
    import matplotlib

    matplotlib.use("Agg")  # headless: no display needed
    import matplotlib.pyplot as plt

    rows = result["rows"]
    streams = [row["streams"] for row in rows]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    left.plot(streams, [row["fps"] for row in rows], "o-", label="whole graph")
    left.plot(streams, [row["stages_alone_fps"][row["slowest_stage"]] for row in rows], "--", color="grey",
              label="slowest stage alone")
    left.set(xscale="log", xlabel="streams", ylabel="frames/s (all streams)", title="throughput", ylim=(0, None))
    left.set_xticks(streams, [str(n) for n in streams])
    left.minorticks_off()
    left.legend()
    for key, style, label in (("latency_p50_ms", "o-", "decode->output p50"),
                              ("latency_p99_ms", "o--", "decode->output p99"),
                              ("processing_p50_ms", "s-", "dequeued->output p50"),
                              ("processing_p99_ms", "s--", "dequeued->output p99")):
        right.plot(streams, [row[key] for row in rows], style, label=label)
    right.set(xscale="log", yscale="log", xlabel="streams", ylabel="ms", title="frame latency")
    right.set_xticks(streams, [str(n) for n in streams])
    values = [row[key] for row in rows for key in ("latency_p99_ms", "processing_p50_ms")]
    ticks = [v for v in (10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000)
             if min(values) / 2 <= v <= max(values) * 2]
    right.set_yticks(ticks, [str(v) for v in ticks])
    right.minorticks_off()
    right.legend(fontsize="small")
    model = result.get("model", {})
    figure.suptitle(f"{Path(result['config']['video']).name}, {model.get('name', '')} on {model.get('backend', '')}, "
                    f"batch {result['config']['batch_size']}, {result['machine']['cpus']} CPUs")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
