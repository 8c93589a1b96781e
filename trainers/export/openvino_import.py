"""Import human-pose-estimation-0001 (OpenVINO IR, FP16-INT8) into LightweightOpenPose.

The IR stores each convolution weight as integer codes 0..254 (u8 in the .bin,
``Convert`` to f16 in the graph) followed by a ``FakeQuantize`` (levels=255,
input range [0, 254], per-output-channel output range [-oh, oh]) that maps the
codes back to floats.  BatchNorm is folded: every conv is followed by an ``Add``
of a per-channel f16 bias.  Activations are quantised by 63 further
``FakeQuantize`` ops (levels=256); :func:`bypass_activation_fake_quantize`
removes those so the IR can be compared with the float torch model.

Functions:
    read_openvino_layers(xml) -> list of ConvLayer records (topological order)
    read_openvino_weights(xml) -> {"<ir conv name>.weight"/".bias": float32 array}
    import_into(model, xml)    -> loads them into a LightweightOpenPose, one-to-one
    bypass_activation_fake_quantize(ov_model) -> same model with activation FQs removed
    compile_ir(ov_model)       -> CPU compiled model, 1 thread, f32 inference
"""

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import openvino as ov
import torch

ModelOrPath = Union[str, "ov.Model"]

_CONV_TYPES = ("Convolution", "GroupConvolution")
_ACTIVATIONS = {"Relu": "relu", "Elu": "elu"}


def _read(model_or_path: ModelOrPath) -> "ov.Model":
    if isinstance(model_or_path, ov.Model):
        return model_or_path
    return ov.Core().read_model(str(model_or_path))


def _base_name(conv) -> str:
    # Convs followed by a separate bias Add are named "<layer>/WithoutBiases".
    name = conv.get_friendly_name()
    return name[: -len("/WithoutBiases")] if name.endswith("/WithoutBiases") else name


def fake_quantize(x: np.ndarray, in_low, in_high, out_low, out_high, levels: int) -> np.ndarray:
    """OpenVINO FakeQuantize in float64, numpy broadcasting for per-channel ranges.

    out = round((clip(x, il, ih) - il) / (ih - il) * (levels - 1)) / (levels - 1)
          * (oh - ol) + ol
    (np.round is round-half-to-even, like OpenVINO's reference; codes here are
    integers so ties never occur).
    """
    x, il, ih, ol, oh = (np.asarray(a, dtype=np.float64) for a in (x, in_low, in_high, out_low, out_high))
    q = np.round((np.clip(x, il, ih) - il) / (ih - il) * (levels - 1))
    return q / (levels - 1) * (oh - ol) + ol


def _const_value(output) -> np.ndarray:
    """Value of a constant sub-graph: Constant, or a decompression chain
    (Convert / Subtract / Multiply / Reshape over constants), in float64."""
    node = output.get_node()
    t = node.get_type_name()
    if t == "Constant":
        return np.array(node.get_data(), dtype=np.float64)
    if t == "Convert":
        return _const_value(node.input_value(0))
    if t == "Subtract":
        return _const_value(node.input_value(0)) - _const_value(node.input_value(1))
    if t == "Multiply":
        return _const_value(node.input_value(0)) * _const_value(node.input_value(1))
    if t == "Reshape":
        return _const_value(node.input_value(0)).reshape(tuple(output.get_shape()))
    raise ValueError(f"{node.get_friendly_name()}: {t} is not part of a constant/decompression chain")


def _is_constant_chain(output) -> bool:
    try:
        _const_value(output)
        return True
    except ValueError:
        return False


def _weight_value(output) -> Tuple[np.ndarray, Optional[int]]:
    """Dequantised weight feeding a conv, and the weight FQ's levels (None if no FQ)."""
    node = output.get_node()
    t = node.get_type_name()
    if t == "FakeQuantize":
        x = _const_value(node.input_value(0))
        ranges = [_const_value(node.input_value(i)) for i in range(1, 5)]
        levels = int(node.get_attributes()["levels"])
        return fake_quantize(x, *ranges, levels=levels), levels
    if t == "Reshape":  # GroupConvolution: [C,1,k,k] -> [G=C, 1, 1, k, k]
        value, levels = _weight_value(node.input_value(0))
        return value.reshape(tuple(output.get_shape())), levels
    if t in ("Convert", "Subtract", "Multiply", "Constant"):
        return _const_value(output), None
    raise ValueError(f"{node.get_friendly_name()}: unexpected weight producer {t}")


