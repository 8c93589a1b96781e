"""Trainer checkpoints: one ``torch.save`` dict per file, written and read only through this module.

Format ``posestream.checkpoint/1``::

    {"format": "posestream.checkpoint/1", "model_name": str, "model_config": config_as_dict(cfg),
     "model": state_dict, "optimizer": state_dict or None, "epoch": int, "step": int,
     "train_config": dict, "metrics": dict, "input_size": [h, w]}

Training resumes from it (optimizer, epoch, step); export and the torch backend rebuild the network from
``model_config`` alone, so a checkpoint stays usable when ``MODELS`` changes later.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from posestream.pipeline.core.errors import PosestreamError
from posestream.pipeline.networks.models import (
    NETWORK_TYPES,
    NetworkConfig,
    build_network,
    config_as_dict,
    config_from_dict,
)

CHECKPOINT_FORMAT = "posestream.checkpoint/1"
_REQUIRED_KEYS = ("model_name", "model_config", "model", "input_size")


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint; ``model_state`` and ``optimizer_state`` are on the CPU unless asked otherwise."""

    path: Path
    model_name: str
    model_config: NetworkConfig
    model_state: dict
    optimizer_state: dict | None
    epoch: int
    step: int
    train_config: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    input_size: tuple[int, int] = (256, 256)  # (height, width) the network was trained at

    def build_model(self) -> nn.Module:
        """The network with these weights, in eval mode."""
        net = build_network(self.model_config)
        try:
            net.load_state_dict(self.model_state)
        except RuntimeError as error:  # missing / unexpected / mis-shaped keys
            first_line = str(error).strip().splitlines()[0]
            raise PosestreamError(str(self.path), f"weights do not fit model {self.model_name}: {first_line}") from None
        return net.eval()


def save_checkpoint(path: str | Path, model: nn.Module, model_name: str, input_size: tuple[int, int],
                    optimizer: torch.optim.Optimizer | None = None, epoch: int = 0, step: int = 0,
                    train_config: dict | None = None, metrics: dict | None = None) -> Path:
    """Write ``model`` (a network of networks/models.py, or a wrapper around one such as LastStage) and
    training state.

    The file is written beside its final name and renamed into place, so a run killed mid-save never
    leaves a truncated checkpoint where the last good one was.
    """
    net = _unwrap(model)
    if not isinstance(net, NETWORK_TYPES):
        raise TypeError(f"save_checkpoint needs a network of networks/models.py (or a module wrapping one), "
                        f"got {type(model).__name__}")
    height, width = input_size
    data = {
        "format": CHECKPOINT_FORMAT,
        "model_name": model_name,
        "model_config": config_as_dict(net.config),
        "model": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "epoch": int(epoch),
        "step": int(step),
        "train_config": plain(train_config or {}),
        "metrics": plain(metrics or {}),
        "input_size": [int(height), int(width)],
    }
    return write_checkpoint_file(data, path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Read and check a checkpoint; a wrong or damaged file raises PosestreamError naming it."""
    path = Path(path)
    if not path.exists():
        raise PosestreamError(str(path), "no such checkpoint file")
    try:
        # Our checkpoints hold only tensors and plain values, so the safe unpickler reads them.
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises pickle / zip / runtime errors for foreign or damaged files
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise PosestreamError(str(path), f"cannot read as a checkpoint: {first_line}") from None
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise PosestreamError(str(path), f'not a posestream checkpoint (expected "format": "{CHECKPOINT_FORMAT}")')
    missing = [key for key in _REQUIRED_KEYS if key not in data]
    if missing:
        raise PosestreamError(str(path), f"checkpoint lacks {', '.join(missing)}")
    try:
        config = config_from_dict(data["model_config"])
    except (TypeError, KeyError) as error:
        raise PosestreamError(str(path), f"model_config does not describe a network: {error}") from None
    size = data["input_size"]
    if (not isinstance(size, (list, tuple)) or len(size) != 2
            or not all(isinstance(v, int) and v > 0 for v in size)):
        raise PosestreamError(str(path), f"input_size must be [height, width], got {size!r}")
    return Checkpoint(
        path=path,
        model_name=str(data["model_name"]),
        model_config=config,
        model_state=data["model"],
        optimizer_state=data.get("optimizer"),
        epoch=int(data.get("epoch", 0)),
        step=int(data.get("step", 0)),
        train_config=dict(data.get("train_config") or {}),
        metrics=dict(data.get("metrics") or {}),
        input_size=(int(size[0]), int(size[1])),
    )


def _unwrap(model: nn.Module) -> nn.Module:
    """The network inside LastStage, DataParallel/DDP (``.module``) or torch.compile (``._orig_mod``)."""
    seen = 0
    while not isinstance(model, NETWORK_TYPES) and seen < 4:
        for attribute in ("_orig_mod", "module", "net"):
            inner = getattr(model, attribute, None)
            if isinstance(inner, nn.Module):
                model = inner
                break
        else:
            break
        seen += 1
    return model


def write_checkpoint_file(data: dict, path: str | Path) -> Path:
    """torch.save to a temporary name, then rename: a crash mid-write never leaves a truncated checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    torch.save(data, partial)
    os.replace(partial, path)
    return path


def plain(values: dict) -> dict:
    """JSON-plain values (paths become strings), which torch.load(weights_only=True) reads back."""
    return json.loads(json.dumps(values, default=str))
