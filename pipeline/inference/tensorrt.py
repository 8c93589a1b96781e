"""TensorRT engines: build from ONNX, keep in a cache keyed by what makes an engine valid, and run.

An engine is only valid for the GPU model, the TensorRT version, the exact ONNX bytes, the precision and
the input shape ranges it was built with, so those make its cache key; ``<cache_dir>/<key>.engine`` sits
beside ``<key>.json`` (a manifest of the key's parts) and ``<key>.pose.json`` (the ONNX model's sidecar,
pointed at the engine, so ``posestream run --model <cache_dir>/<key>.pose.json`` runs it).

Everything that does not need TensorRT (ranges, config, keys, the cache, buffer planning, profile checks)
is plain Python and tested everywhere; the code that touches TensorRT (``build_engine``, ``EngineSession``)
is kept thin and is written against the TensorRT 10 Python API: named I/O tensors, ``set_input_shape``,
``set_tensor_address`` and ``execute_async_v3`` on a Numba CUDA stream. ``tensorrt`` and ``numba.cuda`` are
imported only there, so nothing else in posestream needs them.

Precision: fp32 and fp16 build a normal (weakly typed) network, fp16 with the FP16 builder flag. int8 takes
an ONNX model that already holds QuantizeLinear/DequantizeLinear pairs (``posestream export --int8``), i.e.
explicit quantization, built as a strongly typed network where TensorRT has it; TensorRT's implicit INT8
calibrators are deprecated in TensorRT 10 and not used.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from posestream.pipeline.core import paths
from posestream.pipeline.core.errors import PosestreamError
from posestream.pipeline.core.model import SIDECAR_SUFFIX, load_model_spec

PRECISIONS = ("fp32", "fp16", "int8")
ENGINE_SUFFIX = ".engine"
MANIFEST_FORMAT = "posestream.engine/1"
# Key version: bump when the key's recipe changes, so old cache entries are never mistaken for new ones.
KEY_VERSION = 1


# ----------------------------------------------------------------------------------- shapes and configuration


@dataclass(frozen=True)
class DimRange:
    """One input dimension's optimization-profile range: TensorRT tunes for ``opt`` and accepts min..max."""

    min: int
    opt: int
    max: int

    def __post_init__(self) -> None:
        if not 0 < self.min <= self.opt <= self.max:
            raise PosestreamError(f"{self.min}:{self.opt}:{self.max}",
                                  "range must satisfy 0 < MIN <= OPT <= MAX")

    @property
    def fixed(self) -> bool:
        return self.min == self.max

    def __contains__(self, value: int) -> bool:
        return self.min <= value <= self.max

    def __str__(self) -> str:
        return str(self.min) if self.fixed else f"{self.min}:{self.opt}:{self.max}"


def parse_range(text: str, what: str) -> DimRange:
    """ "8" -> 8:8:8; "1:4:8" -> min 1, opt 4, max 8. ``what`` names the option in errors."""
    parts = text.strip().split(":")
    if len(parts) not in (1, 3):
        raise PosestreamError(f"{what} {text!r}", "expected N or MIN:OPT:MAX (for example 1:4:8)")
    try:
        values = [int(part) for part in parts]
    except ValueError:
        raise PosestreamError(f"{what} {text!r}", "expected whole numbers, N or MIN:OPT:MAX") from None
    if len(values) == 1:
        values = values * 3
    if not all(v > 0 for v in values):
        raise PosestreamError(f"{what} {text!r}", "sizes must be positive")
    if not values[0] <= values[1] <= values[2]:
        raise PosestreamError(f"{what} {text!r}", "expected MIN <= OPT <= MAX")
    return DimRange(*values)


def parse_batch_range(text: str) -> DimRange:
    return parse_range(text, "batch")


