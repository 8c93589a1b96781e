"""Top-down crop speed: B = 1, 8, 32 crops of 256 x 192 from a 768 x 576 frame, crop + normalise into the
network's (B, 3, 256, 192) float32 input.

The frame is vtest.avi's first (../shared/data/video, or POSESTREAM_SHARED; a random frame of the same size
when it is absent). Boxes are pedestrian-sized (40-90 x 100-220 px, some partly off the frame), grown by 1.25
and to the crop's aspect with kernels.crop.expand_boxes. Timed per batch, medians over repeats:

    cv2         kernels.crop.crop_normalise_cpu (cv2.warpAffine per crop, then BGR->RGB + normalise)
    reference   kernels.reference.reference_crop_normalise (vectorised numpy, float64): the straightforward way
    cuda        kernels.crop_cuda.crop_normalise_cuda on a frame already on the device, into a device output,
                then synchronised (only when numba.cuda.is_available(); not in the simulator)
    cuda+upload the same with the frame's host-to-device copy (1.3 MB) inside the timing

CPU timings use one thread (--threads) so that they mean the same on a loaded machine; compare ratios within
one run. A table is printed and JSON written.

    python -m benchmarks.bench_crop [--repeats 20] [--threads 1] [--out benchmarks/results/crop.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from posestream.kernels.crop import crop_affines, crop_normalise_cpu, expand_boxes
from posestream.kernels.reference import reference_crop_normalise
from posestream.pipeline.core.paths import shared_dir

REPO = Path(__file__).resolve().parents[1]

BATCH_SIZES = (1, 8, 32)
CROP_HEIGHT, CROP_WIDTH = 256, 192
FRAME_HEIGHT, FRAME_WIDTH = 576, 768
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_SCALE = (1 / 58.395, 1 / 57.12, 1 / 57.375)
PAD_VALUE = 114


def load_frame() -> tuple[np.ndarray, str]:
    """vtest.avi's first frame, or a random frame of its size when the shared data is absent."""
    path = shared_dir() / "data" / "video" / "vtest.avi"
    capture = cv2.VideoCapture(str(path))
    ok, frame = capture.read()
    capture.release()
    if ok and frame.shape == (FRAME_HEIGHT, FRAME_WIDTH, 3):
        return np.ascontiguousarray(frame), str(path)
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (FRAME_HEIGHT, FRAME_WIDTH, 3), dtype=np.uint8), "random 768x576 frame"


def pedestrian_boxes(count: int, rng) -> np.ndarray:
    sizes = np.stack([rng.uniform(40, 90, count), rng.uniform(100, 220, count)], axis=1)
    centres = rng.uniform((0, 0), (FRAME_WIDTH, FRAME_HEIGHT), (count, 2))
    return expand_boxes(np.concatenate([centres, sizes], axis=1), CROP_HEIGHT, CROP_WIDTH)


def median_ms(function, repeats: int) -> tuple[float, list[float]]:
    function()  # warm-up: compiles, loads caches, touches the output
    runs = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        runs.append(1000.0 * (time.perf_counter() - started))
    return statistics.median(runs), runs


