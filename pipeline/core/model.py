"""The model contract: a network file (ONNX, OpenVINO IR, TensorRT engine or trainer checkpoint) plus a
``<model>.pose.json`` sidecar.

The sidecar says everything the pipeline needs to feed the network and read its outputs: input tensor
name, size and normalisation, output tensor names, stride, keypoint names, limbs with their PAF channel
pairs, and whether the heatmaps carry a background channel. ``validate_against_model`` checks the
sidecar against what the loaded network really has, so a mismatch fails at load, not mid-stream.
"""
from __future__ import annotations

import json
import os
import string
from dataclasses import dataclass
from pathlib import Path

from posestream.pipeline.core.errors import PosestreamError
from posestream.pipeline.core.paths import shared_dir

SIDECAR_SUFFIX = ".pose.json"
SIDECAR_FORMAT = "posestream.pose/1"
BUILTIN_DIR = Path(__file__).resolve().parent.parent / "models"
# Short names for sidecars shipped in pipeline/models/.
BUILTIN_MODELS = {
    # The default: Intel's hpe-0001 imported, fine-tuned and blended by trainers/ (docs/trainers.md, NOTICE).
    "lwo-mobilenet": "posestream-lwo-mobilenet.pose.json",
    "lwo-mobilenet-int8": "posestream-lwo-mobilenet.int8.pose.json",  # the same, INT8 (QDQ) for CPUs
    "lightpose-xs": "posestream-lightpose-xs.pose.json",  # ours: trained by trainers/ (docs/trainers.md), shipped
    "lightpose-xs-int8": "posestream-lightpose-xs.int8.pose.json",  # the same, INT8 (QDQ) for CPUs
    "hpe-0001": "human-pose-estimation-0001.pose.json",  # Intel's, from ../shared
}
DEFAULT_MODEL = "lwo-mobilenet"
# Which backend runs a model file by default, by suffix (the sidecar names the file).
BACKEND_BY_SUFFIX = {".onnx": "onnxruntime", ".xml": "openvino", ".engine": "tensorrt", ".plan": "tensorrt",
                     ".pt": "torch"}
MODEL_SUFFIXES = tuple(BACKEND_BY_SUFFIX)


@dataclass(frozen=True)
class InputSpec:
    name: str
    height: int
    width: int
    resizable: bool  # the backend may reshape H and W (to multiples of the stride)
    color_order: str  # "BGR" or "RGB"
    mean: tuple[float, float, float]  # network input = (pixel - mean) * scale, per channel
    scale: tuple[float, float, float]
    pad_value: int  # letterbox fill, in raw pixel units


@dataclass(frozen=True)
class ModelSpec:
    name: str
    sidecar_path: Path
    model_path: Path
    input: InputSpec
    heatmaps_output: str
    pafs_output: str
    stride: int
    background_channel: bool
    keypoints: tuple[str, ...]
    limbs: tuple[tuple[int, int], ...]  # (keypoint a, keypoint b) per limb
    paf_channels: tuple[tuple[int, int], ...]  # (x channel, y channel) per limb
    redundant_limbs: tuple[int, ...]  # limbs that only complete people, never start or join them
    # Optional: the network's name in posestream.pipeline.networks.models.MODELS, which lets the torch
    # backend rebuild it and run an FP32 ONNX file's weights (exports of our trainers write it).
    network: str | None = None

    @property
    def num_keypoints(self) -> int:
        return len(self.keypoints)

    @property
    def heatmap_channels(self) -> int:
        return len(self.keypoints) + (1 if self.background_channel else 0)

    @property
    def paf_channel_count(self) -> int:
        return 2 * len(self.limbs)

    def input_files(self) -> tuple[tuple[str, str], ...]:
        """(path, role) of the files this model is read from (an OpenVINO IR's .bin too): no output of a run
        may write over them."""
        files = [(str(self.sidecar_path), "the model's sidecar"), (str(self.model_path), "the model")]
        if self.model_path.suffix == ".xml":
            files.append((str(self.model_path.with_suffix(".bin")), "the model's weights"))
        return tuple(files)

    @property
    def backend_hint(self) -> str:
        return BACKEND_BY_SUFFIX.get(self.model_path.suffix, "onnxruntime")


