"""The model contract: sidecar loading, sidecar-vs-network validation, and the two inference backends.

The real hpe-0001 OpenVINO IR from ../shared is checked against its shipped sidecar, and broken copies of
that sidecar (written to tmp_path, pointing at the real IR by absolute path) must each fail at load with a
PosestreamError that names the sidecar and the problem. A small real ONNX pose network, built with the
``onnx`` helper API (tests/tiny_pose.py), exercises ONNX Runtime and OpenVINO on the same file.
"""
from __future__ import annotations

import copy
import json

import numpy as np
import onnx
import pytest

from posestream.pipeline.core.errors import PosestreamError
from posestream.pipeline.core.model import (
    BUILTIN_MODELS,
    DEFAULT_MODEL,
    load_model_spec,
    resolve_sidecar,
)
from posestream.pipeline.inference.backends import (
    BACKEND_NAMES,
    BackendConfig,
    OnnxRuntimeBackend,
    OpenVinoBackend,
    create_backend,
)
from tests.helpers.tiny_pose import (
    HPE_IR_RELATIVE,
    HPE_SIDECAR,
    TINY_HEIGHT,
    TINY_STRIDE,
    TINY_WIDTH,
    hpe_sidecar_data,
    make_tiny_pose_onnx,
    tiny_sidecar_data,
    write_json,
)


@pytest.fixture(scope="module")
def tiny_batches() -> dict[int, np.ndarray]:
    rng = np.random.default_rng(99)
    return {n: rng.uniform(-0.5, 0.5, (n, 3, TINY_HEIGHT, TINY_WIDTH)).astype(np.float32) for n in (1, 3)}


# --------------------------------------------------------------------------------------------------------------
# The shipped hpe-0001 sidecar against the real IR
# --------------------------------------------------------------------------------------------------------------


def test_builtin_names_point_at_shipped_sidecars():
    assert DEFAULT_MODEL in BUILTIN_MODELS
    assert BUILTIN_MODELS["hpe-0001"] == HPE_SIDECAR.name
    assert HPE_SIDECAR.is_file()


def test_the_default_model_ships_inside_the_package_and_runs():
    """No ../shared needed: the default model (hpe-0001 fine-tuned, lwo-mobilenet) is in pipeline/models with its
    origin named, and it is what runs when --model is not given."""
    spec = load_model_spec(None)
    assert spec == load_model_spec("lwo-mobilenet")
    assert spec.sidecar_path.parent == HPE_SIDECAR.parent and spec.model_path.parent == HPE_SIDECAR.parent
    assert spec.model_path.suffix == ".onnx" and spec.model_path.stat().st_size < 20 * 2**20
    assert spec.network == "lwo-mobilenet"
    assert "human-pose-estimation-0001" in json.loads(spec.sidecar_path.read_text())["origin"]
    assert (spec.num_keypoints, len(spec.limbs), spec.stride) == (18, 19, 8)
    # The same OpenPose COCO-18 layout as hpe-0001's sidecar (read as JSON: its IR is in ../shared, maybe absent).
    hpe = json.loads(HPE_SIDECAR.read_text())
    ours = json.loads(spec.sidecar_path.read_text())
    assert (ours["keypoints"], ours["limbs"]) == (hpe["keypoints"], hpe["limbs"])
    backend = create_backend(spec, BackendConfig())  # checks the sidecar against the network
    assert backend.name == "onnxruntime"
    heatmaps, pafs = backend.infer(np.zeros((2, 3, 64, 96), np.float32))
    assert heatmaps.shape == (2, 19, 8, 12) and pafs.shape == (2, 38, 8, 12)


