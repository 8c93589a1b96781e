"""The ``posestream`` command line: run, bench, eval coco, eval lsp, models, train, train-deeppose, export,
build-engine."""
from __future__ import annotations

import argparse
import json
import signal
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from posestream.pipeline.core.errors import PosestreamError

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
    from posestream.pipeline.core.model import BUILTIN_MODELS, DEFAULT_MODEL
    from posestream.pipeline.inference.backends import BACKEND_NAMES

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
    group.add_argument("--device", default=None,
                       help="where the network runs: an OpenVINO device (CPU, GPU) or, for the torch backend, cpu "
                            "or cuda[:N] (default: CPU)")
    group.add_argument("--parse-device", choices=("cpu", "cuda"), default=None,
                       help="where the maps are parsed: cpu (Numba), or cuda (the CUDA kernels read the torch or "
                            "TensorRT outputs on the GPU, only compact results are copied back); default cpu")


def _crop_size(text: str) -> tuple[int, int]:
    height, sep, width = text.lower().partition("x")
    try:
        size = (int(height), int(width))
    except ValueError:
        size = (0, 0)
    if not sep or min(size) < 1:
        raise argparse.ArgumentTypeError(f"must be HEIGHTxWIDTH in pixels, e.g. 256x192, got {text}")
    return size


def _add_mode_options(parser: argparse.ArgumentParser) -> None:
    from posestream.pipeline.estimators.topdown import TopDownConfig

    defaults = TopDownConfig()
    group = parser.add_argument_group(
        "mode", "bottom-up: the network sees whole frames and people are assembled from its maps; top-down: a "
                "person detector finds boxes and the network runs on one crop per person (docs/topdown.md)")
    group.add_argument("--mode", choices=("bottom-up", "top-down"), default=None,
                       help="default bottom-up")
    group.add_argument("--detector", default=None, metavar="PATH",
                       help="top-down: a YOLOX-format ONNX person detector (default: "
                            "../shared/weights/yolox-nano/yolox_nano.onnx, through POSESTREAM_SHARED), or "
                            "'whole-image' for images that are already one person's box (LSP's)")
    group.add_argument("--detect-every", type=_positive, default=None, metavar="K",
                       help="top-down on video: detect on every K-th frame; between, each stream's boxes come from "
                            f"the people of its previous frame (default {defaults.detect_every})")
    group.add_argument("--detector-score", type=float, default=None, metavar="S",
                       help=f"top-down: least detector score for a box (default {defaults.detector.score_threshold})")
    group.add_argument("--crop-size", type=_crop_size, default=None, metavar="HxW",
                       help=f"top-down: network input per person, a multiple of the model's stride "
                            f"(default {defaults.crop_height}x{defaults.crop_width})")


def _build_estimator(args: argparse.Namespace):
    from posestream.pipeline.core.model import load_model_spec
    from posestream.pipeline.estimators.bottomup import BottomUpEstimator, EstimatorConfig
    from posestream.pipeline.inference.backends import BackendConfig, create_backend

    spec = load_model_spec(args.model)
    backend = create_backend(spec, BackendConfig(name=args.backend, threads=args.threads, device=args.device or "CPU",
                                                 max_batch=getattr(args, "batch", None) or 1))
    if getattr(args, "mode", None) == "top-down":
        return _build_top_down(args, spec, backend)
    return BottomUpEstimator(spec, backend, EstimatorConfig(input_height=args.input_height,
                                                            parse_device=args.parse_device or "cpu"))


def _build_top_down(args: argparse.Namespace, spec, backend):
    from posestream.pipeline.estimators.detector import DetectorConfig
    from posestream.pipeline.estimators.topdown import TopDownConfig, TopDownEstimator

    if args.parse_device not in (None, "cpu"):
        raise PosestreamError("--parse-device", "top-down mode parses its crops on the CPU")
    defaults = TopDownConfig()
    detector = DetectorConfig(
        path=args.detector, threads=args.threads, device=args.device or "CPU",
        score_threshold=defaults.detector.score_threshold if args.detector_score is None else args.detector_score)
    crop_height, crop_width = args.crop_size or (defaults.crop_height, defaults.crop_width)
    config = TopDownConfig(detector=detector, crop_height=crop_height, crop_width=crop_width,
                           detect_every=args.detect_every or defaults.detect_every)
    return TopDownEstimator(spec, backend, config)


