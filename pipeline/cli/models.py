"""``posestream models``: the built-in models and where their files are."""
from __future__ import annotations

import argparse

from posestream.pipeline.core.errors import PosestreamError


def add_parser(commands) -> None:
    models = commands.add_parser("models", help="list built-in model sidecars and where their files are")
    models.set_defaults(handler=command_models)


def command_models(args: argparse.Namespace) -> int:
    from posestream.pipeline.core.model import BUILTIN_MODELS, load_model_spec

    for name in sorted(BUILTIN_MODELS):
        try:
            spec = load_model_spec(name)
            where = str(spec.model_path)
        except PosestreamError as error:
            where = f"unavailable: {error.problem}"
        print(f"{name}\t{where}")
    return 0
