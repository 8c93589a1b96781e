"""PyTorch re-implementation of Intel Open Model Zoo ``human-pose-estimation-0001``.

Lightweight OpenPose (Osokin, arXiv 1811.12004): MobileNetV1 backbone cut at
stride 8, a CPM feature-adaptation block, one initial stage and one refinement
stage.  The layer structure below was read off the OpenVINO IR
(``human-pose-estimation-0001.xml``, FP16-INT8) and every convolution carries the
IR layer name it corresponds to (``ConvBlock.ir_name``), so that the importer in
``posestream.trainers.export.openvino_import`` can load the IR weights one-to-one.

Block -> IR layers (all convs have a bias in the IR: BatchNorm is folded in):

* ``backbone``  -- ``conv1`` (3x3/s2, ReLU), then 11 depthwise-separable pairs
  ``convX_Y/dw`` (3x3 depthwise, ReLU) + ``convX_Y/sep`` (1x1, ReLU) for
  conv2_1 ... conv5_5.  Strides 2 at conv1, conv2_2/dw, conv3_2/dw (total 8);
  ``conv5_1/dw`` is the only dilated conv of the backbone (dilation 2, pad 2).
* ``cpm``       -- ``conv4_3_CPM/al`` (1x1 512->128, ELU); trunk ``red`` (1x1),
  ``dw1``, ``dw1/1x1``, ``dw2``, ``dw2/1x1``, ``dw3``, ``inc`` (ELU after each;
  dw = 3x3 depthwise); residual ``conv4_3_CPM/res`` = al + trunk(al); then
  ``conv4_4_CPM`` (3x3, ReLU).
* ``initial_stage`` -- ``conv5_{1,2,3}_CPM_L1`` (3x3, ReLU, shared trunk), PAF head
  ``conv5_4_CPM_L1`` (1x1 ->512, ReLU) + ``conv5_5_CPM_L1`` (1x1 ->38, linear),
  heatmap head ``conv5_4_CPM_L2`` + ``conv5_5_CPM_L2`` (->19, linear).
* ``refinement_stages[0]`` -- input ``concat_stage2`` = cat[PAFs(38),
  heatmaps(19), CPM features(128)] = 185 channels; five blocks
  ``MconvK_stage2_L1/{sq (1x1, ReLU), 3x3 (ReLU), 3x3/2 (3x3 dilation 2, ReLU)}``
  with residual ``MconvK_stage2_L1/5x5/res`` = sq + 3x3/2; heads
  ``Mconv6_stage2_L2`` (1x1, ReLU) + ``Mconv7_stage2_L2`` (->19 heatmaps, linear)
  and ``Mconv6_stage2_L1`` + ``Mconv7_stage2_L1`` (->38 PAFs, linear).

Input normalisation (folded into the IR's first two ops ``data/scale_value`` and
``data/mean_value``): the IR takes raw BGR pixels 0..255 and computes
``x * 0.0039215087890625 + (-0.501953125)``; the constants are the FP16
roundings of 1/255 and -128/255, and the result equals ``(x - 128) *
0.0039215087890625`` exactly.  This module expects the *already normalised*
tensor; use :func:`normalize_bgr` to get bit-identical input from raw BGR.
"""

from dataclasses import dataclass, replace
from typing import List, Optional, Tuple

import torch
from torch import nn

#: FP16 rounding of 1/255, the scale stored in the IR (``data/scale_value``).
INPUT_SCALE = 0.0039215087890625
#: Mean subtracted before scaling; IR stores -128 * INPUT_SCALE = -0.501953125.
INPUT_MEAN = 128.0
#: Output stride of heatmaps and PAFs.
STRIDE = 8


def normalize_bgr(raw_bgr: torch.Tensor) -> torch.Tensor:
    """Raw BGR 0..255 float tensor (N x 3 x H x W) -> the model's input.

    Exactly what the IR does internally (``(x - 128) * fp16(1/255)``); the
    channel order stays BGR, as in the IR.
    """
    return (raw_bgr - INPUT_MEAN) * INPUT_SCALE


