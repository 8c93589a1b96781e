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
    to_posestream_layout(model, ir_paf_channels) -> the same function in networks/layout.py's convention
    import_openvino(xml, out)  -> both, a posestream checkpoint, and an ImportReport of parity vs the IR
    bypass_activation_fake_quantize(ov_model) -> same model with activation FQs removed
    compile_ir(ov_model)       -> CPU compiled model, 1 thread, f32 inference

``posestream import-openvino MODEL.xml --out CKPT`` is ``import_openvino``.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import openvino as ov
import torch

from posestream.pipeline.core.errors import PosestreamError
from posestream.pipeline.networks import layout
from posestream.pipeline.networks.lightweight_openpose import INPUT_SCALE

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


# ----------------------------------------------------------------------------------------------
# Into posestream's layout, as a checkpoint


def ir_paf_order(ir_paf_channels: Sequence[Sequence[int]]) -> list[int]:
    """For each of our PAF channels (limb i's x at 2i, y at 2i + 1), the IR channel that holds it."""
    return [channel for pair in ir_paf_channels for channel in pair]


def to_posestream_layout(model: torch.nn.Module, ir_paf_channels: Sequence[Sequence[int]]) -> torch.nn.Module:
    """Turn an imported LightweightOpenPose into the same function in networks/layout.py's convention.

    Two exact rewrites, no retraining: (1) PAF channels. The IR emits limb i's field in channels
    ``ir_paf_channels[i]`` (hpe-0001's sidecar table); our layout puts it in 2i, 2i + 1. The output rows of
    every stage's last PAF conv are permuted, and so are the input columns of each refinement stage's
    first conv, which reads the previous stage's PAFs as its first 38 channels. (2) Input scale. The IR
    computes (x - 128) / 255 (fp16), our layout feeds (x - 128) / 256, so conv1's weights take the ratio.
    Heatmaps are already in layout order. Works in place and returns ``model``.
    """
    permutation = ir_paf_order(ir_paf_channels)
    if sorted(permutation) != list(range(model.config.num_pafs)):
        raise ValueError(f"PAF table {ir_paf_channels} is not a permutation of {model.config.num_pafs} channels")
    order = torch.tensor(permutation)
    with torch.no_grad():
        stages = [model.initial_stage, *model.refinement_stages]
        for stage in stages:
            last = stage.pafs[-1].conv
            last.weight.copy_(last.weight[order])
            last.bias.copy_(last.bias[order])
        for stage in model.refinement_stages:
            first = stage.blocks[0].sq.conv
            pafs = first.weight[:, :len(permutation)].clone()
            first.weight[:, :len(permutation)] = pafs[:, order]
        model.backbone[0].conv.weight.mul_(INPUT_SCALE / layout.PIXEL_SCALE)
    return model


# The reference the parity tolerance applies to; the INT8 IR's difference is reported only.
BYPASSED = "IR, activation FQ bypassed"


@dataclass(frozen=True)
class ParityRow:
    reference: str  # "IR, activation FQ bypassed" or "IR, INT8 as shipped"
    height: int
    width: int
    heatmaps_max: float  # max |torch - IR| over the batch
    pafs_max: float
    heatmaps_mean: float
    pafs_mean: float


@dataclass(frozen=True)
class ImportReport:
    checkpoint: Path
    parameters: int
    images: Tuple[str, ...]
    rows: Tuple[ParityRow, ...]
    tolerance: float

    @property
    def passed(self) -> bool:
        return all(max(r.heatmaps_max, r.pafs_max) <= self.tolerance for r in self.rows if r.reference == BYPASSED)

    def table(self) -> str:
        lines = [f"checkpoint {self.checkpoint}: {self.parameters:,} parameters",
                 f"parity on {len(self.images)} real images ({', '.join(self.images)}), torch vs OpenVINO:",
                 f"{'reference':<28} {'size':>9} {'heatmaps max':>13} {'pafs max':>10} {'heatmaps mean':>14} "
                 f"{'pafs mean':>10}"]
        for r in self.rows:
            lines.append(f"{r.reference:<28} {f'{r.height}x{r.width}':>9} {r.heatmaps_max:>13.2e} {r.pafs_max:>10.2e} "
                         f"{r.heatmaps_mean:>14.2e} {r.pafs_mean:>10.2e}")
        verdict = "ok" if self.passed else "FAILED"
        lines.append(f"bypassed-IR parity tolerance {self.tolerance:.0e}: {verdict}")
        return "\n".join(lines)