@pytest.mark.shared
def test_the_default_model_finds_the_person_on_lsp_test_images(shared):
    """The shipped model is a strong pose network: on the first 20 LSP test images (never trained on) at its
    sidecar's input size, most body joints are within 0.2 torso of the truth (docs/trainers.md has the full
    numbers: about 0.77 on all 1000)."""
    from posestream.pipeline.estimators.bottomup import BottomUpEstimator, EstimatorConfig
    from posestream.pipeline.evaluation.lsp import LspEvalConfig, evaluate_lsp

    spec = load_model_spec(None)
    estimator = BottomUpEstimator(spec, create_backend(spec, BackendConfig()), EstimatorConfig())
    metrics = evaluate_lsp(shared / "data/lsp", "test", estimator, LspEvalConfig(max_images=20, show_progress=False))
    assert metrics["images"] == 20 and metrics["images_without_people"] <= 1
    assert metrics["pck_mean_body"] >= 0.6, metrics["pck"]


def test_the_default_model_runs_on_the_torch_backend_from_the_same_file():
    """torch rebuilds lwo-mobilenet from the sidecar's "network" and the ONNX file's weights: same maps."""
    pytest.importorskip("torch")
    spec = load_model_spec(None)
    batch = np.random.default_rng(0).uniform(-0.5, 0.5, (1, 3, 64, 96)).astype(np.float32)
    torch_maps = create_backend(spec, BackendConfig(name="torch")).infer(batch)
    onnx_maps = create_backend(spec, BackendConfig(name="onnxruntime")).infer(batch)
    for mine, theirs in zip(torch_maps, onnx_maps):
        assert np.abs(mine - theirs).max() <= 1e-3


@pytest.mark.shared
def test_hpe_sidecar_loads(shared):
    spec = load_model_spec("hpe-0001")
    assert spec.sidecar_path == HPE_SIDECAR
    assert spec.model_path == (shared / HPE_IR_RELATIVE).resolve()
    assert spec.backend_hint == "openvino"
    assert spec.num_keypoints == 18
    assert len(spec.limbs) == 19
    assert len(spec.paf_channels) == 19
    assert spec.heatmap_channels == 19  # 18 keypoints + background
    assert spec.paf_channel_count == 38
    assert spec.stride == 8
    assert spec.input.name == "data"
    assert (spec.input.height, spec.input.width) == (368, 656)
    assert spec.heatmaps_output == "Mconv7_stage2_L2"
    assert spec.pafs_output == "Mconv7_stage2_L1"
    # Every PAF channel is used exactly once, and the limbs use only known keypoints.
    assert sorted(c for pair in spec.paf_channels for c in pair) == list(range(38))
    assert all(0 <= k < 18 for limb in spec.limbs for k in limb)


@pytest.mark.shared
def test_hpe_sidecar_validates_against_real_ir(shared):
    spec = load_model_spec("hpe-0001")
    backend = create_backend(spec, BackendConfig())  # auto: .xml -> OpenVINO
    assert isinstance(backend, OpenVinoBackend)
    assert backend.resizable
    inputs, outputs = backend.describe(spec.input.height, spec.input.width)
    assert [t.name for t in inputs] == ["data"]
    shapes = {t.name: t.shape for t in outputs}
    assert shapes["Mconv7_stage2_L2"] == (1, 19, 46, 82)
    assert shapes["Mconv7_stage2_L1"] == (1, 38, 46, 82)
    # And it really runs at the sidecar's size.
    heatmaps, pafs = backend.infer(np.zeros((1, 3, 368, 656), np.float32))
    assert heatmaps.shape == (1, 19, 46, 82)
    assert pafs.shape == (1, 38, 46, 82)
    assert np.isfinite(heatmaps).all() and np.isfinite(pafs).all()


def test_resolve_sidecar_accepts_name_sidecar_path_and_model_path(tiny_model):
    assert resolve_sidecar("hpe-0001") == HPE_SIDECAR
    assert resolve_sidecar(None) == HPE_SIDECAR.parent / "posestream-lwo-mobilenet.pose.json"
    assert resolve_sidecar(str(HPE_SIDECAR)) == HPE_SIDECAR
    sidecar_beside = tiny_model.with_name("tiny.pose.json")
    assert resolve_sidecar(str(tiny_model)) == sidecar_beside
    assert resolve_sidecar(str(sidecar_beside)) == sidecar_beside
    # The model path form loads the same spec as the sidecar path form.
    assert load_model_spec(str(tiny_model)) == load_model_spec(str(sidecar_beside))
    assert load_model_spec(str(tiny_model)).model_path == tiny_model.resolve()