def _timing(estimator) -> dict:
    stats = estimator.stats
    frames = max(stats.frames, 1)
    timing = {
        "frames": stats.frames,
        "inference_ms_per_frame": 1000.0 * stats.inference_seconds / frames,
        "parse_ms_per_frame": 1000.0 * stats.parse_seconds / frames,
        "people_dropped": stats.people_dropped,
    }
    if hasattr(stats, "detect_seconds"):  # top-down: detector and crops too
        timing.update(detect_ms_per_frame=1000.0 * stats.detect_seconds / frames,
                      crop_ms_per_frame=1000.0 * stats.crop_seconds / frames,
                      detector_frames=stats.detector_frames, crops=stats.crops)
    return timing


def _tracker_config(args: argparse.Namespace):
    """The run's TrackerConfig from the tracking flags, or None for --no-track."""
    from posestream.pipeline.tracking.tracker import OneEuroConfig, TrackerConfig

    if args.no_track:
        return None
    tracker, euro = TrackerConfig(), OneEuroConfig()

    def given(value, default):
        return default if value is None else value

    return TrackerConfig(track_buffer=given(args.track_buffer, tracker.track_buffer),
                         min_hits=given(args.track_min_hits, tracker.min_hits), smooth=not args.no_smooth,
                         smoothing=OneEuroConfig(min_cutoff=given(args.smooth_min_cutoff, euro.min_cutoff),
                                                 beta=given(args.smooth_beta, euro.beta)))


def _config_overrides(args: argparse.Namespace) -> dict:
    """The flags given on the command line, as key paths of the config-file format (None: not given)."""
    from posestream.pipeline.config.streams import looks_like_a_path
    from posestream.pipeline.estimators.detector import WHOLE_IMAGE

    def path(value: str | None) -> str | None:
        return value if value in (None, "-", WHOLE_IMAGE) else str(Path(value).absolute())

    model = args.model
    if model is not None and looks_like_a_path(model):
        model = str(Path(model).absolute())  # relative to the current folder, not to the config file
    return {
        "model": model, "backend": None if args.backend == "auto" else args.backend,
        "mode": args.mode, "detector": path(args.detector) if args.detector else None,
        "detect_every": args.detect_every,
        "input_height": args.input_height, "threads": args.threads or None,
        "device": args.device, "parse_device": args.parse_device,
        "batch": args.batch, "batch_wait_ms": args.batch_wait_ms, "queue_size": args.queue_size,
        "live_queue_size": args.live_queue_size, "metrics_port": args.metrics_port,
        "metrics_host": args.metrics_host, "stats_interval_s": args.stats_interval,
        "outputs.jsonl": path(args.out_jsonl), "outputs.video": path(args.out_video),
        "defaults.max_frames": args.max_frames, "defaults.pace": args.pace, "defaults.live": args.live,
        "tracking.enabled": False if args.no_track else None, "tracking.smooth": False if args.no_smooth else None,
        "tracking.track_buffer": args.track_buffer, "tracking.min_hits": args.track_min_hits,
        "tracking.smooth_min_cutoff": args.smooth_min_cutoff, "tracking.smooth_beta": args.smooth_beta,
    }


