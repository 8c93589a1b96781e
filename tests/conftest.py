from __future__ import annotations

import os
from pathlib import Path

import pytest

# The tests live in a checkout, so ../shared beside it is the default shared folder whatever the current folder.
os.environ.setdefault("POSESTREAM_SHARED", str(Path(__file__).resolve().parents[2] / "shared"))

from posestream.pipeline.core.paths import shared_dir
from tests.helpers.tiny_pose import make_tiny_pose_onnx, tiny_sidecar_data, write_json


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


@pytest.fixture
def compile_ptx_for_hopper(monkeypatch):
    """A function (kernel's Python function, signature) -> PTX for sm_90, with or without a GPU: typing and
    lowering that Numba's CUDA simulator never does. Skips in the simulator and where no CUDA compiler (NVVM,
    libdevice) is installed."""
    import posestream.kernels.cuda as cuda_kernels

    if cuda_kernels.simulated():
        pytest.skip("the simulator has no CUDA compiler")
    import numba.cuda.api
    import numba.cuda.dispatcher
    from numba import cuda

    class Hopper:
        compute_capability = (9, 0)

    # Device functions are compiled for the current device's architecture: without a GPU, name one.
    if not cuda.is_available():
        monkeypatch.setattr(numba.cuda.api, "get_current_device", Hopper, raising=False)
        monkeypatch.setattr(numba.cuda.dispatcher, "get_current_device", Hopper, raising=False)

    def compile_ptx(py_func, signature) -> str:
        try:
            ptx, _ = cuda.compile_ptx(py_func, signature, cc=(9, 0))
        except Exception as error:  # no NVVM / libdevice, or a numba that insists on a driver
            if type(error).__name__ in ("NvvmSupportError", "CudaSupportError", "NvvmError", "FileNotFoundError") \
                    or "libNVVM" in str(error) or "libdevice" in str(error):
                pytest.skip(f"no CUDA compiler here: {type(error).__name__}: {str(error)[:200]}")
            raise
        return ptx

    return compile_ptx