def test_resolve_sidecar_errors(tmp_path):
    onnx_alone = make_tiny_pose_onnx(tmp_path / "alone.onnx")
    with pytest.raises(PosestreamError) as info:
        resolve_sidecar(str(onnx_alone))
    assert info.value.subject == str(onnx_alone)
    assert "alone.pose.json" in info.value.problem and "no sidecar" in info.value.problem

    missing_model = tmp_path / "missing.xml"
    with pytest.raises(PosestreamError, match="no such model file") as info:
        resolve_sidecar(str(missing_model))
    assert info.value.subject == str(missing_model)

    missing_sidecar = tmp_path / "missing.pose.json"
    with pytest.raises(PosestreamError, match="no such sidecar file") as info:
        resolve_sidecar(str(missing_sidecar))
    assert info.value.subject == str(missing_sidecar)

    with pytest.raises(PosestreamError, match="hpe-0001") as info:
        resolve_sidecar("no-such-model")
    assert info.value.subject == "no-such-model"


# --------------------------------------------------------------------------------------------------------------
# Broken copies of the hpe-0001 sidecar, pointing at the real IR
# --------------------------------------------------------------------------------------------------------------


def _drop_last_keypoint_consistently(data: dict) -> None:
    """17 keypoints, limbs and PAF pairs kept self-consistent, so only the network's 19 channels disagree."""
    dropped = len(data["keypoints"]) - 1
    data["keypoints"] = data["keypoints"][:-1]
    kept = [i for i, limb in enumerate(data["limbs"]) if dropped not in limb]
    data["limbs"] = [data["limbs"][i] for i in kept]
    data["paf_channels"] = [[2 * j, 2 * j + 1] for j in range(len(kept))]
    data["redundant_limbs"] = []


def _delete(data: dict, dotted: str) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        data = data[key]
    del data[last]


# (id, mutation of the sidecar dict, substrings the problem must contain); all fail in load or in validation.
SIDECAR_MISMATCHES = [
    ("heatmaps-output-name", lambda d: d["outputs"].update(heatmaps="Mconv7_stage2_L3"),
     ["heatmaps output", "Mconv7_stage2_L3", "not in the model"]),
    ("pafs-output-name", lambda d: d["outputs"].update(pafs="pafs"),
     ["pafs output", "'pafs'", "not in the model"]),
    ("keypoints-one-short", _drop_last_keypoint_consistently,
     ["heatmaps output", "19 channels", "implies 18"]),
    ("no-background-channel", lambda d: d.update(background_channel=False),
     ["heatmaps output", "19 channels", "implies 18"]),
    ("keypoints-one-short-limbs-unchanged", lambda d: d.update(keypoints=d["keypoints"][:-1]),
     ["limbs[", "keypoint outside 0..16"]),
    ("limb-index-out-of-range", lambda d: d["limbs"].__setitem__(3, [3, 18]),
     ["limbs[3]", "[3, 18]", "outside 0..17"]),
    ("limb-index-negative", lambda d: d["limbs"].__setitem__(0, [-1, 2]),
     ["limbs[0]", "outside 0..17"]),
    ("paf-pairs-fewer-than-limbs", lambda d: d.update(paf_channels=d["paf_channels"][:-1]),
     ["19 limbs but 18 paf_channels"]),
    ("paf-channel-out-of-range", lambda d: d["paf_channels"].__setitem__(0, [12, 38]),
     ["paf_channels[0]", "outside 0..37"]),
    ("input-name", lambda d: d["input"].update(name="image"),
     ["input 'image' not in the model", "data"]),
    ("stride-does-not-divide-input", lambda d: d["input"].update(height=370),
     ["370x656", "not a multiple of stride 8"]),
    ("stride-wrong-for-network", lambda d: d.update(stride=16),
     ["height is 46", "gives 23"]),
    ("bad-color-order", lambda d: d["input"].update(color_order="YUV"),
     ["color_order", "YUV"]),
    ("mean-not-three-numbers", lambda d: d["input"].update(mean=[0.0, 0.0]),
     ["input.mean", "three numbers"]),
    ("stride-not-int", lambda d: d.update(stride="8"),
     ["field stride must be int"]),
    ("duplicate-keypoint", lambda d: d["keypoints"].__setitem__(1, "nose"),
     ["keypoints must be", "distinct"]),
    ("wrong-format", lambda d: d.update(format="openpose/1"),
     ["not a posestream sidecar"]),
    ("model-not-onnx-or-xml", lambda d: d.update(model=d["model"].replace(".xml", ".bin")),
     ["must be an .onnx or OpenVINO .xml file"]),
    ("unknown-variable-in-model-path", lambda d: d.update(model="${NO_SUCH_POSESTREAM_VAR}/x.xml"),
     ["unknown variable", "NO_SUCH_POSESTREAM_VAR"]),
] + [
    (f"missing-{field}", (lambda field: lambda d: _delete(d, field))(field), [f"missing field {field}"])
    for field in ("model", "input", "outputs", "stride", "keypoints", "limbs", "paf_channels",
                  "background_channel", "input.name", "input.height", "input.mean", "outputs.heatmaps",
                  "outputs.pafs")
]


