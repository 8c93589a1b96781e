"""FP32 ONNX -> INT8 ONNX in QDQ form, by static calibration on real images.

ONNX Runtime's ``quantize_static`` inserts QuantizeLinear/DequantizeLinear pairs around every convolution
(weights per output channel, activations per tensor) with scales measured on calibration images. Those
images are letterboxed and normalised exactly as the pipeline feeds the network (``plan_letterbox`` and
``fill_input`` with the FP32 model's own sidecar), at the sidecar's height and each image's own width.

Two targets, because the fast form differs:

- ``cpu`` (default): unsigned activations with zero points, signed symmetric weights (U8S8). ONNX Runtime
  folds every Relu, Add and Concat into the quantized operators, and the whole network runs in int8; on the
  development machine (AVX-512 VNNI) lightpose-xs at 368x656 takes 17 ms against 32 ms in FP32.
- ``tensorrt``: signed symmetric activations (zero point 0), the only form TensorRT's explicit quantization
  takes (``posestream build-engine model.int8.onnx --int8``). ONNX Runtime runs it too, but slower than
  FP32 on the CPU: with zero point 0 a Relu is no longer implied by the quantization, so it stays a float
  operator between Dequantize and Quantize nodes (62 ms in the same measurement).

Weights are per output channel in both.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from posestream.pipeline.core.errors import PosestreamError
from posestream.pipeline.core.model import ModelSpec, load_model_spec
from posestream.pipeline.inference.preprocess import fill_input, plan_letterbox
from posestream.trainers.export.onnx import read_image, sample_images, sidecar_path_for

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
QUANTIZE_TARGETS = ("cpu", "tensorrt")


@dataclass(frozen=True)
class QuantizeConfig:
    calibration: str = "lsp"  # a folder of images, or a name in posestream.trainers.export.onnx.IMAGE_DATASETS
    calibration_count: int = 64
    method: str = "minmax"  # one of CALIBRATION_METHODS
    percentile: float = 99.99  # for method "percentile"
    per_channel: bool = True
    target: str = "cpu"  # one of QUANTIZE_TARGETS: the runtime the INT8 model is laid out for
    preprocess: bool = True  # quant_pre_process (shape inference + graph optimisation) first
    input_height: int | None = None  # calibration input height; None = the sidecar's

    def __post_init__(self) -> None:
        if self.method not in CALIBRATION_METHODS:
            raise PosestreamError(self.method, f"unknown calibration method; choose one of: {', '.join(CALIBRATION_METHODS)}")
        if self.target not in QUANTIZE_TARGETS:
            raise PosestreamError(self.target, f"unknown INT8 target; choose one of: {', '.join(QUANTIZE_TARGETS)}")
        if self.calibration_count <= 0:
            raise PosestreamError(str(self.calibration_count), "calibration image count must be positive")
        if not 0.0 < self.percentile <= 100.0:
            raise PosestreamError(str(self.percentile), "calibration percentile must be in (0, 100]")


@dataclass(frozen=True)
class QuantizeReport:
    int8_path: Path
    sidecar_path: Path
    fp32_bytes: int
    int8_bytes: int
    calibration_images: int
    method: str
    seconds: float
    quantize_nodes: int  # QuantizeLinear nodes in the result

    def summary(self) -> str:
        return (f"int8: {self.int8_path} ({self.int8_bytes / 1e6:.2f} MB vs FP32 {self.fp32_bytes / 1e6:.2f} MB; "
                f"{self.quantize_nodes} QuantizeLinear nodes; {self.method} calibration on "
                f"{self.calibration_images} images in {self.seconds:.1f} s)\nsidecar: {self.sidecar_path}")


class PipelineCalibrationReader:
    """Feeds calibration images one at a time, preprocessed as BottomUpEstimator would for this model.

    Implements onnxruntime.quantization.CalibrationDataReader (``get_next`` returns a feed dict, then
    None when done); ``rewind`` lets the same reader serve another pass.
    """

    def __init__(self, spec: ModelSpec, images: list[Path], input_height: int | None = None,
                 fixed_size: bool = False):
        self._spec = spec
        self._images = images
        self._input_height = input_height
        self._fixed_size = fixed_size
        self._position = 0

    def __len__(self) -> int:
        return len(self._images)

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._position >= len(self._images):
            return None
        image = read_image(self._images[self._position])
        self._position += 1
        return {self._spec.input.name: preprocess_like_pipeline(image, self._spec, self._input_height,
                                                                self._fixed_size)}

    def rewind(self) -> None:
        self._position = 0

    # onnxruntime checks for this base-class method by name on some versions.
    def set_range(self, start_index: int, end_index: int) -> None:
        self._images = self._images[start_index:end_index]
        self._position = 0


def preprocess_like_pipeline(image: np.ndarray, spec: ModelSpec, input_height: int | None = None,
                             fixed_size: bool = False) -> np.ndarray:
    """One BGR image -> the 1 x 3 x H x W batch BottomUpEstimator builds for it.

    ``fixed_size`` letterboxes into the sidecar's height x width, as the pipeline does for a fixed-size
    network, instead of following the image's aspect ratio.
    """
    resizable = spec.input.resizable and not fixed_size
    box = plan_letterbox(image.shape[0], image.shape[1], spec.input, spec.stride, resizable, input_height)
    batch = np.empty((1, 3, box.input_height, box.input_width), np.float32)
    fill_input(image, box, spec.input, batch[0])
    return batch


def count_quantize_nodes(onnx_path: Path) -> int:
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    return sum(1 for node in model.graph.node if node.op_type == "QuantizeLinear")


def int8_path_for(fp32_path: Path) -> Path:
    """model.onnx -> model.int8.onnx."""
    return fp32_path.with_name(fp32_path.stem + ".int8.onnx")


def quantize_onnx(fp32_model: str | Path, out: str | Path | None = None,
                  config: QuantizeConfig = QuantizeConfig()) -> QuantizeReport:
    """Quantize an FP32 ONNX model that has a sidecar beside it; writes the INT8 model and its sidecar."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quant_pre_process, quantize_static

    spec = load_model_spec(str(fp32_model))
    fp32_path = spec.model_path
    if fp32_path.suffix != ".onnx":
        raise PosestreamError(str(fp32_path), "INT8 quantization needs an .onnx model")
    out_path = Path(out) if out is not None else int8_path_for(fp32_path)
    if out_path.suffix != ".onnx":
        raise PosestreamError(str(out_path), "the INT8 model must be an .onnx file")
    images = sample_images(config.calibration, config.calibration_count)
    # MinMax takes every image at its own width, as the pipeline runs it. The histogram methods stack each
    # tensor's values over all images, which needs one shape, so they letterbox to the sidecar's size.
    reader = PipelineCalibrationReader(spec, images, config.input_height, fixed_size=config.method != "minmax")
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[config.method]
    symmetric = config.target == "tensorrt"
    extra_options = {"ActivationSymmetric": symmetric, "WeightSymmetric": True}
    if config.method == "percentile":
        extra_options["CalibPercentile"] = config.percentile
    activation_type = QuantType.QInt8 if symmetric else QuantType.QUInt8

    started = time.perf_counter()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="posestream-quantize-") as scratch:
        source = fp32_path
        if config.preprocess:
            # Shape inference gives the quantizer every tensor's shape; the optimisation folds what is left.
            source = Path(scratch) / "preprocessed.onnx"
            quant_pre_process(str(fp32_path), str(source))
        partial = out_path.with_name(out_path.name + ".partial")
        try:
            quantize_static(str(source), str(partial), reader, quant_format=QuantFormat.QDQ, per_channel=config.per_channel,
                            activation_type=activation_type, weight_type=QuantType.QInt8, calibrate_method=method,
                            extra_options=extra_options)
        except Exception as error:  # ORT's quantizer raises plain Exceptions / onnx errors
            partial.unlink(missing_ok=True)
            raise PosestreamError(str(fp32_path), f"INT8 quantization failed: {error}") from None
        os.replace(partial, out_path)
    seconds = time.perf_counter() - started

    sidecar = json.loads(spec.sidecar_path.read_text())
    sidecar["model"] = out_path.name
    sidecar["name"] = f"{sidecar.get('name', spec.name)}-int8"
    sidecar["description"] = (f"{sidecar.get('description', '')} INT8 QDQ for {config.target} ({config.method} "
                              f"calibration, {len(images)} images)").strip()
    # Read by build-engine, which refuses a model TensorRT cannot take; ignored by the pipeline.
    sidecar["quantization"] = {
        "format": "QDQ", "target": config.target,
        "activations": "int8 symmetric" if symmetric else "uint8 asymmetric",
        "weights": "int8 symmetric " + ("per-channel" if config.per_channel else "per-tensor"),
        "calibration": {"method": config.method, "images": len(images), "source": config.calibration},
    }
    sidecar_out = sidecar_path_for(out_path)
    sidecar_out.write_text(json.dumps(sidecar, indent=2) + "\n")
    return QuantizeReport(int8_path=out_path, sidecar_path=sidecar_out, fp32_bytes=fp32_path.stat().st_size,
                          int8_bytes=out_path.stat().st_size, calibration_images=len(images), method=config.method,
                          seconds=seconds, quantize_nodes=count_quantize_nodes(out_path))


