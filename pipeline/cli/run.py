"""``posestream run``: every source (or every stream of a config file) at once, then a summary."""
from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
from pathlib import Path

from posestream.pipeline.cli.common import EXIT_INPUT_ERROR, timing
from posestream.pipeline.config.schema import OPTIONS, add_flags, overrides_from_flags
from posestream.pipeline.config.streams import (
    StreamsConfig,
    estimator_settings,
    load_streams_config,
    looks_like_a_path,
    parse_streams_config,
    sources_as_data,
)
from posestream.pipeline.estimators.create import create_estimator
from posestream.pipeline.estimators.detector import WHOLE_IMAGE
from posestream.pipeline.runtime.run import RunConfig, SignalStop, print_summary, run_streams

# Flags whose values are paths: with --config they are taken from the current folder, not the file's.
_PATH_KEYS = ("model", "detector", "outputs.jsonl", "outputs.video")


def add_parser(commands) -> None:
    run = commands.add_parser("run", help="estimate poses on videos, images or image folders",
                              description="Estimate poses on each SOURCE (a video file or URL that PyAV reads, "
                                          "an image, or a folder of images), or on the streams of a --config "
                                          "file; each source is one stream, and all streams run at once. "
                                          "SIGINT/SIGTERM stop the sources, finish the frames in flight and "
                                          "close every output (exit 130/143); a second signal changes "
                                          "nothing, a third exits at once. No output ever writes over an "
                                          "input, and no two outputs write the same file.")
    run.add_argument("sources", nargs="*", metavar="SOURCE")
    run.add_argument("--config", default=None, metavar="FILE",
                     help="streams and options from a TOML or YAML file (docs/streams-config.md) instead of "
                          "SOURCE arguments; flags given here override the file's global options")
    add_flags(run, [option.key for option in OPTIONS])
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.set_defaults(handler=command_run, usage_error=run.error)


def _from_current_folder(overrides: dict) -> dict:
    """Path flags made absolute, so that a config file's folder does not change what they mean."""
    absolute = dict(overrides)
    for key in _PATH_KEYS:
        value = absolute.get(key)
        if value is None or value in ("-", WHOLE_IMAGE) or (key == "model" and not looks_like_a_path(value)):
            continue
        absolute[key] = str(Path(value).absolute())
    return absolute


def run_configuration(args: argparse.Namespace) -> StreamsConfig:
    """The run's configuration from --config FILE (with flags over it) or from SOURCE arguments and flags."""
    overrides = overrides_from_flags(args)
    if args.config:
        return load_streams_config(args.config, _from_current_folder(overrides))
    return parse_streams_config(sources_as_data(args.sources, overrides), "command line", relative_to_file=False)


def command_run(args: argparse.Namespace) -> int:
    options = run_configuration(args)
    estimator = create_estimator(estimator_settings(options))
    streams = options.streams
    if not any(spec.out_jsonl or spec.overlay for spec in streams):
        # asked for nothing: JSON lines on stdout, like any Unix filter
        streams = tuple(dataclasses.replace(spec, out_jsonl="-") for spec in streams)
    config = RunConfig(streams=streams, batch_size=options.batch, batch_wait_ms=options.batch_wait_ms,
                       queue_size=options.queue_size, live_queue_size=options.live_queue_size,
                       tracking=options.tracking, metrics_port=options.metrics_port,
                       metrics_host=options.metrics_host, stats_interval_s=options.stats_interval_s,
                       progress=not args.no_progress and all(spec.out_jsonl != "-" for spec in streams))
    with SignalStop() as stop:
        config_file = ((args.config, "the streams config"),) if args.config else ()
        reports = run_streams(config, estimator, stop, inputs=config_file)
    print_summary(reports, timing(estimator))
    if stop.received is not None:
        print(f"posestream: stopped by {signal.Signals(stop.received).name}; outputs flushed and closed",
              file=sys.stderr)
        return 128 + stop.received  # the shell's convention: 130 for SIGINT, 143 for SIGTERM
    return EXIT_INPUT_ERROR if any(r.error for r in reports) else 0