def parse_shapes(text: str) -> tuple[DimRange, DimRange, DimRange]:
    """ "1x3x256x256:4x3x368x656:8x3x368x656" (min:opt:max N x 3 x H x W) -> batch, height, width ranges."""
    parts = text.strip().split(":")
    if len(parts) not in (1, 3):
        raise PosestreamError(f"shapes {text!r}", "expected NxCxHxW or MIN:OPT:MAX shapes, e.g. 1x3x256x256:4x3x368x656:8x3x368x656")
    shapes = []
    for part in parts:
        try:
            dims = [int(d) for d in part.lower().split("x")]
        except ValueError:
            raise PosestreamError(f"shapes {text!r}", f"{part!r} is not NxCxHxW") from None
        if len(dims) != 4 or dims[1] != 3:
            raise PosestreamError(f"shapes {text!r}", f"{part!r} must be N x 3 x H x W")
        shapes.append(dims)
    if len(shapes) == 1:
        shapes = shapes * 3
    ranges = []
    for axis, what in ((0, "batch"), (2, "height"), (3, "width")):
        ranges.append(parse_range(":".join(str(s[axis]) for s in shapes), f"shapes ({what})"))
    return ranges[0], ranges[1], ranges[2]


@dataclass(frozen=True)
class EngineBuildConfig:
    precision: str = "fp16"  # one of PRECISIONS
    batch: DimRange = DimRange(1, 1, 1)
    height: DimRange = DimRange(368, 368, 368)
    width: DimRange = DimRange(656, 656, 656)
    workspace_mb: int = 1024  # builder scratch memory limit (TensorRT's WORKSPACE pool)
    timing_cache: Path | None = None  # read before and written after a build; makes rebuilds fast
    dla_core: int | None = None  # Jetson deep-learning accelerator core; None = GPU only
    gpu_fallback: bool = True  # with a DLA core: layers DLA cannot run go to the GPU instead of failing

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise PosestreamError(self.precision, f"unknown precision; choose one of: {', '.join(PRECISIONS)}")
        if self.workspace_mb <= 0:
            raise PosestreamError(str(self.workspace_mb), "workspace must be a positive number of MiB")
        if self.dla_core is not None:
            if self.dla_core < 0:
                raise PosestreamError(str(self.dla_core), "DLA core must be 0 or more")
            if self.precision == "fp32":
                raise PosestreamError("--dla-core", "DLA runs fp16 or int8 only; add --fp16 or --int8")

    def input_shapes(self) -> tuple[tuple[int, int, int, int], ...]:
        """(min, opt, max) N x 3 x H x W, as the optimization profile takes them."""
        return tuple((getattr(self.batch, end), 3, getattr(self.height, end), getattr(self.width, end))
                     for end in ("min", "opt", "max"))


# ------------------------------------------------------------------------------------------ the engine cache


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_key_parts(gpu_name: str, trt_version: str, onnx_sha256: str, config: EngineBuildConfig) -> dict:
    """Everything an engine depends on, as plain values (the manifest stores exactly these)."""
    return {
        "key_version": KEY_VERSION,
        "gpu": gpu_name,
        "tensorrt": trt_version,
        "onnx_sha256": onnx_sha256,
        "precision": config.precision,
        "batch": [config.batch.min, config.batch.opt, config.batch.max],
        "height": [config.height.min, config.height.opt, config.height.max],
        "width": [config.width.min, config.width.opt, config.width.max],
        "dla_core": config.dla_core,
        "gpu_fallback": config.gpu_fallback if config.dla_core is not None else None,
    }


def engine_cache_key(gpu_name: str, trt_version: str, onnx_sha256: str, config: EngineBuildConfig) -> str:
    """A stable hex key: the same parts always give the same key, any changed part a different one.

    Workspace and timing cache are left out: they change how long a build takes, not what it is valid for.
    """
    canonical = json.dumps(cache_key_parts(gpu_name, trt_version, onnx_sha256, config), sort_keys=True,
                           separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:24]


@dataclass(frozen=True)
class CacheEntry:
    key: str
    engine_path: Path
    manifest_path: Path
    sidecar_path: Path


def cache_entry(cache_dir: Path, key: str) -> CacheEntry:
    return CacheEntry(key=key, engine_path=cache_dir / f"{key}{ENGINE_SUFFIX}",
                      manifest_path=cache_dir / f"{key}.json", sidecar_path=cache_dir / f"{key}{SIDECAR_SUFFIX}")


def default_cache_dir() -> Path:
    configured = os.environ.get("POSESTREAM_ENGINE_CACHE")
    if configured:
        return Path(configured).expanduser()
    return paths.cache_dir() / "engines"


