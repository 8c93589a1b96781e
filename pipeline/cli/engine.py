"""``posestream build-engine``: a TensorRT engine from an ONNX model, through the engine cache."""
from __future__ import annotations

import argparse
from pathlib import Path

from posestream.pipeline.cli.common import non_negative, positive
from posestream.pipeline.core.errors import PosestreamError


def add_parser(commands) -> None:
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
    engine.add_argument("--workspace-mb", type=positive, default=1024, metavar="N",
                        help="builder workspace limit in MiB (default 1024)")
    engine.add_argument("--dla-core", type=non_negative, default=None, metavar="N",
                        help="build for Jetson DLA core N (fp16 or int8)")
    engine.add_argument("--no-gpu-fallback", action="store_true",
                        help="with --dla-core: fail instead of running DLA-unsupported layers on the GPU")
    engine.add_argument("--out", default=None, help="also copy the engine here (.engine/.plan), with a sidecar")
    engine.add_argument("--rebuild", action="store_true", help="build even when the cache has the engine")
    engine.add_argument("--no-progress", action="store_true", help="do not print the builder's phases")
    engine.set_defaults(handler=command_build_engine)


def command_build_engine(args: argparse.Namespace) -> int:
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
