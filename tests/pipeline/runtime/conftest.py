"""Fixtures of the runtime tests."""
from __future__ import annotations

import pytest

from posestream.pipeline.core.model import load_model_spec
from posestream.pipeline.estimators.bottomup import BottomUpEstimator, EstimatorConfig
from posestream.pipeline.inference.backends import BackendConfig, create_backend


@pytest.fixture(scope="module")
def estimator(tiny_model):
    spec = load_model_spec(str(tiny_model))
    return BottomUpEstimator(spec, create_backend(spec, BackendConfig(name="onnxruntime", threads=1)),
                             EstimatorConfig())