def resolve_sidecar(model: str | None) -> Path:
    """Find the sidecar for ``--model``: a built-in short name, a sidecar path, or a model file path."""
    model = model or DEFAULT_MODEL
    if model in BUILTIN_MODELS:
        return BUILTIN_DIR / BUILTIN_MODELS[model]
    path = Path(model)
    if path.name.endswith(SIDECAR_SUFFIX):
        if not path.exists():
            raise PosestreamError(model, "no such sidecar file")
        return path
    if path.suffix in MODEL_SUFFIXES:
        sidecar = path.with_name(path.stem + SIDECAR_SUFFIX)
        if not path.exists():
            raise PosestreamError(model, "no such model file")
        if not sidecar.exists():
            raise PosestreamError(model, f"no sidecar beside the model (expected {sidecar})")
        return sidecar
    known = ", ".join(sorted(BUILTIN_MODELS))
    raise PosestreamError(model, f"not a model: give a .pose.json sidecar, an .onnx/.xml/.engine/.plan/.pt model "
                                 f"with its sidecar beside it, or one of: {known}")


def _expand(template: str, sidecar: Path) -> Path:
    """Expand ${POSESTREAM_SHARED} and ~; a relative path is relative to the sidecar's folder."""
    try:
        text = string.Template(template).substitute({**os.environ, "POSESTREAM_SHARED": str(shared_dir())})
    except (KeyError, ValueError) as error:
        raise PosestreamError(str(sidecar), f"model path {template!r} has an unknown variable {error}") from None
    path = Path(text).expanduser()
    return path if path.is_absolute() else (sidecar.parent / path).resolve()


def _require(data: dict, key: str, kind: type, where: str, sidecar: Path):
    if key not in data:
        raise PosestreamError(str(sidecar), f"missing field {where}{key}")
    value = data[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise PosestreamError(str(sidecar), f"field {where}{key} must be {kind.__name__}, got {value!r}")
    return value


def _optional(data: dict, key: str, kind: type, default, where: str, sidecar: Path):
    return _require(data, key, kind, where, sidecar) if key in data else default


def _triple(data: dict, key: str, sidecar: Path) -> tuple[float, float, float]:
    values = _require(data, key, list, "input.", sidecar)
    if len(values) != 3 or not all(isinstance(v, (int, float)) for v in values):
        raise PosestreamError(str(sidecar), f"field input.{key} must be three numbers, got {values!r}")
    return tuple(float(v) for v in values)


def _pairs(data: dict, key: str, limit: int, what: str, sidecar: Path) -> tuple[tuple[int, int], ...]:
    values = _require(data, key, list, "", sidecar)
    pairs = []
    for i, pair in enumerate(values):
        if (not isinstance(pair, list) or len(pair) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair)):
            raise PosestreamError(str(sidecar), f"{key}[{i}] must be a pair of integers, got {pair!r}")
        if not all(0 <= v < limit for v in pair):
            raise PosestreamError(str(sidecar), f"{key}[{i}] = {pair} names a {what} outside 0..{limit - 1}")
        pairs.append((pair[0], pair[1]))
    return tuple(pairs)


