"""What several commands share: argument types, the model and mode flags (from the option schema), building
the estimator they describe, and its timing summary."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from posestream.pipeline.config.schema import MODE_KEYS, MODEL_KEYS, add_flags, parse_size
from posestream.pipeline.core.errors import PosestreamError
from posestream.pipeline.estimators.create import EstimatorSettings

EXIT_INPUT_ERROR = 1
EXIT_INTERRUPTED = 130


def positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative number, got {text}")
    return value


def add_model_flags(parser: argparse.ArgumentParser) -> None:
    """--model, --backend, ... and --mode, --detector, ...: the estimator's flags, as ``run`` has them."""
    add_flags(parser, (*MODEL_KEYS, *MODE_KEYS))


def estimator_settings(args: argparse.Namespace, max_batch: int = 1) -> EstimatorSettings:
    """The estimator the model and mode flags describe (defaults where a flag is not given)."""
    given = {key: getattr(args, key) for key in (*MODEL_KEYS, *MODE_KEYS) if getattr(args, key, None) is not None}
    if "crop_size" in given:
        given["crop_size"] = parse_size(given["crop_size"])
    return EstimatorSettings(**given, max_batch=max_batch)


def timing(estimator) -> dict:
    """The estimator's per-frame inference and parse times (and top-down's detector and crops)."""
    stats = estimator.stats
    frames = max(stats.frames, 1)
    result = {
        "frames": stats.frames,
        "inference_ms_per_frame": 1000.0 * stats.inference_seconds / frames,
        "parse_ms_per_frame": 1000.0 * stats.parse_seconds / frames,
        "people_dropped": stats.people_dropped,
    }
    if hasattr(stats, "detect_seconds"):  # top-down: detector and crops too
        result.update(detect_ms_per_frame=1000.0 * stats.detect_seconds / frames,
                      crop_ms_per_frame=1000.0 * stats.crop_seconds / frames,
                      detector_frames=stats.detector_frames, crops=stats.crops)
    return result


def write_json(data: dict, path: str | Path) -> None:
    """``data`` as indented JSON at ``path`` (its folder created), or one error line naming the file."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2, default=float) + "\n")
    except OSError as error:
        raise PosestreamError(str(path), f"cannot write: {error.strerror}") from None