def import_openvino(xml_path: Union[str, Path], out: Union[str, Path], model_name: str = "lwo-mobilenet",
                    ir_paf_channels: Optional[Sequence[Sequence[int]]] = None,
                    sizes: Sequence[Tuple[int, int]] = ((256, 456), (368, 656)), images: str = "mmpose-coco",
                    image_count: int = 2, tolerance: float = 1e-4) -> ImportReport:
    """Import hpe-0001's IR into ``model_name`` in posestream's layout, write a checkpoint to ``out`` and
    report parity against the IR (activation FakeQuantizes bypassed, and as shipped) on real images.

    ``ir_paf_channels`` defaults to the built-in hpe-0001 sidecar's table. The checkpoint's input size is
    the IR's own (its input shape). Raises PosestreamError naming the file when the IR does not fit.
    """
    from posestream.pipeline.core.model import load_model_spec
    from posestream.pipeline.networks.checkpoint import save_checkpoint
    from posestream.pipeline.networks.models import build_model
    from posestream.trainers.export.onnx import (
        layout_input_spec,
        letterboxed_batch,
        read_image,
        sample_images,
        write_sidecar,
    )

    xml_path = Path(xml_path)
    if not xml_path.is_file():
        raise PosestreamError(str(xml_path), "no such OpenVINO IR (.xml) file")
    if ir_paf_channels is None:
        ir_paf_channels = load_model_spec("hpe-0001").paf_channels
    model = build_model(model_name).eval()
    try:
        ov_model = ov.Core().read_model(str(xml_path))
        import_into(model, ov_model)
    except (RuntimeError, ValueError) as error:
        raise PosestreamError(str(xml_path), f"does not fit {model_name}: {error}") from None
    to_posestream_layout(model, ir_paf_channels)
    input_shape = [int(d) for d in ov_model.inputs[0].get_partial_shape().to_shape()]
    checkpoint = save_checkpoint(out, model, model_name, (input_shape[2], input_shape[3]), metrics={
        "imported_from": xml_path.name,
        "origin": "Intel Open Model Zoo human-pose-estimation-0001 (Apache-2.0), imported by posestream "
                  "import-openvino"})

    # A sidecar beside the checkpoint, so `posestream run/eval --model CKPT` runs it on the torch backend;
    # 368x656 as hpe-0001's own sidecar (Lightweight OpenPose's validation height).
    write_sidecar(checkpoint, f"{model_name}-imported", 368, 656, description=(
        f"{model_name} imported from {xml_path.name} (Intel Open Model Zoo human-pose-estimation-0001, Apache-2.0)"))

    permutation = ir_paf_order(ir_paf_channels)
    files = sample_images(images, image_count)
    pictures = [read_image(path) for path in files]
    # The bypass rewires the graph in place, so it gets its own copy; the import only read ov_model.
    references = {BYPASSED: bypass_activation_fake_quantize(ov.Core().read_model(str(xml_path))),
                  "IR, INT8 as shipped": ov_model}
    rows = []
    for height, width in sizes:
        batch = letterboxed_batch(pictures, layout_input_spec(height, width), layout.STRIDE, height, width)
        raw = batch / layout.PIXEL_SCALE + layout.PIXEL_MEAN  # the same pixels, as the IR takes them
        with torch.no_grad():
            heatmaps, pafs = (t.numpy() for t in model(torch.from_numpy(batch))[-1])
        for reference, ir in references.items():
            compiled = compile_ir(ir, (len(pictures), 3, height, width), threads=torch.get_num_threads())
            result = compiled(raw.astype(np.float32))
            ir_heatmaps = result[compiled.output("Mconv7_stage2_L2")]
            ir_pafs = result[compiled.output("Mconv7_stage2_L1")][:, permutation]
            rows.append(ParityRow(reference, height, width,
                                  float(np.abs(heatmaps - ir_heatmaps).max()), float(np.abs(pafs - ir_pafs).max()),
                                  float(np.abs(heatmaps - ir_heatmaps).mean()), float(np.abs(pafs - ir_pafs).mean())))
    return ImportReport(checkpoint=checkpoint, parameters=sum(p.numel() for p in model.parameters()),
                        images=tuple(path.name for path in files), rows=tuple(rows), tolerance=tolerance)