def load_model_spec(model: str | None) -> ModelSpec:
    """Read and check a sidecar on its own (``validate_against_model`` checks it against the network)."""
    sidecar = resolve_sidecar(model)
    try:
        data = json.loads(sidecar.read_text())
    except json.JSONDecodeError as error:
        raise PosestreamError(str(sidecar), f"not valid JSON: {error}") from None
    except OSError as error:
        raise PosestreamError(str(sidecar), f"cannot read: {error.strerror}") from None
    if not isinstance(data, dict) or data.get("format") != SIDECAR_FORMAT:
        raise PosestreamError(str(sidecar), f'not a posestream sidecar (expected "format": "{SIDECAR_FORMAT}")')

    model_path = _expand(_require(data, "model", str, "", sidecar), sidecar)
    if model_path.suffix not in MODEL_SUFFIXES:
        raise PosestreamError(str(sidecar), f"model {model_path} must be an .onnx or OpenVINO .xml file, "
                                            "a TensorRT .engine/.plan, or a trainer .pt checkpoint")
    if not model_path.exists():
        raise PosestreamError(str(model_path), f"model file named by {sidecar} does not exist")

    raw_input = _require(data, "input", dict, "", sidecar)
    color_order = _require(raw_input, "color_order", str, "input.", sidecar)
    if color_order not in ("BGR", "RGB"):
        raise PosestreamError(str(sidecar), f"input.color_order must be BGR or RGB, got {color_order!r}")
    input_spec = InputSpec(
        name=_require(raw_input, "name", str, "input.", sidecar),
        height=_require(raw_input, "height", int, "input.", sidecar),
        width=_require(raw_input, "width", int, "input.", sidecar),
        resizable=_optional(raw_input, "resizable", bool, False, "input.", sidecar),
        color_order=color_order,
        mean=_triple(raw_input, "mean", sidecar),
        scale=_triple(raw_input, "scale", sidecar),
        pad_value=_optional(raw_input, "pad_value", int, 0, "input.", sidecar),
    )
    if input_spec.height <= 0 or input_spec.width <= 0:
        raise PosestreamError(str(sidecar), f"input.height and input.width must be positive, got {input_spec.height}x{input_spec.width}")
    if not 0 <= input_spec.pad_value <= 255:
        raise PosestreamError(str(sidecar), f"input.pad_value must be 0..255, got {input_spec.pad_value}")
    outputs = _require(data, "outputs", dict, "", sidecar)
    stride = _require(data, "stride", int, "", sidecar)
    if stride <= 0 or input_spec.height % stride or input_spec.width % stride:
        raise PosestreamError(str(sidecar), f"input {input_spec.height}x{input_spec.width} is not a multiple of stride {stride}")

    keypoints = tuple(_require(data, "keypoints", list, "", sidecar))
    if not keypoints or not all(isinstance(k, str) for k in keypoints) or len(set(keypoints)) != len(keypoints):
        raise PosestreamError(str(sidecar), "keypoints must be a non-empty list of distinct names")
    limbs = _pairs(data, "limbs", len(keypoints), "keypoint", sidecar)
    paf_channels = _pairs(data, "paf_channels", 2 * len(limbs), "PAF channel", sidecar)
    if len(paf_channels) != len(limbs):
        raise PosestreamError(str(sidecar), f"{len(limbs)} limbs but {len(paf_channels)} paf_channels pairs")
    redundant = tuple(_optional(data, "redundant_limbs", list, [], "", sidecar))
    if not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < len(limbs) for i in redundant):
        raise PosestreamError(str(sidecar), f"redundant_limbs {list(redundant)} must be limb indices")

    return ModelSpec(
        name=str(data.get("name", sidecar.name.removesuffix(SIDECAR_SUFFIX))),
        sidecar_path=sidecar,
        model_path=model_path,
        input=input_spec,
        heatmaps_output=_require(outputs, "heatmaps", str, "outputs.", sidecar),
        pafs_output=_require(outputs, "pafs", str, "outputs.", sidecar),
        stride=stride,
        background_channel=_require(data, "background_channel", bool, "", sidecar),
        keypoints=keypoints,
        limbs=limbs,
        paf_channels=paf_channels,
        redundant_limbs=redundant,
        network=_optional(data, "network", str, None, "", sidecar),
    )


@dataclass(frozen=True)
class TensorInfo:
    """A network tensor as the runtime reports it; a dimension it cannot tell is None."""

    name: str
    shape: tuple[int | None, ...]


def validate_against_model(spec: ModelSpec, inputs: list[TensorInfo], outputs: list[TensorInfo]) -> None:
    """Fail with one clear line when the sidecar and the network disagree.

    ``outputs`` must describe the network as reshaped to the sidecar's input size, so spatial sizes can
    be checked against the stride.
    """
    subject = f"{spec.sidecar_path} vs {spec.model_path.name}"
    by_name = {t.name: t for t in inputs}
    if spec.input.name not in by_name:
        raise PosestreamError(subject, f"input {spec.input.name!r} not in the model (it has {sorted(by_name)})")
    input_shape = by_name[spec.input.name].shape
    if len(input_shape) != 4 or input_shape[1] not in (None, 3):
        raise PosestreamError(subject, f"input {spec.input.name!r} has shape {input_shape}, expected N x 3 x H x W")
    out_by_name = {t.name: t for t in outputs}
    expected_h, expected_w = spec.input.height // spec.stride, spec.input.width // spec.stride
    for role, name, channels in (
        ("heatmaps", spec.heatmaps_output, spec.heatmap_channels),
        ("pafs", spec.pafs_output, spec.paf_channel_count),
    ):
        if name not in out_by_name:
            raise PosestreamError(subject, f"{role} output {name!r} not in the model (it has {sorted(out_by_name)})")
        shape = out_by_name[name].shape
        if len(shape) != 4:
            raise PosestreamError(subject, f"{role} output {name!r} has shape {shape}, expected N x C x H x W")
        if shape[1] is not None and shape[1] != channels:
            raise PosestreamError(
                subject, f"{role} output {name!r} has {shape[1]} channels but the sidecar implies {channels}")
        for got, want, axis in ((shape[2], expected_h, "height"), (shape[3], expected_w, "width")):
            if got is not None and got != want:
                raise PosestreamError(
                    subject, f"{role} output {name!r} {axis} is {got}, but input/stride gives {want}")
