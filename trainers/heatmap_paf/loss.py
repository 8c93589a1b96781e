"""The heatmap + PAF loss: masked squared error over every stage, and the numbers logged beside it.

``pose_loss`` is what the optimiser minimises; ``empty_prediction_loss`` is the loss of a network that
predicts nobody, the yardstick the log compares the last stage against; ``LossWindow`` sums both between
two metrics.jsonl lines.
"""
from __future__ import annotations

import time

import torch

from posestream.pipeline.networks.layout import HEATMAP_CHANNELS


def pose_loss(stages: list[tuple[torch.Tensor, torch.Tensor]], heatmaps: torch.Tensor, pafs: torch.Tensor,
              mask: torch.Tensor, foreground_weight: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Masked squared error summed over every stage (intermediate supervision), per image, halved.

    ``foreground_weight`` > 0 weighs each cell by 1 + weight x its target's strength (the keypoint's
    Gaussian; 1 on a limb's field), so the few cells that hold people count more than the many that
    do not. Returns (total over stages, last stage's heatmap part, last stage's PAF part), the two
    parts unweighted so that runs with different weights log comparable numbers.
    """
    heatmap_mask, paf_mask = mask[:, :HEATMAP_CHANNELS], mask[:, HEATMAP_CHANNELS:]
    heatmap_weight, paf_weight = heatmap_mask, paf_mask
    if foreground_weight > 0:
        strength = heatmaps.clone()
        strength[:, -1] = 1.0 - heatmaps[:, -1]  # background: strong where any keypoint is
        heatmap_weight = heatmap_mask * (1.0 + foreground_weight * strength)
        paf_weight = paf_mask * (1.0 + foreground_weight * (pafs != 0).float())
    scale = 0.5 / heatmaps.shape[0]
    total = heatmaps.new_zeros(())
    for stage_heatmaps, stage_pafs in stages:
        heatmap_error = (stage_heatmaps.float() - heatmaps) ** 2
        paf_error = (stage_pafs.float() - pafs) ** 2
        total = total + ((heatmap_error * heatmap_weight).sum() + (paf_error * paf_weight).sum()) * scale
    heatmap_loss = (heatmap_error * heatmap_mask).sum().detach() * scale
    paf_loss = (paf_error * paf_mask).sum().detach() * scale
    return total, heatmap_loss, paf_loss


def empty_prediction_loss(heatmaps: torch.Tensor, pafs: torch.Tensor,
                          mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The (heatmap, PAF) loss of one stage that predicts nobody anywhere (background 1, all else 0).

    The network's loss divided by this says whether it has learnt more than "nobody here": at first
    the ratio sits near 1 while the network outputs near-constant maps, then falls as peaks appear.
    """
    heatmap_mask, paf_mask = mask[:, :HEATMAP_CHANNELS], mask[:, HEATMAP_CHANNELS:]
    scale = 0.5 / heatmaps.shape[0]
    empty = torch.zeros_like(heatmaps)
    empty[:, -1] = 1.0
    heatmap_loss = ((empty - heatmaps) ** 2 * heatmap_mask).sum() * scale
    paf_loss = (pafs ** 2 * paf_mask).sum() * scale
    return heatmap_loss, paf_loss


class LossWindow:
    """Per-step losses summed between two metrics.jsonl lines, kept on the device (one sync per line)."""

    def __init__(self):
        self.sums: torch.Tensor | None = None
        self.count = 0
        self.started = time.perf_counter()

    def add(self, values: torch.Tensor) -> None:
        """values: (loss, last-stage heatmap loss, last-stage PAF loss, their two empty-prediction losses)."""
        self.sums = values if self.sums is None else self.sums + values
        self.count += 1

    def summary(self, batch_size: int) -> dict:
        loss, heatmaps, pafs, empty_heatmaps, empty_pafs = (self.sums / self.count).tolist()
        elapsed = time.perf_counter() - self.started
        return {"loss": loss, "loss_heatmaps": heatmaps, "loss_pafs": pafs,
                # The last stage's loss relative to predicting nobody: falls below 1 once it finds people.
                "heatmaps_vs_empty": heatmaps / max(empty_heatmaps, 1e-9),
                "pafs_vs_empty": pafs / max(empty_pafs, 1e-9),
                "images_per_second": self.count * batch_size / max(elapsed, 1e-9)}
