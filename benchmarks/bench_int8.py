"""INT8 (QDQ) against FP32 on the CPU: accuracy, speed and size of the same network in ONNX Runtime.

For an FP32 ONNX model (with its sidecar) or a trainer checkpoint (exported first), and its INT8 version
(given, or quantized here by trainers/quantize.py on real images), it measures with the whole pipeline
(BottomUpEstimator, ONNX Runtime CPU):

- PCK@0.2 on the first N LSP test images (im1001...), best person per image;
- COCO keypoint AP on the four mmpose COCO val images (12 people);
- inference milliseconds per frame, median over repeats, batch 1, at 368x656 and 256x256 (a real image
  letterboxed as the pipeline does; network time only, no parse);
- file sizes.

A table and JSON (benchmarks/results/int8.json) out. Accuracy means something only for a trained network;
``--untrained lightpose-xs`` measures speed and size with a fresh network (its accuracy columns are noise).

    python benchmarks/bench_int8.py --checkpoint runs/x/best.pt [--calib lsp --calib-count 64]
    python benchmarks/bench_int8.py --model model.onnx [--int8 model.int8.onnx] [--lsp-images 200]
    python benchmarks/bench_int8.py --untrained lightpose-xs --lsp-images 50
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

from benchmarks.timing import median_infer_ms
from posestream.pipeline.core.model import load_model_spec
from posestream.pipeline.core.paths import shared_dir
from posestream.pipeline.estimators.bottomup import BottomUpEstimator, EstimatorConfig
from posestream.pipeline.evaluation.coco import CocoEvalConfig, evaluate_coco
from posestream.pipeline.evaluation.lsp import LspEvalConfig, evaluate_lsp
from posestream.pipeline.inference.backends import BackendConfig, create_backend
from posestream.trainers.export.onnx import layout_input_spec, letterboxed_batch, read_image, sample_images

REPO = Path(__file__).resolve().parents[1]

SPEED_SIZES = ((368, 656), (256, 256))


def untrained_checkpoint(name: str, folder: Path) -> Path:
    """A fresh network with batch-norm statistics from real images (so its outputs depend on its input)."""
    import torch

    from posestream.pipeline.networks.checkpoint import save_checkpoint
    from posestream.pipeline.networks.models import build_model

    torch.manual_seed(0)
    net = build_model(name)
    images = [read_image(p) for p in sample_images("lspet", 32)]
    batch = torch.from_numpy(letterboxed_batch(images, layout_input_spec(256, 256), 8, 256, 256))
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None
    net.train()
    with torch.no_grad():
        net(batch)
    return save_checkpoint(folder / f"{name}-untrained.pt", net.eval(), name, (368, 368))


def inference_ms(backend, height: int, width: int, repeats: int) -> float:
    """Median milliseconds of one batch-1 inference on a real image at height x width."""
    image = read_image(sample_images("mmpose-coco", 1)[0])
    batch = letterboxed_batch([image], layout_input_spec(height, width), 8, height, width)
    return median_infer_ms(backend, batch, repeats)


def measure(model: Path, lsp_images: int, repeats: int, threads: int, input_height: int | None) -> dict:
    spec = load_model_spec(str(model))
    backend = create_backend(spec, BackendConfig(name="onnxruntime", threads=threads))
    estimator = BottomUpEstimator(spec, backend, EstimatorConfig(input_height=input_height))
    shared = shared_dir()
    lsp = evaluate_lsp(shared / "data/lsp", "test", estimator, LspEvalConfig(max_images=lsp_images, show_progress=False))
    coco = evaluate_coco(shared / "data/mmpose/coco", shared / "data/mmpose/coco/test_coco.json", estimator,
                         CocoEvalConfig(show_progress=False))
    row = {"model": str(spec.model_path), "bytes": spec.model_path.stat().st_size,
           "pck_0.2": lsp["pck_mean"], "lsp_images": lsp["images"], "coco_ap": coco["AP"],
           "coco_people_detected": coco["people_detected"]}
    for height, width in SPEED_SIZES:
        row[f"ms_{height}x{width}"] = inference_ms(backend, height, width, repeats)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="FP32 .onnx with its sidecar")
    source.add_argument("--checkpoint", help="trainer checkpoint, exported to ONNX first")
    source.add_argument("--untrained", metavar="NAME", help="a fresh network (speed and size only)")
    parser.add_argument("--int8", default=None, help="INT8 .onnx with its sidecar (default: quantize here)")
    parser.add_argument("--calib", default="lsp", help="calibration images: folder or dataset name (default lsp)")
    parser.add_argument("--calib-count", type=int, default=64)
    parser.add_argument("--calib-method", default="minmax", choices=("minmax", "entropy", "percentile"))
    parser.add_argument("--target", default="cpu", choices=("cpu", "tensorrt"), help="INT8 layout (default cpu)")
    parser.add_argument("--lsp-images", type=int, default=200, help="LSP test images for PCK (default 200)")
    parser.add_argument("--input-height", type=int, default=None,
                        help="network input height for the accuracy runs (default: the sidecar's)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0: all cores)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "int8.json"))
    args = parser.parse_args()

    from posestream.trainers.export.onnx import ExportConfig, export_onnx
    from posestream.trainers.export.quantize import QuantizeConfig, compare_models, quantize_onnx

    with tempfile.TemporaryDirectory(prefix="bench-int8-") as scratch:
        work = Path(scratch)
        fp32 = Path(args.model) if args.model else None
        if fp32 is None:
            checkpoint = Path(args.checkpoint) if args.checkpoint else untrained_checkpoint(args.untrained, work)
            fp32 = export_onnx(checkpoint, work / "fp32.onnx", ExportConfig(parity=False)).onnx_path
        if args.int8:
            int8 = Path(args.int8)
            calibration = None
        else:
            report = quantize_onnx(fp32, work / "int8.onnx", QuantizeConfig(
                calibration=args.calib, calibration_count=args.calib_count, method=args.calib_method,
                target=args.target))
            int8 = report.int8_path
            calibration = {"source": args.calib, "images": report.calibration_images, "method": args.calib_method,
                           "target": args.target, "seconds": report.seconds}
        rows = {"fp32": measure(fp32, args.lsp_images, args.repeats, args.threads, args.input_height),
                "int8": measure(int8, args.lsp_images, args.repeats, args.threads, args.input_height)}
        agreement = compare_models(fp32, int8, sample_images("mmpose-coco", 4))

    columns = ["pck_0.2", "coco_ap"] + [f"ms_{h}x{w}" for h, w in SPEED_SIZES] + ["bytes"]
    print(f"{'':6}" + "".join(f"{c:>14}" for c in columns))
    for name, row in rows.items():
        cells = []
        for column in columns:
            value = row[column]
            cells.append(f"{value:>14}" if isinstance(value, int) else f"{value:>14.3f}" if value is not None else f"{'-':>14}")
        print(f"{name:6}" + "".join(cells))
    speedups = {f"{h}x{w}": rows["fp32"][f"ms_{h}x{w}"] / rows["int8"][f"ms_{h}x{w}"] for h, w in SPEED_SIZES}
    print("int8 speed-up (fp32 ms / int8 ms): " + ", ".join(f"{k} {v:.2f}x" for k, v in speedups.items()))
    print(agreement.summary())
    if args.untrained:
        print(f"note: {args.untrained} is untrained; its PCK and AP are noise")

    result = {
        "benchmark": "int8",
        "source": {"model": args.model, "checkpoint": args.checkpoint, "untrained": args.untrained},
        "calibration": calibration,
        "rows": rows,
        "speedup": speedups,
        "agreement": agreement.__dict__,
        "lsp_images": args.lsp_images,
        "input_height": args.input_height,
        "repeats": args.repeats,
        "threads": args.threads,
        "machine": {"python": platform.python_version(), "processor": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count()},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
