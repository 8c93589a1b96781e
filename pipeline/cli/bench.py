"""``posestream bench``: throughput, latency and efficiency of the runtime on N copies of a video."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from posestream.pipeline.cli.common import add_model_flags, estimator_settings, non_negative_float, positive, write_json
from posestream.pipeline.core.errors import PosestreamError
from posestream.pipeline.estimators.create import create_estimator


def add_parser(commands) -> None:
    bench = commands.add_parser(
        "bench", help="throughput, latency and efficiency of the multi-stream runtime on N copies of a video",
        description="Run N = 1, 2, 4, ... file streams of one video through the stage graph; measure aggregate "
                    "frames/s, frame latency p50/p99 (decode to output) and pipeline efficiency (fps / fps of "
                    "the slowest stage run alone: decode, inference, post). Prints a table, writes JSON and a "
                    "PNG plot.")
    bench.add_argument("--video", default=None, help="default: ../shared/data/video/vtest.avi")
    bench.add_argument("--streams", type=stream_counts, default=(1, 2, 4, 8, 16), metavar="N,N,...",
                       help="stream counts to run (default 1,2,4,8,16)")
    bench.add_argument("--frames-per-stream", type=positive, default=48, metavar="N", help="default 48")
    bench.add_argument("--repeats", type=positive, default=3, help="median over this many runs (default 3)")
    bench.add_argument("--batch", type=positive, default=4, help="frames per inference call (default 4)")
    bench.add_argument("--batch-wait-ms", type=non_negative_float, default=10.0, metavar="MS", help="default 10")
    bench.add_argument("--overlay", action="store_true", help="also write an overlay video per stream")
    bench.add_argument("--no-track", action="store_true", help="no tracking in the post stage")
    bench.add_argument("--out-json", default="pipeline-bench.json", help="default: pipeline-bench.json")
    bench.add_argument("--out-png", default=None, help="default: the JSON path with .png")
    add_model_flags(bench)
    bench.set_defaults(handler=command_bench)


def stream_counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated positive integers, got {text}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"must be comma-separated positive integers, got {text}")
    return counts


def command_bench(args: argparse.Namespace) -> int:
    from posestream.pipeline.core.paths import shared_dir
    from posestream.pipeline.runtime.bench import BenchConfig, format_table, plot, run_bench

    video = args.video or str(shared_dir() / "data" / "video" / "vtest.avi")
    if not Path(video).exists():
        raise PosestreamError(video, "no such video (give one with --video)")
    config = BenchConfig(video=video, stream_counts=args.streams, frames_per_stream=args.frames_per_stream,
                         repeats=args.repeats, batch_size=args.batch, batch_wait_ms=args.batch_wait_ms,
                         overlay=args.overlay, tracking=not args.no_track)
    estimator = create_estimator(estimator_settings(args, max_batch=args.batch))
    describe = {"name": estimator.spec.name, "backend": estimator.backend.name,
                "input_height": args.input_height or estimator.spec.input.height, "threads": args.threads or 0}
    result = run_bench(config, estimator, describe, progress=lambda line: print(line, file=sys.stderr, flush=True))
    print(format_table(result))
    out_json = Path(args.out_json)
    out_png = Path(args.out_png) if args.out_png else out_json.with_suffix(".png")
    write_json(result, out_json)
    plot(result, out_png)
    print(f"wrote {out_json} and {out_png}")
    return 0
