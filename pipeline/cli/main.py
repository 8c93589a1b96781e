"""The ``posestream`` command line: one module per command (run, eval, bench, models, train, train-deeppose,
import-openvino, export, build-engine), wired here in the order ``--help`` lists them."""
from __future__ import annotations

import argparse
import logging
import sys
from importlib.metadata import PackageNotFoundError, version

from posestream.pipeline.cli import bench, engine, evaluate, export, import_openvino, models, run, train
from posestream.pipeline.cli.common import EXIT_INPUT_ERROR, EXIT_INTERRUPTED
from posestream.pipeline.core.errors import PosestreamError

COMMANDS = (run, evaluate, bench, models, train, import_openvino, export, engine)


def _version() -> str:
    try:
        return version("posestream")
    except PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="posestream",
        description="Real-time multi-person 2D pose: video, images and cameras in; people as JSON lines and "
                    "overlays out.")
    parser.add_argument("--version", action="version", version=f"posestream {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.add_parser(commands)
    return parser


class _StderrLines(logging.Handler):
    """One line per record on the current sys.stderr ("posestream: error: ..."), looked up per record so that
    a redirected stderr is honoured."""

    def emit(self, record: logging.LogRecord) -> None:
        level = "" if record.levelno == logging.INFO else f"{record.levelname.lower()}: "
        print(f"posestream: {level}{self.format(record)}", file=sys.stderr, flush=True)


def configure_logging() -> None:
    """The library logs through ``logging`` and never configures it; the command line shows posestream's
    records from INFO up on stderr, one line each."""
    logger = logging.getLogger("posestream")
    if not any(isinstance(handler, _StderrLines) for handler in logger.handlers):
        logger.addHandler(_StderrLines())
    logger.setLevel(logging.INFO)
    logger.propagate = False


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "run" and bool(args.sources) == bool(args.config):
        args.usage_error("give SOURCE arguments or --config FILE (one of the two)")
    configure_logging()
    try:
        return args.handler(args)
    except PosestreamError as error:
        print(f"posestream: error: {error}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    except KeyboardInterrupt:  # before a run's outputs exist (a run handles its signals itself, SignalStop)
        print("posestream: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
