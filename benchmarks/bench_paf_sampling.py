"""Quality A/B of the PAF line integral's sampling: nearest pixel (the default) against bilinear.

The same network maps are parsed both ways (the network runs once per image; its outputs are kept), and
each parse is scored: COCO AP on mmpose's 4 val2017 images and on coco-mini-train (80 images), LSP PCK@0.2
and strict PCP on LSP test. The speed side of the A/B is in bench_parse.py (``--paf-sampling``).

    python -m benchmarks.bench_paf_sampling [--model hpe-0001] [--lsp-images 1000] [--out ...json]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from posestream.pipeline.core.model import load_model_spec
from posestream.pipeline.core.paths import shared_dir
from posestream.pipeline.estimators.bottomup import BottomUpEstimator, EstimatorConfig, ParseConfig
from posestream.pipeline.evaluation.coco import CocoEvalConfig, evaluate_coco
from posestream.pipeline.evaluation.common import format_table
from posestream.pipeline.evaluation.lsp import LspEvalConfig, evaluate_lsp
from posestream.pipeline.inference.backends import BackendConfig, create_backend

REPO = Path(__file__).resolve().parents[1]

SAMPLINGS = ("nearest", "bilinear")


class RememberingBackend:
    """A backend that runs the network once per distinct input batch and hands back the same maps after."""

    def __init__(self, backend):
        self.backend = backend
        self.name = backend.name
        self.resizable = backend.resizable
        self.outputs: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def describe(self, height: int, width: int):
        return self.backend.describe(height, width)

    def infer(self, batch: np.ndarray):
        key = hashlib.sha1(np.ascontiguousarray(batch).tobytes()).hexdigest()
        if key not in self.outputs:
            self.outputs[key] = self.backend.infer(batch)
        return self.outputs[key]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="hpe-0001")
    parser.add_argument("--input-height", type=int, default=None)
    parser.add_argument("--lsp-images", type=int, default=1000, help="the first N of LSP test (default all 1000)")
    parser.add_argument("--out", default=None, help="default: benchmarks/results/paf-sampling-<model>.json")
    args = parser.parse_args(argv)
    shared = shared_dir()
    spec = load_model_spec(args.model)
    backend = RememberingBackend(create_backend(spec, BackendConfig()))
    estimators = {sampling: BottomUpEstimator(spec, backend, EstimatorConfig(
        input_height=args.input_height, parse=replace(ParseConfig(), paf_sampling=sampling))) for sampling in SAMPLINGS}

    datasets = {
        "coco mmpose (4 images)": lambda estimate: evaluate_coco(
            shared / "data/mmpose/coco", shared / "data/mmpose/coco/test_coco.json", estimate, CocoEvalConfig()),
        "coco-mini-train (80 images)": lambda estimate: evaluate_coco(
            shared / "data/coco-mini-train/images", shared / "data/coco-mini-train/person_keypoints_train2017.json",
            estimate, CocoEvalConfig()),
        f"lsp test ({args.lsp_images} images)": lambda estimate: evaluate_lsp(
            shared / "data/lsp", "test", estimate, LspEvalConfig(max_images=args.lsp_images)),
    }
    results: dict[str, dict[str, dict]] = {}
    for name, evaluate in datasets.items():
        for sampling in SAMPLINGS:
            metrics = evaluate(estimators[sampling])
            results.setdefault(name, {})[sampling] = metrics
            print(f"{name}, {sampling}: done", file=sys.stderr)
        backend.outputs.clear()  # only the same dataset's two parses share maps

    rows = []
    for name, by_sampling in results.items():
        if "AP" in by_sampling["nearest"]:
            keys = (("AP", "AP"), ("AP50", "AP .5"), ("AR", "AR"))
        else:
            keys = (("pck_mean", "PCK@0.2"), ("pck_mean_body", "PCK body"), ("pcp_mean", "PCP"))
        for key, label in keys:
            values = [by_sampling[s][key] for s in SAMPLINGS]
            rows.append((name, label, *(f"{v:.3f}" for v in values), f"{values[0] - values[1]:+.3f}"))
    print(f"PAF sampling A/B, model {args.model} (same maps, parsed both ways)")
    print(format_table(rows, ("data", "metric", *SAMPLINGS, "difference")))
    out = Path(args.out or REPO / f"benchmarks/results/paf-sampling-{args.model}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"model": args.model, "input_height": args.input_height, "results": results},
                              indent=2, default=float) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
