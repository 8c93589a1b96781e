"""Weight-space blending of a fine-tuned network with the one it started from (WiSE-FT).

Wortsman et al., "Robust fine-tuning of zero-shot models" (CVPR 2022): the straight line between the
starting weights and the fine-tuned ones often holds points that keep most of the gain on the new data and
most of what the start knew. For the default model (docs/trainers.md) fine-tuning on LSP raised LSP PCK and
cost COCO AP; a blend of 0.3 kept most of the first and gave back half of the second.
"""
from __future__ import annotations

from pathlib import Path

from posestream.pipeline.core.errors import PosestreamError
from posestream.pipeline.networks.checkpoint import load_checkpoint, save_checkpoint


def blend_checkpoints(start: str | Path, tuned: str | Path, alpha: float, out: str | Path) -> Path:
    """Write (1 - alpha) * start + alpha * tuned as a checkpoint of tuned's network (no optimiser state)."""
    if not 0 <= alpha <= 1:
        raise PosestreamError(f"alpha {alpha}", "must be in 0..1")
    first, second = load_checkpoint(start), load_checkpoint(tuned)
    if first.model_config != second.model_config:
        raise PosestreamError(str(second.path), f"is a {second.model_name}, not the same network as {first.path}")
    network = second.build_model()
    network.load_state_dict({key: value if not value.is_floating_point()
                             else (1 - alpha) * first.model_state[key] + alpha * value
                             for key, value in second.model_state.items()})
    origin = second.metrics.get("origin") or first.metrics.get("origin")
    return save_checkpoint(out, network, second.model_name, second.input_size, epoch=second.epoch, step=second.step,
                           train_config=second.train_config, metrics={
                               "origin": origin, "validation": None,
                               "blend": {"start": first.path.name, "tuned": second.path.name, "alpha": alpha}})
