"""Person detection for top-down pose: a YOLOX-format ONNX detector on ONNX Runtime or OpenVINO.

YOLOX's contract (read off yolox-nano in ../shared, see its README): input ``1 x 3 x S x S`` float, BGR 0-255,
the image resized keeping its aspect and padded right and bottom with 114, no normalisation. Output
``N x A x (5 + classes)``: per anchor point raw (x, y, log w, log h), then objectness and class scores (already
sigmoid); the A anchor points are the cells of the stride 8, 16 and 32 grids, row by row, in that order.
Decoding: centre = (raw xy + cell) * stride, size = exp(raw wh) * stride. A person's score is objectness times
the person-class score (class 0); candidates over the threshold go through box NMS (kernels.boxes.nms).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from posestream.kernels.boxes import nms
from posestream.pipeline.core.errors import PosestreamError
from posestream.pipeline.core.paths import shared_dir

YOLOX_STRIDES = (8, 16, 32)
YOLOX_PAD_VALUE = 114
PERSON_CLASS = 0
DETECTOR_BACKENDS = ("auto", "onnxruntime", "openvino")
# The detector "path" that means no detector: every image is one person's box, as LSP's images (cut around
# their person) and DeepPose's b⁰ take it.
WHOLE_IMAGE = "whole-image"


def default_detector_path() -> Path:
    """YOLOX-nano in the shared folder (POSESTREAM_SHARED, else ../shared)."""
    return shared_dir() / "weights" / "yolox-nano" / "yolox_nano.onnx"


@dataclass(frozen=True)
class DetectorConfig:
    path: str | None = None  # a YOLOX ONNX (or OpenVINO .xml) file; None = default_detector_path()
    backend: str = "auto"  # auto: OpenVINO for .xml, else ONNX Runtime
    device: str = "CPU"  # OpenVINO device
    threads: int = 0  # 0 = the runtime's default
    score_threshold: float = 0.2  # objectness x person score a box needs
    nms_iou: float = 0.45  # boxes overlapping a better one by more than this are dropped
    max_detections: int = 100  # per image, best first
    min_box_height: float = 8.0  # image pixels; smaller boxes are too small to crop a pose from

    def __post_init__(self) -> None:
        if self.backend not in DETECTOR_BACKENDS:
            raise PosestreamError(self.backend, f"unknown detector backend; choose one of: "
                                                f"{', '.join(DETECTOR_BACKENDS)}")
        if not 0 <= self.score_threshold <= 1:
            raise PosestreamError("detector score threshold", f"must be in [0, 1], got {self.score_threshold}")
        if not 0 < self.nms_iou <= 1:
            raise PosestreamError("detector NMS IoU", f"must be in (0, 1], got {self.nms_iou}")
        if self.max_detections < 1:
            raise PosestreamError("detector max detections", f"must be >= 1, got {self.max_detections}")

    @property
    def resolved_path(self) -> Path:
        return Path(self.path).expanduser() if self.path else default_detector_path()


def yolox_grid(height: int, width: int, strides: tuple[int, ...] = YOLOX_STRIDES) -> tuple[np.ndarray, np.ndarray]:
    """(cells A x 2 float32 (x, y), strides A float32) of YOLOX's anchor points for an input of height x width."""
    cells, cell_strides = [], []
    for stride in strides:
        rows, cols = height // stride, width // stride
        ys, xs = np.mgrid[0:rows, 0:cols]
        cells.append(np.stack([xs.ravel(), ys.ravel()], axis=1))
        cell_strides.append(np.full(rows * cols, stride))
    return np.concatenate(cells).astype(np.float32), np.concatenate(cell_strides).astype(np.float32)


def decode_yolox(raw: np.ndarray, cells: np.ndarray, strides: np.ndarray, score_threshold: float,
                 class_index: int = PERSON_CLASS) -> tuple[np.ndarray, np.ndarray]:
    """One image's raw output A x (5 + classes) -> (boxes D x 4 (x0, y0, x1, y1) in input pixels, scores D)
    of the anchor points whose objectness x class score reaches ``score_threshold``."""
    scores = raw[:, 4] * raw[:, 5 + class_index]
    chosen = np.flatnonzero(scores >= score_threshold)
    picked = raw[chosen]
    centres = (picked[:, 0:2] + cells[chosen]) * strides[chosen, None]
    # exp of a large raw value overflows float32 to inf; such a box is clipped to the image later.
    with np.errstate(over="ignore"):
        sizes = np.exp(picked[:, 2:4]) * strides[chosen, None]
    boxes = np.concatenate([centres - 0.5 * sizes, centres + 0.5 * sizes], axis=1)
    return boxes.astype(np.float32), scores[chosen].astype(np.float32)