@dataclass
class ConvLayer:
    name: str  # IR layer name without "/WithoutBiases"
    kind: str  # "Convolution" or "GroupConvolution"
    weight: np.ndarray  # float32, torch layout (O, I/groups, kh, kw)
    bias: Optional[np.ndarray]  # float32 (O,) or None
    groups: int
    strides: Tuple[int, int]
    dilations: Tuple[int, int]
    pads: Tuple[int, int, int, int]  # top, left, bottom, right
    activation: Optional[str]  # "relu", "elu" or None
    bias_add_name: Optional[str]
    weight_fq_levels: Optional[int]


def _single_consumer(output, type_name: str):
    targets = [t.get_node() for t in output.get_target_inputs()]
    hits = [n for n in targets if n.get_type_name() == type_name]
    return hits[0] if len(targets) == 1 and hits else None


def read_openvino_layers(model_or_path: ModelOrPath) -> List[ConvLayer]:
    """Every Convolution/GroupConvolution of the IR, in topological order."""
    model = _read(model_or_path)
    layers = []
    for op in model.get_ordered_ops():
        if op.get_type_name() not in _CONV_TYPES:
            continue
        name = _base_name(op)
        w, levels = _weight_value(op.input_value(1))
        groups = 1
        if op.get_type_name() == "GroupConvolution":
            groups = w.shape[0]
            w = w.reshape((w.shape[0] * w.shape[1],) + w.shape[2:])  # GOIkk -> (G*O)Ikk
        bias = None
        bias_add = _single_consumer(op.output(0), "Add")
        if bias_add is not None and _is_constant_chain(bias_add.input_value(1)):
            bias = _const_value(bias_add.input_value(1)).reshape(-1)
            if bias.shape[0] != w.shape[0]:
                raise ValueError(f"{name}: bias has {bias.shape[0]} channels, weight {w.shape[0]}")
            after = bias_add.output(0)
        else:
            bias_add, after = None, op.output(0)
        act = None
        targets = [t.get_node() for t in after.get_target_inputs()]
        if len(targets) == 1 and targets[0].get_type_name() in _ACTIVATIONS:
            act_node = targets[0]
            act = _ACTIVATIONS[act_node.get_type_name()]
            if act == "elu" and abs(act_node.get_attributes()["alpha"] - 1.0) > 0:
                raise ValueError(f"{name}: ELU alpha {act_node.get_attributes()['alpha']} != 1")
        attrs = op.get_attributes()
        layers.append(ConvLayer(
            name=name, kind=op.get_type_name(), weight=w.astype(np.float32),
            bias=None if bias is None else bias.astype(np.float32), groups=groups,
            strides=tuple(attrs["strides"]), dilations=tuple(attrs["dilations"]),
            pads=tuple(attrs["pads_begin"]) + tuple(attrs["pads_end"]), activation=act,
            bias_add_name=None if bias_add is None else bias_add.get_friendly_name(),
            weight_fq_levels=levels))
    return layers


def read_openvino_weights(xml_path: ModelOrPath) -> Dict[str, np.ndarray]:
    """Dequantised float32 weights: ``{"<IR conv name>.weight", "<IR conv name>.bias"}``.

    Weight arrays are in torch layout (depthwise: C x 1 x k x k); insertion
    order is the IR's topological order.
    """
    out: Dict[str, np.ndarray] = {}
    for layer in read_openvino_layers(xml_path):
        out[f"{layer.name}.weight"] = layer.weight
        if layer.bias is not None:
            out[f"{layer.name}.bias"] = layer.bias
    return out