def load_and_validate(model: str, backend: str = "auto"):
    spec = load_model_spec(model)
    return create_backend(spec, BackendConfig(name=backend))


@pytest.mark.shared
@pytest.mark.parametrize("mutate, expected", [pytest.param(m, e, id=i) for i, m, e in SIDECAR_MISMATCHES])
def test_broken_sidecar_fails_at_load_naming_it(shared, tmp_path, mutate, expected):
    data = hpe_sidecar_data()
    data["model"] = str((shared / HPE_IR_RELATIVE).resolve())
    mutate(data)
    sidecar = write_json(tmp_path / "broken.pose.json", data)
    with pytest.raises(PosestreamError) as info:
        load_and_validate(str(sidecar))
    message = str(info.value)
    assert str(sidecar) in message, message
    for part in expected:
        assert part in info.value.problem, message
    assert "\n" not in message  # the CLI prints it as one line


@pytest.mark.shared
def test_unmodified_copy_of_sidecar_with_absolute_model_path_validates(shared, tmp_path):
    data = hpe_sidecar_data()
    data["model"] = str((shared / HPE_IR_RELATIVE).resolve())
    sidecar = write_json(tmp_path / "copy.pose.json", data)
    backend = load_and_validate(str(sidecar))
    assert isinstance(backend, OpenVinoBackend)


def test_sidecar_bad_json_names_it(tmp_path):
    sidecar = tmp_path / "bad.pose.json"
    sidecar.write_text(HPE_SIDECAR.read_text()[:200])  # cut off mid-object
    with pytest.raises(PosestreamError, match="not valid JSON") as info:
        load_model_spec(str(sidecar))
    assert info.value.subject == str(sidecar)


def test_sidecar_not_an_object_names_it(tmp_path):
    sidecar = write_json(tmp_path / "list.pose.json", [1, 2, 3])  # type: ignore[arg-type]
    with pytest.raises(PosestreamError, match="not a posestream sidecar") as info:
        load_model_spec(str(sidecar))
    assert info.value.subject == str(sidecar)


def test_sidecar_model_file_missing_names_model_and_sidecar(tmp_path):
    data = hpe_sidecar_data()
    missing = tmp_path / "nowhere" / "human-pose-estimation-0001.xml"
    data["model"] = str(missing)
    sidecar = write_json(tmp_path / "orphan.pose.json", data)
    with pytest.raises(PosestreamError, match="does not exist") as info:
        load_model_spec(str(sidecar))
    assert info.value.subject == str(missing)
    assert str(sidecar) in info.value.problem


