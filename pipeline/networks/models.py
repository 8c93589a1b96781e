"""The one model dict: every heatmap + PAF network posestream trains, exports and runs, by name.

Two families share the layout of networks/layout.py (COCO-18 heatmaps + background, PAFs in limb order) and
the same call: ``net(image)`` returns ``[(heatmaps, pafs) per stage]``, the last stage being what is
deployed (``LastStage``):

* ``posenet`` — our own small networks (heatmap_paf.py), trained from random weights;
* ``lightweight-openpose`` — Intel's human-pose-estimation-0001 rebuilt layer by layer
  (lightweight_openpose.py), initialised from its IR by ``posestream import-openvino`` and fine-tuned.

Checkpoints store ``config_as_dict`` (which names the family), so a network is rebuilt from its checkpoint
alone; checkpoints written before the family key existed are PoseNets.
"""
from __future__ import annotations

from dataclasses import asdict, replace

from torch import nn

from posestream.pipeline.networks.heatmap_paf import POSENET_MODELS, PoseNet, PoseNetConfig
from posestream.pipeline.networks.lightweight_openpose import LightweightOpenPose, LightweightOpenPoseConfig

NetworkConfig = PoseNetConfig | LightweightOpenPoseConfig

MODELS: dict[str, NetworkConfig] = {
    **POSENET_MODELS,
    # hpe-0001's layers with BatchNorm folded into biases, as the IR stores them: every weight and bias
    # trains, so small CPU batches fine-tune it without batch statistics (the default model's network).
    "lwo-mobilenet": LightweightOpenPoseConfig(batch_norm=False),
    # The same with the 33 convs that were trained with BatchNorm given one again (imported as an exact
    # identity); for GPU runs with batches large enough for batch statistics, or frozen
    # ([train] freeze_batch_norm).
    "lwo-mobilenet-bn": LightweightOpenPoseConfig(batch_norm=True),
}

FAMILIES: dict[str, tuple[type, type[nn.Module]]] = {
    "posenet": (PoseNetConfig, PoseNet),
    "lightweight-openpose": (LightweightOpenPoseConfig, LightweightOpenPose),
}
NETWORK_TYPES = tuple(network for _, network in FAMILIES.values())


def family_of(config: NetworkConfig) -> str:
    for family, (config_type, _) in FAMILIES.items():
        if isinstance(config, config_type):
            return family
    raise TypeError(f"not a network configuration: {type(config).__name__}")


def model_config(name: str, **overrides) -> NetworkConfig:
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}")
    return replace(MODELS[name], **overrides)


def build_network(config: NetworkConfig) -> nn.Module:
    """A freshly initialised network of this configuration."""
    return FAMILIES[family_of(config)][1](config)


def build_model(name: str, **overrides) -> nn.Module:
    """A freshly initialised network of configuration ``name`` (``overrides`` change config fields)."""
    return build_network(model_config(name, **overrides))


def config_as_dict(config: NetworkConfig) -> dict:
    """Plain values for checkpoints (tuples become lists), with the family that reads them back."""
    values = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()}
    return {"family": family_of(config), **values}


def config_from_dict(values: dict) -> NetworkConfig:
    values = dict(values)
    family = values.pop("family", "posenet")
    if family not in FAMILIES:
        raise KeyError(f"unknown network family {family!r}")
    if family == "posenet":
        values["backbone_widths"] = tuple(values["backbone_widths"])
    return FAMILIES[family][0](**values)