def write_manifest(entry: CacheEntry, parts: dict, onnx_path: Path, build_seconds: float) -> None:
    manifest = {"format": MANIFEST_FORMAT, "key": entry.key, "parts": parts, "onnx": str(onnx_path),
                "engine_bytes": entry.engine_path.stat().st_size, "build_seconds": round(build_seconds, 2),
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    _write_atomically(entry.manifest_path, (json.dumps(manifest, indent=2) + "\n").encode())


def cached_engine(entry: CacheEntry, parts: dict) -> bool:
    """True when the cache holds a finished engine for exactly these parts.

    The manifest is written after the engine, so an engine without a matching manifest (a build that died
    between the two writes, or a hand-copied file) is rebuilt rather than trusted.
    """
    if not entry.engine_path.is_file() or not entry.manifest_path.is_file():
        return False
    try:
        manifest = json.loads(entry.manifest_path.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return (isinstance(manifest, dict) and manifest.get("format") == MANIFEST_FORMAT
            and manifest.get("key") == entry.key and manifest.get("parts") == parts)


def _write_atomically(path: Path, data: bytes) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    os.replace(partial, path)


def has_quantize_nodes(onnx_bytes: bytes) -> bool:
    """Whether an ONNX file holds QuantizeLinear nodes (op types are stored as plain strings in the protobuf;
    "DequantizeLinear" does not contain this exact spelling)."""
    return b"QuantizeLinear" in onnx_bytes


def engine_sidecar_data(onnx_sidecar: dict, engine_file: str, config: EngineBuildConfig) -> dict:
    """The ONNX model's sidecar, pointed at the engine, with the input size the engine is tuned for.

    An engine with a fixed height and width is not resizable: the pipeline letterboxes into that size.
    """
    data = json.loads(json.dumps(onnx_sidecar))  # a deep copy of plain JSON values
    data["model"] = engine_file
    data["input"]["height"] = config.height.opt
    data["input"]["width"] = config.width.opt
    data["input"]["resizable"] = bool(data["input"].get("resizable", False)) and not (
        config.height.fixed and config.width.fixed)
    # Read by the TensorRT backend (the DLA core must be chosen before the engine is deserialized).
    data["engine"] = {"precision": config.precision, "batch": str(config.batch), "height": str(config.height),
                      "width": str(config.width), "dla_core": config.dla_core}
    return data


# ------------------------------------------------------------------------------------------ buffer planning


@dataclass(frozen=True)
class TensorBuffer:
    name: str
    is_input: bool
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def elements(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.elements * self.dtype.itemsize


def plan_buffers(tensors: Sequence[tuple[str, bool, Sequence[int], object]]) -> tuple[TensorBuffer, ...]:
    """(name, is_input, shape, dtype) per I/O tensor, shapes resolved for one call -> the buffers it needs."""
    plan = []
    for name, is_input, shape, dtype in tensors:
        shape = tuple(int(d) for d in shape)
        if any(d < 0 for d in shape):
            raise ValueError(f"tensor {name!r} has an unresolved shape {shape}: set the input shape first")
        plan.append(TensorBuffer(name, bool(is_input), shape, np.dtype(dtype)))
    return tuple(plan)


def buffers_to_grow(plan: Sequence[TensorBuffer], capacities: Mapping[str, int]) -> tuple[TensorBuffer, ...]:
    """The buffers whose allocation (elements held now, by name) is too small for this call.

    Buffers are reused while the shapes fit, so a steady stream of same-sized batches allocates once.
    """
    return tuple(buffer for buffer in plan if capacities.get(buffer.name, 0) < buffer.elements)


def check_input_shape(shape: Sequence[int], batch: DimRange, height: DimRange, width: DimRange) -> str | None:
    """None when an N x 3 x H x W input fits the engine's profile, else what is wrong with it."""
    if len(shape) != 4 or shape[1] != 3:
        return f"input shape {tuple(shape)} is not N x 3 x H x W"
    problems = [f"{what} {value} outside {allowed.min}..{allowed.max}"
                for what, value, allowed in (("batch", shape[0], batch), ("height", shape[2], height),
                                             ("width", shape[3], width))
                if value not in allowed]
    return "; ".join(problems) or None


# ------------------------------------------------------------------------------------- building (TensorRT)


@dataclass(frozen=True)
class BuildResult:
    entry: CacheEntry
    from_cache: bool
    build_seconds: float  # 0 when taken from the cache
    out_engine: Path | None = None  # a copy made for --out
    out_sidecar: Path | None = None
    parts: dict = field(default_factory=dict)


def _import_tensorrt():
    try:
        import tensorrt
    except ImportError:
        raise PosestreamError("tensorrt", "not installed: TensorRT engines need the tensorrt Python package "
                                          "(pip install 'posestream[trt]', or JetPack's python3-libnvinfer)") from None
    return tensorrt


def current_gpu() -> str:
    """The current CUDA device as it goes into cache keys: name and compute capability."""
    from numba import cuda

    if not cuda.is_available():
        raise PosestreamError("cuda", "no CUDA GPU is available to build or run TensorRT engines on")
    device = cuda.get_current_device()
    name = device.name.decode() if isinstance(device.name, bytes) else str(device.name)
    major, minor = device.compute_capability
    return f"{name} (sm_{major}{minor})"


def build_engine(onnx_path: str | Path, config: EngineBuildConfig, cache_dir: Path | None = None,
                 out: Path | None = None, rebuild: bool = False, show_progress: bool = True) -> BuildResult:
    """Build (or take from the cache) the engine for an ONNX model that has a sidecar beside it."""
    spec = load_model_spec(str(onnx_path))  # the sidecar must exist: the engine gets a copy of it
    onnx_path = spec.model_path
    if onnx_path.suffix != ".onnx":
        raise PosestreamError(str(onnx_path), "TensorRT engines are built from .onnx models")
    onnx_bytes = onnx_path.read_bytes()
    sidecar = json.loads(spec.sidecar_path.read_text())
    quantized = has_quantize_nodes(onnx_bytes)
    if config.precision == "int8" and not quantized:
        raise PosestreamError(str(onnx_path), "--int8 needs a Q/DQ (explicitly quantized) model; make one with "
                                              "posestream export --int8 --int8-target tensorrt")
    target = sidecar.get("quantization", {}).get("target", "tensorrt")
    if config.precision == "int8" and target != "tensorrt":
        raise PosestreamError(str(onnx_path), f"quantized for {target} (unsigned activations with zero points), "
                                              "which TensorRT cannot take; export again with --int8-target tensorrt")
    if config.precision != "int8" and quantized:
        raise PosestreamError(str(onnx_path), "the model holds QuantizeLinear nodes; build it with --int8")
    if config.height.max % spec.stride or config.width.max % spec.stride:
        raise PosestreamError(f"{config.height}x{config.width}", f"input sizes must be multiples of stride {spec.stride}")
    trt = _import_tensorrt()
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache_dir.mkdir(parents=True, exist_ok=True)
    parts = cache_key_parts(current_gpu(), trt.__version__, hashlib.sha256(onnx_bytes).hexdigest(), config)
    entry = cache_entry(cache_dir, engine_cache_key(parts["gpu"], parts["tensorrt"], parts["onnx_sha256"], config))

    from_cache = not rebuild and cached_engine(entry, parts)
    seconds = 0.0
    if not from_cache:
        started = time.perf_counter()
        serialized = _build_serialized(trt, onnx_path, spec.input.name, config, show_progress)
        seconds = time.perf_counter() - started
        _write_atomically(entry.engine_path, serialized)
        write_manifest(entry, parts, onnx_path, seconds)
    _write_atomically(entry.sidecar_path, (json.dumps(
        engine_sidecar_data(sidecar, entry.engine_path.name, config), indent=2) + "\n").encode())

    out_engine = out_sidecar = None
    if out is not None:
        out_engine = Path(out)
        if out_engine.suffix not in (".engine", ".plan"):
            raise PosestreamError(str(out_engine), "the engine file must end in .engine or .plan")
        out_engine.parent.mkdir(parents=True, exist_ok=True)
        _write_atomically(out_engine, entry.engine_path.read_bytes())
        out_sidecar = out_engine.with_name(out_engine.stem + SIDECAR_SUFFIX)
        _write_atomically(out_sidecar, (json.dumps(
            engine_sidecar_data(sidecar, out_engine.name, config), indent=2) + "\n").encode())
    return BuildResult(entry=entry, from_cache=from_cache, build_seconds=seconds, out_engine=out_engine,
                       out_sidecar=out_sidecar, parts=parts)


def _build_serialized(trt, onnx_path: Path, input_name: str, config: EngineBuildConfig, show_progress: bool) -> bytes:
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    strongly_typed = config.precision == "int8" and config.dla_core is None and hasattr(
        trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED")
    if strongly_typed:
        # Explicit quantization: the Q/DQ nodes fix every tensor's type; no precision flags are needed.
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = []
        for i in range(parser.num_errors):
            error = parser.get_error(i)
            errors.append(f"node {error.node()}: {error.desc()}")
        raise PosestreamError(str(onnx_path), "TensorRT's ONNX parser failed: " + "; ".join(errors or ["no details"]))
    inputs = [network.get_input(i).name for i in range(network.num_inputs)]
    if inputs != [input_name]:
        raise PosestreamError(str(onnx_path), f"expected one input {input_name!r}, the network has {inputs}")

    builder_config = builder.create_builder_config()
    builder_config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, config.workspace_mb << 20)
    if config.precision == "fp16":
        builder_config.set_flag(trt.BuilderFlag.FP16)
    elif config.precision == "int8" and not strongly_typed:
        # Older TensorRT, or DLA (which takes precision flags): INT8 where Q/DQ says, FP16 elsewhere.
        builder_config.set_flag(trt.BuilderFlag.INT8)
        builder_config.set_flag(trt.BuilderFlag.FP16)
    if config.dla_core is not None:
        builder_config.default_device_type = trt.DeviceType.DLA
        builder_config.DLA_core = config.dla_core
        if config.gpu_fallback:
            builder_config.set_flag(trt.BuilderFlag.GPU_FALLBACK)

    profile = builder.create_optimization_profile()
    profile.set_shape(input_name, *config.input_shapes())
    builder_config.add_optimization_profile(profile)

    if config.timing_cache is not None:
        existing = config.timing_cache.read_bytes() if config.timing_cache.is_file() else b""
        timing_cache = builder_config.create_timing_cache(existing)
        builder_config.set_timing_cache(timing_cache, ignore_mismatch=False)
    monitor = _progress_monitor(trt) if show_progress and hasattr(trt, "IProgressMonitor") else None
    if monitor is not None:
        builder_config.progress_monitor = monitor

    print(f"building TensorRT {trt.__version__} engine: {config.precision}, input {input_name} "
          f"batch {config.batch}, height {config.height}, width {config.width}", file=sys.stderr)
    serialized = builder.build_serialized_network(network, builder_config)
    if serialized is None:
        raise PosestreamError(str(onnx_path), "TensorRT could not build an engine (its log above says why)")
    if config.timing_cache is not None:
        config.timing_cache.parent.mkdir(parents=True, exist_ok=True)
        _write_atomically(config.timing_cache, bytes(builder_config.get_timing_cache().serialize()))
    return bytes(serialized)


def _progress_monitor(trt):
    """A trt.IProgressMonitor printing the builder's top-level phases and their step counts to stderr."""

    class PhasePrinter(trt.IProgressMonitor):
        def __init__(self):
            trt.IProgressMonitor.__init__(self)
            self._lock = threading.Lock()  # TensorRT may call from several threads
            self._depth: dict[str, int] = {}
            self._started: dict[str, float] = {}

        def phase_start(self, phase_name, parent_phase, num_steps):
            with self._lock:
                depth = self._depth.get(parent_phase, -1) + 1 if parent_phase else 0
                self._depth[phase_name] = depth
                self._started[phase_name] = time.perf_counter()
                if depth <= 1:
                    print(f"{'  ' * depth}{phase_name} ({num_steps} steps)", file=sys.stderr, flush=True)

        def step_complete(self, phase_name, step):
            return True  # never cancel

        def phase_finish(self, phase_name):
            with self._lock:
                depth = self._depth.pop(phase_name, 0)
                seconds = time.perf_counter() - self._started.pop(phase_name, time.perf_counter())
                if depth == 0:
                    print(f"{phase_name} done in {seconds:.1f} s", file=sys.stderr, flush=True)

    return PhasePrinter()


# -------------------------------------------------------------------------------------- running (TensorRT)


def _device_pointer(array) -> int:
    return int(array.__cuda_array_interface__["data"][0])


def _stream_handle(stream) -> int:
    """A numba stream's cudaStream_t as an int (ctypes c_void_p in numba's own binding, an object with
    __int__ in the NVIDIA binding)."""
    handle = stream.handle
    return int(getattr(handle, "value", handle) or 0)


class EngineSession:
    """One deserialized engine with one execution context, its I/O buffers and a CUDA stream.

    ``run`` queues a batch on ``stream`` and returns device views of the outputs; they stay valid until the
    next ``run`` (the buffers are reused while shapes fit).
    """

    def __init__(self, engine_path: Path, input_name: str, dla_core: int | None = None):
        trt = _import_tensorrt()
        from numba import cuda

        self._trt = trt
        self._cuda = cuda
        self.engine_path = Path(engine_path)
        current_gpu()  # a clear error when there is no GPU
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        if dla_core is not None:
            self._runtime.DLA_core = dla_core
        self.engine = self._runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self.engine is None:
            raise PosestreamError(str(engine_path), "TensorRT cannot load the engine (built for another GPU or "
                                                    "TensorRT version? rebuild it with posestream build-engine)")
        self.context = self.engine.create_execution_context()
        self.tensors: dict[str, tuple[bool, tuple[int, ...], np.dtype]] = {}
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            is_input = self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            self.tensors[name] = (is_input, tuple(self.engine.get_tensor_shape(name)),
                                  np.dtype(trt.nptype(self.engine.get_tensor_dtype(name))))
        inputs = [name for name, (is_input, _, _) in self.tensors.items() if is_input]
        if inputs != [input_name]:
            raise PosestreamError(str(engine_path), f"expected one input {input_name!r}, the engine has {inputs}")
        self.input_name = input_name
        low, opt, high = (tuple(s) for s in self.engine.get_tensor_profile_shape(input_name, 0))
        self.batch = DimRange(low[0], opt[0], high[0])
        self.height = DimRange(low[2], opt[2], high[2])
        self.width = DimRange(low[3], opt[3], high[3])
        self.stream = cuda.stream()
        self._buffers: dict[str, object] = {}  # name -> flat device array

    def output_shapes(self, shape: tuple[int, int, int, int]) -> dict[str, tuple[int, ...]]:
        self._set_input_shape(shape)
        return {name: tuple(self.context.get_tensor_shape(name))
                for name, (is_input, _, _) in self.tensors.items() if not is_input}

    def _set_input_shape(self, shape: tuple[int, ...]) -> None:
        problem = check_input_shape(shape, self.batch, self.height, self.width)
        if problem:
            raise PosestreamError(str(self.engine_path), f"{problem} (the engine was built for batch {self.batch}, "
                                                         f"height {self.height}, width {self.width})")
        if not self.context.set_input_shape(self.input_name, tuple(int(d) for d in shape)):
            raise PosestreamError(str(self.engine_path), f"TensorRT rejected input shape {tuple(shape)}")

    def run(self, batch) -> dict[str, object]:
        """batch: host array or numba device array, N x 3 x H x W -> {output name: device array view}."""
        shape = tuple(batch.shape)
        self._set_input_shape(shape)
        plan = plan_buffers([(name, is_input, shape if is_input else tuple(self.context.get_tensor_shape(name)), dtype)
                             for name, (is_input, _, dtype) in self.tensors.items()])
        capacities = {name: buffer.size for name, buffer in self._buffers.items()}
        for buffer in buffers_to_grow(plan, capacities):
            self._buffers[buffer.name] = self._cuda.device_array(buffer.elements, dtype=buffer.dtype)
        views = {b.name: self._buffers[b.name][:b.elements].reshape(b.shape) for b in plan}
        input_dtype = self.tensors[self.input_name][2]
        input_view = views[self.input_name]
        if self._cuda.is_cuda_array(batch):
            # Already on the GPU (a numba array, a torch tensor): used in place, so it must be laid out as
            # the engine reads it.
            input_view = self._cuda.as_cuda_array(batch)
            if input_view.dtype != input_dtype or not input_view.is_c_contiguous():
                raise PosestreamError(str(self.engine_path), f"a device input must be C-contiguous {input_dtype}, "
                                                             f"got {input_view.dtype}")
        else:
            input_view.copy_to_device(np.ascontiguousarray(batch, dtype=input_dtype), stream=self.stream)
        for name, view in views.items():
            target = input_view if name == self.input_name else view
            self.context.set_tensor_address(name, _device_pointer(target))
        if not self.context.execute_async_v3(_stream_handle(self.stream)):
            raise PosestreamError(str(self.engine_path), f"execution failed for input shape {shape}")
        return {name: view for name, view in views.items() if name != self.input_name}
