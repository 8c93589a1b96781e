"""The ``posestream`` command line: run, eval coco, eval lsp, models."""
from __future__ import annotations

import argparse
import json
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from pipeline.errors import PosestreamError

EXIT_INPUT_ERROR = 1
EXIT_INTERRUPTED = 130


def _version() -> str:
    try:
        return version("posestream")
    except PackageNotFoundError:
        return "unknown"


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative number, got {text}")
    return value


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    from pipeline.backends import BACKEND_NAMES
    from pipeline.model import BUILTIN_MODELS, DEFAULT_MODEL

    group = parser.add_argument_group("model")
    group.add_argument("--model", default=None,
                       help=f"a .pose.json sidecar, an .onnx/.xml model with its sidecar beside it, or a built-in "
                            f"name ({', '.join(sorted(BUILTIN_MODELS))}); default: {DEFAULT_MODEL}")
    group.add_argument("--backend", default="auto",
                       help=f"inference backend: {', '.join(BACKEND_NAMES)} (auto: OpenVINO for .xml, "
                            "ONNX Runtime for .onnx)")
    group.add_argument("--input-height", type=_positive, default=None,
                       help="network input height for resizable models (default: the sidecar's)")
    group.add_argument("--threads", type=int, default=0, help="inference threads (0: the runtime's default)")


def _build_estimator(args: argparse.Namespace):
    from pipeline.backends import BackendConfig, create_backend
    from pipeline.bottomup import BottomUpEstimator, EstimatorConfig
    from pipeline.model import load_model_spec

    spec = load_model_spec(args.model)
    backend = create_backend(spec, BackendConfig(name=args.backend, threads=args.threads))
    return BottomUpEstimator(spec, backend, EstimatorConfig(input_height=args.input_height))


def _timing(estimator) -> dict:
    stats = estimator.stats
    frames = max(stats.frames, 1)
    return {
        "frames": stats.frames,
        "inference_ms_per_frame": 1000.0 * stats.inference_seconds / frames,
        "parse_ms_per_frame": 1000.0 * stats.parse_seconds / frames,
        "people_dropped": stats.people_dropped,
    }


def _tracker_config(args: argparse.Namespace):
    """The run's TrackerConfig from the tracking flags, or None for --no-track."""
    from pipeline.tracking import OneEuroConfig, TrackerConfig

    if args.no_track:
        return None
    return TrackerConfig(track_buffer=args.track_buffer, min_hits=args.track_min_hits, smooth=not args.no_smooth,
                         smoothing=OneEuroConfig(min_cutoff=args.smooth_min_cutoff, beta=args.smooth_beta))


def _command_run(args: argparse.Namespace) -> int:
    from pipeline.run import RunConfig, print_summary, run_streams

    tracking = _tracker_config(args)
    estimator = _build_estimator(args)
    out_jsonl = args.out_jsonl
    if out_jsonl is None and args.out_video is None:
        out_jsonl = "-"  # asked for nothing: JSON lines on stdout, like any Unix filter
    config = RunConfig(sources=tuple(args.sources), out_jsonl=out_jsonl, out_video=args.out_video,
                       batch_size=args.batch, max_frames=args.max_frames,
                       progress=not args.no_progress and out_jsonl != "-", tracking=tracking)
    reports = run_streams(config, estimator)
    print_summary(reports, _timing(estimator))
    return EXIT_INPUT_ERROR if any(r.error for r in reports) else 0


def _print_metrics(metrics: dict, table: str, out_json: str | None) -> None:
    print(table)
    print(json.dumps(metrics, indent=2, default=float))
    if out_json:
        try:
            Path(out_json).write_text(json.dumps(metrics, indent=2, default=float) + "\n")
        except OSError as error:
            raise PosestreamError(out_json, f"cannot write: {error.strerror}") from None


def _finish_eval(metrics: dict, estimator, args: argparse.Namespace, table: str) -> int:
    metrics["model"] = estimator.spec.name
    metrics["input_height"] = args.input_height or estimator.spec.input.height
    metrics.update(_timing(estimator))
    _print_metrics(metrics, table, args.out_json)
    return 0


def _command_eval_coco(args: argparse.Namespace) -> int:
    from pipeline.evaluation import CocoEvalConfig, evaluate_coco, format_coco_table

    estimator = _build_estimator(args)
    metrics = evaluate_coco(Path(args.images), Path(args.ann), estimator,
                            CocoEvalConfig(max_images=args.max_images, show_progress=not args.no_progress))
    return _finish_eval(metrics, estimator, args, format_coco_table(metrics))


def _command_eval_lsp(args: argparse.Namespace) -> int:
    from pipeline.evaluation import LspEvalConfig, evaluate_lsp, format_lsp_table

    estimator = _build_estimator(args)
    metrics = evaluate_lsp(Path(args.data), args.split, estimator,
                           LspEvalConfig(max_images=args.max_images, show_progress=not args.no_progress))
    return _finish_eval(metrics, estimator, args, format_lsp_table(metrics))


