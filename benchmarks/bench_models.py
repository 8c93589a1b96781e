"""Accuracy and speed of whole models, one row each: the table docs/trainers.md shows for the default model.

Each row is MODEL[@BACKEND][+flip]: a built-in name or a sidecar, the backend that runs it for accuracy (auto:
the sidecar's), and whether test-time flip is on. Per row, through the whole pipeline (create_estimator,
bottom-up, the sidecar's input height unless --input-height):

- LSP test (im1001...) PCK@0.2 over the 12 body joints, PCKh@0.5 (body) and strict PCP, best person per image;
- COCO keypoint AP on the four mmpose val2017 images and on coco-mini-train (the latter is a training set of
  the fine-tuned model; it is here because the issue compares on it);
- network milliseconds per frame at 368x656, batch 1, one real frame letterboxed, median of repeats, on ONNX
  Runtime and on OpenVINO (OpenVINO reads the ONNX file; for an .xml model only OpenVINO applies).

A table and JSON (benchmarks/results/models.json) out; the JSON names the CPU and thread count.

    python -m benchmarks.bench_models --rows lwo-mobilenet lwo-mobilenet-int8 hpe-0001 lwo-mobilenet+flip
"""
from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import cv2
import numpy as np

from benchmarks.timing import median_infer_ms
from posestream.pipeline.core.model import load_model_spec
from posestream.pipeline.core.paths import shared_dir
from posestream.pipeline.estimators.create import EstimatorSettings, create_estimator
from posestream.pipeline.evaluation.coco import CocoEvalConfig, evaluate_coco
from posestream.pipeline.evaluation.lsp import LspEvalConfig, evaluate_lsp
from posestream.pipeline.inference.backends import BackendConfig, create_backend
from posestream.trainers.export.onnx import letterboxed_batch

REPO = Path(__file__).resolve().parents[1]
SPEED_SIZE = (368, 656)


def parse_row(text: str) -> tuple[str, str, bool]:
    flip = text.endswith("+flip")
    text = text.removesuffix("+flip")
    model, _, backend = text.partition("@")
    return model, backend or "auto", flip


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def network_ms(model: str, backend: str, threads: int, repeats: int) -> float | None:
    """Median milliseconds of one batch-1 network call at SPEED_SIZE on ``backend``; None where it cannot run."""
    spec = load_model_spec(model)
    if backend == "onnxruntime" and spec.model_path.suffix != ".onnx":
        return None
    runner = create_backend(spec, BackendConfig(name=backend, threads=threads))
    capture = cv2.VideoCapture(str(shared_dir() / "data/video/street.mp4"))  # a real 960x540 street frame
    ok, frame = capture.read()
    capture.release()
    if not ok:
        frame = np.full((540, 960, 3), 128, np.uint8)
    batch = letterboxed_batch([frame], spec.input, spec.stride, *SPEED_SIZE)
    return median_infer_ms(runner, batch, repeats)


def measure_row(row: str, args: argparse.Namespace) -> dict:
    model, backend, flip = parse_row(row)
    shared = shared_dir()
    settings = EstimatorSettings(model=model, backend=backend, threads=args.threads, flip=flip,
                                 input_height=args.input_height, min_score=0.0)
    estimator = create_estimator(settings)
    lsp = evaluate_lsp(shared / "data/lsp", "test", estimator,
                       LspEvalConfig(max_images=args.lsp_images, show_progress=False))
    result = {"row": row, "model": estimator.spec.name, "backend": estimator.backend.name, "flip": flip,
              "input_height": args.input_height or estimator.spec.input.height,
              "lsp_images": lsp["images"], "lsp_pck_body": lsp["pck_mean_body"], "lsp_pckh_body": lsp["pckh_mean_body"],
              "lsp_pcp": lsp["pcp_mean"]}
    for key, images, annotation_file in (
            ("coco_mmpose_ap", "data/mmpose/coco", "data/mmpose/coco/test_coco.json"),
            ("coco_mini_train_ap", "data/coco-mini-train/images",
             "data/coco-mini-train/person_keypoints_train2017.json")):
        coco = evaluate_coco(shared / images, shared / annotation_file, estimator, CocoEvalConfig(show_progress=False))
        result[key] = coco["AP"]
    factor = 2 if flip else 1  # the network runs twice per frame with flip
    for name in ("onnxruntime", "openvino"):
        ms = network_ms(model, name, args.threads, args.repeats)
        result[f"{name}_ms"] = None if ms is None else ms * factor
    return result


def format_table(rows: list[dict]) -> str:
    header = (f"{'row':<28} {'LSP PCK@0.2':>11} {'PCKh@0.5':>9} {'PCP':>6} {'AP mmpose':>9} {'AP mini':>8} "
              f"{'ORT ms':>7} {'OV ms':>7}")
    lines = [header, "-" * len(header)]

    def cell(value, width, digits=3):
        return f"{'-':>{width}}" if value is None else f"{value:>{width}.{digits}f}"

    for r in rows:
        lines.append(f"{r['row']:<28} {cell(r['lsp_pck_body'], 11)} {cell(r['lsp_pckh_body'], 9)} "
                     f"{cell(r['lsp_pcp'], 6)} {cell(r['coco_mmpose_ap'], 9)} {cell(r['coco_mini_train_ap'], 8)} "
                     f"{cell(r['onnxruntime_ms'], 7, 1)} {cell(r['openvino_ms'], 7, 1)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", nargs="+", required=True, metavar="MODEL[@BACKEND][+flip]")
    parser.add_argument("--lsp-images", type=int, default=1000)
    parser.add_argument("--input-height", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--out-json", default=str(REPO / "benchmarks/results/models.json"))
    args = parser.parse_args(argv)
    rows = []
    for row in args.rows:
        rows.append(measure_row(row, args))
        print(format_table(rows[-1:]).splitlines()[-1], flush=True)
    print(format_table(rows))
    out = Path(args.out_json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"cpu": cpu_name(), "threads": args.threads, "lsp_images": args.lsp_images,
                               "speed_size": list(SPEED_SIZE), "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
