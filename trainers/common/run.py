"""What every training run shares: its folder, device, seed, optimiser, learning-rate schedule,
metrics.jsonl and the finish of its PNG curves.

The learning rate is a function of the step alone (linear warm-up, then cosine), so a run resumed from a
checkpoint continues exactly where it left off; metrics.jsonl is appended to, so a resumed run continues
the same file.
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
from pathlib import Path

import torch
from matplotlib.figure import Figure  # the object API draws PNGs without pyplot or a display

from posestream.pipeline.core.errors import PosestreamError


def start_run(args: argparse.Namespace, resumed_from: Path | None, threads: int, seed: int) -> Path:
    """The run folder (``--out``, else the resumed checkpoint's folder, else runs/<config name>), with a copy
    of the config in a new run; torch's threads and seed set."""
    out_dir = Path(args.out) if args.out else (resumed_from.parent if resumed_from else
                                               Path("runs") / Path(args.config).stem)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not resumed_from:
        shutil.copyfile(args.config, out_dir / "config.toml")
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    return out_dir


def pick_device(requested: str) -> torch.device:
    """``auto`` (CUDA when torch sees a GPU, else the CPU), ``cpu`` or ``cuda``."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise PosestreamError("--device cuda", "CUDA is not available to this torch build or machine")
    return torch.device(requested)


def make_optimizer(model: torch.nn.Module, kind: str, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """Adam or AdamW (``kind``: common.config.OPTIMIZERS) over two parameter groups: weight decay on the
    weights, none on BatchNorm and biases (the 1-d parameters), as is usual for conv nets. Frozen parameters
    (requires_grad False) are left out."""
    trained = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in trained if p.ndim > 1]
    no_decay = [p for p in trained if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW if kind == "adamw" else torch.optim.Adam
    return optimizer(groups, lr=lr)


def learning_rate_factor(step: int, warmup: int, total: int, final_ratio: float) -> float:
    """Linear warm-up from ~0 to 1 over ``warmup`` steps, then a cosine down to ``final_ratio`` at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class MetricsLog:
    """metrics.jsonl: one JSON object per line, appended (a resumed run continues the same file)."""

    def __init__(self, path: Path):
        self.path = path

    def write(self, record: dict) -> None:
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]


def finish_figure(figure: Figure, axis, path: Path) -> None:
    """Legend, a light grid, tight layout, PNG at 100 dpi: how every training curve is finished."""
    axis.legend()
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