def _run_config_from_file(args: argparse.Namespace):
    """(RunConfig, estimator) for ``run --config FILE``."""
    import dataclasses

    from posestream.pipeline.config.streams import load_streams_config
    from posestream.pipeline.runtime.run import RunConfig

    options = load_streams_config(args.config, _config_overrides(args))
    estimator = _build_estimator(argparse.Namespace(model=options.model, backend=options.backend,
                                                    threads=options.threads, input_height=options.input_height,
                                                    device=options.device, parse_device=options.parse_device,
                                                    mode=options.mode, detector=options.detector,
                                                    detect_every=options.detect_every,
                                                    detector_score=args.detector_score, crop_size=args.crop_size,
                                                    batch=options.batch))
    streams = options.streams
    if not any(spec.out_jsonl or spec.overlay for spec in streams):
        # asked for nothing: JSON lines on stdout, like any Unix filter
        streams = tuple(dataclasses.replace(spec, out_jsonl="-") for spec in streams)
    config = RunConfig(streams=streams, batch_size=options.batch, batch_wait_ms=options.batch_wait_ms,
                       queue_size=options.queue_size, live_queue_size=options.live_queue_size,
                       tracking=options.tracking, metrics_port=options.metrics_port,
                       metrics_host=options.metrics_host, stats_interval_s=options.stats_interval_s,
                       progress=not args.no_progress and all(spec.out_jsonl != "-" for spec in streams))
    return config, estimator


def _run_config_from_flags(args: argparse.Namespace):
    """(RunConfig, estimator) for ``run SOURCE...``."""
    from posestream.pipeline.runtime.run import RunConfig

    tracking = _tracker_config(args)
    estimator = _build_estimator(args)
    out_jsonl = args.out_jsonl
    if out_jsonl is None and args.out_video is None:
        out_jsonl = "-"  # asked for nothing: JSON lines on stdout, like any Unix filter
    defaults = RunConfig()

    def given(value, default):
        return default if value is None else value

    config = RunConfig(sources=tuple(args.sources), out_jsonl=out_jsonl, out_video=args.out_video,
                       batch_size=given(args.batch, defaults.batch_size), max_frames=args.max_frames,
                       progress=not args.no_progress and out_jsonl != "-", tracking=tracking,
                       batch_wait_ms=given(args.batch_wait_ms, defaults.batch_wait_ms),
                       queue_size=given(args.queue_size, defaults.queue_size),
                       live_queue_size=given(args.live_queue_size, defaults.live_queue_size),
                       pace=bool(args.pace), live=args.live, metrics_port=args.metrics_port,
                       metrics_host=given(args.metrics_host, defaults.metrics_host),
                       stats_interval_s=given(args.stats_interval, defaults.stats_interval_s))
    return config, estimator


def _command_run(args: argparse.Namespace) -> int:
    from posestream.pipeline.runtime.run import SignalStop, print_summary, run_streams

    config, estimator = _run_config_from_file(args) if args.config else _run_config_from_flags(args)
    with SignalStop() as stop:
        reports = run_streams(config, estimator, stop)
    print_summary(reports, _timing(estimator))
    if stop.received is not None:
        print(f"posestream: stopped by {signal.Signals(stop.received).name}; outputs flushed and closed",
              file=sys.stderr)
        return 128 + stop.received  # the shell's convention: 130 for SIGINT, 143 for SIGTERM
    return EXIT_INPUT_ERROR if any(r.error for r in reports) else 0


def _stream_counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated positive integers, got {text}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"must be comma-separated positive integers, got {text}")
    return counts


def _command_bench(args: argparse.Namespace) -> int:
    from posestream.pipeline.core.paths import shared_dir
    from posestream.pipeline.runtime.bench import BenchConfig, format_table, plot, run_bench

    video = args.video or str(shared_dir() / "data" / "video" / "vtest.avi")
    if not Path(video).exists():
        raise PosestreamError(video, "no such video (give one with --video)")
    config = BenchConfig(video=video, stream_counts=args.streams, frames_per_stream=args.frames_per_stream,
                         repeats=args.repeats, batch_size=args.batch, batch_wait_ms=args.batch_wait_ms,
                         overlay=args.overlay, tracking=not args.no_track)
    estimator = _build_estimator(args)
    describe = {"name": estimator.spec.name, "backend": estimator.backend.name,
                "input_height": args.input_height or estimator.spec.input.height, "threads": args.threads}
    result = run_bench(config, estimator, describe, progress=lambda line: print(line, file=sys.stderr, flush=True))
    print(format_table(result))
    out_json = Path(args.out_json)
    out_png = Path(args.out_png) if args.out_png else out_json.with_suffix(".png")
    try:
        out_json.parent.mkdir(parents=True, exist_ok=True)
        out_json.write_text(json.dumps(result, indent=2) + "\n")
    except OSError as error:
        raise PosestreamError(str(out_json), f"cannot write: {error.strerror}") from None
    plot(result, out_png)
    print(f"wrote {out_json} and {out_png}")
    return 0


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
    metrics["mode"] = args.mode or "bottom-up"
    if args.mode == "top-down":
        metrics["detector"] = str(estimator.detector.path)
        metrics["crop_size"] = [estimator.crop_height, estimator.crop_width]
    else:
        metrics["input_height"] = args.input_height or estimator.spec.input.height
    metrics.update(_timing(estimator))
    _print_metrics(metrics, table, args.out_json)
    return 0


