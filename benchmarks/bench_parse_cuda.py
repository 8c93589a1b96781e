"""Parse speed on the GPU: kernels.cuda.parse_on_device on a batch of device maps (issue 3's GPU target).

A batch of 64 frames x 10 synthetic people (hpe-0001's COCO-18 layout, 46 x 82 maps, noise and spurious blobs)
is put on the device once; then, repeated, the whole chain runs as the pipeline would run it: device kernels
(find_peaks, refine_peaks, paf_score_graph, assign), the compact copies to the host, connect_parts there.
Reported: the median wall time of that call per batch, the median device time of each kernel (CUDA events), the
bytes copied to the host per frame, and the targets (< 2 ms per batch, < 64 KB per frame). The people found are
checked against the CPU chain on the same maps.

    python -m benchmarks.bench_parse_cuda [--frames 64] [--people 10] [--repeats 50] [--out FILE]

Needs a CUDA GPU; without one it says so and exits with status 2. ``--allow-simulator`` lets it run in Numba's
CUDA simulator (NUMBA_ENABLE_CUDASIM=1) as a smoke test: use tiny sizes there, and ignore the timings.
``cuda_benchmark`` is the same measurement as a function, for other benchmark scripts.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import posestream.kernels.cuda as cuda_kernels
from benchmarks.bench_parse import synthetic_batch  # the same synthetic scenes as the CPU benchmark
from posestream import kernels
from posestream.kernels import ParseConfig
from tests.helpers.maps import HPE_0001

REPO = Path(__file__).resolve().parents[1]

TARGET_BATCH_MS = 2.0
TARGET_BYTES_PER_FRAME = 64 * 1024


class NoDevice(RuntimeError):
    pass


def cuda_benchmark(frames: int = 64, people: int = 10, height: int = 46, width: int = 82, repeats: int = 50,
                   config: ParseConfig = ParseConfig(), allow_simulator: bool = False) -> dict:
    """-> the measurements as a dict; raises NoDevice without a GPU (or the simulator, when allowed)."""
    from numba import cuda

    if cuda_kernels.simulated() and not allow_simulator:
        raise NoDevice("NUMBA_ENABLE_CUDASIM=1 is set: simulator timings mean nothing (pass --allow-simulator "
                       "for a smoke run)")
    if not cuda_kernels.device_available():
        raise NoDevice("no CUDA GPU here (numba.cuda.is_available() is False): this benchmark needs one")
    heatmaps, pafs = synthetic_batch(people, height, width, frames)
    tables = HPE_0001
    stream = cuda.stream()
    device_tables = cuda_kernels.tables_on_device(tables, stream=stream)
    heatmaps_device = cuda.to_device(heatmaps, stream=stream)
    pafs_device = cuda.to_device(pafs, stream=stream)
    buffers = cuda_kernels.allocate_device_parse_buffers(frames, tables.num_keypoints, len(tables.limbs),
                                                         config.max_peaks, config.max_people)

    def parse():
        return cuda_kernels.parse_on_device(heatmaps_device, pafs_device, device_tables, config, buffers,
                                            stream=stream)

    started = time.perf_counter()
    transfer = parse()  # compiles the kernels (or loads them from numba's cache)
    first_call_s = time.perf_counter() - started
    wall_ms = []
    for _ in range(repeats):
        started = time.perf_counter()
        transfer = parse()
        wall_ms.append(1000.0 * (time.perf_counter() - started))

    # The same people as the CPU chain on the same maps.
    on_cpu = kernels.allocate_parse_buffers(frames, tables.num_keypoints, len(tables.limbs), config.max_peaks,
                                            config.max_people)
    kernels.parse_maps(heatmaps, pafs, tables, config, on_cpu)
    host = buffers.host
    same_people = bool(np.array_equal(host.person_counts[:frames], on_cpu.person_counts)) and all(
        sorted(map(tuple, host.person_parts[n, :host.person_counts[n]].tolist()))
        == sorted(map(tuple, on_cpu.person_parts[n, :on_cpu.person_counts[n]].tolist())) for n in range(frames))

    stage_ms = {} if cuda_kernels.simulated() else device_stage_times(
        heatmaps_device, pafs_device, device_tables, config, buffers, stream, repeats)
    median_ms = statistics.median(wall_ms)
    return {
        "device": device_name(),
        "frames": frames, "people_per_frame": people, "maps": f"{height}x{width}", "repeats": repeats,
        "max_peaks": config.max_peaks, "max_people": config.max_people,
        "first_call_s": first_call_s,
        "batch_ms_median": median_ms, "batch_ms_min": min(wall_ms), "per_frame_ms": median_ms / frames,
        "device_stage_ms_median": stage_ms,
        "bytes_to_host_per_frame": transfer.bytes_per_frame,
        "people_found_per_frame": float(host.person_counts[:frames].mean()),
        "same_people_as_cpu": same_people,
        "meets_batch_target": median_ms < TARGET_BATCH_MS,
        "meets_bytes_target": transfer.bytes_per_frame < TARGET_BYTES_PER_FRAME,
    }


def device_name() -> str:
    if cuda_kernels.simulated():
        return "Numba CUDA simulator"
    from numba import cuda

    name = cuda.get_current_device().name
    return name.decode() if isinstance(name, bytes) else str(name)


def device_stage_times(heatmaps, pafs, device_tables, config, buffers, stream, repeats: int) -> dict:
    """Median device time of each kernel, from CUDA events around its launch (launch overhead excluded)."""
    from numba import cuda

    frames = heatmaps.shape[0]
    k = device_tables.tables.num_keypoints
    stages = {
        "find_peaks": lambda: cuda_kernels.find_peaks(heatmaps, k, config.peak_threshold, config.peak_window,
                                                      buffers.peak_counts, buffers.peaks, buffers.peak_scores,
                                                      stream=stream),
        "refine_peaks": lambda: cuda_kernels.refine_peaks(heatmaps, buffers.peak_counts, buffers.peaks,
                                                          buffers.refined, stream=stream),
        "paf_score_graph": lambda: cuda_kernels.paf_score_graph(
            pafs, device_tables.limbs, device_tables.paf_channels, buffers.peak_counts, buffers.refined,
            config.paf_samples, config.paf_min_sample_score, config.paf_min_sample_fraction, config.paf_length_prior,
            config.paf_sampling == "nearest", buffers.limb_scores, stream=stream),
        "assign": lambda: cuda_kernels.assign(buffers.limb_scores, device_tables.limbs, buffers.peak_counts, frames,
                                              buffers.match_counts, buffers.matches, buffers.match_scores,
                                              stream=stream),
    }
    times: dict[str, list[float]] = {name: [] for name in stages}
    for _ in range(repeats):
        for name, run in stages.items():
            start, end = cuda.event(timing=True), cuda.event(timing=True)
            start.record(stream)
            run()
            end.record(stream)
            end.synchronize()
            times[name].append(cuda.event_elapsed_time(start, end))
    return {name: statistics.median(values) for name, values in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--people", type=int, default=10)
    parser.add_argument("--height", type=int, default=46)
    parser.add_argument("--width", type=int, default=82)
    parser.add_argument("--max-peaks", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--allow-simulator", action="store_true")
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/parse_cuda.json"))
    args = parser.parse_args(argv)
    try:
        result = cuda_benchmark(args.frames, args.people, args.height, args.width, args.repeats,
                                ParseConfig(max_peaks=args.max_peaks), args.allow_simulator)
    except NoDevice as error:
        print(f"bench_parse_cuda: not run: {error}", file=sys.stderr)
        return 2
    print(f"GPU parse on {result['device']}: {result['frames']} frames x {result['people_per_frame']} people, "
          f"{result['maps']} maps, M={result['max_peaks']}")
    print(f"  batch (median of {result['repeats']}): {result['batch_ms_median']:.3f} ms "
          f"(target < {TARGET_BATCH_MS} ms: {'met' if result['meets_batch_target'] else 'NOT met'}), "
          f"{result['per_frame_ms'] * 1000:.1f} us/frame")
    for name, value in result["device_stage_ms_median"].items():
        print(f"  {name:<16}{value * 1000:8.1f} us on the device")
    print(f"  to host: {result['bytes_to_host_per_frame']:.0f} B/frame (target < {TARGET_BYTES_PER_FRAME} B: "
          f"{'met' if result['meets_bytes_target'] else 'NOT met'})")
    print(f"  people/frame {result['people_found_per_frame']:.1f}, same people as the CPU chain: "
          f"{result['same_people_as_cpu']}; first call {result['first_call_s']:.1f} s")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0 if result["same_people_as_cpu"] else 1


if __name__ == "__main__":
    sys.exit(main())
