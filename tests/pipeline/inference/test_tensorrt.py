"""TensorRT engines: shape ranges, build config, cache keys, the cache on disk, buffer plans, engine sidecars.

These parts are plain Python and run everywhere. Building and running engines needs TensorRT and a GPU; those
tests are at the end, under ``pytest.importorskip("tensorrt")``, and compare the engine with ONNX Runtime.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from posestream.pipeline.core.errors import PosestreamError
from posestream.pipeline.core.model import load_model_spec
from posestream.pipeline.inference.backends import BackendConfig, create_backend
from posestream.pipeline.inference.tensorrt import (
    DimRange,
    EngineBuildConfig,
    buffers_to_grow,
    build_engine,
    cache_entry,
    cache_key_parts,
    cached_engine,
    check_input_shape,
    engine_cache_key,
    engine_sidecar_data,
    has_quantize_nodes,
    parse_batch_range,
    parse_range,
    parse_shapes,
    plan_buffers,
    write_manifest,
)
from tests.helpers.tiny_pose import TINY_HEIGHT, TINY_WIDTH, make_tiny_pose_onnx, tiny_sidecar_data, write_json

SHA = "ab" * 32
BASE = EngineBuildConfig(precision="fp16", batch=DimRange(1, 4, 8), height=DimRange(256, 368, 512),
                         width=DimRange(256, 656, 896))


# ------------------------------------------------------------------------------------------- ranges and shapes


@pytest.mark.parametrize("text, expected", [("1:4:8", (1, 4, 8)), ("4", (4, 4, 4)), (" 2:2:3 ", (2, 2, 3))])
def test_parse_batch_range(text, expected):
    parsed = parse_batch_range(text)
    assert (parsed.min, parsed.opt, parsed.max) == expected


@pytest.mark.parametrize("text, problem", [
    ("1:4", "N or MIN:OPT:MAX"),
    ("1:2:3:4", "N or MIN:OPT:MAX"),
    ("a:b:c", "whole numbers"),
    ("1.5", "whole numbers"),
    ("", "whole numbers"),
    ("0:1:2", "positive"),
    ("-1", "positive"),
    ("4:2:8", "MIN <= OPT <= MAX"),
    ("1:8:4", "MIN <= OPT <= MAX"),
])
def test_parse_batch_range_errors(text, problem):
    with pytest.raises(PosestreamError) as info:
        parse_batch_range(text)
    assert problem in info.value.problem
    assert info.value.subject == f"batch {text!r}"


def test_parse_range_names_the_option():
    assert parse_range("256:368:512", "height") == DimRange(256, 368, 512)
    assert parse_range("656", "width").fixed
    with pytest.raises(PosestreamError) as info:
        parse_range("512:368:256", "height")
    assert info.value.subject == "height '512:368:256'"


def test_parse_shapes():
    batch, height, width = parse_shapes("1x3x256x256:4x3x368x656:8x3x512x896")
    assert (batch, height, width) == (DimRange(1, 4, 8), DimRange(256, 368, 512), DimRange(256, 656, 896))
    assert parse_shapes("2x3x64x96") == (DimRange(2, 2, 2), DimRange(64, 64, 64), DimRange(96, 96, 96))
    for bad, problem in (("1x3x256", "N x 3 x H x W"), ("1x1x256x256", "N x 3 x H x W"),
                         ("1x3x256x256:4x3x368x656", "MIN:OPT:MAX"), ("axbxcxd", "not NxCxHxW"),
                         ("1x3x512x512:4x3x368x656:8x3x512x896", "MIN <= OPT <= MAX")):
        with pytest.raises(PosestreamError, match=problem):
            parse_shapes(bad)


def test_build_config_validation():
    assert BASE.input_shapes() == ((1, 3, 256, 256), (4, 3, 368, 656), (8, 3, 512, 896))
    with pytest.raises(PosestreamError, match="unknown precision"):
        EngineBuildConfig(precision="bf16")
    with pytest.raises(PosestreamError, match="DLA runs fp16 or int8"):
        EngineBuildConfig(precision="fp32", dla_core=0)
    with pytest.raises(PosestreamError, match="workspace"):
        EngineBuildConfig(workspace_mb=0)
    with pytest.raises(PosestreamError, match="MIN <= OPT <= MAX"):
        DimRange(4, 2, 8)


def test_check_input_shape():
    assert check_input_shape((4, 3, 368, 656), BASE.batch, BASE.height, BASE.width) is None
    assert check_input_shape((9, 3, 368, 656), BASE.batch, BASE.height, BASE.width) == "batch 9 outside 1..8"
    problem = check_input_shape((1, 3, 128, 1024), BASE.batch, BASE.height, BASE.width)
    assert problem == "height 128 outside 256..512; width 1024 outside 256..896"
    assert "not N x 3 x H x W" in check_input_shape((1, 1, 368, 656), BASE.batch, BASE.height, BASE.width)


# ----------------------------------------------------------------------------------------------- cache keys


def test_cache_key_is_stable():
    key = engine_cache_key("NVIDIA H100 (sm_90)", "10.3.0", SHA, BASE)
    assert key == engine_cache_key("NVIDIA H100 (sm_90)", "10.3.0", SHA, dataclasses.replace(BASE))
    assert len(key) == 24 and int(key, 16) >= 0
    # Build-speed settings do not change what the engine is valid for.
    assert key == engine_cache_key("NVIDIA H100 (sm_90)", "10.3.0", SHA,
                                   dataclasses.replace(BASE, workspace_mb=4096, timing_cache=Path("t.cache")))


@pytest.mark.parametrize("change", [
    dict(gpu="Orin (sm_87)"), dict(trt="10.4.0"), dict(sha="cd" * 32),
    dict(precision="fp32"), dict(precision="int8"),
    dict(batch=DimRange(1, 4, 16)), dict(batch=DimRange(2, 4, 8)), dict(batch=DimRange(1, 2, 8)),
    dict(height=DimRange(256, 368, 368)), dict(width=DimRange(256, 456, 896)),
    dict(dla_core=0), dict(dla_core=1), dict(dla_core=0, gpu_fallback=False),
])
def test_cache_key_changes_with_each_part(change):
    base_key = engine_cache_key("NVIDIA H100 (sm_90)", "10.3.0", SHA, BASE)
    change = dict(change)
    gpu, trt, sha = change.pop("gpu", "NVIDIA H100 (sm_90)"), change.pop("trt", "10.3.0"), change.pop("sha", SHA)
    assert engine_cache_key(gpu, trt, sha, dataclasses.replace(BASE, **change)) != base_key


def test_gpu_fallback_matters_only_with_dla():
    key = engine_cache_key("g", "10", SHA, BASE)
    assert engine_cache_key("g", "10", SHA, dataclasses.replace(BASE, gpu_fallback=False)) == key
    dla = dataclasses.replace(BASE, dla_core=0)
    assert engine_cache_key("g", "10", SHA, dla) != engine_cache_key("g", "10", SHA, dataclasses.replace(dla, gpu_fallback=False))


def test_cache_on_disk(tmp_path):
    parts = cache_key_parts("g", "10.3.0", SHA, BASE)
    entry = cache_entry(tmp_path, engine_cache_key("g", "10.3.0", SHA, BASE))
    assert entry.engine_path == tmp_path / f"{entry.key}.engine"
    assert entry.manifest_path == tmp_path / f"{entry.key}.json"
    assert entry.sidecar_path == tmp_path / f"{entry.key}.pose.json"
    assert not cached_engine(entry, parts)
    entry.engine_path.write_bytes(b"engine bytes")
    assert not cached_engine(entry, parts)  # an engine without its manifest is not trusted
    write_manifest(entry, parts, Path("model.onnx"), 12.5)
    assert cached_engine(entry, parts)
    manifest = json.loads(entry.manifest_path.read_text())
    assert manifest["parts"] == parts and manifest["engine_bytes"] == len(b"engine bytes")
    assert manifest["parts"]["batch"] == [1, 4, 8] and manifest["parts"]["precision"] == "fp16"
    assert not cached_engine(entry, {**parts, "tensorrt": "10.4.0"})
    entry.manifest_path.write_text("{broken")
    assert not cached_engine(entry, parts)


# ---------------------------------------------------------------------------------------------- buffer plans


def test_buffer_plan():
    plan = plan_buffers([("image", True, (2, 3, 64, 96), np.float32),
                         ("heatmaps", False, (2, 19, 8, 12), np.float16),
                         ("pafs", False, [2, 38, 8, 12], "float32")])
    assert [b.name for b in plan] == ["image", "heatmaps", "pafs"]
    assert [b.is_input for b in plan] == [True, False, False]
    assert plan[0].nbytes == 2 * 3 * 64 * 96 * 4
    assert plan[1].nbytes == 2 * 19 * 8 * 12 * 2 and plan[1].dtype == np.float16
    assert plan[2].shape == (2, 38, 8, 12) and plan[2].elements == 2 * 38 * 96
    with pytest.raises(ValueError, match="unresolved shape"):
        plan_buffers([("image", True, (-1, 3, 64, 96), np.float32)])


def test_buffers_are_reused_while_shapes_fit():
    def plan_for(batch, height, width):
        return plan_buffers([("image", True, (batch, 3, height, width), np.float32),
                             ("heatmaps", False, (batch, 19, height // 8, width // 8), np.float32)])

    first = plan_for(2, 64, 96)
    assert buffers_to_grow(first, {}) == first  # nothing allocated yet
    capacities = {b.name: b.elements for b in first}
    assert buffers_to_grow(first, capacities) == ()
    assert buffers_to_grow(plan_for(1, 64, 96), capacities) == ()  # smaller: reuse
    grown = buffers_to_grow(plan_for(4, 64, 96), capacities)
    assert [b.name for b in grown] == ["image", "heatmaps"]


# --------------------------------------------------------------------------------------- sidecars and errors


@pytest.fixture()
def tiny_onnx(tmp_path) -> Path:
    onnx_path = make_tiny_pose_onnx(tmp_path / "tiny.onnx")
    write_json(tmp_path / "tiny.pose.json", tiny_sidecar_data("tiny.onnx"))  # resizable
    return onnx_path


@pytest.mark.parametrize("fixed", [True, False])
def test_engine_sidecar_loads_and_selects_tensorrt(tiny_onnx, tmp_path, fixed):
    sidecar = json.loads(tiny_onnx.with_name("tiny.pose.json").read_text())
    ranges = (DimRange(64, 64, 64), DimRange(96, 96, 96)) if fixed else (DimRange(32, 64, 128), DimRange(64, 96, 192))
    config = EngineBuildConfig(batch=DimRange(1, 2, 4), height=ranges[0], width=ranges[1])
    engine = tmp_path / "abc.engine"
    engine.write_bytes(b"not really an engine")
    write_json(tmp_path / "abc.pose.json", engine_sidecar_data(sidecar, "abc.engine", config))
    spec = load_model_spec(str(tmp_path / "abc.pose.json"))
    assert spec.model_path == engine and spec.backend_hint == "tensorrt"
    assert (spec.input.height, spec.input.width) == (64, 96)
    assert spec.input.resizable is (not fixed)
    assert spec.heatmaps_output == sidecar["outputs"]["heatmaps"]


def test_model_files_and_backends_must_match(tiny_onnx, tmp_path):
    spec = load_model_spec(str(tiny_onnx))
    with pytest.raises(PosestreamError, match="serialized engines"):
        create_backend(spec, BackendConfig(name="tensorrt"))
    with pytest.raises(PosestreamError, match="sidecar names its network"):
        create_backend(spec, BackendConfig(name="torch"))


def test_tensorrt_backend_without_tensorrt_says_so(tiny_onnx, tmp_path):
    try:
        import tensorrt  # noqa: F401
        pytest.skip("tensorrt is installed here")
    except ImportError:
        pass
    sidecar = json.loads(tiny_onnx.with_name("tiny.pose.json").read_text())
    (tmp_path / "e.engine").write_bytes(b"x")
    write_json(tmp_path / "e.pose.json", engine_sidecar_data(sidecar, "e.engine", EngineBuildConfig(
        height=DimRange(64, 64, 64), width=DimRange(96, 96, 96))))
    with pytest.raises(PosestreamError) as info:
        create_backend(load_model_spec(str(tmp_path / "e.pose.json")), BackendConfig())
    assert info.value.subject == "tensorrt" and "not installed" in info.value.problem


def test_quantize_nodes_are_detected(tiny_onnx, tmp_path, shared):
    from posestream.trainers.export.quantize import QuantizeConfig, quantize_onnx

    assert not has_quantize_nodes(tiny_onnx.read_bytes())
    quantized = quantize_onnx(tiny_onnx, tmp_path / "tiny.int8.onnx", QuantizeConfig(calibration="lsp", calibration_count=2))
    assert has_quantize_nodes(quantized.int8_path.read_bytes())
    # A CPU-target INT8 model has zero points TensorRT cannot take: refused before TensorRT is needed.
    with pytest.raises(PosestreamError, match="--int8-target tensorrt"):
        build_engine(quantized.int8_path, EngineBuildConfig(precision="int8", height=DimRange(64, 64, 64),
                                                            width=DimRange(96, 96, 96)), tmp_path)
    with pytest.raises(PosestreamError, match="build it with --int8"):
        build_engine(quantized.int8_path, EngineBuildConfig(precision="fp16", height=DimRange(64, 64, 64),
                                                            width=DimRange(96, 96, 96)), tmp_path)


def test_precision_must_fit_the_model(tiny_onnx, tmp_path):
    # Checked before TensorRT is needed, so these errors come the same with or without it.
    with pytest.raises(PosestreamError, match="needs a Q/DQ"):
        build_engine(tiny_onnx, EngineBuildConfig(precision="int8", height=DimRange(64, 64, 64),
                                                  width=DimRange(96, 96, 96)), tmp_path)
    with pytest.raises(PosestreamError, match="multiples of stride 8"):
        build_engine(tiny_onnx, EngineBuildConfig(precision="fp16", height=DimRange(60, 60, 60),
                                                  width=DimRange(96, 96, 96)), tmp_path)


def test_cli_build_engine_errors(tiny_onnx, capsys):
    from posestream.pipeline.cli.main import main

    assert main(["build-engine", str(tiny_onnx), "--batch", "8:1:4"]) == 1
    assert "batch '8:1:4': expected MIN <= OPT <= MAX" in capsys.readouterr().err
    assert main(["build-engine", str(tiny_onnx), "--shapes", "1x3x64x96", "--batch", "2"]) == 1
    assert "either --shapes or --batch" in capsys.readouterr().err
    assert main(["build-engine", str(tiny_onnx), "--fp32", "--dla-core", "0"]) == 1
    assert "DLA runs fp16 or int8" in capsys.readouterr().err


# ------------------------------------------------------------------------------------- TensorRT on a real GPU


@pytest.fixture()
def tensorrt_gpu():
    trt = pytest.importorskip("tensorrt")
    from numba import cuda

    if not cuda.is_available():
        pytest.skip("tensorrt is installed but no CUDA GPU is available")
    return trt


def test_engine_builds_caches_and_matches_onnxruntime(tensorrt_gpu, tiny_onnx, tmp_path):
    config = EngineBuildConfig(precision="fp32", batch=DimRange(1, 2, 4), height=DimRange(32, 64, 128),
                               width=DimRange(64, 96, 192), timing_cache=tmp_path / "timing.cache")
    first = build_engine(tiny_onnx, config, tmp_path / "cache", show_progress=False)
    assert not first.from_cache and first.entry.engine_path.stat().st_size > 0
    assert (tmp_path / "timing.cache").stat().st_size > 0
    again = build_engine(tiny_onnx, config, tmp_path / "cache")
    assert again.from_cache and again.entry == first.entry

    engine_spec = load_model_spec(str(first.entry.sidecar_path))
    engine = create_backend(engine_spec, BackendConfig())
    reference = create_backend(load_model_spec(str(tiny_onnx)), BackendConfig(name="onnxruntime"))
    rng = np.random.default_rng(3)
    for batch, height, width in ((1, 64, 96), (3, 32, 192), (6, 64, 96)):  # 6 > max batch: runs in slices
        inputs = rng.uniform(-0.5, 0.5, (batch, 3, height, width)).astype(np.float32)
        for got, expected in zip(engine.infer(inputs), reference.infer(inputs)):
            np.testing.assert_allclose(got, expected, atol=1e-4)
    heatmaps, pafs = engine.infer_device(np.zeros((2, 3, 64, 96), np.float32))
    engine.stream.synchronize()
    assert heatmaps.shape == (2, 19, 8, 12) and pafs.shape == (2, 38, 8, 12)
    with pytest.raises(PosestreamError, match="height 256 outside 32..128"):
        engine.infer(np.zeros((1, 3, 256, 96), np.float32))


def test_fp16_engine_is_close_to_onnxruntime(tensorrt_gpu, tiny_onnx, tmp_path):
    config = EngineBuildConfig(precision="fp16", batch=DimRange(1, 1, 2), height=DimRange(TINY_HEIGHT, TINY_HEIGHT, TINY_HEIGHT),
                               width=DimRange(TINY_WIDTH, TINY_WIDTH, TINY_WIDTH))
    result = build_engine(tiny_onnx, config, tmp_path, show_progress=False)
    engine = create_backend(load_model_spec(str(result.entry.sidecar_path)), BackendConfig())
    assert not engine.resizable
    reference = create_backend(load_model_spec(str(tiny_onnx)), BackendConfig(name="onnxruntime"))
    inputs = np.random.default_rng(4).uniform(-0.5, 0.5, (2, 3, TINY_HEIGHT, TINY_WIDTH)).astype(np.float32)
    for got, expected in zip(engine.infer(inputs), reference.infer(inputs)):
        np.testing.assert_allclose(got, expected, atol=2e-2)
