"""Build an estimator from plain settings: the model (a built-in name or a file), its backend, and the mode.

The CLI, the streams config and the Python API all build estimators here, so a model name means the same
everywhere.
"""
from __future__ import annotations

from dataclasses import dataclass

from posestream.pipeline.core.errors import PosestreamError
from posestream.pipeline.core.model import load_model_spec
from posestream.pipeline.estimators.bottomup import BottomUpEstimator, EstimatorConfig
from posestream.pipeline.estimators.detector import DetectorConfig
from posestream.pipeline.estimators.topdown import TopDownConfig, TopDownEstimator
from posestream.pipeline.inference.backends import BackendConfig, create_backend

_TOP_DOWN = TopDownConfig()
# The default least person score: the highest at which COCO AP (mmpose, coco-mini-train) does not move with the
# default model, while it drops a fifth of the people per frame on street.mp4 and vtest.avi
# (benchmarks/bench_min_score.py, docs/trainers.md).
MIN_SCORE = 0.1


@dataclass(frozen=True)
class EstimatorSettings:
    model: str | None = None  # None: the built-in default model
    backend: str = "auto"
    input_height: int | None = None  # None: the sidecar's
    threads: int = 0  # 0: the runtime's default
    device: str | None = None  # None: CPU
    parse_device: str | None = None  # None: cpu
    mode: str = "bottom-up"  # or "top-down"
    detector: str | None = None  # top-down's person detector; None: yolox-nano from the shared folder
    detect_every: int = _TOP_DOWN.detect_every
    detector_score: float = _TOP_DOWN.detector.score_threshold
    crop_size: tuple[int, int] = (_TOP_DOWN.crop_height, _TOP_DOWN.crop_width)
    max_batch: int = 1  # most frames per network call (sizes OpenVINO's compiled batch)
    flip: bool = False  # bottom-up: average the maps with the mirror image's (twice the network time)
    min_score: float = MIN_SCORE  # people below this score are dropped from every output


def create_estimator(settings: EstimatorSettings = EstimatorSettings()) -> BottomUpEstimator | TopDownEstimator:
    """The estimator ``settings`` describe; a bad model, backend or option is a ``PosestreamError``."""
    if settings.mode not in ("bottom-up", "top-down"):
        raise PosestreamError("mode", f"must be bottom-up or top-down, got {settings.mode!r}")
    spec = load_model_spec(settings.model)
    device = settings.device or "CPU"
    backend = create_backend(spec, BackendConfig(name=settings.backend, threads=settings.threads, device=device,
                                                 max_batch=settings.max_batch))
    if settings.mode == "top-down":
        if settings.flip:
            raise PosestreamError("--flip", "test-time flip is for bottom-up mode; top-down crops are not flipped")
        if settings.parse_device not in (None, "cpu"):
            raise PosestreamError("--parse-device", "top-down mode parses its crops on the CPU")
        detector = DetectorConfig(path=settings.detector, threads=settings.threads, device=device,
                                  score_threshold=settings.detector_score)
        crop_height, crop_width = settings.crop_size
        return TopDownEstimator(spec, backend, TopDownConfig(detector=detector, crop_height=crop_height,
                                                             crop_width=crop_width,
                                                             detect_every=settings.detect_every,
                                                             min_score=settings.min_score))
    return BottomUpEstimator(spec, backend, EstimatorConfig(input_height=settings.input_height,
                                                            parse_device=settings.parse_device or "cpu",
                                                            flip=settings.flip, min_score=settings.min_score))