def test_sidecar_relative_model_path_is_relative_to_the_sidecar(tmp_path, monkeypatch):
    (tmp_path / "weights").mkdir()
    (tmp_path / "sidecars").mkdir()
    model = make_tiny_pose_onnx(tmp_path / "weights" / "tiny.onnx")
    sidecar = write_json(tmp_path / "sidecars" / "rel.pose.json", tiny_sidecar_data("../weights/tiny.onnx"))
    monkeypatch.chdir(tmp_path / "weights")  # the working directory plays no part
    assert load_model_spec(str(sidecar)).model_path == model.resolve()
    monkeypatch.chdir(tmp_path)
    missing = write_json(tmp_path / "sidecars" / "gone.pose.json", tiny_sidecar_data("../weights/gone.onnx"))
    with pytest.raises(PosestreamError, match="does not exist") as info:
        load_model_spec(str(missing))
    assert info.value.subject == str((tmp_path / "weights" / "gone.onnx").resolve())


# --------------------------------------------------------------------------------------------------------------
# The tiny ONNX network on both backends
# --------------------------------------------------------------------------------------------------------------


def test_tiny_onnx_is_a_valid_dynamic_model(tiny_model):
    model = onnx.load(str(tiny_model))
    assert model.opset_import[0].version == 17
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["N", 3, "H", "W"]
    assert [o.name for o in model.graph.output] == ["heatmaps", "pafs"]


def test_onnxruntime_runs_tiny_model_batch_1_and_3(tiny_model, tiny_batches):
    spec = load_model_spec(str(tiny_model))
    assert spec.backend_hint == "onnxruntime"
    backend = create_backend(spec, BackendConfig())  # auto: .onnx -> ONNX Runtime
    assert isinstance(backend, OnnxRuntimeBackend)
    assert backend.resizable  # dynamic H and W
    h, w = TINY_HEIGHT // TINY_STRIDE, TINY_WIDTH // TINY_STRIDE
    for n in (1, 3):
        heatmaps, pafs = backend.infer(tiny_batches[n])
        assert heatmaps.shape == (n, 19, h, w)
        assert pafs.shape == (n, 38, h, w)
        assert heatmaps.dtype == np.float32 and pafs.dtype == np.float32
    # A batch is the frames run one by one: batching never mixes frames.
    heatmaps3, pafs3 = backend.infer(tiny_batches[3])
    for i in range(3):
        heatmaps1, pafs1 = backend.infer(tiny_batches[3][i:i + 1])
        np.testing.assert_allclose(heatmaps3[i:i + 1], heatmaps1, atol=1e-6)
        np.testing.assert_allclose(pafs3[i:i + 1], pafs1, atol=1e-6)
    # Not a constant network: different frames give different maps.
    assert not np.allclose(heatmaps3[0], heatmaps3[1])
    # Another input size on the resizable network.
    heatmaps, pafs = backend.infer(np.zeros((2, 3, 40, 48), np.float32))
    assert heatmaps.shape == (2, 19, 5, 6) and pafs.shape == (2, 38, 5, 6)


def test_onnxruntime_fixed_batch_model_runs_larger_batches_frame_by_frame(tmp_path, tiny_model, tiny_batches):
    fixed = make_tiny_pose_onnx(tmp_path / "fixed.onnx", batch=1)
    write_json(tmp_path / "fixed.pose.json", tiny_sidecar_data("fixed.onnx"))
    fixed_backend = create_backend(load_model_spec(str(fixed)), BackendConfig(name="onnxruntime"))
    dynamic_backend = create_backend(load_model_spec(str(tiny_model)), BackendConfig(name="onnxruntime"))
    heatmaps, pafs = fixed_backend.infer(tiny_batches[3])
    expected_heatmaps, expected_pafs = dynamic_backend.infer(tiny_batches[3])
    assert heatmaps.shape == (3, 19, 8, 12) and pafs.shape == (3, 38, 8, 12)
    np.testing.assert_allclose(heatmaps, expected_heatmaps, atol=1e-6)
    np.testing.assert_allclose(pafs, expected_pafs, atol=1e-6)


