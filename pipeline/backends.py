"""Inference backends behind one interface: a float32 batch N x 3 x H x W in, (heatmaps, pafs) out.

ONNX Runtime (CPU) is the default for ONNX models; OpenVINO runs IR and ONNX. TensorRT and torch
backends join later behind the same two calls: ``describe`` (for sidecar validation) and ``infer``.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from pipeline.errors import PosestreamError
from pipeline.model import ModelSpec, TensorInfo, validate_against_model

BACKEND_NAMES = ("auto", "onnxruntime", "openvino")
# Compiled OpenVINO models kept per input shape; image folders of mixed sizes would otherwise grow without bound.
OPENVINO_SHAPE_CACHE = 8


@dataclass(frozen=True)
class BackendConfig:
    name: str = "auto"  # "auto" picks by model file: .xml -> openvino, .onnx -> onnxruntime
    device: str = "CPU"  # OpenVINO device name; ONNX Runtime here always runs on the CPU provider
    threads: int = 0  # 0 = the runtime's default (all cores)
    # OpenVINO's CPU plugin silently computes in bf16 on CPUs that have it; f32 keeps results the same
    # on every machine. "bf16"/"f16" trade that for speed where the hardware supports it.
    precision: str = "f32"


class Backend(Protocol):
    name: str
    resizable: bool  # can run input sizes other than the sidecar's

    def describe(self, height: int, width: int) -> tuple[list[TensorInfo], list[TensorInfo]]:
        """Inputs and outputs with shapes, for an input of height x width."""

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """batch: N x 3 x H x W float32 -> (heatmaps N x C x H/s x W/s, pafs N x 2L x H/s x W/s)."""


def _dims(shape) -> tuple[int | None, ...]:
    return tuple(d if isinstance(d, int) and d >= 0 else None for d in shape)


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(self, spec: ModelSpec, config: BackendConfig):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if config.threads:
            options.intra_op_num_threads = config.threads
        try:
            self._session = ort.InferenceSession(
                str(spec.model_path), sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as error:  # ORT raises its own exception types for bad files
            raise PosestreamError(str(spec.model_path), f"ONNX Runtime cannot load the model: {error}") from None
        self._spec = spec
        self._outputs = [spec.heatmaps_output, spec.pafs_output]
        input_shape = _dims(self._session.get_inputs()[0].shape)
        self.resizable = len(input_shape) == 4 and input_shape[2] is None and input_shape[3] is None
        self._fixed_batch = input_shape[0] if input_shape else None

    def describe(self, height: int, width: int) -> tuple[list[TensorInfo], list[TensorInfo]]:
        inputs = [TensorInfo(t.name, _dims(t.shape)) for t in self._session.get_inputs()]
        names = {t.name for t in self._session.get_outputs()}
        if {self._spec.heatmaps_output, self._spec.pafs_output} <= names and inputs:
            # Shapes of dynamic models are only known by running; one zero batch at load is cheap.
            probe = np.zeros((1, 3, height, width), np.float32)
            try:
                results = self._session.run(None, {inputs[0].name: probe})
            except Exception as error:  # ORT's own exception types; e.g. a fixed-size model of another size
                raise PosestreamError(
                    f"{self._spec.sidecar_path} vs {self._spec.model_path.name}",
                    f"the model does not run at the sidecar's input size {height}x{width}: "
                    f"{str(error).strip().splitlines()[0]}") from None
            outputs = [TensorInfo(t.name, r.shape) for t, r in zip(self._session.get_outputs(), results)]
        else:
            outputs = [TensorInfo(t.name, _dims(t.shape)) for t in self._session.get_outputs()]
        return inputs, outputs

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        feed_name = self._spec.input.name
        if self._fixed_batch is not None and batch.shape[0] != self._fixed_batch:
            # A model exported with a fixed batch runs frame by frame.
            parts = [self._session.run(self._outputs, {feed_name: batch[i:i + 1]}) for i in range(len(batch))]
            return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        heatmaps, pafs = self._session.run(self._outputs, {feed_name: batch})
        return heatmaps, pafs


class OpenVinoBackend:
    name = "openvino"
    resizable = True  # OpenVINO reshapes convolutional models to any input size

    def __init__(self, spec: ModelSpec, config: BackendConfig):
        try:
            import openvino as ov
        except ImportError:
            raise PosestreamError(
                "openvino", "backend needs the openvino package: pip install 'posestream[openvino]'") from None
        self._core = ov.Core()
        try:
            self._model = self._core.read_model(str(spec.model_path))
        except Exception as error:  # OpenVINO raises RuntimeError subclasses with long messages
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise PosestreamError(str(spec.model_path), f"OpenVINO cannot load the model: {first_line}") from None
        self._spec = spec
        self._config = config
        self._compiled: OrderedDict[tuple[int, int, int], object] = OrderedDict()

    def _reshaped(self, batch: int, height: int, width: int):
        self._model.reshape({self._spec.input.name: [batch, 3, height, width]})
        return self._model

    def describe(self, height: int, width: int) -> tuple[list[TensorInfo], list[TensorInfo]]:
        inputs = [TensorInfo(t.get_any_name(), _dims(list(t.get_partial_shape().get_min_shape())))
                  for t in self._model.inputs]
        if self._spec.input.name not in {t.name for t in inputs}:
            return inputs, []  # validation names the missing input
        model = self._reshaped(1, height, width)
        outputs = []
        for tensor in model.outputs:
            for name in tensor.get_names():
                outputs.append(TensorInfo(name, _dims(list(tensor.get_partial_shape().get_min_shape()))))
        return inputs, outputs

    def _compiled_for(self, shape: tuple[int, int, int]):
        compiled = self._compiled.get(shape)
        if compiled is not None:
            self._compiled.move_to_end(shape)
        else:
            properties = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": self._config.precision}
            if self._config.threads:
                properties["INFERENCE_NUM_THREADS"] = self._config.threads
            compiled = self._core.compile_model(self._reshaped(*shape), self._config.device, properties)
            self._compiled[shape] = compiled
            if len(self._compiled) > OPENVINO_SHAPE_CACHE:
                self._compiled.popitem(last=False)
        return compiled

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n, _, height, width = batch.shape
        compiled = self._compiled_for((n, height, width))
        results = compiled({self._spec.input.name: batch})
        return (results[compiled.output(self._spec.heatmaps_output)],
                results[compiled.output(self._spec.pafs_output)])


def create_backend(spec: ModelSpec, config: BackendConfig) -> Backend:
    """Build the backend, then check the sidecar against the network it loaded."""
    name = config.name
    if name == "auto":
        name = spec.backend_hint
    if name == "onnxruntime":
        if spec.model_path.suffix != ".onnx":
            raise PosestreamError(str(spec.model_path), "ONNX Runtime runs .onnx models only; use --backend openvino")
        backend: Backend = OnnxRuntimeBackend(spec, config)
    elif name == "openvino":
        backend = OpenVinoBackend(spec, config)
    else:
        raise PosestreamError(name, f"unknown backend; choose one of: {', '.join(BACKEND_NAMES)}")
    inputs, outputs = backend.describe(spec.input.height, spec.input.width)
    validate_against_model(spec, inputs, outputs)
    return backend