def _command_eval_coco(args: argparse.Namespace) -> int:
    from posestream.pipeline.evaluation.keypoints import CocoEvalConfig, evaluate_coco, format_coco_table

    estimator = _build_estimator(args)
    metrics = evaluate_coco(Path(args.images), Path(args.ann), estimator,
                            CocoEvalConfig(max_images=args.max_images, show_progress=not args.no_progress))
    return _finish_eval(metrics, estimator, args, format_coco_table(metrics))


def _command_eval_lsp(args: argparse.Namespace) -> int:
    from posestream.pipeline.evaluation.keypoints import LspEvalConfig, evaluate_lsp, format_lsp_table

    estimator = _build_estimator(args)
    metrics = evaluate_lsp(Path(args.data), args.split, estimator,
                           LspEvalConfig(max_images=args.max_images, show_progress=not args.no_progress))
    return _finish_eval(metrics, estimator, args, format_lsp_table(metrics))


def _command_models(args: argparse.Namespace) -> int:
    from posestream.pipeline.core.model import BUILTIN_MODELS, load_model_spec

    for name in sorted(BUILTIN_MODELS):
        try:
            spec = load_model_spec(name)
            where = str(spec.model_path)
        except PosestreamError as error:
            where = f"unavailable: {error.problem}"
        print(f"{name}\t{where}")
    return 0


def _command_train(args: argparse.Namespace) -> int:
    try:
        from posestream.trainers.heatmap_paf.train import main as train_main  # imports torch: only for this command
    except ModuleNotFoundError as error:
        raise PosestreamError("train", f"needs {error.name}: pip install 'posestream[train]'") from None
    return train_main(args)


def _command_train_deeppose(args: argparse.Namespace) -> int:
    try:
        from posestream.trainers.deeppose.train import main as train_main  # imports torch: only for this command
    except ModuleNotFoundError as error:
        raise PosestreamError("train-deeppose", f"needs {error.name}: pip install 'posestream[train]'") from None
    return train_main(args)


def _command_export(args: argparse.Namespace) -> int:
    try:  # torch, onnx and onnxscript (the exporter's translator) only for this command
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
        import torch  # noqa: F401
    except ModuleNotFoundError as error:
        raise PosestreamError("export", f"needs {error.name}: pip install 'posestream[train]'") from None
    from posestream.trainers.export.onnx import ExportConfig, export_onnx

    report = export_onnx(args.checkpoint, args.out, ExportConfig(
        height=args.height, width=args.width, name=args.name, parity=not args.no_parity,
        parity_tolerance=args.parity_tolerance, parity_images=args.parity_images))
    print(report.summary())
    if args.int8:
        from posestream.trainers.export.onnx import sample_images
        from posestream.trainers.export.quantize import QuantizeConfig, compare_models, quantize_onnx

        quantized = quantize_onnx(report.onnx_path, None, QuantizeConfig(
            calibration=args.calib, calibration_count=args.calib_count, method=args.calib_method,
            target=args.int8_target))
        print(quantized.summary())
        check_images = sample_images(args.calib, 4)
        agreement = compare_models(report.onnx_path, quantized.int8_path, check_images)
        print(f"{agreement.summary()} (on {len(check_images)} images of {args.calib})")
    return 0


