"""Parse speed: find_peaks -> refine_peaks -> paf_score_graph -> assign -> connect_parts.

Synthetic OpenPose COCO-18 maps (hpe-0001's layout) with P = 1, 5, 10, 20, 40 people at 32x57 and 46x82,
plus real hpe-0001 maps from vtest.avi. Timed per frame (N = 1 per call) and batched (N = 64 per call), on
one thread and on all cores (frames split across threads: the kernels release the GIL), beside the numpy/
scipy reference parse (kernels/reference.py) and the parse with bilinear PAF sampling (ParseConfig's
paf_sampling; the default reads the nearest pixel) in the same run. Medians over repeats; a table and JSON
out. Capacity M is ParseConfig's 32 peaks per part, and 48 at P = 40 (40 people plus spurious peaks would
overflow 32 and split people).

    python -m benchmarks.bench_parse [--out benchmarks/results/parse.json] [--quick]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np

from posestream import kernels
from posestream.kernels import ParseConfig
from posestream.kernels.reference import reference_parse
from tests.helpers.maps import HPE_0001, STANDING_POSE, add_noise, render_maps

REPO = Path(__file__).resolve().parents[1]

PEOPLE_COUNTS = (1, 5, 10, 20, 40)
MAP_SIZES = ((32, 57), (46, 82))
BATCH = 64
# trt_pose's single-threaded C++ parse on this machine's cores (the figures), ms per frame.
TRT_POSE_MS = {(46, 82): {1: 0.06, 5: 0.10, 10: 0.16, 20: 0.32, 40: 0.81},
               (32, 57): {1: 0.04, 5: 0.08, 10: 0.14, 20: 0.28, 40: 0.75}}


def grid_people(count: int, height: int, width: int, rng: np.random.Generator) -> list[dict]:
    """``count`` standing people on a grid that fits the map, jittered, so every person is parseable."""
    columns = min(count, 10)
    rows = -(-count // columns)
    cell_w, cell_h = width / columns, height / rows
    scale = min(cell_h / 30.0, cell_w / 12.0, 1.2)
    people = []
    for i in range(count):
        cx = (i % columns + 0.5) * cell_w + rng.uniform(-0.5, 0.5)
        cy = (i // columns + 0.5) * cell_h + rng.uniform(-0.5, 0.5)
        people.append({HPE_0001.index(name): (cx + scale * dx, cy + scale * dy + scale * 0.5)
                       for name, (dx, dy) in STANDING_POSE.items()})
    return people


def synthetic_batch(count: int, height: int, width: int, frames: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    heat, paf = [], []
    for _ in range(frames):
        h, p = render_maps(grid_people(count, height, width, rng), height=height, width=width,
                           sigma=max(0.8, min(1.5, height / 40)))
        h, p = add_noise(h, p, rng, level=0.02, spurious_blobs=2)
        heat.append(h)
        paf.append(p)
    return np.stack(heat), np.stack(paf)


class Chain:
    """The kernel chain with its buffers allocated once, as BottomUpEstimator runs it."""

    def __init__(self, frames: int, config: ParseConfig):
        self.config = config
        self.buffers = kernels.allocate_parse_buffers(frames, HPE_0001.num_keypoints, len(HPE_0001.limbs),
                                                      config.max_peaks, config.max_people)

    def __call__(self, heatmaps: np.ndarray, pafs: np.ndarray) -> int:
        kernels.parse_maps(heatmaps, pafs, HPE_0001, self.config, self.buffers)
        return int(self.buffers.person_counts[:heatmaps.shape[0]].sum())


def median_ms(run, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return 1000.0 * statistics.median(times)


def capacity_for(people: int) -> int:
    """M: ParseConfig's default where it holds every peak, else room for the people plus spurious peaks."""
    return max(ParseConfig().max_peaks, -(-(people + 8) // 16) * 16)


def time_case(heatmaps: np.ndarray, pafs: np.ndarray, config: ParseConfig, repeats: int,
              reference_frames: int) -> dict:
    frames = heatmaps.shape[0]
    per_frame_chain = Chain(1, config)
    bilinear_chain = Chain(1, replace(config, paf_sampling="bilinear"))
    batch_chain = Chain(frames, config)
    workers = os.cpu_count() or 1
    half = -(-frames // workers)
    slices = [slice(i, min(i + half, frames)) for i in range(0, frames, half)]
    worker_chains = [Chain(half, config) for _ in slices]
    pool = ThreadPoolExecutor(max_workers=workers)

    def per_frame(chain=per_frame_chain):
        for n in range(frames):
            chain(heatmaps[n:n + 1], pafs[n:n + 1])

    def all_cores():
        list(pool.map(lambda job: job[0](heatmaps[job[1]], pafs[job[1]]), zip(worker_chains, slices)))

    people = batch_chain(heatmaps, pafs)
    per_frame()  # warm-up (Numba cache load)
    per_frame(bilinear_chain)
    all_cores()
    result = {
        "people_found_per_frame": people / frames,
        "max_peaks": config.max_peaks,
        "one_thread_per_frame_ms": median_ms(per_frame, repeats) / frames,
        "one_thread_per_frame_bilinear_ms": median_ms(lambda: per_frame(bilinear_chain), repeats) / frames,
        "one_thread_batched_ms": median_ms(lambda: batch_chain(heatmaps, pafs), repeats) / frames,
        "all_cores_batched_ms": median_ms(all_cores, repeats) / frames,
    }
    pool.shutdown()
    n_ref = min(reference_frames, frames)
    result["numpy_reference_ms"] = median_ms(
        lambda: reference_parse(heatmaps[:n_ref], pafs[:n_ref], HPE_0001.limbs, HPE_0001.paf_channels,
                                HPE_0001.redundant, config,
                                num_keypoints=HPE_0001.num_keypoints), max(1, repeats // 3)) / n_ref
    result["speedup_vs_numpy"] = result["numpy_reference_ms"] / result["one_thread_per_frame_ms"]
    return result


def real_maps(frames: int) -> tuple[np.ndarray, np.ndarray] | None:
    """hpe-0001's maps on the first frames of vtest.avi at the sidecar's size, or None without shared data."""
    from posestream.pipeline.core.errors import PosestreamError
    from posestream.pipeline.core.model import load_model_spec
    from posestream.pipeline.core.paths import shared_dir
    from posestream.pipeline.inference.backends import BackendConfig, create_backend
    from posestream.pipeline.inference.preprocess import fill_input, plan_letterbox
    from posestream.pipeline.sources.readers import SourceConfig, open_source

    video = shared_dir() / "data/video/vtest.avi"
    try:
        spec = load_model_spec("hpe-0001")
        backend = create_backend(spec, BackendConfig())
        source = open_source(str(video), 0, SourceConfig(max_frames=frames))
    except PosestreamError as error:
        print(f"real maps skipped: {error}", file=sys.stderr)
        return None
    heat, paf = [], []
    with source:
        for frame in source:
            box = plan_letterbox(*frame.image.shape[:2], spec.input, spec.stride, True)
            batch = np.empty((1, 3, box.input_height, box.input_width), np.float32)
            fill_input(frame.image, box, spec.input, batch[0])
            h, p = backend.infer(batch)
            heat.append(h[0])
            paf.append(p[0])
    return np.ascontiguousarray(np.stack(heat)), np.ascontiguousarray(np.stack(paf))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/parse.json"))
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="fewer frames and repeats (smoke run)")
    args = parser.parse_args(argv)
    frames = 8 if args.quick else BATCH
    repeats = 3 if args.quick else args.repeats
    config = ParseConfig()
    rows = []
    for height, width in MAP_SIZES:
        for count in PEOPLE_COUNTS:
            heatmaps, pafs = synthetic_batch(count, height, width, frames)
            result = time_case(heatmaps, pafs, replace(config, max_peaks=capacity_for(count)), repeats,
                               reference_frames=4)
            result.update(maps=f"{height}x{width}", people=count,
                          trt_pose_ms=TRT_POSE_MS[(height, width)][count])
            rows.append(result)
            print(f"  {height}x{width} P={count}: {result['one_thread_per_frame_ms']:.3f} ms/frame", file=sys.stderr)
    maps = real_maps(frames)
    if maps is not None:
        result = time_case(*maps, config, repeats, reference_frames=4)
        result.update(maps=f"vtest {maps[0].shape[2]}x{maps[0].shape[3]}", people=None, trt_pose_ms=None)
        rows.append(result)

    header = (f"{'maps':<14}{'P':>4}{'M':>4}{'found':>7}{'1 thread':>10}{'bilinear':>10}{'batched':>9}{'all cores':>11}"
              f"{'numpy':>9}{'x numpy':>9}{'trt_pose':>10}{'x trt_pose':>11}")
    print("parse ms per frame (medians)")
    print(header)
    for r in rows:
        trt = f"{r['trt_pose_ms']:.2f}" if r["trt_pose_ms"] is not None else "-"
        people = r["people"] if r["people"] is not None else "real"
        versus = f"{r['trt_pose_ms'] / r['one_thread_per_frame_ms']:.2f}" if r["trt_pose_ms"] is not None else "-"
        print(f"{r['maps']:<14}{people!s:>4}{r['max_peaks']:>4}{r['people_found_per_frame']:>7.1f}"
              f"{r['one_thread_per_frame_ms']:>10.3f}{r['one_thread_per_frame_bilinear_ms']:>10.3f}"
              f"{r['one_thread_batched_ms']:>9.3f}{r['all_cores_batched_ms']:>11.3f}{r['numpy_reference_ms']:>9.2f}"
              f"{r['speedup_vs_numpy']:>9.1f}{trt:>10}{versus:>11}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                               "frames_per_case": frames, "repeats": repeats, "config": vars(config),
                               "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
