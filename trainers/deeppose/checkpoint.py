"""DeepPose checkpoints: one ``torch.save`` dict per cascade stage, written and read only here.

Format ``posestream.deeppose/1``::

    {"format": "posestream.deeppose/1", "model_name": str, "model_config": config_as_dict(cfg),
     "stage": int (1-based), "model": state_dict, "optimizer": state_dict or None, "step": int,
     "total_steps": int, "finished": bool, "cascade": {"sigma": float, "min_diameter_fraction": float},
     "jitter": JitterStatistics.as_dict() or None (what a refinement stage was trained with),
     "train_config": dict, "metrics": dict}

A run folder holds ``stage-1.pt`` .. ``stage-S.pt`` (finished stages) and ``last.pt`` (the stage in
training). ``load_cascade`` rebuilds the networks from ``model_config`` alone, so a checkpoint stays
usable when ``DEEPPOSE_MODELS`` changes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from posestream.pipeline.core.errors import PosestreamError
from posestream.pipeline.networks.checkpoint import plain, write_checkpoint_file
from posestream.trainers.deeppose.model import DeepPoseConfig, DeepPoseNet, config_as_dict, config_from_dict

DEEPPOSE_CHECKPOINT_FORMAT = "posestream.deeppose/1"


@dataclass(frozen=True)
class StageCheckpoint:
    path: Path
    model_name: str
    model_config: DeepPoseConfig
    stage: int
    model_state: dict
    optimizer_state: dict | None
    step: int
    total_steps: int
    finished: bool
    sigma: float
    min_diameter_fraction: float
    jitter: dict | None = None
    train_config: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)

    def build_model(self) -> DeepPoseNet:
        """The network with these weights, in eval mode."""
        net = DeepPoseNet(self.model_config)
        try:
            net.load_state_dict(self.model_state)
        except RuntimeError as error:
            first_line = str(error).strip().splitlines()[0]
            raise PosestreamError(str(self.path), f"weights do not fit model {self.model_name}: {first_line}") from None
        return net.eval()


def save_stage_checkpoint(path: str | Path, net: DeepPoseNet, model_name: str, stage: int,
                          optimizer: torch.optim.Optimizer | None, step: int, total_steps: int, finished: bool,
                          sigma: float, min_diameter_fraction: float, jitter: dict | None = None,
                          train_config: dict | None = None, metrics: dict | None = None) -> Path:
    """Written beside its final name and renamed into place: a run killed mid-save keeps its last good file."""
    data = {
        "format": DEEPPOSE_CHECKPOINT_FORMAT,
        "model_name": model_name,
        "model_config": config_as_dict(net.config),
        "stage": int(stage),
        "model": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "step": int(step),
        "total_steps": int(total_steps),
        "finished": bool(finished),
        "cascade": {"sigma": float(sigma), "min_diameter_fraction": float(min_diameter_fraction)},
        "jitter": plain(jitter) if jitter is not None else None,
        "train_config": plain(train_config or {}),
        "metrics": plain(metrics or {}),
    }
    return write_checkpoint_file(data, path)


def load_stage_checkpoint(path: str | Path) -> StageCheckpoint:
    path = Path(path)
    if not path.is_file():
        raise PosestreamError(str(path), "checkpoint not found")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several unrelated types for a bad file
        raise PosestreamError(str(path), f"is not a readable checkpoint ({type(error).__name__})") from None
    if not isinstance(data, dict) or data.get("format") != DEEPPOSE_CHECKPOINT_FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise PosestreamError(str(path), f"is not a DeepPose checkpoint (format {found!r}, expected "
                                         f"{DEEPPOSE_CHECKPOINT_FORMAT!r})")
    try:
        config = config_from_dict(data["model_config"])
    except (KeyError, TypeError) as error:
        raise PosestreamError(str(path), f"has a bad model_config ({error})") from None
    cascade = data.get("cascade") or {}
    return StageCheckpoint(
        path=path, model_name=str(data["model_name"]), model_config=config, stage=int(data["stage"]),
        model_state=data["model"], optimizer_state=data.get("optimizer"), step=int(data.get("step", 0)),
        total_steps=int(data.get("total_steps", 0)), finished=bool(data.get("finished", False)),
        sigma=float(cascade.get("sigma", 2.0)), min_diameter_fraction=float(cascade.get("min_diameter_fraction", 0.05)),
        jitter=data.get("jitter"), train_config=dict(data.get("train_config") or {}),
        metrics=dict(data.get("metrics") or {}))


def stage_path(run_dir: Path, stage: int) -> Path:
    return Path(run_dir) / f"stage-{stage}.pt"


def load_cascade(run_dir: str | Path, stages: int | None = None) -> tuple[list[DeepPoseNet], float, float]:
    """(networks of stages 1..S in eval mode, sigma, min_diameter_fraction) from a run folder's
    stage-N.pt files; ``stages`` None = every consecutive stage found."""
    run_dir = Path(run_dir)
    nets, sigma, fraction = [], 2.0, 0.05
    stage = 1
    while stages is None or stage <= stages:
        path = stage_path(run_dir, stage)
        if not path.is_file():
            if stages is not None or stage == 1:
                raise PosestreamError(str(path), "missing: the cascade's stages must be trained in order")
            break
        checkpoint = load_stage_checkpoint(path)
        nets.append(checkpoint.build_model())
        sigma, fraction = checkpoint.sigma, checkpoint.min_diameter_fraction
        stage += 1
    return nets, sigma, fraction
