from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.paths import shared_dir
from tiny_pose import make_tiny_pose_onnx, tiny_sidecar_data, write_json


@pytest.fixture(scope="session")
def shared():
    """The shared real-data folder; tests that need it are skipped with a clear reason when it is absent."""
    root = shared_dir()
    if not (root / "README.md").exists():
        pytest.skip(f"shared data not found at {root} (set POSESTREAM_SHARED)")
    return root


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """tests/tiny_pose.py's ONNX network with tiny.pose.json beside it (relative "model" path): runs on ONNX
    Runtime without ../shared. Returns the .onnx path."""
    folder = tmp_path_factory.mktemp("tiny_model")
    onnx_path = make_tiny_pose_onnx(folder / "tiny.onnx")
    write_json(folder / "tiny.pose.json", tiny_sidecar_data("tiny.onnx"))
    return onnx_path