def _run_both_backends(tiny_model, tiny_batches):
    spec = load_model_spec(str(tiny_model))
    ort_backend = create_backend(spec, BackendConfig(name="onnxruntime"))
    ov_backend = create_backend(spec, BackendConfig(name="openvino"))
    assert isinstance(ov_backend, OpenVinoBackend)
    for n in (1, 3):
        ort_heatmaps, ort_pafs = ort_backend.infer(tiny_batches[n])
        ov_heatmaps, ov_pafs = ov_backend.infer(tiny_batches[n])
        assert ov_heatmaps.shape == ort_heatmaps.shape == (n, 19, 8, 12)
        assert ov_pafs.shape == ort_pafs.shape == (n, 38, 8, 12)
        yield (ov_heatmaps, ort_heatmaps), (ov_pafs, ort_pafs)


def test_openvino_runs_the_same_onnx_close_to_onnxruntime(tiny_model, tiny_batches):
    """Same network, same batch: the two runtimes agree within reduced-precision (bf16) rounding."""
    for pairs in _run_both_backends(tiny_model, tiny_batches):
        for ov_maps, ort_maps in pairs:
            np.testing.assert_allclose(ov_maps, ort_maps, atol=5e-3)


def test_openvino_runs_the_same_onnx_with_the_same_outputs(tiny_model, tiny_batches):
    """float32 in, float32 out: OpenVINO computes in f32 like ONNX Runtime does (its CPU plugin would pick
    bf16 on CPUs that have it unless the backend pins the precision)."""
    for pairs in _run_both_backends(tiny_model, tiny_batches):
        for ov_maps, ort_maps in pairs:
            np.testing.assert_allclose(ov_maps, ort_maps, atol=1e-4)


def test_openvino_serves_every_batch_size_from_one_compiled_model(tiny_model, tiny_batches):
    """The batcher forms batches of any size up to --batch: one model compiled with a dynamic batch serves
    them all (a static one per size cost ~25 MiB each and grew a 16-camera soak in steps), and each image's
    maps are the same whatever batch it came in."""
    backend = create_backend(load_model_spec(str(tiny_model)), BackendConfig(name="openvino", max_batch=3))
    batch = tiny_batches[3]
    together = backend.infer(batch)
    for n in (1, 2):
        alone = backend.infer(batch[:n])
        for maps_alone, maps_together in zip(alone, together):
            np.testing.assert_allclose(maps_alone, maps_together[:n], atol=1e-5)
    assert len(backend._compiled) == 1  # one input size, one compiled model


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
@pytest.mark.parametrize("changes, expected", [
    pytest.param({"outputs": {"heatmaps": "pafs", "pafs": "heatmaps"}},
                 ["heatmaps output 'pafs' has 38 channels but the sidecar implies 19"], id="outputs-swapped"),
    pytest.param({"stride": 4}, ["heatmaps output 'heatmaps' height is 8", "gives 16"], id="wrong-stride"),
    pytest.param({"input": "override-name"}, ["input 'data' not in the model", "image"], id="input-name"),
])
def test_tiny_model_sidecar_mismatch(tmp_path, tiny_model, backend, changes, expected):
    data = tiny_sidecar_data(str(tiny_model))
    if changes.get("input") == "override-name":
        data["input"]["name"] = "data"
    else:
        data.update(copy.deepcopy(changes))
    sidecar = write_json(tmp_path / "mismatch.pose.json", data)
    with pytest.raises(PosestreamError) as info:
        load_and_validate(str(sidecar), backend)
    assert str(sidecar) in info.value.subject
    for part in expected:
        assert part in info.value.problem, str(info.value)


