"""Checkpoint -> ONNX for deployment, with a parity check against PyTorch and the sidecar written beside it.

The network is exported as ``LastStage`` (only the last stage's maps) in eval mode, input ``image`` with
dynamic batch, height and width, outputs ``heatmaps`` and ``pafs``, so one file serves every batch size and
input size the pipeline picks (sidecar ``resizable: true``).

Exporter: torch's dynamo exporter (``torch.onnx.export(..., dynamo=True)``, opset 18). With torch 2.13 the
TorchScript exporter still works and gives the same operators, but it is deprecated (it warns on every call),
leaves Identity nodes behind, and records no intermediate shapes; the dynamo exporter's graph is plain
Conv/Relu/Add/Concat with symbolic shapes on every tensor, which ONNX Runtime's quantizer and TensorRT's
parser both use. Its cost is a few seconds per export and the onnxscript dependency. Opset 18 is the
exporter's own; older opsets would go through a version converter for no gain (TensorRT 10, ONNX Runtime
and OpenVINO all read 18).

Parity: ONNX Runtime and PyTorch run the same batches (random inputs and real images letterboxed as the
pipeline does) at two batch sizes and two input sizes; the largest absolute difference must stay under a
tolerance, or the export fails.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from posestream.pipeline.core.errors import PosestreamError
from posestream.pipeline.core.model import SIDECAR_SUFFIX, InputSpec
from posestream.pipeline.core.paths import shared_dir
from posestream.pipeline.inference.preprocess import fill_input, plan_letterbox
from posestream.pipeline.networks import layout

OPSET = 18
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
# Named image sets in ../shared, for parity batches and INT8 calibration.
IMAGE_DATASETS = {
    "lsp": "data/lsp/images",
    "lspet": "data/lspet/images",
    "coco": "data/coco-mini-train/images",
    "mmpose-coco": "data/mmpose/coco",
}


@dataclass(frozen=True)
class ExportConfig:
    height: int | None = None  # sidecar input size; None = the checkpoint's training size
    width: int | None = None
    name: str | None = None  # sidecar "name"; None = the output file's stem
    parity: bool = True
    parity_tolerance: float = 1e-3  # largest allowed |ONNX Runtime - PyTorch| on any output value
    parity_batches: tuple[int, ...] = (1, 3)
    parity_sizes: tuple[tuple[int, int], ...] | None = None  # None = the sidecar size and a wider, lower one
    # Real images for the parity batches: a folder or a name in IMAGE_DATASETS; None = "lsp" when ../shared
    # has it (random inputs only otherwise, which the report says).
    parity_images: str | None = None
    origin: str | None = None  # the sidecar's "origin"; None = the checkpoint's own (set by import-openvino)


@dataclass(frozen=True)
class ParityCase:
    inputs: str  # "random" or "images"
    batch: int
    height: int
    width: int
    heatmaps_error: float  # max |ONNX Runtime - PyTorch|
    pafs_error: float
    output_scale: float  # max |PyTorch output|, to read the errors against

    @property
    def max_error(self) -> float:
        return max(self.heatmaps_error, self.pafs_error)


@dataclass(frozen=True)
class ParityReport:
    cases: tuple[ParityCase, ...]
    tolerance: float
    image_source: str | None  # where the real images came from; None when only random inputs ran

    @property
    def max_error(self) -> float:
        return max(case.max_error for case in self.cases)

    @property
    def passed(self) -> bool:
        return self.max_error <= self.tolerance

    def table(self) -> str:
        lines = [f"{'inputs':<7} {'batch':>5} {'size':>9} {'heatmaps':>10} {'pafs':>10} {'|output|':>9}"]
        for case in self.cases:
            lines.append(f"{case.inputs:<7} {case.batch:>5} {f'{case.height}x{case.width}':>9} "
                         f"{case.heatmaps_error:>10.2e} {case.pafs_error:>10.2e} {case.output_scale:>9.3g}")
        verdict = "ok" if self.passed else "FAILED"
        lines.append(f"max abs error {self.max_error:.2e} (tolerance {self.tolerance:.0e}): {verdict}")
        if self.image_source is None:
            lines.append("real-image parity skipped: no image source (random inputs only)")
        return "\n".join(lines)


@dataclass(frozen=True)
class ExportReport:
    onnx_path: Path
    sidecar_path: Path
    size_bytes: int
    opset: int
    height: int
    width: int
    parity: ParityReport | None = field(default=None)

    def summary(self) -> str:
        lines = [f"onnx: {self.onnx_path} ({self.size_bytes / 1e6:.2f} MB, opset {self.opset}, "
                 f"dynamic batch/height/width, sidecar size {self.height}x{self.width})",
                 f"sidecar: {self.sidecar_path}"]
        if self.parity is not None:
            lines.append("parity, ONNX Runtime vs PyTorch:")
            lines.append(self.parity.table())
        else:
            lines.append("parity check skipped (--no-parity)")
        return "\n".join(lines)


def sidecar_path_for(model_path: Path) -> Path:
    return model_path.with_name(model_path.stem + SIDECAR_SUFFIX)


def write_sidecar(model_path: Path, name: str, height: int, width: int, description: str = "",
                  origin: str | None = None, network: str | None = None) -> Path:
    """Write ``<model>.pose.json`` beside ``model_path`` (its "model" field relative, so the pair can move);
    ``origin`` and ``network`` as layout.sidecar_data takes them."""
    data = layout.sidecar_data(model_path.name, name, height, width, description, network=network, origin=origin)
    path = sidecar_path_for(model_path)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def layout_input_spec(height: int, width: int) -> InputSpec:
    """The InputSpec every sidecar written from ``posestream.pipeline.networks.layout`` carries."""
    return InputSpec(name=layout.INPUT_NAME, height=height, width=width, resizable=True,
                     color_order=layout.COLOR_ORDER, mean=(layout.PIXEL_MEAN,) * 3,
                     scale=(layout.PIXEL_SCALE,) * 3, pad_value=layout.PAD_VALUE)


def sample_images(source: str, count: int) -> list[Path]:
    """``count`` image files spread evenly over a folder or a named set in ../shared (IMAGE_DATASETS).

    Evenly spread, not the first ``count``, so a dataset sorted by scene or sport is sampled across it;
    the choice is fixed by the sorted file names, so runs repeat.
    """
    if count <= 0:
        raise PosestreamError(source, f"image count must be positive, got {count}")
    folder = shared_dir() / IMAGE_DATASETS[source] if source in IMAGE_DATASETS else Path(source).expanduser()
    if not folder.is_dir():
        known = ", ".join(IMAGE_DATASETS)
        raise PosestreamError(str(folder), f"not a folder of images (give a folder or one of: {known})")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise PosestreamError(str(folder), f"no images ({', '.join(IMAGE_SUFFIXES)}) in the folder")
    if count >= len(files):
        return files
    step = len(files) / count
    return [files[int(i * step)] for i in range(count)]


def read_image(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise PosestreamError(str(path), "cannot read as an image")
    return image


def letterboxed_batch(images: list[np.ndarray], spec: InputSpec, stride: int, height: int,
                      width: int) -> np.ndarray:
    """Images -> one N x 3 x height x width network batch, letterboxed and normalised as the pipeline does."""
    fixed = replace(spec, height=height, width=width)
    batch = np.empty((len(images), 3, height, width), np.float32)
    for image, slot in zip(images, batch):
        box = plan_letterbox(image.shape[0], image.shape[1], fixed, stride, resizable=False)
        fill_input(image, box, fixed, slot)
    return batch


def _round_to_stride(value: float) -> int:
    return max(layout.STRIDE, int(math.ceil(value / layout.STRIDE) * layout.STRIDE))


def default_parity_sizes(height: int, width: int) -> tuple[tuple[int, int], ...]:
    """The sidecar size, and a lower, wider one so both spatial axes change."""
    return (height, width), (_round_to_stride(height * 3 / 4), _round_to_stride(width * 5 / 4))


def export_onnx(checkpoint: str | Path, out: str | Path, config: ExportConfig = ExportConfig()) -> ExportReport:
    """Export a trainer checkpoint to ONNX, check it, write its sidecar, and (unless disabled) check parity."""
    import onnx
    import torch

    from posestream.pipeline.networks.checkpoint import load_checkpoint
    from posestream.pipeline.networks.heatmap_paf import LastStage

    loaded = load_checkpoint(checkpoint)
    height = config.height or loaded.input_size[0]
    width = config.width or loaded.input_size[1]
    if height % layout.STRIDE or width % layout.STRIDE:
        raise PosestreamError(f"{height}x{width}", f"export size must be a multiple of the stride {layout.STRIDE}")
    out = Path(out)
    if out.suffix != ".onnx":
        raise PosestreamError(str(out), "the export must be an .onnx file")
    out.parent.mkdir(parents=True, exist_ok=True)

    network = LastStage(loaded.build_model()).eval()
    # Batch 2 as the example: torch.export specialises a dimension whose example size is 0 or 1.
    example = torch.zeros(2, 3, height, width)
    dynamic = {"image": {0: "batch", 2: "height", 3: "width"}}
    partial = out.with_name(out.name + ".partial")
    progress = io.StringIO()
    try:
        # The exporter prints its steps on stdout; they go into the error message if it fails.
        with contextlib.redirect_stdout(progress), torch.no_grad():
            torch.onnx.export(network, (example,), str(partial), input_names=[layout.INPUT_NAME],
                              output_names=[layout.HEATMAPS_OUTPUT, layout.PAFS_OUTPUT], opset_version=OPSET,
                              dynamo=True, external_data=False, dynamic_shapes=dynamic)
    except Exception as error:  # torch.export raises many error types; all mean the same to the user
        partial.unlink(missing_ok=True)
        raise PosestreamError(str(checkpoint), f"ONNX export failed: {error}\n{progress.getvalue()}") from None
    model = onnx.load(str(partial))
    strip_debug_metadata(model)
    onnx.save(model, str(partial))
    try:
        onnx.checker.check_model(str(partial), full_check=True)
    except onnx.checker.ValidationError as error:
        partial.unlink(missing_ok=True)
        raise PosestreamError(str(out), f"exported model fails onnx.checker: {error}") from None
    os.replace(partial, out)
    name = config.name or out.stem
    sidecar = write_sidecar(out, name, height, width,
                            description=f"posestream {loaded.model_name} exported from {Path(checkpoint).name} "
                                        f"(epoch {loaded.epoch}, step {loaded.step})",
                            origin=config.origin or loaded.metrics.get("origin"), network=loaded.model_name)

    parity = None
    if config.parity:
        parity = check_parity(network, out, config, height, width)
        if not parity.passed:
            raise PosestreamError(str(out), f"ONNX Runtime differs from PyTorch by {parity.max_error:.2e} "
                                            f"(tolerance {config.parity_tolerance:.0e}):\n{parity.table()}")
    return ExportReport(onnx_path=out, sidecar_path=sidecar, size_bytes=out.stat().st_size, opset=OPSET,
                        height=height, width=width, parity=parity)


def strip_debug_metadata(model) -> None:
    """Drop the exporter's per-node notes (Python stack traces with local paths, FX node text): over half
    the file for small networks, and nothing a runtime reads."""
    for node in model.graph.node:
        del node.metadata_props[:]


def _parity_image_source(config: ExportConfig) -> str | None:
    if config.parity_images is not None:
        return config.parity_images
    return "lsp" if (shared_dir() / IMAGE_DATASETS["lsp"]).is_dir() else None


def check_parity(network, onnx_path: Path, config: ExportConfig, height: int, width: int) -> ParityReport:
    """Run PyTorch (``network``: LastStage in eval mode) and ONNX Runtime on the same batches."""
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    output_names = [layout.HEATMAPS_OUTPUT, layout.PAFS_OUTPUT]
    sizes = config.parity_sizes or default_parity_sizes(height, width)
    source = _parity_image_source(config)
    images = [read_image(p) for p in sample_images(source, max(config.parity_batches))] if source else []
    spec = layout_input_spec(height, width)
    rng = np.random.default_rng(0)

    cases = []
    for batch_size in config.parity_batches:
        for size_h, size_w in sizes:
            batches = {"random": rng.uniform(-0.5, 0.5, (batch_size, 3, size_h, size_w)).astype(np.float32)}
            if images:
                chosen = [images[i % len(images)] for i in range(batch_size)]
                batches["images"] = letterboxed_batch(chosen, spec, layout.STRIDE, size_h, size_w)
            for kind, batch in batches.items():
                with torch.no_grad():
                    expected = [t.numpy() for t in network(torch.from_numpy(batch))]
                got = session.run(output_names, {layout.INPUT_NAME: batch})
                errors = [float(np.abs(g - e).max()) for g, e in zip(got, expected)]
                scale = max(float(np.abs(e).max()) for e in expected)
                cases.append(ParityCase(kind, batch_size, size_h, size_w, errors[0], errors[1], scale))
    return ParityReport(cases=tuple(cases), tolerance=config.parity_tolerance, image_source=source)
