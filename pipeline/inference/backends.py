"""Inference backends behind one interface: a float32 batch N x 3 x H x W in, (heatmaps, pafs) out.

ONNX Runtime (CPU) is the default for ONNX models; OpenVINO runs IR and ONNX; TensorRT runs engines built by
``posestream build-engine`` (pipeline/engines.py); torch runs trainer checkpoints (.pt) directly. All sit
behind the same two calls: ``describe`` (for sidecar validation) and ``infer``. The GPU backends also have
``infer_device``, which leaves the outputs on the GPU for the CUDA parse. tensorrt and torch are imported
only when their backend is built.
"""
from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from posestream.pipeline.core.errors import PosestreamError
from posestream.pipeline.core.model import ModelSpec, TensorInfo, validate_against_model

BACKEND_NAMES = ("auto", "onnxruntime", "openvino", "tensorrt", "torch")
# Compiled OpenVINO models kept per input size (height, width; the batch is dynamic); image folders of mixed sizes would otherwise grow without bound.
OPENVINO_SHAPE_CACHE = 8


@dataclass(frozen=True)
class BackendConfig:
    # "auto" picks by model file: .xml -> openvino, .onnx -> onnxruntime, .engine/.plan -> tensorrt, .pt -> torch
    name: str = "auto"
    # OpenVINO device name; torch: "CPU"/"cpu" or "cuda"/"cuda:N"; ONNX Runtime here always runs on the CPU
    # provider, TensorRT on the current CUDA device.
    device: str = "CPU"
    threads: int = 0  # 0 = the runtime's default (all cores)
    # OpenVINO's CPU plugin silently computes in bf16 on CPUs that have it; f32 keeps results the same
    # on every machine. "bf16"/"f16" trade that for speed where the hardware supports it. For torch on
    # CUDA, "f16" runs the network under float16 autocast.
    precision: str = "f32"
    # The most frames per infer call (the runtime's --batch). OpenVINO keeps working memory per batch size it
    # has run (~4 MiB each, hpe-0001 at 128 px); it runs every size up to this once when it compiles an input
    # size, so that memory is taken at the start and does not grow hours later when a new size first appears.
    max_batch: int = 1


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

        if config.device.lower() != "cpu":
            raise PosestreamError(f"--device {config.device}", "the onnxruntime backend runs on the CPU only here; "
                                                               "use --backend openvino, torch or tensorrt for a GPU")
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


# OpenVINO devices that run a model on other devices, listed after a colon: "AUTO:GPU,CPU", "HETERO:GPU,CPU".
OPENVINO_VIRTUAL_DEVICES = ("AUTO", "MULTI", "HETERO", "BATCH")


def check_openvino_device(device: str, available: list[str]) -> None:
    """One line at start-up for a device this machine lacks (OpenVINO would otherwise fail at the first
    frame of every input with a multi-line dump). ``available`` is ``Core.available_devices`` ("CPU", "GPU.0")."""
    known = set(available) | {name.split(".")[0] for name in available}
    kind, _, targets = device.upper().partition(":")
    wanted = [name.strip() for name in targets.split(",") if name.strip()] if kind in OPENVINO_VIRTUAL_DEVICES \
        else [device.upper()]
    missing = [name for name in wanted if name not in known]
    if kind == "AUTO" and len(missing) < len(wanted):
        return  # AUTO picks among the listed devices that are present
    if missing:
        raise PosestreamError(f"--device {device}", f"no OpenVINO device {missing[0]} on this machine; "
                                                    f"available: {', '.join(available) or 'none'}")


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
        check_openvino_device(config.device, list(self._core.available_devices))
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

    def _compiled_for(self, size: tuple[int, int]):
        """The model compiled for one input size, with a dynamic batch dimension: one compiled model serves every
        batch size the batcher forms (a static batch cost ~25 MiB of memory per distinct size, hpe-0001 at 128 px,
        and grew a 16-camera soak in steps as new sizes appeared; dynamic runs as fast and gives the same maps)."""
        compiled = self._compiled.get(size)
        if compiled is not None:
            self._compiled.move_to_end(size)
        else:
            properties = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": self._config.precision}
            if self._config.threads:
                properties["INFERENCE_NUM_THREADS"] = self._config.threads
            compiled = self._core.compile_model(self._reshaped(-1, *size), self._config.device, properties)
            for batch in range(1, self._config.max_batch + 1):
                compiled({self._spec.input.name: np.zeros((batch, 3, *size), np.float32)})
            self._compiled[size] = compiled
            if len(self._compiled) > OPENVINO_SHAPE_CACHE:
                self._compiled.popitem(last=False)
        return compiled

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        _, _, height, width = batch.shape
        compiled = self._compiled_for((height, width))
        results = compiled({self._spec.input.name: batch})
        return (results[compiled.output(self._spec.heatmaps_output)],
                results[compiled.output(self._spec.pafs_output)])