def cuda_timers(frame: np.ndarray, to_image: np.ndarray, batch: int):
    """-> (frame already on the device, frame uploaded each call) callables, or None without a GPU."""
    import posestream.kernels.cuda as cuda_kernels

    if cuda_kernels.simulated():
        return None
    from numba import cuda

    if not cuda.is_available():
        return None
    from posestream.kernels.crop_cuda import crop_normalise_cuda

    stream = cuda.stream()
    frame_device = cuda.to_device(frame, stream=stream)
    affines_device = cuda.to_device(to_image, stream=stream)
    out_device = cuda.device_array((batch, 3, CROP_HEIGHT, CROP_WIDTH), np.float32, stream=stream)
    pinned_frame = cuda.pinned_array(frame.shape, np.uint8)
    pinned_frame[...] = frame

    def resident():
        crop_normalise_cuda(frame_device, affines_device, out_device, IMAGENET_MEAN, IMAGENET_SCALE, True,
                            PAD_VALUE, stream=stream)
        stream.synchronize()

    def uploaded():
        frame_device.copy_to_device(pinned_frame, stream=stream)
        crop_normalise_cuda(frame_device, affines_device, out_device, IMAGENET_MEAN, IMAGENET_SCALE, True,
                            PAD_VALUE, stream=stream)
        stream.synchronize()

    return resident, uploaded


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--reference-repeats", type=int, default=5, help="the numpy reference is slow")
    parser.add_argument("--threads", type=int, default=1, help="cv2 threads for the CPU path")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "crop.json"))
    args = parser.parse_args()

    cv2.setNumThreads(args.threads)
    frame, frame_source = load_frame()
    rng = np.random.default_rng(0)
    rows = []
    for batch in BATCH_SIZES:
        _, to_image = crop_affines(pedestrian_boxes(batch, rng), CROP_HEIGHT, CROP_WIDTH)
        out = np.zeros((batch, 3, CROP_HEIGHT, CROP_WIDTH), np.float32)
        row = {"crops": batch}

        def on_cpu():
            crop_normalise_cpu(frame, to_image, out, IMAGENET_MEAN, IMAGENET_SCALE, True, PAD_VALUE)

        def in_numpy():
            return reference_crop_normalise(frame, to_image, CROP_HEIGHT, CROP_WIDTH, IMAGENET_MEAN, IMAGENET_SCALE,
                                            True, PAD_VALUE)

        row["cv2_ms"], row["cv2_runs_ms"] = median_ms(on_cpu, args.repeats)
        row["reference_ms"], row["reference_runs_ms"] = median_ms(in_numpy, args.reference_repeats)
        row["reference_over_cv2"] = row["reference_ms"] / row["cv2_ms"]
        row["cv2_max_error_grey_levels"] = float(np.abs(out - in_numpy()).max() / max(IMAGENET_SCALE))
        timers = cuda_timers(frame, to_image, batch)
        if timers is not None:
            resident, uploaded = timers
            row["cuda_ms"], row["cuda_runs_ms"] = median_ms(resident, args.repeats)
            row["cuda_with_upload_ms"], row["cuda_with_upload_runs_ms"] = median_ms(uploaded, args.repeats)
            row["cv2_over_cuda"] = row["cv2_ms"] / row["cuda_ms"]
        rows.append(row)

    with_cuda = "cuda_ms" in rows[0]
    print(f"crop + normalise, {CROP_HEIGHT}x{CROP_WIDTH} crops from {frame_source}; medians of {args.repeats} "
          f"(reference: {args.reference_repeats}) repeats, cv2 on {args.threads} thread(s), load average "
          f"{os.getloadavg()[0]:.1f}")
    header = f"{'crops':>5} | {'cv2 ms':>8} | {'ms/crop':>7} | {'numpy ref ms':>12} | {'ref/cv2':>7}"
    if with_cuda:
        header += f" | {'cuda ms':>8} | {'+upload ms':>10} | {'cv2/cuda':>8}"
    print(header)
    for row in rows:
        line = (f"{row['crops']:>5} | {row['cv2_ms']:>8.3f} | {row['cv2_ms'] / row['crops']:>7.3f} | "
                f"{row['reference_ms']:>12.1f} | {row['reference_over_cv2']:>7.1f}")
        if with_cuda:
            line += f" | {row['cuda_ms']:>8.3f} | {row['cuda_with_upload_ms']:>10.3f} | {row['cv2_over_cuda']:>8.1f}"
        print(line)
    if not with_cuda:
        print("cuda: no GPU here (numba.cuda.is_available() is False), column left out")

    result = {
        "benchmark": "crop",
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "python": platform.python_version(), "numpy": np.__version__, "opencv": cv2.__version__,
                    "load_average_1min": os.getloadavg()[0]},
        "config": {"crop": [CROP_HEIGHT, CROP_WIDTH], "frame": [FRAME_HEIGHT, FRAME_WIDTH],
                   "frame_source": frame_source, "repeats": args.repeats,
                   "reference_repeats": args.reference_repeats, "cv2_threads": args.threads,
                   "mean": IMAGENET_MEAN, "scale": IMAGENET_SCALE, "swap_rb": True, "pad_value": PAD_VALUE},
        "rows": rows,
    }
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
