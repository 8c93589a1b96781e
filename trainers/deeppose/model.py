"""DeepPose (Toshev & Szegedy, CVPR 2014): an AlexNet-style network that regresses joint coordinates, and
the cascade that refines them from crops around the previous estimates.

Box-normalised coordinates. A box b = (centre b_c, width b_w, height b_h) normalises a point y as
N(y; b) = diag(1/b_w, 1/b_h) (y - b_c), so the box spans -0.5..0.5 on both axes; N⁻¹ undoes it. The
network sees the box's pixels resized to its square input (``crop_matrix``; pixel i of the input covers
normalised -0.5 + i/S .. -0.5 + (i+1)/S), and regresses all k joints in N(·; b) coordinates.

The cascade (S stages, one network per stage):

* stage 1 regresses all joints in the coordinates of the initial box b⁰. For LSP the paper takes the
  whole image as b⁰ (its images are cropped around the person); ``initial_boxes`` may give a person box
  instead (a detector's, in a top-down pipeline).
* stage s >= 2 refines each joint i on its own crop b_i = (y_i^{s-1}, σ·diam(y^{s-1}), σ·diam(y^{s-1})),
  where diam is the distance between the left shoulder and the right hip (opposite torso corners). The
  network's output for joint i is the displacement y_i - y_i^{s-1} in N(·; b_i) coordinates, and as
  b_i is centred on y_i^{s-1}, y_i^s = N⁻¹(ψ_i(crop); b_i) = y_i^{s-1} + σ·diam·ψ_i(crop). One network
  per stage serves all joints; only its output for the joint at the crop's centre is used (and, in
  training, supervised).

The box maths is plain numpy; crops are made with one cv2.warpAffine each (the images of a batch have
different sizes, so a torch grid_sample batch would need padding, and the crops are a small part of the
cost next to the network). ``run_cascade`` runs trained stages on images.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import cv2
import numpy as np
import torch
from torch import nn

from posestream.pipeline.evaluation.lsp import LSP_JOINT_NAMES
from posestream.pipeline.networks.layout import PAD_VALUE
from posestream.trainers.common.augment import normalise

JOINT_COUNT = len(LSP_JOINT_NAMES)  # LSP's 14 joints, in LSP order
LEFT_SHOULDER = LSP_JOINT_NAMES.index("left_shoulder")
RIGHT_HIP = LSP_JOINT_NAMES.index("right_hip")
# Mirror image: each LSP joint's left/right partner (neck and head top stay).
FLIP_JOINTS = tuple(
    LSP_JOINT_NAMES.index(name.replace("left_", "@").replace("right_", "left_").replace("@", "right_"))
    for name in LSP_JOINT_NAMES)


# ----------------------------------------------------------------------------------------------
# The network


NORMALISATIONS = ("lrn", "batch")


@dataclass(frozen=True)
class DeepPoseConfig:
    conv_widths: tuple[int, int, int, int, int]  # the five convolutions' output channels
    fc_width: int  # the two hidden fully connected layers
    dropout: float = 0.6  # after each hidden FC layer (0.6 as we read the paper)
    input_size: int = 220  # square input, pixels
    joints: int = JOINT_COUNT
    # After the first two convolutions: "lrn" = AlexNet's local response normalisation (the paper), or
    # "batch" = BatchNorm in the same places (see deeppose-s).
    normalisation: str = "lrn"


DEEPPOSE_MODELS: dict[str, DeepPoseConfig] = {
    # The paper's sizes: C(55x55x96) LRN P C(27x27x256) LRN P C(13x13x384) C(13x13x384) C(13x13x256) P
    # F(4096) F(4096) F(28). 58.4 M parameters (the paper says about 40 M), 1.13 GMAC at 220x220.
    "deeppose-alexnet": DeepPoseConfig(conv_widths=(96, 256, 384, 384, 256), fc_width=4096),
    # The same layers at half the convolution widths and a quarter of the FC width, BatchNorm where the
    # paper has LRN and no dropout: 6.7 M parameters, 0.30 GMAC at 220x220; trains on two CPU cores
    # (trainers/configs/deeppose-cpu.toml). With LRN it barely leaves the mean pose in a CPU budget, and
    # torch's LRN is a third of the step's CPU time; dropout only slowed it (docs/deeppose.md).
    "deeppose-s": DeepPoseConfig(conv_widths=(48, 128, 192, 192, 128), fc_width=1024, dropout=0.0,
                                 normalisation="batch"),
    # For tests only: seconds per hundred iterations.
    "deeppose-tiny": DeepPoseConfig(conv_widths=(8, 16, 16, 16, 16), fc_width=64, dropout=0.0, input_size=96,
                                    normalisation="batch"),
}


def _conv_output(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def feature_size(input_size: int) -> int:
    """Side of the last pooled feature map: 220 -> 55 -> 27 -> 27 -> 13 -> 13 -> 6."""
    size = _conv_output(input_size, 11, 4, 5)
    for _ in range(3):  # pool, conv 5x5 keeps the size, pool, conv 3x3 x3 keep it, pool
        size = _conv_output(size, 3, 2, 0)
    return size


class DeepPoseNet(nn.Module):
    """N x 3 x S x S normalised image -> N x k x 2 joint coordinates in the input box's N(·; b) frame."""

    def __init__(self, config: DeepPoseConfig):
        super().__init__()
        if feature_size(config.input_size) < 1:
            raise ValueError(f"input_size {config.input_size} is too small for three poolings")
        if config.normalisation not in NORMALISATIONS:
            raise ValueError(f"normalisation must be one of {', '.join(NORMALISATIONS)}, got {config.normalisation!r}")
        self.config = config
        w1, w2, w3, w4, w5 = config.conv_widths

        def norm(channels: int) -> nn.Module:
            if config.normalisation == "batch":
                return nn.BatchNorm2d(channels)
            return nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)  # AlexNet's constants

        self.features = nn.Sequential(
            nn.Conv2d(3, w1, 11, stride=4, padding=5), nn.ReLU(inplace=True), norm(w1), nn.MaxPool2d(3, 2),
            nn.Conv2d(w1, w2, 5, padding=2), nn.ReLU(inplace=True), norm(w2), nn.MaxPool2d(3, 2),
            nn.Conv2d(w2, w3, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(w3, w4, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(w4, w5, 3, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2),
        )
        side = feature_size(config.input_size)
        self.regressor = nn.Sequential(
            nn.Flatten(),
            nn.Linear(w5 * side * side, config.fc_width), nn.ReLU(inplace=True), nn.Dropout(config.dropout),
            nn.Linear(config.fc_width, config.fc_width), nn.ReLU(inplace=True), nn.Dropout(config.dropout),
            nn.Linear(config.fc_width, 2 * config.joints),
        )
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                # Slightly positive biases keep the ReLUs alive at the start, as AlexNet's biases of 1
                # did (our inputs are 256 times smaller than AlexNet's raw pixels).
                nn.init.constant_(module.bias, 0.1)
        # The output starts small; set_output_bias puts it at the mean pose.
        nn.init.normal_(self.regressor[-1].weight, std=1e-3)
        nn.init.zeros_(self.regressor[-1].bias)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.regressor(self.features(image)).view(-1, self.config.joints, 2)


def set_output_bias(net: DeepPoseNet, mean_outputs: np.ndarray) -> None:
    """Start the last layer at the expected targets (k, 2): its weights are near 0, so the network first
    predicts the mean pose instead of every joint at the box centre. Without it, Adam moves the bias by
    about lr per step and the first few hundred steps only walk towards the mean pose."""
    bias = net.regressor[-1].bias
    with torch.no_grad():
        bias.copy_(torch.as_tensor(np.asarray(mean_outputs, np.float32).reshape(-1)))


def copy_all_but_output(source: DeepPoseNet, target: DeepPoseNet) -> None:
    """Copy every parameter and BatchNorm statistic of ``source`` into ``target`` except the output layer's: a
    refinement stage that starts from the previous stage keeps its features but regresses other targets."""
    output = f"regressor.{len(target.regressor) - 1}."
    target.load_state_dict({name: value for name, value in source.state_dict().items()
                            if not name.startswith(output)}, strict=False)


def mirror_mean(mean: np.ndarray, flip_probability: float) -> np.ndarray:
    """The mean target per slot (k, 2) when a sample is mirrored with ``flip_probability``: a mirrored
    sample puts joint j's target, x negated, in slot FLIP_JOINTS[j]."""
    mirrored = np.asarray(mean, np.float64)[list(FLIP_JOINTS)] * [-1.0, 1.0]
    return (1 - flip_probability) * np.asarray(mean, np.float64) + flip_probability * mirrored


def deeppose_config(name: str, **overrides) -> DeepPoseConfig:
    if name not in DEEPPOSE_MODELS:
        raise KeyError(f"unknown model {name!r}; choose one of: {', '.join(DEEPPOSE_MODELS)}")
    return replace(DEEPPOSE_MODELS[name], **overrides)


def build_deeppose(name: str, **overrides) -> DeepPoseNet:
    return DeepPoseNet(deeppose_config(name, **overrides))


def config_as_dict(config: DeepPoseConfig) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()}


def config_from_dict(values: dict) -> DeepPoseConfig:
    values = dict(values)
    values["conv_widths"] = tuple(values["conv_widths"])
    return DeepPoseConfig(**values)


def model_size(net: DeepPoseNet) -> dict[str, float]:
    """Parameters and multiply-accumulates of one forward pass (convolutions and FC layers)."""
    macs = 0

    def count(module: nn.Module, _inputs, output: torch.Tensor) -> None:
        nonlocal macs
        if isinstance(module, nn.Conv2d):
            per_output = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
        else:
            per_output = module.in_features
        macs += output.numel() // output.shape[0] * per_output

    hooks = [m.register_forward_hook(count) for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = net.training
    net.eval()
    size = net.config.input_size
    try:
        with torch.no_grad():
            net(torch.zeros(1, 3, size, size))
    finally:
        for hook in hooks:
            hook.remove()
        net.train(was_training)
    return {"parameters": sum(p.numel() for p in net.parameters()), "gmacs": macs / 1e9, "input_size": size}


# ----------------------------------------------------------------------------------------------
# Boxes and crops


def normalise_points(points: np.ndarray, centres: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """N(y; b) = (y - b_c) / (b_w, b_h); points (..., 2), centres and sizes broadcastable to them."""
    return (np.asarray(points, np.float64) - centres) / sizes


def denormalise_points(normalised: np.ndarray, centres: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """N⁻¹(n; b) = n * (b_w, b_h) + b_c."""
    return np.asarray(normalised, np.float64) * sizes + centres


def whole_image_box(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(centre, size) of the box covering the image exactly (pixel i spans i - 0.5 .. i + 0.5)."""
    return np.array([(width - 1) / 2, (height - 1) / 2]), np.array([float(width), float(height)])


def corner_box(box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(centre, size) of an (x0, y0, x1, y1) box."""
    x0, y0, x1, y1 = (float(v) for v in box)
    return np.array([(x0 + x1) / 2, (y0 + y1) / 2]), np.array([x1 - x0, y1 - y0])


def crop_matrix(centre: np.ndarray, size: np.ndarray, input_size: int, angle: float = 0.0,
                flip: bool = False) -> np.ndarray:
    """2 x 3 matrix from image pixels to the input pixels of box (centre, size), the box turned by
    ``angle`` radians (counter-clockwise in the image) and mirrored when ``flip``.

    An image point p lands at u = S * n + (S - 1) / 2 with n = F diag(1/w, 1/h) R(-angle) (p - centre),
    F = diag(-1, 1) when mirrored: unrotated and unmirrored, n is exactly N(p; b).
    """
    cos, sin = math.cos(angle), math.sin(angle)
    rotate_back = np.array([[cos, sin], [-sin, cos]])
    linear = np.diag([1.0 / float(size[0]), 1.0 / float(size[1])]) @ rotate_back
    if flip:
        linear[0] = -linear[0]
    linear = input_size * linear
    offset = (input_size - 1) / 2 - linear @ np.asarray(centre, np.float64)
    return np.concatenate([linear, offset[:, None]], axis=1)


def points_in_crop(points: np.ndarray, matrix: np.ndarray, input_size: int) -> np.ndarray:
    """Image points (..., 2) -> the crop's normalised frame (n above) through ``crop_matrix``'s matrix."""
    pixels = np.asarray(points, np.float64) @ matrix[:, :2].T + matrix[:, 2]
    return (pixels - (input_size - 1) / 2) / input_size


def crop_image(image: np.ndarray, matrix: np.ndarray, input_size: int) -> np.ndarray:
    """The S x S BGR crop (outside the image: the training pad value, 128 = 0 after normalising)."""
    return cv2.warpAffine(image, matrix, (input_size, input_size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(PAD_VALUE,) * 3)


def torso_diameter(joints: np.ndarray) -> np.ndarray:
    """diam(y): distance from the left shoulder to the right hip; joints (..., k, 2) -> (...)."""
    joints = np.asarray(joints, np.float64)
    return np.linalg.norm(joints[..., LEFT_SHOULDER, :] - joints[..., RIGHT_HIP, :], axis=-1)


def refinement_box_sides(previous: np.ndarray, sigma: float, image_sides: np.ndarray,
                         min_diameter_fraction: float) -> np.ndarray:
    """σ·diam(y^{s-1}) per image (N,), the side of every joint's square crop at the next stage.

    A collapsed estimate (shoulder on hip) would give a crop of nothing, so diam is at least
    ``min_diameter_fraction`` of the image's longer side (``image_sides``, N).
    """
    diameter = np.maximum(torso_diameter(previous), min_diameter_fraction * np.asarray(image_sides, np.float64))
    return sigma * diameter


# ----------------------------------------------------------------------------------------------
# Running the cascade


def run_network(net: DeepPoseNet, crops: np.ndarray, device: torch.device, batch_size: int = 64) -> np.ndarray:
    """N x S x S x 3 BGR uint8 crops -> N x k x 2 network outputs (eval mode, no gradients)."""
    was_training = net.training
    net.eval()
    outputs = []
    try:
        with torch.no_grad():
            for start in range(0, len(crops), batch_size):
                batch = np.stack([normalise(crop) for crop in crops[start:start + batch_size]])
                outputs.append(net(torch.from_numpy(batch).to(device)).float().cpu().numpy())
    finally:
        net.train(was_training)
    if not outputs:
        return np.zeros((0, net.config.joints, 2))
    return np.concatenate(outputs).astype(np.float64)


def predict_initial(net: DeepPoseNet, images: list[np.ndarray], device: torch.device,
                    initial_boxes: np.ndarray | None = None, batch_size: int = 64) -> np.ndarray:
    """Stage 1: all joints (N, k, 2) in image pixels, from the whole image or from ``initial_boxes``
    (N x 4, x0 y0 x1 y1)."""
    size = net.config.input_size
    boxes = [whole_image_box(*image.shape[:2]) if initial_boxes is None else corner_box(initial_boxes[i])
             for i, image in enumerate(images)]
    outputs = np.zeros((len(images), net.config.joints, 2))
    for start in range(0, len(images), batch_size):  # crops of one batch at a time, not of all images
        crops = np.stack([crop_image(image, crop_matrix(centre, box_size, size), size)
                          for image, (centre, box_size) in zip(images[start:start + batch_size],
                                                               boxes[start:start + batch_size])])
        outputs[start:start + len(crops)] = run_network(net, crops, device, batch_size)
    centres = np.array([centre for centre, _ in boxes]).reshape(-1, 1, 2)
    sizes = np.array([box_size for _, box_size in boxes]).reshape(-1, 1, 2)
    return denormalise_points(outputs, centres, sizes)


def refine(net: DeepPoseNet, images: list[np.ndarray], previous: np.ndarray, sigma: float, device: torch.device,
           min_diameter_fraction: float = 0.05, batch_size: int = 64) -> np.ndarray:
    """One refinement stage: y_i^s = N⁻¹(ψ_i(crop of b_i); b_i), b_i centred on y_i^{s-1}, per joint."""
    size = net.config.input_size
    joints = previous.shape[1]
    sides = refinement_box_sides(previous, sigma, [max(image.shape[:2]) for image in images],
                                 min_diameter_fraction)
    own = np.zeros((len(images), joints, 2))
    chunk = max(1, batch_size // joints)  # images whose k crops make about one batch
    for start in range(0, len(images), chunk):
        indices = range(start, min(start + chunk, len(images)))
        crops = np.stack([crop_image(images[n], crop_matrix(previous[n, i], np.array([sides[n], sides[n]]), size),
                                     size)
                          for n in indices for i in range(joints)])
        outputs = run_network(net, crops, device, batch_size).reshape(len(indices), joints, joints, 2)
        own[start:start + len(indices)] = outputs[:, np.arange(joints), np.arange(joints)]  # crop i's joint i
    return previous + own * sides[:, None, None]


def run_cascade(nets: list[DeepPoseNet], images: list[np.ndarray], sigma: float, device: torch.device,
                initial_boxes: np.ndarray | None = None, min_diameter_fraction: float = 0.05,
                batch_size: int = 64) -> list[np.ndarray]:
    """Every stage's joints (N, k, 2) in image pixels: [stage 1, stage 2, ...]."""
    stages = [predict_initial(nets[0], images, device, initial_boxes, batch_size)]
    for net in nets[1:]:
        stages.append(refine(net, images, stages[-1], sigma, device, min_diameter_fraction, batch_size))
    return stages
