"""Top-down vs bottom-up throughput through the real runtime: frames/s of ``posestream run`` on one video.

Three estimators on the same model and backend (hpe-0001 on OpenVINO by default): bottom-up, top-down with the
detector on every frame (--detect-every 1) and top-down detecting every 5th frame (--detect-every 5). Each run
is the whole stage graph (decode -> inference -> tracker) over the first N frames, no outputs written. Runs of
the three modes are interleaved, repeat after repeat, so a background load hits them alike; medians over repeats,
and each mode's ratio to bottom-up (the only numbers that carry across machines). Per-frame stage times come
from the estimators' own stats. A table and JSON out.

    python -m benchmarks.bench_topdown [--video V] [--frames 200] [--repeats 3] [--model hpe-0001]
                                       [--out benchmarks/results/topdown.json]
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import av
import numpy as np

from posestream.pipeline.core.model import load_model_spec
from posestream.pipeline.core.paths import shared_dir
from posestream.pipeline.estimators.bottomup import BottomUpEstimator, EstimatorConfig
from posestream.pipeline.estimators.topdown import TopDownConfig, TopDownEstimator
from posestream.pipeline.inference.backends import BackendConfig, create_backend
from posestream.pipeline.runtime.run import RunConfig, run_streams

RESULTS = Path(__file__).resolve().parent / "results"
MODES = (("bottom-up", None), ("top-down K=1", 1), ("top-down K=5", 5))


def first_frames(video: str, count: int) -> list:
    with av.open(video) as container:
        frames = []
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="bgr24"))
            if len(frames) == count:
                break
    return frames


def build(model: str, detect_every: int | None):
    spec = load_model_spec(model)
    backend = create_backend(spec, BackendConfig())
    if detect_every is None:
        return BottomUpEstimator(spec, backend, EstimatorConfig())
    return TopDownEstimator(spec, backend, TopDownConfig(detect_every=detect_every))


def warm_up(estimator, frames: list) -> None:
    """Compile every input shape the run will use (OpenVINO compiles per shape) before timing."""
    for frame in frames:
        estimator([frame])
    if isinstance(estimator, TopDownEstimator):
        for size in (8, 4, 2, 1):  # the crop batch sizes top-down feeds the network
            estimator.backend.infer(np.zeros((size, 3, estimator.crop_height, estimator.crop_width), np.float32))


def timed_run(estimator, video: str, frames: int) -> dict:
    stats_before = vars(estimator.stats).copy()
    config = RunConfig(sources=(video,), max_frames=frames, progress=False)
    started = time.perf_counter()
    reports = run_streams(config, estimator)
    seconds = time.perf_counter() - started
    report = reports[0]
    if report.error:
        raise SystemExit(f"run failed: {report.error}")
    after = vars(estimator.stats)
    done = max(after["frames"] - stats_before["frames"], 1)
    per_frame = {key.replace("_seconds", "_ms"): 1000.0 * (after[key] - stats_before[key]) / done
                 for key in after if key.endswith("_seconds")}
    result = {"frames": report.frames, "seconds": seconds, "fps": report.frames / seconds,
              "people_per_frame": report.people / max(report.frames, 1), **per_frame}
    for key in ("crops", "detector_frames"):
        if key in after:
            result[f"{key}_per_frame"] = (after[key] - stats_before[key]) / done
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", default=str(shared_dir() / "data" / "video" / "vtest.avi"))
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default="hpe-0001")
    parser.add_argument("--out", default=str(RESULTS / "topdown.json"))
    args = parser.parse_args()

    estimators = {name: build(args.model, every) for name, every in MODES}
    warm_frames = first_frames(args.video, 3)
    for estimator in estimators.values():
        warm_up(estimator, warm_frames)
    runs: dict[str, list[dict]] = {name: [] for name, _ in MODES}
    for repeat in range(args.repeats):
        order = [name for name, _ in MODES]
        order = order[repeat % len(order):] + order[:repeat % len(order)]  # rotate: no mode always goes first
        for name in order:
            runs[name].append(timed_run(estimators[name], args.video, args.frames))
            print(f"repeat {repeat + 1}/{args.repeats} {name}: {runs[name][-1]['fps']:.2f} frames/s", flush=True)

    summary = {}
    for name, results in runs.items():
        summary[name] = {key: statistics.median(r[key] for r in results) for key in results[0]}
    base = summary["bottom-up"]["fps"]
    print(f"\n{'mode':<14} {'frames/s':>9} {'x bottom-up':>12} {'people/frame':>13} {'crops/frame':>12} "
          f"{'detect ms':>10} {'crop ms':>8} {'network ms':>11} {'parse ms':>9}")
    for name, row in summary.items():
        print(f"{name:<14} {row['fps']:>9.2f} {row['fps'] / base:>12.2f} {row['people_per_frame']:>13.2f} "
              f"{row.get('crops_per_frame', float('nan')):>12.2f} {row.get('detect_ms', float('nan')):>10.1f} "
              f"{row.get('crop_ms', float('nan')):>8.1f} {row['inference_ms']:>11.1f} {row['parse_ms']:>9.1f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "video": args.video, "frames": args.frames, "repeats": args.repeats, "model": args.model,
        "machine": {"platform": platform.platform(), "processor": platform.processor()},
        "note": "medians over interleaved repeats; compare ratios, the machine may be loaded",
        "median": summary, "ratio_to_bottom_up": {name: row["fps"] / base for name, row in summary.items()},
        "runs": runs,
    }, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