@dataclass(frozen=True)
class LightweightOpenPoseConfig:
    num_heatmaps: int = 19  # 18 COCO-18 keypoints + background
    num_pafs: int = 38  # 19 limbs x (x, y)
    num_refinement_stages: int = 1  # the IR has exactly one (``*_stage2_*``)
    cpm_channels: int = 128
    # False: conv with bias, exactly as in the IR (BN folded).  True: the 33 convs
    # that were trained with BatchNorm (their IR bias Add is named ".../bn/..."
    # or "Fused_Add_": conv1, all 22 backbone dw/sep, the 10 refinement 3x3s)
    # become Conv(no bias) + BatchNorm2d for fine-tuning; the other 25 (CPM,
    # initial stage, refinement sq/heads) keep a plain bias, as in the original.
    batch_norm: bool = False
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1


class ConvBlock(nn.Module):
    """Conv2d (+ optional BatchNorm2d) + activation, tagged with its IR name.

    ``activation`` is one of ``"relu"``, ``"elu"`` (alpha=1, as the IR's Elu
    ops) or ``None`` (linear output layers).
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int, ir_name: str, *,
                 stride: int = 1, dilation: int = 1, depthwise: bool = False,
                 activation: Optional[str] = "relu", batch_norm: bool = False,
                 bn_eps: float = 1e-5, bn_momentum: float = 0.1):
        super().__init__()
        self.ir_name = ir_name
        # 'same' padding for odd kernels; the IR's explicit pads are exactly
        # dilation * (kernel // 2) for every conv (1 for 3x3, 2 for dilated).
        padding = dilation * (kernel // 2)
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=padding,
                              dilation=dilation, groups=in_ch if depthwise else 1,
                              bias=not batch_norm)
        self.bn = nn.BatchNorm2d(out_ch, eps=bn_eps, momentum=bn_momentum) if batch_norm else None
        if activation == "relu":
            self.act: nn.Module = nn.ReLU(inplace=True)
        elif activation == "elu":
            self.act = nn.ELU(alpha=1.0, inplace=True)
        elif activation is None:
            self.act = nn.Identity()
        else:
            raise ValueError(f"unknown activation {activation!r}")
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return self.act(x)


def _backbone(cfg: LightweightOpenPoseConfig) -> nn.Sequential:
    bn = dict(batch_norm=cfg.batch_norm, bn_eps=cfg.bn_eps, bn_momentum=cfg.bn_momentum)
    layers = [ConvBlock(3, 32, 3, "conv1", stride=2, **bn)]
    # (IR prefix, in, out, depthwise stride, depthwise dilation)
    spec = [("conv2_1", 32, 64, 1, 1), ("conv2_2", 64, 128, 2, 1),
            ("conv3_1", 128, 128, 1, 1), ("conv3_2", 128, 256, 2, 1),
            ("conv4_1", 256, 256, 1, 1), ("conv4_2", 256, 512, 1, 1),
            # conv5_1/dw is dilated instead of strided: keeps stride 8.
            ("conv5_1", 512, 512, 1, 2), ("conv5_2", 512, 512, 1, 1),
            ("conv5_3", 512, 512, 1, 1), ("conv5_4", 512, 512, 1, 1),
            ("conv5_5", 512, 512, 1, 1)]
    for name, cin, cout, stride, dil in spec:
        layers.append(ConvBlock(cin, cin, 3, f"{name}/dw", stride=stride, dilation=dil,
                                depthwise=True, **bn))
        layers.append(ConvBlock(cin, cout, 1, f"{name}/sep", **bn))
    return nn.Sequential(*layers)


class CPM(nn.Module):
    """``conv4_3_CPM`` + ``conv4_4_CPM``: 512 -> 128 feature adaptation.

    IR graph: ``al`` (1x1 512->128, ELU) feeds both the residual add
    ``conv4_3_CPM/res`` and a 7-conv trunk ``red`` (1x1) -> ``dw1`` (3x3 dw) ->
    ``dw1/1x1`` -> ``dw2`` -> ``dw2/1x1`` -> ``dw3`` -> ``inc`` (1x1), ELU after
    every one; then ``conv4_4_CPM`` (3x3, ReLU) on align + trunk(align).
    Unlike the public PyTorch repo (align with ReLU, 6-conv trunk), the IR has
    the extra 1x1 ``red`` at the head of the trunk and ELU after ``al``.
    """

    def __init__(self, cfg: LightweightOpenPoseConfig):
        super().__init__()
        c = cfg.cpm_channels
        p = "conv4_3_CPM"
        self.align = ConvBlock(512, c, 1, f"{p}/al", activation="elu")
        self.trunk = nn.Sequential(
            ConvBlock(c, c, 1, f"{p}/red", activation="elu"),
            ConvBlock(c, c, 3, f"{p}/dw1", depthwise=True, activation="elu"),
            ConvBlock(c, c, 1, f"{p}/dw1/1x1", activation="elu"),
            ConvBlock(c, c, 3, f"{p}/dw2", depthwise=True, activation="elu"),
            ConvBlock(c, c, 1, f"{p}/dw2/1x1", activation="elu"),
            ConvBlock(c, c, 3, f"{p}/dw3", depthwise=True, activation="elu"),
            ConvBlock(c, c, 1, f"{p}/inc", activation="elu"),
        )
        self.conv = ConvBlock(c, c, 3, "conv4_4_CPM", activation="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.align(x)
        return self.conv(x + self.trunk(x))  # conv4_3_CPM/res, then conv4_4_CPM


class InitialStage(nn.Module):
    """``conv5_*_CPM_L1`` / ``_L2``: L1 = PAF branch, L2 = heatmap branch.

    Heads are registered PAFs first to follow the IR's topological order (the
    importer matches convs by that order); ``forward`` still returns
    ``(heatmaps, pafs)``.
    """

    def __init__(self, cfg: LightweightOpenPoseConfig):
        super().__init__()
        c = cfg.cpm_channels
        self.trunk = nn.Sequential(*[ConvBlock(c, c, 3, f"conv5_{i}_CPM_L1") for i in (1, 2, 3)])
        self.pafs = nn.Sequential(
            ConvBlock(c, 512, 1, "conv5_4_CPM_L1"),
            ConvBlock(512, cfg.num_pafs, 1, "conv5_5_CPM_L1", activation=None))
        self.heatmaps = nn.Sequential(
            ConvBlock(c, 512, 1, "conv5_4_CPM_L2"),
            ConvBlock(512, cfg.num_heatmaps, 1, "conv5_5_CPM_L2", activation=None))

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        t = self.trunk(x)
        return self.heatmaps(t), self.pafs(t)


class RefinementBlock(nn.Module):
    """``MconvK_stageS_L1/{sq,3x3,3x3/2}`` + ``5x5/res`` (sq + dilated trunk)."""

    def __init__(self, in_ch: int, ch: int, prefix: str, cfg: LightweightOpenPoseConfig):
        super().__init__()
        bn = dict(batch_norm=cfg.batch_norm, bn_eps=cfg.bn_eps, bn_momentum=cfg.bn_momentum)
        self.sq = ConvBlock(in_ch, ch, 1, f"{prefix}/sq")
        # Only these two were trained with BN (IR bias adds are "Fused_Add_").
        self.trunk = nn.Sequential(
            ConvBlock(ch, ch, 3, f"{prefix}/3x3", **bn),
            ConvBlock(ch, ch, 3, f"{prefix}/3x3/2", dilation=2, **bn))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.sq(x)
        return x + self.trunk(x)


class RefinementStage(nn.Module):
    """One refinement stage; the IR names it ``stage2`` (stage index 2).

    Input is cat[PAFs, heatmaps, features] in that order (IR ``concat_stage2``).
    Heads registered heatmaps (L2) first, matching the IR's topological order.
    """

    def __init__(self, cfg: LightweightOpenPoseConfig, stage: int):
        super().__init__()
        c = cfg.cpm_channels
        in_ch = cfg.num_pafs + cfg.num_heatmaps + c
        s = f"stage{stage}"
        self.blocks = nn.Sequential(*[
            RefinementBlock(in_ch if k == 1 else c, c, f"Mconv{k}_{s}_L1", cfg)
            for k in range(1, 6)])
        self.heatmaps = nn.Sequential(
            ConvBlock(c, c, 1, f"Mconv6_{s}_L2"),
            ConvBlock(c, cfg.num_heatmaps, 1, f"Mconv7_{s}_L2", activation=None))
        self.pafs = nn.Sequential(
            ConvBlock(c, c, 1, f"Mconv6_{s}_L1"),
            ConvBlock(c, cfg.num_pafs, 1, f"Mconv7_{s}_L1", activation=None))

    def forward(self, features: torch.Tensor, heatmaps: torch.Tensor,
                pafs: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        t = self.blocks(torch.cat([pafs, heatmaps, features], dim=1))
        return self.heatmaps(t), self.pafs(t)


class LightweightOpenPose(nn.Module):
    """human-pose-estimation-0001 as a torch module.

    ``forward(x)`` takes ``normalize_bgr(raw_bgr)`` (N x 3 x H x W, BGR) and
    returns ``[(heatmaps, pafs) of the initial stage, (heatmaps, pafs) of each
    refinement stage]``; heatmaps N x 19 x H/8 x W/8, PAFs N x 38 x H/8 x W/8
    (ceil division for H, W not divisible by 8, as in the IR).  The last pair
    corresponds to the IR outputs ``Mconv7_stage2_L2`` / ``Mconv7_stage2_L1``.
    """

    def __init__(self, config: Optional[LightweightOpenPoseConfig] = None, **overrides):
        super().__init__()
        cfg = config or LightweightOpenPoseConfig()
        if overrides:
            cfg = replace(cfg, **overrides)
        self.config = cfg
        self.backbone = _backbone(cfg)
        self.cpm = CPM(cfg)
        self.initial_stage = InitialStage(cfg)
        self.refinement_stages = nn.ModuleList(
            RefinementStage(cfg, stage=2 + i) for i in range(cfg.num_refinement_stages))

    def forward(self, x: torch.Tensor) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        features = self.cpm(self.backbone(x))
        outputs = [self.initial_stage(features)]
        for stage in self.refinement_stages:
            heatmaps, pafs = outputs[-1]
            outputs.append(stage(features, heatmaps, pafs))
        return outputs

    def conv_blocks(self) -> List[ConvBlock]:
        """All ConvBlocks in registration order (= IR topological order)."""
        return [m for m in self.modules() if isinstance(m, ConvBlock)]


def _keep_bn_in_eval(bn: nn.Module, inputs) -> None:
    # Forward pre-hook: a later model.train() flips bn.training back to True;
    # undo that right before every forward so frozen BN always uses running stats.
    bn.training = False


def freeze_batch_norm(module: nn.Module) -> nn.Module:
    """Freeze every BatchNorm in ``module``: eval-mode statistics, no gradients.

    Sets eval mode (running mean/var are used and no longer updated) and
    ``requires_grad=False`` on BN weight/bias.  A forward pre-hook keeps the BN
    layers in eval mode even after a later ``module.train()`` (which otherwise
    re-enables batch statistics).  Module-level hook, so deepcopy/pickle work.
    Idempotent.  Returns ``module``.
    """
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
            for p in m.parameters():
                p.requires_grad_(False)
            if not getattr(m, "_frozen_bn_hook", False):
                m.register_forward_pre_hook(_keep_bn_in_eval)
                m._frozen_bn_hook = True
    return module