@dataclass(frozen=True)
class OutputAgreement:
    """How closely two models' outputs agree on the same inputs (INT8 vs FP32)."""

    heatmaps_correlation: float
    pafs_correlation: float
    heatmaps_max_error: float
    pafs_max_error: float

    def summary(self) -> str:
        return (f"INT8 vs FP32: correlation heatmaps {self.heatmaps_correlation:.4f}, pafs {self.pafs_correlation:.4f}; "
                f"max abs error heatmaps {self.heatmaps_max_error:.3g}, pafs {self.pafs_max_error:.3g}")


def compare_models(reference: str | Path, candidate: str | Path, images: list[Path],
                   input_height: int | None = None) -> OutputAgreement:
    """Run two sidecar'd ONNX models through ONNX Runtime on the same preprocessed images."""
    import onnxruntime as ort

    specs = [load_model_spec(str(reference)), load_model_spec(str(candidate))]
    sessions = [ort.InferenceSession(str(s.model_path), providers=["CPUExecutionProvider"]) for s in specs]
    collected: list[list[np.ndarray]] = [[], [], [], []]
    for path in images:
        batch = preprocess_like_pipeline(read_image(path), specs[0], input_height)
        for i, (spec, session) in enumerate(zip(specs, sessions)):
            heatmaps, pafs = session.run([spec.heatmaps_output, spec.pafs_output], {spec.input.name: batch})
            collected[2 * i].append(heatmaps.ravel())
            collected[2 * i + 1].append(pafs.ravel())
    ref_h, ref_p, cand_h, cand_p = (np.concatenate(parts) for parts in collected)
    return OutputAgreement(
        heatmaps_correlation=float(np.corrcoef(ref_h, cand_h)[0, 1]),
        pafs_correlation=float(np.corrcoef(ref_p, cand_p)[0, 1]),
        heatmaps_max_error=float(np.abs(ref_h - cand_h).max()),
        pafs_max_error=float(np.abs(ref_p - cand_p).max()),
    )
