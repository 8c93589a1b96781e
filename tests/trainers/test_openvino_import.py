"""The hpe-0001 importer: Intel's INT8 IR dequantised into our PyTorch Lightweight OpenPose, one weight per
parameter, matching the IR with its activation FakeQuantizes bypassed (issue 15's parity target <= 1e-4)."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("openvino")

from posestream.pipeline.networks.lightweight_openpose import (  # noqa: E402
    LightweightOpenPose,
    freeze_batch_norm,
    normalize_bgr,
)
from posestream.trainers.export.openvino_import import (  # noqa: E402
    bypass_activation_fake_quantize,
    compile_ir,
    import_into,
    ir_paf_order,
    read_openvino_weights,
)

PARAMETERS = 4_099_058  # read off the IR: 58 convolutions (44 regular, 14 depthwise) with their biases


@pytest.fixture(scope="module")
def ir(shared):
    return str(shared / "weights/human-pose-estimation-0001/human-pose-estimation-0001.xml")


@pytest.fixture(scope="module")
def imported(ir):
    torch.set_num_threads(1)
    return import_into(LightweightOpenPose().eval(), ir)


@pytest.mark.shared
def test_every_weight_is_imported_once(ir, imported):
    weights = read_openvino_weights(ir)
    assert sum(value.size for value in weights.values()) == PARAMETERS
    assert sum(p.numel() for p in imported.parameters()) == PARAMETERS


@pytest.mark.shared
def test_the_imported_network_matches_the_ir_without_activation_quantization(ir, imported):
    raw = np.random.default_rng(1).integers(0, 256, (1, 3, 250, 450)).astype(np.float32)  # not a multiple of 8
    with torch.no_grad():
        stages = imported(normalize_bgr(torch.from_numpy(raw)))
    reference = compile_ir(bypass_activation_fake_quantize(ir), (1, 3, 250, 450))(raw)
    heatmaps, pafs = reference["Mconv7_stage2_L2"], reference["Mconv7_stage2_L1"]
    assert stages[1][0].shape == heatmaps.shape == (1, 19, 32, 57)
    assert np.abs(stages[1][0].numpy() - heatmaps).max() <= 1e-4
    assert np.abs(stages[1][1].numpy() - pafs).max() <= 1e-4


@pytest.mark.shared
def test_the_batch_norm_variant_starts_as_the_same_function_and_can_stay_frozen(ir, imported):
    with_bn = import_into(LightweightOpenPose(batch_norm=True).eval(), ir)
    x = normalize_bgr(torch.from_numpy(np.random.default_rng(2).integers(0, 256, (1, 3, 128, 128))
                                       .astype(np.float32)))
    with torch.no_grad():
        plain, normed = imported(x), with_bn(x)
    assert max((a - b).abs().max().item() for s, t in zip(plain, normed) for a, b in zip(s, t)) < 1e-5
    freeze_batch_norm(with_bn)
    with_bn.train()
    outputs = with_bn(x)  # BN goes back to eval mode as the forward starts: statistics are not updated
    norms = [m for m in with_bn.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(not m.training and not m.weight.requires_grad for m in norms)
    assert all(float(m.running_mean.abs().max()) == 0 for m in norms)
    sum(t.square().mean() for stage in outputs for t in stage).backward()
    assert all(m.weight.grad is None for m in norms)


@pytest.mark.shared
def test_a_mismatching_architecture_fails_naming_the_layer(ir):
    with pytest.raises(ValueError, match="conv5_5_CPM_L2"):
        import_into(LightweightOpenPose(num_heatmaps=17), ir)


@pytest.mark.shared
def test_import_command_writes_a_checkpoint_in_our_layout_that_the_pipeline_runs(ir, shared, tmp_path, capsys):
    """`posestream import-openvino`: parity table, a checkpoint + sidecar, and the torch backend's maps equal
    the IR's with its PAF channels put in our limb order."""
    from posestream.pipeline.cli.main import main as cli_main
    from posestream.pipeline.core.model import load_model_spec
    from posestream.pipeline.estimators.create import EstimatorSettings, create_estimator

    out = tmp_path / "hpe.pt"
    assert cli_main(["import-openvino", ir, "--out", str(out)]) == 0
    report = capsys.readouterr().out
    assert "4,099,058 parameters" in report and "tolerance 1e-04: ok" in report
    assert report.count("IR, INT8 as shipped") == 2 and "368x656" in report and "256x456" in report

    estimator = create_estimator(EstimatorSettings(model=str(out), backend="torch", input_height=256))
    image = np.ascontiguousarray(np.random.default_rng(3).integers(0, 256, (256, 456, 3)).astype(np.uint8))
    batch = np.empty((1, 3, 256, 456), np.float32)
    from posestream.pipeline.inference.preprocess import fill_input, plan_letterbox
    box = plan_letterbox(256, 456, estimator.spec.input, 8, True, 256)
    fill_input(image, box, estimator.spec.input, batch[0])
    heatmaps, pafs = estimator.backend.infer(batch)
    reference = compile_ir(bypass_activation_fake_quantize(ir), (1, 3, 256, 456))(batch * 256 + 128)
    permutation = ir_paf_order(load_model_spec("hpe-0001").paf_channels)
    assert np.abs(heatmaps - reference["Mconv7_stage2_L2"]).max() <= 1e-4
    assert np.abs(pafs - reference["Mconv7_stage2_L1"][:, permutation]).max() <= 1e-4


@pytest.mark.shared
def test_import_command_names_a_missing_ir(tmp_path, capsys):
    from posestream.pipeline.cli.main import main as cli_main

    assert cli_main(["import-openvino", str(tmp_path / "nope.xml"), "--out", str(tmp_path / "x.pt")]) == 1
    assert "nope.xml" in capsys.readouterr().err
