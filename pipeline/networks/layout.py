"""The keypoint layout and input convention of every model posestream trains, written down once.

Our networks use OpenPose's COCO-18 layout (COCO-17 plus a neck), the same keypoints and limbs as
Intel's human-pose-estimation-0001, so the parse, the sidecar and the evaluation treat both alike.
PAF channels are in limb order: limb i has x in channel 2i and y in channel 2i + 1.
``sidecar_data`` turns these tables into the ``.pose.json`` written next to every export.
"""
from __future__ import annotations

from posestream.kernels.flip import mirror_name
from posestream.pipeline.core.model import SIDECAR_FORMAT

KEYPOINTS = (
    "nose", "neck",
    "right_shoulder", "right_elbow", "right_wrist",
    "left_shoulder", "left_elbow", "left_wrist",
    "right_hip", "right_knee", "right_ankle",
    "left_hip", "left_knee", "left_ankle",
    "right_eye", "left_eye", "right_ear", "left_ear",
)
# A tree grown outwards from the neck (the parse's grouping order), then the two shoulder-ear links that
# only complete people already found.
LIMBS = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11),
    (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17), (2, 16), (5, 17),
)
REDUNDANT_LIMBS = (17, 18)
PAF_CHANNELS = tuple((2 * i, 2 * i + 1) for i in range(len(LIMBS)))
# Mirror image: a left keypoint becomes the right one (for horizontal flips).
FLIP_KEYPOINTS = tuple(KEYPOINTS.index(mirror_name(name)) for name in KEYPOINTS)

NUM_KEYPOINTS = len(KEYPOINTS)
HEATMAP_CHANNELS = NUM_KEYPOINTS + 1  # the last channel is background = 1 - max over keypoints
PAF_CHANNEL_COUNT = 2 * len(LIMBS)

STRIDE = 8
INPUT_NAME = "image"
HEATMAPS_OUTPUT = "heatmaps"
PAFS_OUTPUT = "pafs"
# Pixels are BGR 0-255 as decoded; the network sees (pixel - 128) / 256, and letterbox padding is 128 (= 0).
COLOR_ORDER = "BGR"
PIXEL_MEAN = 128.0
PIXEL_SCALE = 1.0 / 256.0
PAD_VALUE = 128


def sidecar_data(model_file: str, name: str, height: int, width: int, description: str = "",
                 resizable: bool = True, network: str | None = None, origin: str | None = None) -> dict:
    """The ``.pose.json`` contents for a network in this layout (``model_file`` relative to the sidecar);
    ``network`` names it in networks/models.py's MODELS, so the torch backend can run an ONNX export;
    ``origin`` says where the weights came from, with their licence."""
    data = {
        "format": SIDECAR_FORMAT,
        "name": name,
        "description": description or f"posestream {name}: heatmap + PAF network, OpenPose COCO-18 layout",
        "model": model_file,
        "input": {
            "name": INPUT_NAME,
            "height": height,
            "width": width,
            "resizable": resizable,
            "color_order": COLOR_ORDER,
            "mean": [PIXEL_MEAN] * 3,
            "scale": [PIXEL_SCALE] * 3,
            "pad_value": PAD_VALUE,
        },
        "outputs": {"heatmaps": HEATMAPS_OUTPUT, "pafs": PAFS_OUTPUT},
        "stride": STRIDE,
        "background_channel": True,
        "keypoints": list(KEYPOINTS),
        "limbs": [list(limb) for limb in LIMBS],
        "paf_channels": [list(pair) for pair in PAF_CHANNELS],
        "redundant_limbs": list(REDUNDANT_LIMBS),
    }
    if network:
        data["network"] = network
    if origin:
        data["origin"] = origin
    return data