class _OnnxRuntimeDetector:
    def __init__(self, path: Path, config: DetectorConfig):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if config.threads:
            options.intra_op_num_threads = config.threads
        try:
            self._session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as error:  # ORT's own exception types for unreadable or invalid files
            raise PosestreamError(str(path), f"ONNX Runtime cannot load the detector: {error}") from None
        first = self._session.get_inputs()[0]
        self.input_name = first.name
        self.input_shape = tuple(d if isinstance(d, int) and d > 0 else None for d in first.shape)

    def run(self, batch: np.ndarray) -> np.ndarray:
        if self.input_shape and self.input_shape[0] is not None and self.input_shape[0] != len(batch):
            # A detector exported for batch 1 (yolox-nano is) runs image by image.
            return np.concatenate([self._session.run(None, {self.input_name: batch[i:i + 1]})[0]
                                   for i in range(len(batch))])
        return self._session.run(None, {self.input_name: batch})[0]


class _OpenVinoDetector:
    def __init__(self, path: Path, config: DetectorConfig):
        try:
            import openvino as ov
        except ImportError:
            raise PosestreamError("openvino", "the detector backend needs the openvino package: "
                                              "pip install 'posestream[openvino]'") from None
        self._core = ov.Core()
        try:
            self._model = self._core.read_model(str(path))
        except Exception as error:  # OpenVINO raises RuntimeError subclasses with long messages
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise PosestreamError(str(path), f"OpenVINO cannot load the detector: {first_line}") from None
        self._config = config
        first = self._model.inputs[0]
        self.input_name = first.get_any_name()
        shape = first.get_partial_shape()
        self.input_shape = tuple(d.get_length() if d.is_static else None for d in shape)
        self._compiled: dict[int, object] = {}

    def run(self, batch: np.ndarray) -> np.ndarray:
        if self.input_shape and self.input_shape[0] is not None and self.input_shape[0] != len(batch):
            # A batch-1 export usually has the batch baked into its reshapes: run image by image.
            return np.concatenate([self._run_batch(batch[i:i + 1]) for i in range(len(batch))])
        return self._run_batch(batch)

    def _run_batch(self, batch: np.ndarray) -> np.ndarray:
        count = len(batch)
        compiled = self._compiled.get(count)
        if compiled is None:
            self._model.reshape({self.input_name: list(batch.shape)})
            properties = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
            if self._config.threads:
                properties["INFERENCE_NUM_THREADS"] = self._config.threads
            compiled = self._core.compile_model(self._model, self._config.device, properties)
            if len(self._compiled) >= 4:  # batch sizes seen; keep a few
                self._compiled.pop(next(iter(self._compiled)))
            self._compiled[count] = compiled
        return compiled({self.input_name: batch})[compiled.output(0)]


@dataclass
class DetectorStats:
    images: int = 0
    detections: int = 0
    seconds: float = 0.0  # letterbox + network + decode + NMS


