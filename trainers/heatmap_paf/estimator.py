"""The network being trained as a pipeline estimator, so validation runs the path users run.

``make_estimator`` wraps the in-memory network in a pipeline Backend (``TrainingModelBackend``) with the
ModelSpec an export of it would have (``training_model_spec``), and puts a ``BottomUpEstimator`` on top:
train.evaluate's numbers are the numbers ``posestream eval`` would print for an export of the same weights.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from posestream.pipeline.core.model import InputSpec, ModelSpec, TensorInfo, validate_against_model
from posestream.pipeline.estimators.bottomup import BottomUpEstimator, EstimatorConfig
from posestream.pipeline.networks.heatmap_paf import LastStage
from posestream.pipeline.networks.layout import sidecar_data
from posestream.trainers.heatmap_paf.config import TrainConfig


class TrainingModelBackend:
    """A pipeline Backend around the network being trained: eval mode, no_grad, the last stage only."""

    name = "torch-training"
    resizable = True

    def __init__(self, net: nn.Module, device: torch.device, spec: ModelSpec):
        self._last_stage = LastStage(net)
        self._device = device
        self._spec = spec

    def describe(self, height: int, width: int) -> tuple[list[TensorInfo], list[TensorInfo]]:
        heatmaps, pafs = self.infer(np.zeros((1, 3, height, width), np.float32))
        return ([TensorInfo(self._spec.input.name, (None, 3, None, None))],
                [TensorInfo(self._spec.heatmaps_output, heatmaps.shape), TensorInfo(self._spec.pafs_output, pafs.shape)])

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        was_training = self._last_stage.training
        self._last_stage.eval()
        try:
            with torch.no_grad():
                heatmaps, pafs = self._last_stage(torch.from_numpy(batch).to(self._device))
        finally:
            self._last_stage.train(was_training)
        return heatmaps.float().cpu().numpy(), pafs.float().cpu().numpy()


def training_model_spec(name: str, height: int, width: int) -> ModelSpec:
    """The ModelSpec an export of this network would have (from layout.sidecar_data), without a file."""
    data = sidecar_data(f"{name}.onnx", name, height, width)
    raw_input = data["input"]
    return ModelSpec(
        name=name, sidecar_path=Path(f"<{name} in training>"), model_path=Path(f"<{name} in training>"),
        input=InputSpec(name=raw_input["name"], height=height, width=width, resizable=raw_input["resizable"],
                        color_order=raw_input["color_order"], mean=tuple(raw_input["mean"]),
                        scale=tuple(raw_input["scale"]), pad_value=raw_input["pad_value"]),
        heatmaps_output=data["outputs"]["heatmaps"], pafs_output=data["outputs"]["pafs"], stride=data["stride"],
        background_channel=data["background_channel"], keypoints=tuple(data["keypoints"]),
        limbs=tuple(tuple(limb) for limb in data["limbs"]),
        paf_channels=tuple(tuple(pair) for pair in data["paf_channels"]),
        redundant_limbs=tuple(data["redundant_limbs"]))


def make_estimator(net: nn.Module, device: torch.device, config: TrainConfig) -> BottomUpEstimator:
    spec = training_model_spec(config.model.name, config.model.input_height, config.model.input_width)
    backend = TrainingModelBackend(net, device, spec)
    validate_against_model(spec, *backend.describe(spec.input.height, spec.input.width))
    return BottomUpEstimator(spec, backend, EstimatorConfig(input_height=config.validation.input_height))