class TensorRTBackend:
    """A serialized TensorRT engine (built for this GPU and TensorRT version) on the current CUDA device."""

    name = "tensorrt"

    def __init__(self, spec: ModelSpec, config: BackendConfig):
        from posestream.pipeline.inference.tensorrt import EngineSession

        self._spec = spec
        # build-engine records the build in the sidecar; a DLA engine must be loaded onto its core.
        engine_info = json.loads(spec.sidecar_path.read_text()).get("engine") or {}
        self._session = EngineSession(spec.model_path, spec.input.name, engine_info.get("dla_core"))
        # A profile with a height or width range lets the pipeline choose the input size within it.
        self.resizable = not (self._session.height.fixed and self._session.width.fixed)

    outputs_on_gpu = True  # infer_device hands out device buffers

    @property
    def stream(self):
        """The numba CUDA stream inference is queued on; order GPU work on ``infer_device`` outputs after it."""
        return self._session.stream

    @property
    def cuda_stream(self):
        """The stream a GPU parse of ``infer_device``'s outputs must run on (BottomUpEstimator reads this)."""
        return self._session.stream

    def describe(self, height: int, width: int) -> tuple[list[TensorInfo], list[TensorInfo]]:
        session = self._session
        inputs, outputs = [], []
        for name, (is_input, shape, _) in session.tensors.items():
            if is_input:
                inputs.append(TensorInfo(name, _dims(shape)))
        if self._spec.input.name in session.tensors:
            shapes = session.output_shapes((session.batch.min, 3, height, width))
            outputs = [TensorInfo(name, _dims(shape)) for name, shape in shapes.items()]
        return inputs, outputs

    def _run(self, batch) -> tuple[object, object]:
        views = self._session.run(batch)
        return views[self._spec.heatmaps_output], views[self._spec.pafs_output]

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        largest = self._session.batch.max
        heatmaps, pafs = [], []
        # Batches beyond the engine's profile run in slices it accepts.
        for start in range(0, len(batch), largest):
            device_heatmaps, device_pafs = self._run(batch[start:start + largest])
            heatmaps.append(device_heatmaps.copy_to_host(stream=self.stream))
            pafs.append(device_pafs.copy_to_host(stream=self.stream))
        self.stream.synchronize()
        if len(heatmaps) == 1:
            return heatmaps[0].astype(np.float32, copy=False), pafs[0].astype(np.float32, copy=False)
        return (np.concatenate(heatmaps).astype(np.float32, copy=False),
                np.concatenate(pafs).astype(np.float32, copy=False))

    def infer_device(self, batch) -> tuple[object, object]:
        """(heatmaps, pafs) as numba device arrays, queued on ``stream`` and not copied to the host.

        They are the engine's own buffers: valid until the next call. ``batch`` may already be on the GPU.
        """
        return self._run(batch)


class TorchBackend:
    """A trainer checkpoint (.pt) run by PyTorch: the network before export, on the CPU or a CUDA GPU."""

    name = "torch"
    resizable = True  # fully convolutional

    def __init__(self, spec: ModelSpec, config: BackendConfig):
        try:
            import torch
        except ImportError:
            raise PosestreamError("torch", "backend needs PyTorch: pip install 'posestream[train]'") from None
        from posestream.pipeline.networks import layout
        from posestream.pipeline.networks.checkpoint import load_checkpoint
        from posestream.pipeline.networks.heatmap_paf import LastStage

        self._torch = torch
        self._spec = spec
        self._names = (layout.INPUT_NAME, layout.HEATMAPS_OUTPUT, layout.PAFS_OUTPUT)
        self.device = _torch_device(torch, config.device)
        self._half = config.precision in ("f16", "fp16")
        if self._half and self.device.type != "cuda":
            raise PosestreamError(config.precision, "float16 autocast in the torch backend needs a CUDA device")
        if config.threads and self.device.type == "cpu":
            torch.set_num_threads(config.threads)  # process-wide in PyTorch; set only when asked
        if spec.model_path.suffix == ".onnx":
            network = network_from_onnx(spec)
        else:
            network = load_checkpoint(spec.model_path).build_model()
        self._network = LastStage(network).to(self.device).eval()
        self.outputs_on_gpu = self.device.type == "cuda"

    @property
    def cuda_stream(self):
        """torch's current stream on the device: a GPU parse queued on it runs after the network."""
        return self._torch.cuda.current_stream(self.device) if self.outputs_on_gpu else None

    def describe(self, height: int, width: int) -> tuple[list[TensorInfo], list[TensorInfo]]:
        input_name, heatmaps_name, pafs_name = self._names
        probe = np.zeros((1, 3, height, width), np.float32)
        heatmaps, pafs = self.infer(probe)
        return ([TensorInfo(input_name, (None, 3, None, None))],
                [TensorInfo(heatmaps_name, heatmaps.shape), TensorInfo(pafs_name, pafs.shape)])

    def infer_device(self, batch) -> tuple[object, object]:
        """(heatmaps, pafs) as float32 tensors on the backend's device (CUDA tensors carry
        __cuda_array_interface__, which the CUDA parse takes without a copy)."""
        torch = self._torch
        tensor = torch.as_tensor(batch).to(self.device, dtype=torch.float32, non_blocking=True)
        with torch.inference_mode():
            if self._half:
                with torch.autocast("cuda", dtype=torch.float16):
                    heatmaps, pafs = self._network(tensor)
            else:
                heatmaps, pafs = self._network(tensor)
        return heatmaps.float().contiguous(), pafs.float().contiguous()

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        heatmaps, pafs = self.infer_device(batch)
        return heatmaps.cpu().numpy(), pafs.cpu().numpy()


