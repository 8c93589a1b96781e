"""Tracker speed alone, on one core: frames per second at 5, 20 and 50 people.

Synthetic people (tests/walkers.py) walk at random speeds and directions over a 1920x1080 picture, turning
back at its edges, with 2 px keypoint noise; every person is detected on every frame. The detections are
made before timing. Timed per frame: ``PoseTracker.update_arrays`` (arrays in, IDs and smoothed keypoints
out) and ``PoseTracker.update`` (Person objects in and out, as pipeline/run.py calls it). Each repeat is a
fresh tracker over all frames; the first frames of the first repeat include Numba's cache load. Medians
over repeats; a table and JSON out.

    python -m benchmarks.bench_tracker [--frames 1000] [--repeats 5] [--out benchmarks/results/tracker.json]
"""
from __future__ import annotations

import os

# One core: set before numpy, scipy and numba load their thread pools (so the imports below come after it).
# ruff: noqa: E402
for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_variable] = "1"

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from posestream.pipeline.tracking.tracker import PoseTracker, TrackerConfig
from tests.helpers.walkers import random_walkers, render

REPO = Path(__file__).resolve().parents[1]

PEOPLE_COUNTS = (5, 20, 50)
FPS = 25.0
TARGET_FPS_AT_20 = 2000.0  # the target; OC-SORT reports 700 frames/s for its association step


def pin_to_one_core() -> int | None:
    """Run on one CPU (the first this process may use); returns it, or None where affinity is unsupported."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    core = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    return core


def time_frames(frames, people_per_frame, api: str, config: TrackerConfig) -> float:
    """Frames per second of one fresh tracker over all frames."""
    tracker = PoseTracker(config, fps=FPS)
    started = time.perf_counter()
    if api == "arrays":
        for frame in frames:
            tracker.update_arrays(frame.keypoints, frame.scores, frame.boxes, frame.index / FPS)
    else:
        for frame, people in zip(frames, people_per_frame):
            tracker.update(people, frame.index / FPS)
    return len(frames) / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "tracker.json"))
    args = parser.parse_args()

    core = pin_to_one_core()
    config = TrackerConfig()
    rng = np.random.default_rng(0)
    PoseTracker(config).update_arrays(np.zeros((0, 17, 3)), np.zeros(0), np.zeros((0, 4)))  # load the kernels
    rows = []
    for count in PEOPLE_COUNTS:
        frames = render(random_walkers(count, args.frames, rng), args.frames, rng, image_size=(1920, 1080))
        people_per_frame = [frame.people() for frame in frames]
        row = {"people": count, "frames": args.frames}
        for api in ("arrays", "people"):
            runs = [time_frames(frames, people_per_frame, api, config) for _ in range(args.repeats)]
            row[f"{api}_fps_median"] = statistics.median(runs)
            row[f"{api}_fps_runs"] = runs
            row[f"{api}_ms_per_frame"] = 1000.0 / statistics.median(runs)
        rows.append(row)

    print(f"tracker alone, one core (cpu {core}), {args.frames} frames, median of {args.repeats} repeats")
    print(f"{'people':>6} | {'arrays fps':>10} | {'ms/frame':>8} | {'Person fps':>10} | {'ms/frame':>8}")
    for row in rows:
        print(f"{row['people']:>6} | {row['arrays_fps_median']:>10.0f} | {row['arrays_ms_per_frame']:>8.3f} | "
              f"{row['people_fps_median']:>10.0f} | {row['people_ms_per_frame']:>8.3f}")
    at_20 = next(row for row in rows if row["people"] == 20)
    print(f"target at 20 people: >= {TARGET_FPS_AT_20:.0f} frames/s -> arrays {at_20['arrays_fps_median']:.0f}, "
          f"Person {at_20['people_fps_median']:.0f}")

    result = {
        "benchmark": "tracker",
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpu_used": core,
                    "python": platform.python_version(), "numpy": np.__version__},
        "config": {"frames": args.frames, "repeats": args.repeats, "fps_of_timestamps": FPS,
                   "image": [1920, 1080], "keypoint_noise_px": 2.0},
        "target_fps_at_20_people": TARGET_FPS_AT_20,
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
