"""Heatmap + part-affinity-field networks in the OpenPose / CPM mould, small enough for CPUs and Jetsons.

A MobileNet-like backbone of depthwise-separable convolutions reaches stride 8; a CPM block adapts its
features; an initial stage predicts heatmaps (keypoints + background) and PAFs; each refinement stage sees
the features together with the previous stage's maps and predicts them again. Every stage's maps are
returned, because training supervises each of them (intermediate supervision, as CPM and OpenPose do);
inference uses the last.

``POSENET_MODELS`` lists its configurations; networks/models.py puts them in the one model dict beside
Lightweight OpenPose. ``model_size`` counts parameters and multiply-accumulates at an input size.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from posestream.pipeline.networks.layout import HEATMAP_CHANNELS, PAF_CHANNEL_COUNT, STRIDE


@dataclass(frozen=True)
class PoseNetConfig:
    # Widths after the stem (stride 2), at stride 2, at stride 4 and at stride 8.
    backbone_widths: tuple[int, int, int, int]
    backbone_blocks: int  # extra dilated depthwise-separable blocks at stride 8 (receptive field)
    features: int  # width of the CPM features every stage reads
    stage_channels: int  # width inside the stages
    refinement_stages: int  # stages after the initial one
    refinement_blocks: int  # residual blocks per refinement stage
    heatmap_channels: int = HEATMAP_CHANNELS
    paf_channels: int = PAF_CHANNEL_COUNT


POSENET_MODELS: dict[str, PoseNetConfig] = {
    # 0.7 M parameters, 0.85 GMAC at 256x256: the larger model, for GPU training runs.
    "lightpose-s": PoseNetConfig(backbone_widths=(32, 64, 128, 256), backbone_blocks=4, features=128,
                                 stage_channels=128, refinement_stages=1, refinement_blocks=4),
    # 0.26 M parameters, 0.30 GMAC at 256x256: trains on two CPU cores in hours (the shipped default).
    "lightpose-xs": PoseNetConfig(backbone_widths=(16, 32, 64, 128), backbone_blocks=3, features=96,
                                  stage_channels=96, refinement_stages=1, refinement_blocks=3),
    # Seconds per iteration on a CPU: for tests and smoke runs, not for use.
    "lightpose-tiny": PoseNetConfig(backbone_widths=(8, 16, 16, 32), backbone_blocks=1, features=16,
                                    stage_channels=16, refinement_stages=1, refinement_blocks=1),
}


def _conv_bn_relu(cin: int, cout: int, kernel: int = 3, stride: int = 1, dilation: int = 1,
                  groups: int = 1) -> nn.Sequential:
    padding = dilation * (kernel // 2)
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, padding, dilation=dilation, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def _separable(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    """Depthwise 3x3 then pointwise 1x1, MobileNet's block."""
    return nn.Sequential(
        _conv_bn_relu(cin, cin, 3, stride, dilation, groups=cin),
        _conv_bn_relu(cin, cout, 1),
    )


class _Residual(nn.Module):
    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class _Heads(nn.Module):
    """Two 1x1 heads on a stage's trunk: heatmaps and PAFs, linear outputs (regressed with MSE)."""

    def __init__(self, channels: int, config: PoseNetConfig):
        super().__init__()
        self.heatmaps = nn.Sequential(nn.Conv2d(channels, channels, 1), nn.ReLU(inplace=True),
                                      nn.Conv2d(channels, config.heatmap_channels, 1))
        self.pafs = nn.Sequential(nn.Conv2d(channels, channels, 1), nn.ReLU(inplace=True),
                                  nn.Conv2d(channels, config.paf_channels, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.heatmaps(x), self.pafs(x)


class _InitialStage(nn.Module):
    def __init__(self, config: PoseNetConfig):
        super().__init__()
        width = config.stage_channels
        self.trunk = nn.Sequential(_separable(config.features, width), _separable(width, width),
                                   _separable(width, width))
        self.heads = _Heads(width, config)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.heads(self.trunk(features))


class _RefinementStage(nn.Module):
    def __init__(self, config: PoseNetConfig):
        super().__init__()
        width = config.stage_channels
        self.enter = _conv_bn_relu(config.features + config.heatmap_channels + config.paf_channels, width, 1)
        # Dilated blocks widen the view so a limb's far end can inform its near end.
        self.trunk = nn.Sequential(*(
            _Residual(nn.Sequential(_separable(width, width), _separable(width, width, dilation=2)))
            for _ in range(config.refinement_blocks)))
        self.heads = _Heads(width, config)

    def forward(self, features: torch.Tensor, heatmaps: torch.Tensor,
                pafs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.heads(self.trunk(self.enter(torch.cat([features, heatmaps, pafs], dim=1))))


class PoseNet(nn.Module):
    """N x 3 x H x W normalised image -> per stage (heatmaps N x (K+1) x H/8 x W/8, PAFs N x 2L x H/8 x W/8)."""

    def __init__(self, config: PoseNetConfig):
        super().__init__()
        self.config = config
        stem, w2, w4, w8 = config.backbone_widths
        self.backbone = nn.Sequential(
            _conv_bn_relu(3, stem, 3, stride=2),
            _separable(stem, w2),
            _separable(w2, w4, stride=2),
            _separable(w4, w4),
            _separable(w4, w8, stride=2),
            *(_separable(w8, w8, dilation=2) for _ in range(config.backbone_blocks)),
        )
        self.cpm = nn.Sequential(
            _conv_bn_relu(w8, config.features, 1),
            _Residual(nn.Sequential(_separable(config.features, config.features),
                                    _separable(config.features, config.features))),
        )
        self.initial = _InitialStage(config)
        self.refinements = nn.ModuleList(_RefinementStage(config) for _ in range(config.refinement_stages))

    def forward(self, image: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        features = self.cpm(self.backbone(image))
        stages = [self.initial(features)]
        for stage in self.refinements:
            stages.append(stage(features, *stages[-1]))
        return stages


class LastStage(nn.Module):
    """Inference view of a network that returns every stage: only the last (heatmaps, pafs), as exported and
    deployed (a PoseNet or a LightweightOpenPose)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net(image)[-1]


def model_size(net: nn.Module, height: int, width: int) -> dict[str, float]:
    """Parameters and multiply-accumulates (convolutions only, which are nearly all of it) for one image."""
    macs = 0

    def count(module: nn.Conv2d, _inputs, output: torch.Tensor) -> None:
        nonlocal macs
        kernel = module.kernel_size[0] * module.kernel_size[1] * (module.in_channels // module.groups)
        macs += output.numel() // output.shape[0] * kernel

    hooks = [m.register_forward_hook(count) for m in net.modules() if isinstance(m, nn.Conv2d)]
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            net(torch.zeros(1, 3, height, width))
    finally:
        for hook in hooks:
            hook.remove()
        net.train(was_training)
    return {"parameters": sum(p.numel() for p in net.parameters()), "gmacs": macs / 1e9,
            "height": height, "width": width, "stride": STRIDE}