def network_from_onnx(spec: ModelSpec):
    """The torch network named by the sidecar's ``network`` key, with the ONNX file's weights.

    Our exports keep every weight as an initializer named after its state-dict key (under LastStage's
    ``net.``), so the same numbers run in PyTorch without a second copy of the model on disk. That holds for
    networks without BatchNorm (the default lwo-mobilenet); the exporter folds BatchNorm into convolutions,
    and INT8 files hold quantised weights, so those fail with a message that says so.
    """
    import onnx
    import torch
    from onnx import numpy_helper

    from posestream.pipeline.networks.models import MODELS, build_model

    if spec.network is None or spec.network not in MODELS:
        raise PosestreamError(str(spec.sidecar_path), f"the torch backend runs an .onnx file only when the sidecar "
                                                      f"names its network (\"network\": one of {', '.join(MODELS)})")
    network = build_model(spec.network)
    initializers = {tensor.name.removeprefix("net."): tensor for tensor in onnx.load(str(spec.model_path)).graph.initializer}
    expected = network.state_dict()
    missing = [key for key in expected if key not in initializers and not key.endswith("num_batches_tracked")]
    if missing:
        raise PosestreamError(str(spec.model_path), f"does not hold {spec.network}'s weights one to one (no float "
                                                    f"{missing[0]!r}): the torch backend runs FP32 exports of networks "
                                                    f"without BatchNorm (the exporter folds it), such as lwo-mobilenet; "
                                                    f"give it the .pt checkpoint otherwise")
    state = {key: torch.from_numpy(numpy_helper.to_array(initializers[key]).copy()) if key in initializers
             else value for key, value in expected.items()}
    network.load_state_dict(state)
    return network.eval()


def _torch_device(torch, name: str):
    """BackendConfig.device -> torch.device: "CPU"/"cpu", or "cuda"/"cuda:N"/"GPU" (OpenVINO's spelling)."""
    lowered = name.lower()
    if lowered == "gpu":
        lowered = "cuda"
    if lowered != "cpu" and not lowered.startswith("cuda"):
        raise PosestreamError(name, "torch backend device must be cpu, cuda or cuda:N")
    try:
        device = torch.device(lowered)
    except RuntimeError:
        raise PosestreamError(name, "not a torch device name (cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PosestreamError(name, "CUDA is not available to PyTorch here (a CPU-only build, or no GPU)")
    return device


# Which model files each backend runs.
_BACKEND_SUFFIXES = {
    "onnxruntime": ((".onnx",), "ONNX Runtime runs .onnx models only; use --backend openvino"),
    "openvino": ((".onnx", ".xml"), "OpenVINO runs .onnx and .xml models only"),
    "tensorrt": ((".engine", ".plan"), "TensorRT runs serialized engines (.engine/.plan); "
                                       "build one with posestream build-engine"),
    "torch": ((".pt", ".onnx"), "the torch backend runs trainer checkpoints (.pt) and FP32 exports of them (.onnx)"),
}


def create_backend(spec: ModelSpec, config: BackendConfig) -> Backend:
    """Build the backend, then check the sidecar against the network it loaded."""
    name = config.name
    if name == "auto":
        name = spec.backend_hint
    if name not in _BACKEND_SUFFIXES:
        raise PosestreamError(name, f"unknown backend; choose one of: {', '.join(BACKEND_NAMES)}")
    suffixes, problem = _BACKEND_SUFFIXES[name]
    if spec.model_path.suffix not in suffixes:
        raise PosestreamError(str(spec.model_path), problem)
    if name == "onnxruntime":
        backend: Backend = OnnxRuntimeBackend(spec, config)
    elif name == "openvino":
        backend = OpenVinoBackend(spec, config)
    elif name == "tensorrt":
        backend = TensorRTBackend(spec, config)
    else:
        backend = TorchBackend(spec, config)
    inputs, outputs = backend.describe(spec.input.height, spec.input.width)
    validate_against_model(spec, inputs, outputs)
    return backend
