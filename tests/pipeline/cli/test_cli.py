"""The ``posestream`` command line: help, errors and exit codes, and end-to-end runs on the real shared data.

Most tests call ``posestream.pipeline.cli.main.main([...])`` in-process with capsys; a few run ``python -m posestream.pipeline.cli``
and the installed ``posestream`` script in a subprocess to prove the entry points and exit codes for real.
"""
from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from posestream.pipeline.cli.main import main
from tests.helpers.tiny_pose import HPE_IR_RELATIVE, tiny_sidecar_data, write_json

VTEST = "data/video/vtest.avi"
VTEST_W, VTEST_H = 768, 576
COCO_DIR = "data/mmpose/coco"
ERROR_PREFIX = "posestream: error: "
RECORD_KEYS = {"stream", "source", "frame", "pts", "persons"}
PERSON_KEYS = {"score", "bbox", "keypoints", "track_id"}
# The COCO AP of hpe-0001 on the 4 mmpose COCO val images at input height 368 (the sidecar default).
COCO_AP_MEASURED = 0.781


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    """Run the CLI in this process; returns (exit code, stdout, stderr)."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_:  # argparse: --help, --version and usage errors
        code = exit_.code if isinstance(exit_.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(ERROR_PREFIX)]


def read_jsonl(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n") and "\n\n" not in text  # \n line ends, no blank lines
    return [json.loads(line) for line in text.splitlines()]


def check_record(record: dict, line: str | None = None) -> None:
    """One JSONL record against docs/output-schema.md."""
    assert RECORD_KEYS <= set(record), record.keys()
    assert isinstance(record["stream"], int) and record["stream"] >= 0
    assert isinstance(record["source"], str) and record["source"]
    assert isinstance(record["frame"], int) and record["frame"] >= 0
    assert record["pts"] is None or isinstance(record["pts"], float)
    assert isinstance(record["persons"], list)
    if line is not None:  # written compactly: one line, no spaces between tokens
        assert line == json.dumps(record, separators=(",", ":"), ensure_ascii=False)
    for person in record["persons"]:
        assert PERSON_KEYS <= set(person), person.keys()
        assert isinstance(person["score"], float) and 0.0 <= person["score"] <= 1.0
        assert round(person["score"], 4) == person["score"]
        bbox = person["bbox"]
        assert len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)
        assert bbox[2] >= 0 and bbox[3] >= 0
        assert person["track_id"] is None or (isinstance(person["track_id"], int) and person["track_id"] >= 1)
        keypoints = np.asarray(person["keypoints"], dtype=np.float64)
        assert keypoints.shape == (17, 3)
        assert np.isfinite(keypoints).all()
        confidence = keypoints[:, 2]
        assert ((confidence >= 0) & (confidence <= 1)).all()
        assert (keypoints[confidence == 0, :2] == 0).all()  # not found: [0, 0, 0]
        found = keypoints[confidence > 0]
        assert len(found) >= 1
        for value, rounded in ((keypoints[:, :2], 2), (confidence, 4)):
            np.testing.assert_allclose(np.round(value, rounded), value, atol=1e-9)
        # The box is the box around the found keypoints (each rounded on its own, so 0.01 slack).
        x0, y0 = found[:, 0].min(), found[:, 1].min()
        x1, y1 = found[:, 0].max(), found[:, 1].max()
        np.testing.assert_allclose(bbox, [x0, y0, x1 - x0, y1 - y0], atol=0.011)


def keypoint_counts(record: dict) -> list[int]:
    return [sum(1 for k in person["keypoints"] if k[2] > 0) for person in record["persons"]]


def write_test_images(folder: Path, count: int = 2) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        image = np.full((120, 160, 3), 60 + 40 * i, np.uint8)
        cv2.circle(image, (80, 60), 30, (0, 200, 255), -1)
        path = folder / f"synthetic_{i}.png"
        assert cv2.imwrite(str(path), image)
        paths.append(path)
    return paths


# --------------------------------------------------------------------------------------------------------------
# Help and version
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv, expected", [
    pytest.param(["--help"], ["usage: posestream", "run", "eval", "models", "--version"], id="posestream"),
    pytest.param(["run", "--help"], ["usage: posestream run", "SOURCE", "--model", "--backend", "--input-height",
                                     "--threads", "--out-jsonl", "--out-video", "--batch", "--max-frames",
                                     "--no-progress", "--no-track", "--no-smooth", "--track-buffer",
                                     "--track-min-hits", "--smooth-min-cutoff", "--smooth-beta"], id="run"),
    pytest.param(["eval", "--help"], ["usage: posestream eval", "coco", "lsp"], id="eval"),
    pytest.param(["eval", "coco", "--help"], ["usage: posestream eval coco", "--images", "--ann", "--model",
                                              "--backend", "--input-height", "--max-images", "--out-json",
                                              "--no-progress"], id="eval-coco"),
    pytest.param(["eval", "lsp", "--help"], ["usage: posestream eval lsp", "--data", "--split", "--model",
                                             "--max-images", "--out-json"], id="eval-lsp"),
    pytest.param(["models", "--help"], ["usage: posestream models"], id="models"),
])
def test_help(capsys, argv, expected):
    code, out, err = cli(capsys, *argv)
    assert code == 0
    assert err == ""
    for text in expected:
        assert text in out, f"{text!r} not in help:\n{out}"


def test_version(capsys):
    code, out, _ = cli(capsys, "--version")
    assert code == 0
    assert out.strip() == f"posestream {version('posestream')}"


@pytest.mark.parametrize("argv", [
    pytest.param([], id="no-command"),
    pytest.param(["run"], id="run-without-source"),
    pytest.param(["run", "x.mp4", "--max-frames", "0"], id="max-frames-zero"),
    pytest.param(["run", "x.mp4", "--batch", "-2"], id="batch-negative"),
    pytest.param(["run", "x.mp4", "--track-buffer", "-1"], id="track-buffer-negative"),
    pytest.param(["run", "x.mp4", "--smooth-min-cutoff", "0"], id="smooth-cutoff-zero"),
    pytest.param(["eval", "coco", "--images", "."], id="eval-coco-without-ann"),
    pytest.param(["eval", "lsp", "--data", ".", "--split", "val"], id="lsp-bad-split"),
])
def test_usage_errors_exit_2_with_usage(capsys, argv):
    code, out, err = cli(capsys, *argv)
    assert code == 2
    assert out == ""
    assert "usage: posestream" in err


# --------------------------------------------------------------------------------------------------------------
# Errors: exit 1 and one line naming the input
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.shared
def test_missing_source_file(capsys, shared, tmp_path):
    missing = tmp_path / "no-such-video.mp4"
    code, out, err = cli(capsys, "run", missing, "--no-progress")
    assert code == 1
    assert out == ""
    assert error_lines(err) == [f"{ERROR_PREFIX}{missing}: no such file or directory"]


@pytest.mark.shared
@pytest.mark.parametrize("name", ["notes.txt", "notes.mp4"])
def test_text_file_given_as_video(capsys, shared, tmp_path, name):
    text_file = tmp_path / name
    text_file.write_text("this is not a video\n" * 20)
    code, out, err = cli(capsys, "run", text_file, "--no-progress")
    assert code == 1
    assert out == ""
    lines = error_lines(err)
    assert len(lines) == 1
    assert lines[0].startswith(f"{ERROR_PREFIX}{text_file}: ")
    assert "not a readable video" in lines[0]


@pytest.mark.shared
def test_one_missing_source_does_not_stop_the_others(capsys, shared, tmp_path):
    missing = tmp_path / "gone.avi"
    video = shared / VTEST
    jsonl = tmp_path / "out.jsonl"
    code, out, err = cli(capsys, "run", missing, video, "--max-frames", "3", "--out-jsonl", jsonl, "--no-progress")
    assert code == 1
    assert out == ""
    lines = error_lines(err)
    assert len(lines) == 1 and str(missing) in lines[0]
    records = read_jsonl(jsonl)
    assert [(r["stream"], r["source"], r["frame"]) for r in records] == [(1, str(video), i) for i in range(3)]
    assert f"stream 1 {video}: 3 frames" in err  # the summary reports the good stream too
    assert f"stream 0 {missing}: FAILED" in err


def test_unknown_backend(capsys, tiny_model, tmp_path):
    images = write_test_images(tmp_path / "images", 1)
    code, out, err = cli(capsys, "run", images[0], "--model", tiny_model, "--backend", "tensorflow")
    assert code == 1
    assert out == ""
    lines = error_lines(err)
    assert len(lines) == 1
    assert lines[0].startswith(f"{ERROR_PREFIX}tensorflow: unknown backend")
    assert "onnxruntime" in lines[0] and "openvino" in lines[0]


def test_gpu_parse_on_a_host_backend_is_a_clear_error(capsys, tiny_model, tmp_path):
    images = write_test_images(tmp_path / "images", 1)
    code, out, err = cli(capsys, "run", images[0], "--model", tiny_model, "--parse-device", "cuda")
    assert code == 1
    lines = error_lines(err)
    assert len(lines) == 1 and "cannot parse on the GPU" in lines[0] and lines[0].startswith(f"{ERROR_PREFIX}onnxruntime")


@pytest.mark.shared
def test_onnxruntime_backend_on_the_xml_model(capsys, shared, tmp_path):
    images = write_test_images(tmp_path / "images", 1)
    code, out, err = cli(capsys, "run", images[0], "--model", "hpe-0001", "--backend", "onnxruntime")
    assert code == 1
    assert out == ""
    lines = error_lines(err)
    assert len(lines) == 1
    assert str((shared / HPE_IR_RELATIVE).resolve()) in lines[0]
    assert "--backend openvino" in lines[0]


@pytest.mark.parametrize("model_name, problem", [
    ("missing.onnx", "no such model file"),
    ("missing.xml", "no such model file"),
    ("missing.pose.json", "no such sidecar file"),
])
def test_missing_model_file(capsys, tmp_path, model_name, problem):
    images = write_test_images(tmp_path / "images", 1)
    model = tmp_path / model_name
    code, out, err = cli(capsys, "run", images[0], "--model", model)
    assert code == 1
    assert out == ""
    assert error_lines(err) == [f"{ERROR_PREFIX}{model}: {problem}"]
    assert err.count("\n") == 1  # nothing else: the model is checked before any stream starts


def test_model_file_named_by_sidecar_missing(capsys, tmp_path):
    images = write_test_images(tmp_path / "images", 1)
    sidecar = write_json(tmp_path / "orphan.pose.json", tiny_sidecar_data("weights/absent.onnx"))
    code, _, err = cli(capsys, "run", images[0], "--model", sidecar)
    assert code == 1
    lines = error_lines(err)
    assert len(lines) == 1
    assert str(tmp_path / "weights" / "absent.onnx") in lines[0] and str(sidecar) in lines[0]


def test_mismatched_sidecar(capsys, tiny_model, tmp_path):
    images = write_test_images(tmp_path / "images", 1)
    data = tiny_sidecar_data(str(tiny_model))
    data["outputs"]["pafs"] = "part_affinity_fields"
    sidecar = write_json(tmp_path / "mismatch.pose.json", data)
    code, out, err = cli(capsys, "run", images[0], "--model", sidecar)
    assert code == 1
    assert out == ""
    lines = error_lines(err)
    assert len(lines) == 1
    assert lines[0].startswith(f"{ERROR_PREFIX}{sidecar} vs tiny.onnx: ")
    assert "pafs output 'part_affinity_fields' not in the model" in lines[0]


def test_bad_json_sidecar(capsys, tmp_path):
    sidecar = tmp_path / "broken.pose.json"
    sidecar.write_text('{"format": "posestream.pose/1", "model": ')
    code, _, err = cli(capsys, "run", tmp_path, "--model", sidecar)
    assert code == 1
    lines = error_lines(err)
    assert len(lines) == 1 and lines[0].startswith(f"{ERROR_PREFIX}{sidecar}: not valid JSON")


@pytest.mark.shared
def test_eval_coco_missing_annotation_file(capsys, shared, tmp_path):
    annotations = tmp_path / "person_keypoints_val.json"
    code, out, err = cli(capsys, "eval", "coco", "--images", shared / COCO_DIR, "--ann", annotations,
                         "--no-progress")
    assert code == 1
    assert out == ""
    lines = error_lines(err)
    assert len(lines) == 1 and lines[0].startswith(f"{ERROR_PREFIX}{annotations}: ")


@pytest.mark.shared
def test_eval_lsp_missing_data(capsys, shared, tmp_path):
    code, out, err = cli(capsys, "eval", "lsp", "--data", tmp_path / "lsp", "--no-progress")
    assert code == 1
    assert out == ""
    lines = error_lines(err)
    assert len(lines) == 1 and str(tmp_path / "lsp") in lines[0]


def test_run_summary_follows_redirected_stderr(tiny_model, tmp_path):
    images = write_test_images(tmp_path / "images", 1)
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(["run", str(images[0]), "--model", str(tiny_model), "--no-progress"])
    assert code == 0
    assert f"stream 0 {images[0]}: 1 frames" in stderr.getvalue()


# --------------------------------------------------------------------------------------------------------------
# The real entry points, in a subprocess
# --------------------------------------------------------------------------------------------------------------


def run_subprocess(argv: list, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.mark.shared
def test_module_entry_point_exit_codes(shared, tmp_path):
    missing = tmp_path / "missing.avi"
    failed = run_subprocess([sys.executable, "-m", "posestream.pipeline.cli", "run", missing, "--no-progress"], tmp_path)
    assert failed.returncode == 1
    assert failed.stdout == ""
    assert error_lines(failed.stderr) == [f"{ERROR_PREFIX}{missing}: no such file or directory"]
    assert "Traceback" not in failed.stderr

    # Default output: JSON lines on stdout, nothing else there; the summary goes to stderr.
    ok = run_subprocess([sys.executable, "-m", "posestream.pipeline.cli", "run", shared / VTEST, "--max-frames", "2"], tmp_path)
    assert ok.returncode == 0, ok.stderr
    lines = ok.stdout.splitlines()
    assert len(lines) == 2
    for i, line in enumerate(lines):
        record = json.loads(line)
        check_record(record, line)
        assert record["frame"] == i
    assert "stream 0" in ok.stderr and "2 frames" in ok.stderr


def test_console_script_entry_point(tmp_path):
    script = Path(sys.executable).with_name("posestream")
    if not script.exists():
        pytest.skip(f"no console script beside {sys.executable}")
    result = run_subprocess([script, "--version"], tmp_path)
    assert result.returncode == 0
    assert result.stdout.strip() == f"posestream {version('posestream')}"
    usage = run_subprocess([script, "run"], tmp_path)
    assert usage.returncode == 2 and "usage: posestream run" in usage.stderr


# --------------------------------------------------------------------------------------------------------------
# End to end on real data
# --------------------------------------------------------------------------------------------------------------

VTEST_FRAMES = 12


@pytest.fixture(scope="module")
def vtest_run(shared, tmp_path_factory):
    """``posestream run vtest.avi --model hpe-0001 --max-frames 12 --out-jsonl --out-video``, once for the tests
    below."""
    out = tmp_path_factory.mktemp("vtest_run")
    jsonl, video = out / "people.jsonl", out / "overlay.mp4"
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        # hpe-0001: these tests are about tracking and outputs on people the detector reliably finds.
        code = main(["run", str(shared / VTEST), "--model", "hpe-0001", "--max-frames", str(VTEST_FRAMES),
                     "--out-jsonl", str(jsonl), "--out-video", str(video), "--no-progress"])
    return {"code": code, "stdout": stdout.getvalue(), "stderr": stderr.getvalue(), "jsonl": jsonl,
            "video": video, "source": str(shared / VTEST)}


@pytest.mark.shared
def test_vtest_jsonl_schema(vtest_run):
    assert vtest_run["code"] == 0, vtest_run["stderr"]
    assert vtest_run["stdout"] == ""  # with --out-jsonl nothing goes to stdout
    assert error_lines(vtest_run["stderr"]) == []
    lines = vtest_run["jsonl"].read_text(encoding="utf-8").splitlines()
    assert len(lines) == VTEST_FRAMES
    records = [json.loads(line) for line in lines]
    for record, line in zip(records, lines):
        check_record(record, line)
        assert record["stream"] == 0
        assert record["source"] == vtest_run["source"]
    assert [r["frame"] for r in records] == list(range(VTEST_FRAMES))
    np.testing.assert_allclose([r["pts"] for r in records], np.arange(VTEST_FRAMES) * 0.1, atol=1e-6)  # 10 fps
    assert f"{VTEST_FRAMES} frames" in vtest_run["stderr"]


@pytest.mark.shared
def test_vtest_finds_the_pedestrians(vtest_run):
    records = read_jsonl(vtest_run["jsonl"])
    # 6-8 pedestrians walk through the scene; several are large enough to be found nearly whole.
    crowded = [r["frame"] for r in records if sum(n >= 10 for n in keypoint_counts(r)) >= 3]
    assert len(crowded) >= VTEST_FRAMES // 2, [keypoint_counts(r) for r in records]
    assert all(len(r["persons"]) >= 1 for r in records)
    assert max(len(r["persons"]) for r in records) <= 12  # no explosion of fragments


@pytest.mark.shared
def test_vtest_people_are_tracked(vtest_run):
    """Tracking is on by default: after the first frames the pedestrians carry IDs, one per person and frame."""
    records = read_jsonl(vtest_run["jsonl"])
    assert all(p["track_id"] is None for p in records[0]["persons"])  # a track is confirmed on its 3rd frame
    tracked = [[p["track_id"] for p in r["persons"] if p["track_id"] is not None] for r in records]
    assert all(len(ids) == len(set(ids)) for ids in tracked)
    assert sum(len(ids) >= 3 for ids in tracked[2:]) >= (VTEST_FRAMES - 2) // 2
    ids = {i for frame in tracked for i in frame}
    assert min(ids) == 1 and ids == set(range(1, max(ids) + 1))
    # The same people keep their IDs: most IDs on the last frame were there 5 frames before.
    assert len(set(tracked[-1]) & set(tracked[-6])) >= 2
    assert "tracks" in vtest_run["stderr"]


@pytest.mark.shared
def test_no_track_gives_null_ids_and_raw_keypoints(capsys, shared):
    code, out, err = cli(capsys, "run", shared / VTEST, "--max-frames", "4", "--no-track")
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert all(p["track_id"] is None for r in records for p in r["persons"])
    assert "tracks" not in err


@pytest.mark.shared
def test_vtest_keypoints_near_the_frame(vtest_run):
    """Within one network stride (8 / (368/576) = 12.5 px) of the frame: the letterbox inverse is right."""
    margin = 8 * VTEST_H / 368
    for record in read_jsonl(vtest_run["jsonl"]):
        for person in record["persons"]:
            keypoints = np.asarray(person["keypoints"])
            found = keypoints[keypoints[:, 2] > 0]
            assert (found[:, 0] >= -margin).all() and (found[:, 0] <= VTEST_W - 1 + margin).all(), person
            assert (found[:, 1] >= -margin).all() and (found[:, 1] <= VTEST_H - 1 + margin).all(), person


@pytest.mark.shared
def test_vtest_keypoints_inside_the_frame(vtest_run):
    outside = []
    for record in read_jsonl(vtest_run["jsonl"]):
        for person in record["persons"]:
            for x, y, c in person["keypoints"]:
                if c > 0 and not (0 <= x <= VTEST_W - 1 and 0 <= y <= VTEST_H - 1):
                    outside.append((record["frame"], x, y, c))
    assert outside == []


@pytest.mark.shared
def test_vtest_overlay_video(vtest_run, shared):
    with av.open(str(vtest_run["video"])) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) == (VTEST_W, VTEST_H)
        overlay = [frame.to_ndarray(format="bgr24") for frame in container.decode(stream)]
    assert len(overlay) == VTEST_FRAMES
    assert all(image.shape == (VTEST_H, VTEST_W, 3) for image in overlay)
    with av.open(str(shared / VTEST)) as container:
        first_source = next(container.decode(video=0)).to_ndarray(format="bgr24")
    # The overlay is the source picture (same scene, lossy codec) with skeletons drawn on it.
    difference = np.abs(overlay[0].astype(np.int16) - first_source.astype(np.int16)).max(axis=2)
    assert np.median(difference) < 12
    assert (difference > 100).sum() > 200


@pytest.mark.shared
def test_run_on_an_image_folder(capsys, shared, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    chosen = sorted((shared / COCO_DIR).glob("*.jpg"))[:2]
    for image in chosen:
        shutil.copyfile(image, folder / image.name)
    copies = sorted(folder.glob("*.jpg"))
    overlays, jsonl = tmp_path / "overlays", tmp_path / "people.jsonl"
    code, out, err = cli(capsys, "run", folder, "--out-video", overlays, "--out-jsonl", jsonl, "--no-progress")
    assert code == 0, err
    assert out == ""
    records = read_jsonl(jsonl)
    assert [r["source"] for r in records] == [str(path) for path in copies]
    assert [(r["stream"], r["frame"], r["pts"]) for r in records] == [(0, 0, None), (0, 1, None)]
    for record in records:
        check_record(record)
    assert sum(len(r["persons"]) for r in records) >= 2  # COCO val images with people in them
    assert all(p["track_id"] is None for r in records for p in r["persons"])  # unrelated pictures: not tracked
    assert sorted(p.name for p in overlays.iterdir()) == [f"{path.stem}.jpg" for path in copies]
    for path in copies:
        original = cv2.imread(str(path))
        annotated = cv2.imread(str(overlays / f"{path.stem}.jpg"))
        assert annotated is not None and annotated.shape == original.shape
        assert not np.array_equal(annotated, original)


@pytest.mark.shared
def test_default_output_is_jsonl_on_stdout(capsys, shared):
    code, out, err = cli(capsys, "run", shared / VTEST, "--max-frames", "3")
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 3
    for i, line in enumerate(lines):
        record = json.loads(line)
        check_record(record, line)
        assert (record["stream"], record["frame"]) == (0, i)
    assert "frames/s" in err  # the summary goes to stderr, and no progress bar fills it


def test_run_with_an_onnx_model_on_onnxruntime(capsys, tiny_model, tmp_path):
    """The whole pipeline on ONNX Runtime, without ../shared: a .onnx --model and --batch 2."""
    images = write_test_images(tmp_path / "images", 3)
    code, out, err = cli(capsys, "run", images[0].parent, "--model", tiny_model, "--batch", "2", "--no-progress")
    assert code == 0, err
    lines = out.splitlines()
    assert [json.loads(line)["source"] for line in lines] == [str(path) for path in images]
    for line in lines:
        check_record(json.loads(line), line)


# --------------------------------------------------------------------------------------------------------------
# eval coco, models
# --------------------------------------------------------------------------------------------------------------


def printed_json(stdout: str) -> dict:
    """eval prints a table, then the metrics as indented JSON starting on a line of its own."""
    start = stdout.index("\n{\n") + 1
    return json.loads(stdout[start:])


@pytest.mark.shared
def test_eval_coco_on_real_data(capsys, shared, tmp_path):
    out_json = tmp_path / "metrics.json"
    code, out, err = cli(capsys, "eval", "coco", "--images", shared / COCO_DIR, "--model", "hpe-0001",
                         "--ann", shared / COCO_DIR / "test_coco.json", "--out-json", out_json, "--no-progress")
    assert code == 0, err
    metrics = printed_json(out)
    for key in ("AP", "AP50", "AP75", "AR", "parse_ms_per_frame", "inference_ms_per_frame"):
        assert isinstance(metrics[key], float), key
    assert metrics["model"] == "human-pose-estimation-0001"
    assert metrics["input_height"] == 368
    assert metrics["frames"] == 4
    assert abs(metrics["AP"] - COCO_AP_MEASURED) <= 0.03, metrics["AP"]
    assert metrics["AP"] >= 0.51
    assert metrics["AP50"] >= metrics["AP"] and metrics["AP75"] <= metrics["AP50"]
    assert 0 <= metrics["AR"] <= 1
    assert 0 < metrics["parse_ms_per_frame"] < 1000
    assert "AP" in out[: out.index("\n{\n")]  # the table comes first
    assert json.loads(out_json.read_text()) == metrics


@pytest.mark.shared
def test_models_lists_hpe_0001(capsys, shared):
    code, out, err = cli(capsys, "models")
    assert code == 0, err
    rows = dict(line.split("\t", 1) for line in out.splitlines())
    assert "hpe-0001" in rows
    assert rows["hpe-0001"] == str((shared / HPE_IR_RELATIVE).resolve())


def test_models_lists_hpe_0001_when_weights_are_absent(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("POSESTREAM_SHARED", str(tmp_path / "no-shared"))
    code, out, _ = cli(capsys, "models")
    assert code == 0
    rows = dict(line.split("\t", 1) for line in out.splitlines())
    assert rows["hpe-0001"].startswith("unavailable: ")


def test_run_on_a_video_with_corrupt_packets_reports_every_skipped_frame(capsys, tiny_model, tmp_path):
    """Corruption mid-file is not fatal, and every frame not delivered is counted in the summary."""
    from tests.helpers.videos import SQUARE_VIDEO_FRAMES, damage, mp4_box_span, write_moving_square_mp4

    clean = tmp_path / "square.mp4"
    write_moving_square_mp4(clean)
    data = clean.read_bytes()
    start, end = mp4_box_span(data, b"mdat")
    corrupt = tmp_path / "square-corrupt.mp4"
    corrupt.write_bytes(damage(data, start + int(0.4 * (end - start)), 512))
    jsonl = tmp_path / "out.jsonl"
    code, _, stderr = cli(capsys, "run", corrupt, "--model", tiny_model, "--out-jsonl", jsonl, "--no-progress")
    assert code == 0 and error_lines(stderr) == []
    summary = next(line for line in stderr.splitlines() if line.startswith("stream 0 "))
    delivered = len(jsonl.read_text().splitlines())
    skipped = int(summary.split(" corrupt frames skipped")[0].rsplit(", ", 1)[1])
    late = int(summary.split(" out-of-order frames dropped")[0].rsplit(", ", 1)[1]) if "out-of-order" in summary else 0
    assert f": {delivered} frames," in summary
    assert skipped > 0
    assert delivered < SQUARE_VIDEO_FRAMES and delivered + skipped + late <= SQUARE_VIDEO_FRAMES
