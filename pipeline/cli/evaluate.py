"""``posestream eval coco``, ``eval lsp`` and ``eval mpii``: accuracy against ground truth."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from posestream.pipeline.cli.common import add_model_flags, estimator_settings, positive, timing, write_json
from posestream.pipeline.estimators.create import create_estimator


def add_parser(commands) -> None:
    evaluate = commands.add_parser("eval", help="evaluate against ground truth (COCO AP, LSP PCK/PCKh/PCP, MPII PCKh)")
    datasets = evaluate.add_subparsers(dest="dataset", metavar="DATASET", required=True)
    coco = datasets.add_parser("coco", help="COCO keypoint AP/AR with pycocotools",
                               description="Run the pipeline over the images of a COCO person-keypoints json "
                                           "and print AP, AP50, AP75, AR as a table and as JSON.")
    coco.add_argument("--images", required=True, help="folder holding the json's images")
    coco.add_argument("--ann", required=True, help="COCO person-keypoints annotation json")
    lsp = datasets.add_parser("lsp", help="LSP PCK@0.2 and PCKh@0.5 per joint, strict PCP per limb",
                              description="Single-person evaluation on LSP-format data (the best-scoring person "
                                          "per image): PCK@0.2 with torso = left shoulder to right hip, PCKh@0.5 "
                                          "with head = neck to head top, and strict PCP per limb.")
    lsp.add_argument("--data", required=True, help="LSP folder: images/ and joints.mat")
    lsp.add_argument("--split", default="test", choices=("test", "train", "all"),
                     help="test = im1001-im2000, train = im0001-im1000 (LSP); default test")
    mpii = datasets.add_parser("mpii", help="MPII PCKh@0.5 per body joint",
                               description="PCKh@0.5 (threshold = half the true upper-neck to head-top segment) "
                                           "on MPII annotations in mmpose's json form, every annotated person "
                                           "paired one to one with a predicted person.")
    mpii.add_argument("--images", required=True, help="folder holding the json's images")
    mpii.add_argument("--ann", required=True, help="MPII annotation json (a list of people)")
    for dataset_parser, handler in ((coco, command_eval_coco), (lsp, command_eval_lsp), (mpii, command_eval_mpii)):
        add_model_flags(dataset_parser)
        dataset_parser.add_argument("--max-images", type=positive, default=None, help="evaluate the first N only")
        dataset_parser.add_argument("--out-json", default=None, help="also write the metrics here")
        dataset_parser.add_argument("--no-progress", action="store_true", help="no progress bar")
        dataset_parser.set_defaults(handler=handler)


def _finish_eval(metrics: dict, estimator, args: argparse.Namespace, table: str) -> int:
    metrics["model"] = estimator.spec.name
    metrics["mode"] = args.mode or "bottom-up"
    if args.mode == "top-down":
        metrics["detector"] = str(estimator.detector.path)
        metrics["crop_size"] = [estimator.crop_height, estimator.crop_width]
    else:
        metrics["input_height"] = args.input_height or estimator.spec.input.height
    metrics.update(timing(estimator))
    print(table)
    print(json.dumps(metrics, indent=2, default=float))
    if args.out_json:
        write_json(metrics, args.out_json)
    return 0


def command_eval_coco(args: argparse.Namespace) -> int:
    from posestream.pipeline.evaluation.coco import CocoEvalConfig, evaluate_coco, format_coco_table

    estimator = create_estimator(estimator_settings(args))
    metrics = evaluate_coco(Path(args.images), Path(args.ann), estimator,
                            CocoEvalConfig(max_images=args.max_images, show_progress=not args.no_progress))
    return _finish_eval(metrics, estimator, args, format_coco_table(metrics))


def command_eval_lsp(args: argparse.Namespace) -> int:
    from posestream.pipeline.evaluation.lsp import LspEvalConfig, evaluate_lsp, format_lsp_table

    estimator = create_estimator(estimator_settings(args))
    metrics = evaluate_lsp(Path(args.data), args.split, estimator,
                           LspEvalConfig(max_images=args.max_images, show_progress=not args.no_progress))
    return _finish_eval(metrics, estimator, args, format_lsp_table(metrics))


def command_eval_mpii(args: argparse.Namespace) -> int:
    from posestream.pipeline.evaluation.mpii import MpiiEvalConfig, evaluate_mpii, format_mpii_table

    estimator = create_estimator(estimator_settings(args))
    metrics = evaluate_mpii(Path(args.images), Path(args.ann), estimator,
                            MpiiEvalConfig(max_images=args.max_images, show_progress=not args.no_progress))
    return _finish_eval(metrics, estimator, args, format_mpii_table(metrics))