def import_into(model: torch.nn.Module, xml_path: ModelOrPath, strict_order: bool = True) -> torch.nn.Module:
    """Load the IR weights into ``model`` (a LightweightOpenPose), one-to-one.

    IR convs (topological order) are paired with ``model.conv_blocks()``
    (registration order).  Each pair must agree on IR name, weight shape,
    groups, stride, dilation, padding and activation; with
    ``strict_order=False`` the pairing is by IR name only.  Every torch
    parameter and BN buffer must be written exactly once.  For BN variants the
    BN is set to an exact identity plus the IR bias: weight=1, bias=IR bias,
    running_mean=0, running_var=1-eps (so var+eps == 1).  Raises ValueError
    naming the layer on any mismatch.
    """
    layers = read_openvino_layers(xml_path)
    blocks = model.conv_blocks()
    if len(layers) != len(blocks):
        raise ValueError(f"IR has {len(layers)} convolutions, model has {len(blocks)}")
    by_name = {b.ir_name: b for b in blocks}
    if len(by_name) != len(blocks):
        raise ValueError("duplicate ir_name in model")
    module_name = {id(m): n for n, m in model.named_modules()}
    expected = {n for n, _ in model.named_parameters()}
    expected |= {n for n, _ in model.named_buffers() if not n.endswith("num_batches_tracked")}
    assigned: Dict[str, str] = {}

    def put(tensor_name: str, dst: torch.Tensor, value: np.ndarray, layer: str) -> None:
        if tensor_name in assigned:
            raise ValueError(f"{layer}: {tensor_name} already assigned from {assigned[tensor_name]}")
        src = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
        if tuple(dst.shape) != tuple(src.shape):
            raise ValueError(f"{layer}: shape {tuple(src.shape)} does not fit {tensor_name} {tuple(dst.shape)}")
        with torch.no_grad():
            dst.copy_(src)
        assigned[tensor_name] = layer

    for i, layer in enumerate(layers):
        block = blocks[i] if strict_order else by_name.get(layer.name)
        if block is None or block.ir_name != layer.name:
            got = None if block is None else block.ir_name
            raise ValueError(f"{layer.name}: IR conv #{i} matched to torch block {got!r}")
        conv = block.conv
        checks = {
            "weight shape": (tuple(conv.weight.shape), tuple(layer.weight.shape)),
            "groups": (conv.groups, layer.groups),
            "stride": (tuple(conv.stride), layer.strides),
            "dilation": (tuple(conv.dilation), layer.dilations),
            "padding": (tuple(conv.padding) * 2, layer.pads),
            "activation": (block.activation, layer.activation),
        }
        for what, (mine, theirs) in checks.items():
            if mine != theirs:
                raise ValueError(f"{layer.name}: {what} torch {mine} != IR {theirs}")
        if layer.bias is None:
            raise ValueError(f"{layer.name}: IR conv has no bias Add")
        prefix = module_name[id(block)]
        put(f"{prefix}.conv.weight", conv.weight, layer.weight, layer.name)
        if block.bn is None:
            if conv.bias is None:
                raise ValueError(f"{layer.name}: torch conv has no bias and no BN")
            put(f"{prefix}.conv.bias", conv.bias, layer.bias, layer.name)
        else:
            if conv.bias is not None:
                raise ValueError(f"{layer.name}: torch conv has both bias and BN")
            bn = block.bn
            c = layer.bias.shape[0]
            put(f"{prefix}.bn.weight", bn.weight, np.ones(c), layer.name)
            put(f"{prefix}.bn.bias", bn.bias, layer.bias, layer.name)
            put(f"{prefix}.bn.running_mean", bn.running_mean, np.zeros(c), layer.name)
            put(f"{prefix}.bn.running_var", bn.running_var, np.full(c, 1.0 - bn.eps), layer.name)
            bn.num_batches_tracked.zero_()
    missing = expected - set(assigned)
    extra = set(assigned) - expected
    if missing or extra:
        raise ValueError(f"unassigned torch tensors {sorted(missing)}; unknown {sorted(extra)}")
    return model


def activation_fake_quantizes(model: "ov.Model") -> list:
    """FakeQuantize ops whose data input is not a constant (i.e. on activations)."""
    return [op for op in model.get_ordered_ops()
            if op.get_type_name() == "FakeQuantize" and not _is_constant_chain(op.input_value(0))]


def bypass_activation_fake_quantize(model_or_path: ModelOrPath) -> "ov.Model":
    """Return the IR with every activation FakeQuantize short-circuited.

    Each consumer of an activation FQ is rewired to the FQ's input; weight FQs
    (constant inputs) stay, so the weights are the same dequantised values the
    importer loads.  Modifies the model in place if one is passed.
    """
    model = _read(model_or_path)
    fqs = activation_fake_quantizes(model)
    for fq in fqs:
        src = fq.input_value(0)
        for target in list(fq.output(0).get_target_inputs()):
            target.replace_source_output(src)
    model.validate_nodes_and_infer_types()
    left = activation_fake_quantizes(model)
    left = [fq for fq in left if fq.output(0).get_target_inputs()]
    if left:
        raise RuntimeError(f"activation FQs still connected: {[f.get_friendly_name() for f in left]}")
    return model


def compile_ir(model: "ov.Model", shape: Optional[Tuple[int, int, int, int]] = None, threads: int = 1):
    """Compile for CPU with ``threads`` inference threads and f32 inference precision
    (so the FP16 IR is not executed in reduced precision on CPUs that could)."""
    if shape is not None:
        model.reshape({model.inputs[0].get_any_name(): list(shape)})
    core = ov.Core()
    return core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": threads,
                                             "INFERENCE_PRECISION_HINT": "f32"})