@pytest.mark.shared
def test_onnxruntime_backend_on_xml_model_is_a_clear_error(shared):
    spec = load_model_spec("hpe-0001")
    with pytest.raises(PosestreamError) as info:
        create_backend(spec, BackendConfig(name="onnxruntime"))
    assert info.value.subject == str(spec.model_path)
    assert "ONNX Runtime runs .onnx models only" in info.value.problem
    assert "--backend openvino" in info.value.problem


@pytest.mark.parametrize("name", ["tensorrt-ish", "ONNXRUNTIME", ""])
def test_unknown_backend_name_is_a_clear_error(tiny_model, name):
    spec = load_model_spec(str(tiny_model))
    with pytest.raises(PosestreamError) as info:
        create_backend(spec, BackendConfig(name=name))
    assert info.value.subject == name
    assert "unknown backend" in info.value.problem
    for known in BACKEND_NAMES:
        assert known in info.value.problem


@pytest.mark.parametrize("backend", ["auto", "onnxruntime", "openvino"])
def test_corrupt_onnx_file_names_the_file(tmp_path, backend):
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(np.random.default_rng(5).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    write_json(tmp_path / "corrupt.pose.json", tiny_sidecar_data("corrupt.onnx"))
    spec = load_model_spec(str(corrupt))  # the sidecar itself is fine
    with pytest.raises(PosestreamError) as info:
        create_backend(spec, BackendConfig(name=backend))
    assert info.value.subject == str(corrupt)
    assert "cannot load the model" in info.value.problem
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------------------------------------------
# Known bugs (reported): these inputs escape as raw exceptions (a traceback from the CLI) instead of a
# one-line PosestreamError naming the sidecar. The tests assert the correct behaviour.
# --------------------------------------------------------------------------------------------------------------


def test_fixed_size_onnx_with_other_sidecar_size_names_the_sidecar(tmp_path):
    make_tiny_pose_onnx(tmp_path / "fixed.onnx", batch=1, fixed_size=(TINY_HEIGHT, TINY_WIDTH))
    data = tiny_sidecar_data("fixed.onnx")
    data["input"]["height"] = 2 * TINY_HEIGHT  # the network only takes 64 x 96
    sidecar = write_json(tmp_path / "fixed.pose.json", data)
    with pytest.raises(PosestreamError) as info:
        load_and_validate(str(sidecar), "onnxruntime")
    assert str(sidecar) in str(info.value)


def test_fixed_size_onnx_with_its_own_size_validates(tmp_path):
    make_tiny_pose_onnx(tmp_path / "fixed.onnx", batch=1, fixed_size=(TINY_HEIGHT, TINY_WIDTH))
    write_json(tmp_path / "fixed.pose.json", tiny_sidecar_data("fixed.onnx"))
    backend = load_and_validate(str(tmp_path / "fixed.onnx"), "onnxruntime")
    assert not backend.resizable
    heatmaps, pafs = backend.infer(np.zeros((2, 3, TINY_HEIGHT, TINY_WIDTH), np.float32))
    assert heatmaps.shape == (2, 19, 8, 12) and pafs.shape == (2, 38, 8, 12)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
@pytest.mark.parametrize("field, value", [
    pytest.param("input.pad_value", "black", id="pad_value-not-a-number"),
    pytest.param("input.height", 0, id="height-zero"),
    pytest.param("input.height", -64, id="height-negative"),
    pytest.param("redundant_limbs", 5, id="redundant_limbs-not-a-list"),
    pytest.param("input.resizable", "false", id="resizable-a-string"),
])
def test_bad_field_values_name_the_sidecar(tmp_path, tiny_model, backend, field, value):
    data = tiny_sidecar_data(str(tiny_model))
    *parents, last = field.split(".")
    target = data
    for key in parents:
        target = target[key]
    target[last] = value
    sidecar = write_json(tmp_path / "bad-value.pose.json", data)
    with pytest.raises(PosestreamError) as info:
        load_and_validate(str(sidecar), backend)
    assert str(sidecar) in str(info.value)
    assert last in info.value.problem