class PersonDetector:
    """Callable: a list of BGR images -> per image a D x 5 float32 array (x0, y0, x1, y1, score) in image
    pixels, best first."""

    def __init__(self, config: DetectorConfig = DetectorConfig()):
        self.config = config
        path = config.resolved_path
        if not path.is_file():
            raise PosestreamError(str(path), "no such detector model file (give one with --detector)")
        backend = config.backend
        if backend == "auto":
            backend = "openvino" if path.suffix == ".xml" else "onnxruntime"
        if backend == "onnxruntime" and path.suffix != ".onnx":
            raise PosestreamError(str(path), "ONNX Runtime runs .onnx detectors only; use the openvino backend")
        self.path = path
        self.backend_name = backend
        runner = _OnnxRuntimeDetector if backend == "onnxruntime" else _OpenVinoDetector
        self._runner = runner(path, config)
        self.input_height, self.input_width = self._input_size()
        self._cells, self._strides = yolox_grid(self.input_height, self.input_width)
        self._check_output()
        self._keep = np.empty(config.max_detections, np.int64)
        self.stats = DetectorStats()

    def _input_size(self) -> tuple[int, int]:
        shape = self._runner.input_shape
        if len(shape) != 4 or shape[1] not in (None, 3):
            raise PosestreamError(str(self.path), f"not a YOLOX detector: input shape {shape}, expected N x 3 x H x W")
        height, width = shape[2] or 416, shape[3] or 416  # a dynamic-size export runs at YOLOX's usual 416
        if height % YOLOX_STRIDES[-1] or width % YOLOX_STRIDES[-1]:
            raise PosestreamError(str(self.path), f"input {height}x{width} is not a multiple of stride 32")
        return height, width

    def _check_output(self) -> None:
        """Run one padded image and check the output is YOLOX's N x A x (5 + classes) for this input size."""
        probe = np.full((1, 3, self.input_height, self.input_width), YOLOX_PAD_VALUE, np.float32)
        try:
            output = self._runner.run(probe)
        except Exception as error:  # the runtime's own exception types
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            size = f"{self.input_height}x{self.input_width}"
            raise PosestreamError(str(self.path), f"the detector does not run on a {size} input: {first_line}") from None
        anchors = len(self._cells)
        if output.ndim != 3 or output.shape[0] != 1 or output.shape[1] != anchors or output.shape[2] < 6:
            raise PosestreamError(
                str(self.path), f"not a YOLOX detector: first output has shape {tuple(output.shape)}, expected "
                                f"(1, {anchors}, 5 + classes) for a {self.input_height}x{self.input_width} input "
                                f"at strides {'/'.join(map(str, YOLOX_STRIDES))}")

    def _letterbox(self, image: np.ndarray, out: np.ndarray) -> float:
        """Write the padded 3 x S x S input for ``image`` into ``out``; returns the resize factor."""
        height, width = image.shape[:2]
        ratio = min(self.input_height / height, self.input_width / width)
        resized_w, resized_h = max(1, int(width * ratio)), max(1, int(height * ratio))
        resized = cv2.resize(image, (resized_w, resized_h), interpolation=cv2.INTER_LINEAR)
        out[...] = YOLOX_PAD_VALUE
        out[:, :resized_h, :resized_w] = resized.transpose(2, 0, 1)
        return ratio

    def __call__(self, images: list[np.ndarray]) -> list[np.ndarray]:
        if not images:
            return []
        started = time.perf_counter()
        batch = np.empty((len(images), 3, self.input_height, self.input_width), np.float32)
        ratios = [self._letterbox(image, slot) for image, slot in zip(images, batch)]
        raw = self._runner.run(batch)
        results = [self._detections(raw[i], ratios[i], image.shape[:2]) for i, image in enumerate(images)]
        self.stats.images += len(images)
        self.stats.detections += sum(len(r) for r in results)
        self.stats.seconds += time.perf_counter() - started
        return results

    def _detections(self, raw: np.ndarray, ratio: float, image_size: tuple[int, int]) -> np.ndarray:
        config = self.config
        boxes, scores = decode_yolox(raw, self._cells, self._strides, config.score_threshold)
        count = nms(boxes, scores, config.nms_iou, self._keep)
        kept = self._keep[:count]
        height, width = image_size
        result = np.empty((count, 5), np.float32)
        result[:, :4] = boxes[kept] / ratio  # YOLOX boxes are edges, not pixel centres: a plain rescale
        np.clip(result[:, 0:4:2], 0.0, width, out=result[:, 0:4:2])
        np.clip(result[:, 1:4:2], 0.0, height, out=result[:, 1:4:2])
        result[:, 4] = scores[kept]
        tall_enough = (result[:, 3] - result[:, 1]) >= config.min_box_height
        return result[tall_enough & (result[:, 2] > result[:, 0])]


class WholeImageDetector:
    """The detector for images that are already one person's box (``--detector whole-image``): per image
    one box covering it, score 1."""

    path = WHOLE_IMAGE

    def __init__(self) -> None:
        self.stats = DetectorStats()

    def __call__(self, images: list[np.ndarray]) -> list[np.ndarray]:
        boxes = []
        for image in images:
            height, width = image.shape[:2]
            # Pixel centres sit at integers, so the image's edges are half a pixel outside them.
            boxes.append(np.array([[-0.5, -0.5, width - 0.5, height - 0.5, 1.0]], np.float32))
        self.stats.images += len(images)
        self.stats.detections += len(images)
        return boxes


def create_detector(config: DetectorConfig) -> PersonDetector | WholeImageDetector:
    """The detector ``config.path`` names: WHOLE_IMAGE, or a YOLOX model file (default yolox-nano)."""
    if config.path == WHOLE_IMAGE:
        return WholeImageDetector()
    return PersonDetector(config)