def _command_build_engine(args: argparse.Namespace) -> int:
    from posestream.pipeline.core.model import load_model_spec
    from posestream.pipeline.inference.tensorrt import (
        EngineBuildConfig,
        build_engine,
        parse_batch_range,
        parse_range,
        parse_shapes,
    )

    spec = load_model_spec(args.onnx)
    if args.shapes:
        if args.height or args.width or args.batch:
            raise PosestreamError("--shapes", "give either --shapes or --batch/--height/--width, not both")
        batch, height, width = parse_shapes(args.shapes)
    else:
        batch = parse_batch_range(args.batch or "1")
        height = parse_range(args.height or str(spec.input.height), "height")
        width = parse_range(args.width or str(spec.input.width), "width")
    config = EngineBuildConfig(precision=args.precision, batch=batch, height=height, width=width,
                               workspace_mb=args.workspace_mb,
                               timing_cache=Path(args.timing_cache) if args.timing_cache else None,
                               dla_core=args.dla_core, gpu_fallback=not args.no_gpu_fallback)
    result = build_engine(args.onnx, config, Path(args.cache_dir) if args.cache_dir else None,
                          out=Path(args.out) if args.out else None, rebuild=args.rebuild,
                          show_progress=not args.no_progress)
    how = "from the cache" if result.from_cache else f"built in {result.build_seconds:.1f} s"
    print(f"engine: {result.entry.engine_path} ({how}; key {result.entry.key})")
    print(f"sidecar: {result.entry.sidecar_path}")
    if result.out_engine is not None:
        print(f"copied to: {result.out_engine} (sidecar {result.out_sidecar})")
    return 0


def _add_tracking_options(parser: argparse.ArgumentParser) -> None:
    from posestream.pipeline.tracking.tracker import OneEuroConfig, TrackerConfig

    # Defaults are None so that with --config the file's [tracking] values hold unless a flag is given.
    tracker, euro = TrackerConfig(), OneEuroConfig()
    group = parser.add_argument_group(
        "tracking", "each video stream is tracked on its own: people get a track_id (from 1 per stream) and "
                    "smoothed keypoints; image inputs are not tracked")
    group.add_argument("--no-track", action="store_true", default=None,
                       help="no tracking: track_id is null, keypoints raw")
    group.add_argument("--no-smooth", action="store_true", default=None, help="track, but output the raw keypoints")
    group.add_argument("--track-buffer", type=_non_negative, default=None, metavar="N",
                       help=f"frames a lost track keeps its ID while unseen (default {tracker.track_buffer})")
    group.add_argument("--track-min-hits", type=_positive, default=None, metavar="N",
                       help="frames in a row a new track must be seen before it gets an ID; until then its "
                            f"person is output with track_id null (default {tracker.min_hits})")
    group.add_argument("--smooth-min-cutoff", type=_positive_float, default=None, metavar="HZ",
                       help=f"One Euro cutoff at rest in Hz: lower is steadier, lags more (default {euro.min_cutoff})")
    group.add_argument("--smooth-beta", type=_non_negative_float, default=None, metavar="BETA",
                       help=f"One Euro speed coefficient: higher lags less on fast motion (default {euro.beta})")


