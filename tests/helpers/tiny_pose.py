"""A small real ONNX pose network and sidecar helpers for the model-contract and CLI tests (not a test file).

``make_tiny_pose_onnx`` builds, with the ``onnx`` helper API, a network with hpe-0001's output layout
(19 heatmap channels = 18 COCO-18 keypoints + background, 38 PAF channels, stride 8) but tiny fixed random
weights, so both backends can run it in milliseconds and the whole pipeline can run on it without ../shared.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from posestream.pipeline.core.model import BUILTIN_DIR

HPE_SIDECAR = BUILTIN_DIR / "human-pose-estimation-0001.pose.json"
HPE_IR_RELATIVE = "weights/human-pose-estimation-0001/human-pose-estimation-0001.xml"

# The tiny ONNX network: stride 8, 19 heatmap channels (18 keypoints + background), 38 PAF channels.
TINY_STRIDE = 8
TINY_HEIGHT, TINY_WIDTH = 64, 96
TINY_FEATURES = 8


def hpe_sidecar_data() -> dict:
    return json.loads(HPE_SIDECAR.read_text())


def write_json(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data, indent=1))
    return path


# --------------------------------------------------------------------------------------------------------------
# A small real ONNX pose network
# --------------------------------------------------------------------------------------------------------------


def make_tiny_pose_onnx(path: Path, batch: int | str = "N", heatmaps: int = 19, pafs: int = 38,
                        stride: int = TINY_STRIDE, fixed_size: tuple[int, int] | None = None) -> Path:
    """image N x 3 x H x W -> strided 8x8 Conv + Relu -> two 1x1 Convs: "heatmaps" and "pafs" at H/8 x W/8.

    Fixed random weights (seeded), opset 17; N (unless ``batch`` is an int) is dynamic, and H and W too
    unless ``fixed_size`` = (H, W) is given.
    """
    in_h, in_w = fixed_size if fixed_size else ("H", "W")
    out_h, out_w = (in_h // stride, in_w // stride) if fixed_size else ("h", "w")
    rng = np.random.default_rng(1234)
    w_stem = (rng.standard_normal((TINY_FEATURES, 3, stride, stride)) * 0.02).astype(np.float32)
    b_stem = (rng.standard_normal(TINY_FEATURES) * 0.1).astype(np.float32)
    w_heat = (rng.standard_normal((heatmaps, TINY_FEATURES, 1, 1)) * 0.3).astype(np.float32)
    b_heat = (rng.standard_normal(heatmaps) * 0.1).astype(np.float32)
    w_paf = (rng.standard_normal((pafs, TINY_FEATURES, 1, 1)) * 0.3).astype(np.float32)
    b_paf = (rng.standard_normal(pafs) * 0.1).astype(np.float32)
    initializers = [
        numpy_helper.from_array(w_stem, "w_stem"), numpy_helper.from_array(b_stem, "b_stem"),
        numpy_helper.from_array(w_heat, "w_heat"), numpy_helper.from_array(b_heat, "b_heat"),
        numpy_helper.from_array(w_paf, "w_paf"), numpy_helper.from_array(b_paf, "b_paf"),
    ]
    nodes = [
        helper.make_node("Conv", ["image", "w_stem", "b_stem"], ["stem"],
                         kernel_shape=[stride, stride], strides=[stride, stride]),
        helper.make_node("Relu", ["stem"], ["features"]),
        helper.make_node("Conv", ["features", "w_heat", "b_heat"], ["heat_logits"], kernel_shape=[1, 1]),
        helper.make_node("Sigmoid", ["heat_logits"], ["heatmaps"]),
        helper.make_node("Conv", ["features", "w_paf", "b_paf"], ["paf_linear"], kernel_shape=[1, 1]),
        helper.make_node("Tanh", ["paf_linear"], ["pafs"]),
    ]
    graph = helper.make_graph(
        nodes, "tiny_pose",
        inputs=[helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, 3, in_h, in_w])],
        outputs=[
            helper.make_tensor_value_info("heatmaps", TensorProto.FLOAT, [batch, heatmaps, out_h, out_w]),
            helper.make_tensor_value_info("pafs", TensorProto.FLOAT, [batch, pafs, out_h, out_w]),
        ],
        initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="posestream-tests")
    model.ir_version = 8  # readable by every ONNX Runtime and OpenVINO release the project supports
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def tiny_sidecar_data(model: str, **changes) -> dict:
    """The hpe-0001 layout (18 keypoints + background, 19 limbs) for the tiny network's tensor names."""
    data = hpe_sidecar_data()
    data["name"] = "tiny-pose"
    data["model"] = model
    data["input"].update(name="image", height=TINY_HEIGHT, width=TINY_WIDTH, resizable=True,
                         color_order="BGR", mean=[128.0, 128.0, 128.0], scale=[1 / 255] * 3)
    data["outputs"] = {"heatmaps": "heatmaps", "pafs": "pafs"}
    data["stride"] = TINY_STRIDE
    data.update(changes)
    return data