def _command_models(args: argparse.Namespace) -> int:
    from pipeline.model import BUILTIN_MODELS, load_model_spec

    for name in sorted(BUILTIN_MODELS):
        try:
            spec = load_model_spec(name)
            where = str(spec.model_path)
        except PosestreamError as error:
            where = f"unavailable: {error.problem}"
        print(f"{name}\t{where}")
    return 0


def _add_tracking_options(parser: argparse.ArgumentParser) -> None:
    from pipeline.tracking import OneEuroConfig, TrackerConfig

    tracker, euro = TrackerConfig(), OneEuroConfig()
    group = parser.add_argument_group(
        "tracking", "each video stream is tracked on its own: people get a track_id (from 1 per stream) and "
                    "smoothed keypoints; image inputs are not tracked")
    group.add_argument("--no-track", action="store_true", help="no tracking: track_id is null, keypoints raw")
    group.add_argument("--no-smooth", action="store_true", help="track, but output the raw keypoints")
    group.add_argument("--track-buffer", type=_non_negative, default=tracker.track_buffer, metavar="N",
                       help=f"frames a lost track keeps its ID while unseen (default {tracker.track_buffer})")
    group.add_argument("--track-min-hits", type=_positive, default=tracker.min_hits, metavar="N",
                       help="frames in a row a new track must be seen before it gets an ID; until then its "
                            f"person is output with track_id null (default {tracker.min_hits})")
    group.add_argument("--smooth-min-cutoff", type=_positive_float, default=euro.min_cutoff, metavar="HZ",
                       help=f"One Euro cutoff at rest in Hz: lower is steadier, lags more (default {euro.min_cutoff})")
    group.add_argument("--smooth-beta", type=_non_negative_float, default=euro.beta, metavar="BETA",
                       help=f"One Euro speed coefficient: higher lags less on fast motion (default {euro.beta})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="posestream",
        description="Real-time multi-person 2D pose: video, images and cameras in; people as JSON lines and "
                    "overlays out.")
    parser.add_argument("--version", action="version", version=f"posestream {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = commands.add_parser("run", help="estimate poses on videos, images or image folders",
                              description="Estimate poses on each SOURCE (a video file or URL that PyAV reads, "
                                          "an image, or a folder of images); each source is one stream.")
    run.add_argument("sources", nargs="+", metavar="SOURCE")
    _add_model_options(run)
    outputs = run.add_argument_group("outputs")
    outputs.add_argument("--out-jsonl", default=None,
                         help="JSON lines, one object per frame, all streams (docs/output-schema.md); "
                              "'-' for stdout, the default when no output is given")
    outputs.add_argument("--out-video", default=None,
                         help="overlay output: a video file for a single video source; otherwise a folder "
                              "(one .mp4 per video source, annotated .jpg per image)")
    run.add_argument("--batch", type=_positive, default=1, help="frames per inference call (default 1)")
    run.add_argument("--max-frames", type=_positive, default=None, help="stop each stream after this many frames")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_tracking_options(run)
    run.set_defaults(handler=_command_run)

    evaluate = commands.add_parser("eval", help="evaluate against ground truth (COCO AP, LSP PCK/PCP)")
    datasets = evaluate.add_subparsers(dest="dataset", metavar="DATASET", required=True)
    coco = datasets.add_parser("coco", help="COCO keypoint AP/AR with pycocotools",
                               description="Run the pipeline over the images of a COCO person-keypoints json "
                                           "and print AP, AP50, AP75, AR as a table and as JSON.")
    coco.add_argument("--images", required=True, help="folder holding the json's images")
    coco.add_argument("--ann", required=True, help="COCO person-keypoints annotation json")
    lsp = datasets.add_parser("lsp", help="LSP PCK@0.2 per joint and strict PCP per limb",
                              description="Single-person evaluation on LSP-format data (the best-scoring person "
                                          "per image): PCK@0.2 with torso = left shoulder to right hip, and "
                                          "strict PCP per limb.")
    lsp.add_argument("--data", required=True, help="LSP folder: images/ and joints.mat")
    lsp.add_argument("--split", default="test", choices=("test", "train", "all"),
                     help="test = im1001-im2000, train = im0001-im1000 (LSP); default test")
    for dataset_parser, handler in ((coco, _command_eval_coco), (lsp, _command_eval_lsp)):
        _add_model_options(dataset_parser)
        dataset_parser.add_argument("--max-images", type=_positive, default=None, help="evaluate the first N only")
        dataset_parser.add_argument("--out-json", default=None, help="also write the metrics here")
        dataset_parser.add_argument("--no-progress", action="store_true", help="no progress bar")
        dataset_parser.set_defaults(handler=handler)

    models = commands.add_parser("models", help="list built-in model sidecars and where their files are")
    models.set_defaults(handler=_command_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except PosestreamError as error:
        print(f"posestream: error: {error}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    except KeyboardInterrupt:
        print("posestream: interrupted; outputs flushed", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