def _add_runtime_options(parser: argparse.ArgumentParser) -> None:
    from posestream.pipeline.runtime.graph import RuntimeConfig

    defaults = RuntimeConfig()
    group = parser.add_argument_group(
        "streams", "all streams run at once; frames of different streams share inference batches")
    group.add_argument("--config", default=None, metavar="FILE",
                       help="streams and options from a TOML or YAML file (docs/streams-config.md) instead of "
                            "SOURCE arguments; flags given here override the file's global options")
    group.add_argument("--batch", type=_positive, default=None,
                       help=f"most frames per inference call, across streams (default {defaults.batch_size})")
    group.add_argument("--batch-wait-ms", type=_non_negative_float, default=None, metavar="MS",
                       help="how long a started batch waits for frames of other streams "
                            f"(default {defaults.batch_wait_ms:g})")
    group.add_argument("--queue-size", type=_positive, default=None, metavar="N",
                       help="frames buffered per file stream; its decoder waits when full "
                            f"(default {defaults.queue_size})")
    group.add_argument("--live-queue-size", type=_positive, default=None, metavar="N",
                       help="frames buffered per live stream; when full the oldest is dropped and counted "
                            f"(default {defaults.live_queue_size})")
    group.add_argument("--max-frames", type=_positive, default=None, help="stop each stream after this many frames")
    group.add_argument("--pace", action="store_true", default=None,
                       help="read files at their frame rate, as a camera delivers frames (for testing live setups)")
    group.add_argument("--live", action="store_true", default=None,
                       help="treat every source as live: when inference falls behind, drop the oldest frames "
                            "(counted) instead of waiting")
    group.add_argument("--metrics-port", type=_non_negative, default=None, metavar="PORT",
                       help="serve Prometheus metrics on /metrics and stream states on /healthz (0: any free port)")
    group.add_argument("--metrics-host", default=None, metavar="HOST",
                       help="address for --metrics-port (default 127.0.0.1; 0.0.0.0 for every interface)")
    group.add_argument("--stats-interval", type=_non_negative_float, default=None, metavar="S",
                       help="print a table of per-stream fps, latency, queues and drops to stderr every S seconds")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="posestream",
        description="Real-time multi-person 2D pose: video, images and cameras in; people as JSON lines and "
                    "overlays out.")
    parser.add_argument("--version", action="version", version=f"posestream {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = commands.add_parser("run", help="estimate poses on videos, images or image folders",
                              description="Estimate poses on each SOURCE (a video file or URL that PyAV reads, "
                                          "an image, or a folder of images), or on the streams of a --config "
                                          "file; each source is one stream, and all streams run at once. "
                                          "SIGINT/SIGTERM stop the sources, finish the frames in flight and "
                                          "close every output (exit 130/143).")
    run.add_argument("sources", nargs="*", metavar="SOURCE")
    _add_model_options(run)
    _add_mode_options(run)
    outputs = run.add_argument_group("outputs")
    outputs.add_argument("--out-jsonl", default=None,
                         help="JSON lines, one object per frame, all streams (docs/output-schema.md); "
                              "'-' for stdout, the default when no output is given")
    outputs.add_argument("--out-video", default=None,
                         help="overlay output: a video file for a single video source; otherwise a folder "
                              "(one .mp4 per video source, annotated .jpg per image)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_runtime_options(run)
    _add_tracking_options(run)
    run.set_defaults(handler=_command_run, usage_error=run.error)

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
        _add_mode_options(dataset_parser)
        dataset_parser.add_argument("--max-images", type=_positive, default=None, help="evaluate the first N only")
        dataset_parser.add_argument("--out-json", default=None, help="also write the metrics here")
        dataset_parser.add_argument("--no-progress", action="store_true", help="no progress bar")
        dataset_parser.set_defaults(handler=handler)

    bench = commands.add_parser(
        "bench", help="throughput, latency and efficiency of the multi-stream runtime on N copies of a video",
        description="Run N = 1, 2, 4, ... file streams of one video through the stage graph; measure aggregate "
                    "frames/s, frame latency p50/p99 (decode to output) and pipeline efficiency (fps / fps of "
                    "the slowest stage run alone: decode, inference, post). Prints a table, writes JSON and a "
                    "PNG plot.")
    bench.add_argument("--video", default=None, help="default: ../shared/data/video/vtest.avi")
    bench.add_argument("--streams", type=_stream_counts, default=(1, 2, 4, 8, 16), metavar="N,N,...",
                       help="stream counts to run (default 1,2,4,8,16)")
    bench.add_argument("--frames-per-stream", type=_positive, default=48, metavar="N", help="default 48")
    bench.add_argument("--repeats", type=_positive, default=3, help="median over this many runs (default 3)")
    bench.add_argument("--batch", type=_positive, default=4, help="frames per inference call (default 4)")
    bench.add_argument("--batch-wait-ms", type=_non_negative_float, default=10.0, metavar="MS", help="default 10")
    bench.add_argument("--overlay", action="store_true", help="also write an overlay video per stream")
    bench.add_argument("--no-track", action="store_true", help="no tracking in the post stage")
    bench.add_argument("--out-json", default="pipeline-bench.json", help="default: pipeline-bench.json")
    bench.add_argument("--out-png", default=None, help="default: the JSON path with .png")
    _add_model_options(bench)
    bench.set_defaults(handler=_command_bench)

    models = commands.add_parser("models", help="list built-in model sidecars and where their files are")
    models.set_defaults(handler=_command_models)

    train = commands.add_parser("train", help="train a heatmap + PAF network (needs posestream[train])",
                                description="Train a network from a TOML config (docs/trainers.md); checkpoints, "
                                            "metrics.jsonl and curves go to the run folder.")
    train.add_argument("--config", required=True, help="training config, e.g. trainers/configs/default-cpu.toml")
    train.add_argument("--out", default=None,
                       help="run folder (default: runs/<config name>, or the resumed checkpoint's folder)")
    train.add_argument("--resume", default=None, metavar="CKPT", help="continue from this checkpoint's step")
    train.add_argument("--device", default=None, choices=("auto", "cpu", "cuda"),
                       help="where to train (default: the config's [train] device)")
    train.add_argument("--max-iters", type=_positive, default=None, metavar="N",
                       help="stop at step N (the schedule shortens to match); for smoke tests")
    train.set_defaults(handler=_command_train)

    deeppose = commands.add_parser(
        "train-deeppose", help="train the DeepPose cascade (stage by stage) and score each stage on LSP",
        description="Train the DeepPose regressor cascade from a TOML config (docs/deeppose.md): stage 1 on whole "
                    "images, then each refinement stage on crops around the previous stage's estimates; after "
                    "every stage, strict PCP and PCK@0.2 on LSP test go to the run folder.")
    deeppose.add_argument("--config", required=True, help="e.g. trainers/configs/deeppose-cpu.toml")
    deeppose.add_argument("--out", default=None,
                          help="run folder (default: runs/<config name>, or the resumed checkpoint's folder)")
    deeppose.add_argument("--resume", default=None, metavar="CKPT",
                          help="continue from a stage checkpoint (normally the run's last.pt)")
    deeppose.add_argument("--device", default=None, choices=("auto", "cpu", "cuda"),
                          help="where to train (default: the config's [train] device)")
    deeppose.add_argument("--stages", type=_positive, default=None, metavar="N",
                          help="train stages 1..N (default: the config's [cascade] stages)")
    deeppose.add_argument("--max-iters", type=_positive, default=None, metavar="N",
                          help="at most N steps per stage (the schedule shortens to match); for smoke tests")
    deeppose.set_defaults(handler=_command_train_deeppose)

    export = commands.add_parser(
        "export", help="export a trainer checkpoint to ONNX (and INT8), checked against PyTorch",
        description="Export CKPT's last stage to ONNX (dynamic batch, height and width) with its .pose.json "
                    "sidecar beside it; ONNX Runtime must match PyTorch on random and real batches. --int8 also "
                    "writes <out>.int8.onnx, statically calibrated (QDQ, per-channel weights) on real images.")
    export.add_argument("checkpoint", metavar="CKPT", help="a trainer checkpoint (.pt)")
    export.add_argument("--out", required=True, help="the .onnx file to write")
    export.add_argument("--height", type=_positive, default=None, help="sidecar input height (default: training size)")
    export.add_argument("--width", type=_positive, default=None, help="sidecar input width (default: training size)")
    export.add_argument("--name", default=None, help="model name in the sidecar (default: the file name)")
    export.add_argument("--no-parity", action="store_true", help="skip the ONNX Runtime vs PyTorch check")
    export.add_argument("--parity-tolerance", type=_positive_float, default=1e-3, metavar="T",
                        help="largest allowed absolute difference (default 1e-3)")
    export.add_argument("--parity-images", default=None, metavar="DIR_OR_DATASET",
                        help="real images for the parity check (default: lsp from ../shared when present)")
    export.add_argument("--int8", action="store_true", help="also write an INT8 (QDQ) model")
    export.add_argument("--calib", default="lsp", metavar="DIR_OR_DATASET",
                        help="calibration images: a folder, or lsp, lspet, coco, mmpose-coco from ../shared "
                             "(default lsp)")
    export.add_argument("--calib-count", type=_positive, default=64, metavar="N",
                        help="calibration images (default 64)")
    export.add_argument("--calib-method", default="minmax", choices=("minmax", "entropy", "percentile"),
                        help="how activation ranges are chosen (default minmax)")
    export.add_argument("--int8-target", default="cpu", choices=("cpu", "tensorrt"),
                        help="cpu: fastest in ONNX Runtime (uint8 activations); tensorrt: symmetric int8 "
                             "activations, which build-engine --int8 needs (default cpu)")
    export.set_defaults(handler=_command_export)

    engine = commands.add_parser(
        "build-engine", help="build a TensorRT engine from an ONNX model (needs a GPU and tensorrt)",
        description="Build a TensorRT engine for this GPU, or take it from the engine cache; the engine and a "
                    "sidecar pointing at it are written as <cache-dir>/<key>.engine and <key>.pose.json.")
    engine.add_argument("onnx", metavar="MODEL", help="an .onnx model with its .pose.json sidecar beside it")
    precision = engine.add_mutually_exclusive_group()
    precision.add_argument("--fp16", dest="precision", action="store_const", const="fp16",
                           help="float16 where faster (the default)")
    precision.add_argument("--int8", dest="precision", action="store_const", const="int8",
                           help="an INT8 QDQ model from export --int8 --int8-target tensorrt (explicit "
                                "quantization)")
    precision.add_argument("--fp32", dest="precision", action="store_const", const="fp32", help="float32 only")
    engine.set_defaults(precision="fp16")
    engine.add_argument("--batch", default=None, metavar="MIN:OPT:MAX", help="batch sizes (default 1)")
    engine.add_argument("--height", default=None, metavar="H|MIN:OPT:MAX",
                        help="input height or range (default: the sidecar's)")
    engine.add_argument("--width", default=None, metavar="W|MIN:OPT:MAX",
                        help="input width or range (default: the sidecar's)")
    engine.add_argument("--shapes", default=None, metavar="MIN:OPT:MAX",
                        help="whole input shapes instead, e.g. 1x3x256x256:4x3x368x656:8x3x368x656")
    engine.add_argument("--cache-dir", default=None,
                        help="engine cache (default $POSESTREAM_ENGINE_CACHE, else engines/ in posestream's cache folder: $POSESTREAM_CACHE or the user cache dir)")
    engine.add_argument("--timing-cache", default=None, metavar="FILE", help="TensorRT timing cache to reuse and update")
    engine.add_argument("--workspace-mb", type=_positive, default=1024, metavar="N",
                        help="builder workspace limit in MiB (default 1024)")
    engine.add_argument("--dla-core", type=_non_negative, default=None, metavar="N",
                        help="build for Jetson DLA core N (fp16 or int8)")
    engine.add_argument("--no-gpu-fallback", action="store_true",
                        help="with --dla-core: fail instead of running DLA-unsupported layers on the GPU")
    engine.add_argument("--out", default=None, help="also copy the engine here (.engine/.plan), with a sidecar")
    engine.add_argument("--rebuild", action="store_true", help="build even when the cache has the engine")
    engine.add_argument("--no-progress", action="store_true", help="do not print the builder's phases")
    engine.set_defaults(handler=_command_build_engine)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "run" and bool(args.sources) == bool(args.config):
        args.usage_error("give SOURCE arguments or --config FILE (one of the two)")
    try:
        return args.handler(args)
    except PosestreamError as error:
        print(f"posestream: error: {error}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    except KeyboardInterrupt:
        print("posestream: interrupted; outputs flushed", file=sys.stderr)
        return EXIT_INTERRUPTED

