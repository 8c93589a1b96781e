"""Top-down mode on real parts: the YOLOX-nano detector on vtest.avi, TopDownEstimator with hpe-0001 on LSP and
vtest frames, stream state through the real runtime, and the CLI (`run --mode top-down`, `eval coco --mode
top-down`). Bad detector files give one clear error naming the file."""
from __future__ import annotations

import json
from pathlib import Path

import av
import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from posestream.pipeline.cli.main import main
from posestream.pipeline.core.errors import PosestreamError
from posestream.pipeline.core.model import load_model_spec
from posestream.pipeline.estimators.bottomup import BottomUpEstimator, EstimatorConfig
from posestream.pipeline.estimators.detector import (
    WHOLE_IMAGE,
    DetectorConfig,
    PersonDetector,
    WholeImageDetector,
    yolox_grid,
)
from posestream.pipeline.estimators.topdown import TopDownConfig, TopDownEstimator, power_of_two_chunks
from posestream.pipeline.evaluation.lsp import LspEvalConfig, evaluate_lsp
from posestream.pipeline.inference.backends import BackendConfig, create_backend
from posestream.pipeline.runtime.graph import Runtime, RuntimeConfig, StreamSpec
from posestream.pipeline.sources.readers import SourceConfig

VTEST = "data/video/vtest.avi"
COCO_DIR = "data/mmpose/coco"
# COCO-17 index of each joint's mirror image (left <-> right)
COCO17_MIRROR = np.array([0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15])
VTEST_FRAME = 80  # 7 walkers in view, 4 of them found nearly whole by bottom-up


def vtest_frames(shared: Path, first: int, count: int) -> list[np.ndarray]:
    with av.open(str(shared / VTEST)) as container:
        frames = []
        for index, frame in enumerate(container.decode(video=0)):
            if index >= first:
                frames.append(frame.to_ndarray(format="bgr24"))
            if len(frames) == count:
                return frames
    raise AssertionError("vtest.avi is shorter than expected")


@pytest.fixture(scope="module")
def hpe(shared):
    """hpe-0001 on OpenVINO, shared by the estimators of this module (its compiled shapes stay warm)."""
    spec = load_model_spec("hpe-0001")
    return spec, create_backend(spec, BackendConfig())


@pytest.fixture(scope="module")
def detector(shared):
    return PersonDetector(DetectorConfig())


# ------------------------------------------------------------------------------------------------ detector


def box_contains(box: np.ndarray, x: float, y: float) -> bool:
    return box[0] <= x <= box[2] and box[1] <= y <= box[3]


@pytest.mark.shared
def test_detector_finds_the_walkers_on_vtest(shared, detector, hpe):
    frame = vtest_frames(shared, VTEST_FRAME, 1)[0]
    boxes = detector([frame])[0]
    assert boxes.shape[1] == 5 and boxes.dtype == np.float32
    assert 3 <= len(boxes) <= 12, boxes
    assert np.all(np.diff(boxes[:, 4]) <= 0)  # best first
    assert np.all((boxes[:, 0] >= 0) & (boxes[:, 2] <= frame.shape[1]) & (boxes[:, 1] >= 0)
                  & (boxes[:, 3] <= frame.shape[0]))
    heights = boxes[:, 3] - boxes[:, 1]
    widths = boxes[:, 2] - boxes[:, 0]
    assert np.all(heights > widths)  # standing people
    # Every well-found bottom-up person sits in a detector box: the detector's boxes are on the people.
    spec, backend = hpe
    people = BottomUpEstimator(spec, backend, EstimatorConfig())([frame])[0]
    well_found = [p for p in people if p.score >= 0.3 and (p.keypoints[:, 2] > 0).sum() >= 10]
    assert len(well_found) >= 3
    for person in well_found:
        x, y, w, h = person.bbox
        assert any(box_contains(box, x + w / 2, y + h / 2) for box in boxes), (person.bbox, boxes)


@pytest.mark.shared
def test_detector_backends_agree(shared, detector):
    frame = vtest_frames(shared, VTEST_FRAME, 1)[0]
    on_openvino = PersonDetector(DetectorConfig(backend="openvino"))([frame])[0]
    on_onnxruntime = detector([frame])[0]
    assert len(on_openvino) == len(on_onnxruntime)
    np.testing.assert_allclose(on_openvino, on_onnxruntime, atol=0.5)


def test_yolox_grid_is_strides_8_16_32_row_by_row():
    cells, strides = yolox_grid(416, 416)
    assert len(cells) == 3549 == 52 * 52 + 26 * 26 + 13 * 13
    assert cells[:3].tolist() == [[0, 0], [1, 0], [2, 0]] and cells[52].tolist() == [0, 1]
    assert strides[0] == 8 and strides[2704] == 16 and strides[-1] == 32


def write_fake_detector(path: Path, anchors: int) -> Path:
    """A real ONNX network with YOLOX's input (1 x 3 x 64 x 64) whose output is 1 x ``anchors`` x 85."""
    weights = np.full((85, 3, 8, 8), 0.001, np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["images", "w"], ["features"], strides=[8, 8]),  # 1 x 85 x 8 x 8
         helper.make_node("Reshape", ["features", "shape"], ["flat"]),
         helper.make_node("Transpose", ["flat"], ["output"], perm=[0, 2, 1])],
        "fake_detector",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 64, 64])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, anchors, 85])],
        [numpy_helper.from_array(weights, "w"), numpy_helper.from_array(np.array([1, 85, 64], np.int64), "shape")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # as tests/tiny_pose.py: readable by every ONNX Runtime the project supports
    onnx.save(model, path)
    return path


def test_detector_with_the_wrong_output_shape_is_a_clear_error(tmp_path):
    # 64 anchor points, but a 64 x 64 input at strides 8/16/32 has 8*8 + 4*4 + 2*2 = 84
    path = write_fake_detector(tmp_path / "not_yolox.onnx", 64)
    with pytest.raises(PosestreamError) as raised:
        PersonDetector(DetectorConfig(path=str(path)))
    assert raised.value.subject == str(path)
    assert "not a YOLOX detector" in raised.value.problem and "(1, 84, 5 + classes)" in raised.value.problem


def test_missing_detector_and_bad_files_name_the_file(tmp_path):
    missing = tmp_path / "nowhere.onnx"
    with pytest.raises(PosestreamError, match="no such detector model file") as raised:
        PersonDetector(DetectorConfig(path=str(missing)))
    assert raised.value.subject == str(missing)
    junk = tmp_path / "junk.onnx"
    junk.write_text("not a network")
    with pytest.raises(PosestreamError, match="cannot load the detector") as raised:
        PersonDetector(DetectorConfig(path=str(junk)))
    assert raised.value.subject == str(junk)


# ------------------------------------------------------------------------------------------------ estimator


def test_power_of_two_chunks():
    assert power_of_two_chunks(13, 8) == [8, 4, 1]
    assert power_of_two_chunks(20, 8) == [8, 8, 4]
    assert power_of_two_chunks(7, 6) == [4, 2, 1]  # the cap rounds down to a power of two
    assert power_of_two_chunks(0, 8) == []


@pytest.mark.shared
def test_top_down_on_lsp_lands_pck_sane_joints(shared, hpe):
    spec, backend = hpe
    estimator = TopDownEstimator(spec, backend, TopDownConfig())
    metrics = evaluate_lsp(shared / "data/lsp", "test", estimator, LspEvalConfig(max_images=6, show_progress=False))
    assert metrics["pck_mean_body"] >= 0.5, metrics  # 0.80 over the first 200 test images
    assert estimator.stats.frames == 6 and estimator.stats.detector_frames == 6
    assert estimator.stats.crops >= 6


@pytest.mark.shared
def test_top_down_people_match_bottom_up_people_on_vtest(shared, hpe, detector):
    spec, backend = hpe
    frame = vtest_frames(shared, VTEST_FRAME, 1)[0]
    people = TopDownEstimator(spec, backend, TopDownConfig(), detector=detector)([frame])[0]
    bottom_up = BottomUpEstimator(spec, backend, EstimatorConfig())([frame])[0]
    assert len(people) >= 3
    for person in people:
        assert person.keypoints.shape == (17, 3) and person.keypoints.dtype == np.float32
        assert 0 < person.score <= 1
        found = person.keypoints[:, 2] > 0
        assert np.all(person.keypoints[found, 0] <= frame.shape[1] - 1)
        assert np.all(person.keypoints[~found, :2] == 0)
    # Most well-found bottom-up people are found top-down too, joints within a few pixels. Not all: bottom-up
    # joins two walkers side by side into one person on this frame, where top-down has both. A walker seen from
    # the back may come out mirrored (left for right) in one mode, so the mirrored reading counts too.
    well_found = [p for p in bottom_up if p.score >= 0.3 and (p.keypoints[:, 2] > 0).sum() >= 12]
    matched = 0
    for other in well_found:
        distances = [np.inf]
        for person in people:
            for order in (np.arange(17), COCO17_MIRROR):
                mine = person.keypoints[order]
                both = (mine[:, 2] > 0) & (other.keypoints[:, 2] > 0)
                if both.sum() >= 8:
                    distances.append(np.median(np.linalg.norm(mine[both, :2] - other.keypoints[both, :2], axis=1)))
        matched += min(distances) < 4.0
    assert len(well_found) >= 3 and matched >= len(well_found) / 2, (matched, len(well_found))


@pytest.mark.shared
def test_detect_every_carries_boxes_between_detections(shared, hpe, detector):
    spec, backend = hpe
    frames = vtest_frames(shared, VTEST_FRAME, 6)
    estimator = TopDownEstimator(spec, backend, TopDownConfig(detect_every=3), detector=detector)
    # one call holding six frames of one stream: frames 1, 2, 4, 5 wait for their previous frame's people
    batched = estimator(frames, streams=["a"] * 6)
    assert estimator.stats.detector_frames == 2
    assert estimator.stats.frames == 6
    counts = [len(people) for people in batched]
    assert min(counts) >= 3, counts
    # frame by frame gives the same people
    again = TopDownEstimator(spec, backend, TopDownConfig(detect_every=3), detector=detector)
    single = [again([frame], streams=["a"])[0] for frame in frames]
    assert [len(p) for p in single] == counts
    for mine, theirs in zip(batched, single):
        np.testing.assert_allclose(np.stack([p.keypoints for p in mine]), np.stack([p.keypoints for p in theirs]),
                                   atol=0.05)
    # a second stream starts with a detection; an ended stream's state is gone
    estimator(frames[:1], streams=["b"])
    assert estimator.stats.detector_frames == 3
    estimator.end_stream("a")
    estimator(frames[:1], streams=["a"])
    assert estimator.stats.detector_frames == 4


class RecordingEstimator:
    """A stateful estimator: records, in order, the stream keys of each call and each stream it is told ended."""

    wants_stream_keys = True

    def __init__(self):
        self.events: list[tuple[str, object]] = []

    def __call__(self, images, streams=None):
        assert streams is not None and len(streams) == len(images)
        self.events.append(("call", list(streams)))
        return [[] for _ in images]

    def end_stream(self, stream):
        self.events.append(("end", stream))


@pytest.mark.shared
def test_runtime_passes_stream_keys_and_ends_streams(shared, tmp_path):
    source = str(shared / VTEST)
    folder = tmp_path / "pictures"
    folder.mkdir()
    for index, frame in enumerate(vtest_frames(shared, 0, 2)):
        cv2.imwrite(str(folder / f"{index}.jpg"), frame)
    specs = [StreamSpec(source=source, source_config=SourceConfig(max_frames=n)) for n in (3, 5)]
    specs.append(StreamSpec(source=str(folder)))
    estimator = RecordingEstimator()
    results = Runtime(specs, estimator, RuntimeConfig(batch_size=4, tracking=None)).run()
    assert [r.processed for r in results] == [3, 5, 2]
    keys = [key for kind, call in estimator.events if kind == "call" for key in call]
    # video streams by index; the folder's unrelated pictures carry no key
    assert sorted(keys, key=str) == [0] * 3 + [1] * 5 + [None] * 2
    ends = [(i, key) for i, (kind, key) in enumerate(estimator.events) if kind == "end"]
    assert sorted(key for _, key in ends) == [0, 1, 2]  # each stream ends once
    for position, key in ((p, k) for p, k in ends if k in (0, 1)):  # a video stream ends after its last frame
        assert any(kind == "call" and key in call for kind, call in estimator.events[:position])
        assert not any(kind == "call" and key in call for kind, call in estimator.events[position:])


# ------------------------------------------------------------------------------------------------ CLI


@pytest.mark.shared
def test_cli_run_top_down_writes_people(capsys, shared, tmp_path):
    jsonl = tmp_path / "people.jsonl"
    code = main(["run", str(shared / VTEST), "--mode", "top-down", "--detect-every", "5", "--max-frames", "20",
                 "--out-jsonl", str(jsonl), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 0, err
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [r["frame"] for r in records] == list(range(20))
    assert sum(len(r["persons"]) >= 3 for r in records) >= 15, [len(r["persons"]) for r in records]
    assert any(p["track_id"] is not None for p in records[-1]["persons"])
    assert all(len(p["keypoints"]) == 17 for r in records for p in r["persons"])
    assert "top-down: detect" in err and "on 4 frames" in err  # frames 0, 5, 10, 15


@pytest.mark.shared
def test_cli_eval_coco_top_down_prints_ap(capsys, shared):
    code = main(["eval", "coco", "--mode", "top-down", "--model", "hpe-0001", "--images", str(shared / COCO_DIR),
                 "--ann", str(shared / COCO_DIR / "test_coco.json"), "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 0, err
    metrics = json.loads(out[out.index("\n{\n") + 1:])
    assert metrics["mode"] == "top-down" and metrics["crop_size"] == [256, 192]
    assert metrics["AP"] >= 0.6, metrics  # measured 0.76 (bottom-up: 0.78)
    assert metrics["detector_frames"] == 4


def test_whole_image_detector_gives_each_image_one_box():
    boxes = WholeImageDetector()([np.zeros((40, 30, 3), np.uint8), np.zeros((10, 20, 3), np.uint8)])
    np.testing.assert_array_equal(boxes[0], [[-0.5, -0.5, 29.5, 39.5, 1.0]])
    np.testing.assert_array_equal(boxes[1], [[-0.5, -0.5, 19.5, 9.5, 1.0]])


@pytest.mark.shared
def test_cli_eval_lsp_top_down_on_whole_images(capsys, shared):
    code = main(["eval", "lsp", "--mode", "top-down", "--detector", WHOLE_IMAGE, "--model", "hpe-0001",
                 "--data", str(shared / "data/lsp"), "--max-images", "6", "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 0, err
    metrics = json.loads(out[out.index("\n{\n") + 1:])
    assert metrics["detector"] == WHOLE_IMAGE and metrics["crops"] == 6  # one crop per image, no detector
    assert metrics["pck_mean_body"] >= 0.6, metrics


def test_cli_top_down_with_a_missing_detector_names_it(capsys, tiny_model, tmp_path):
    missing = tmp_path / "missing.onnx"
    code = main(["run", str(tmp_path), "--model", str(tiny_model), "--mode", "top-down", "--detector", str(missing)])
    err = capsys.readouterr().err
    assert code == 1
    assert err.strip() == f"posestream: error: {missing}: no such detector model file (give one with --detector)"


def test_streams_config_takes_the_top_down_keys(tmp_path):
    from posestream.pipeline.config.streams import parse_streams_config

    path = str(tmp_path / "streams.toml")
    options = parse_streams_config({"mode": "top-down", "detector": "models/det.onnx", "detect_every": 5,
                                    "streams": [{"path": "a.mp4"}]}, path)
    assert (options.mode, options.detect_every) == ("top-down", 5)
    assert options.detector == str(tmp_path / "models" / "det.onnx")  # relative to the file
    whole = parse_streams_config({"mode": "top-down", "detector": WHOLE_IMAGE, "streams": [{"path": "a.mp4"}]}, path)
    assert whole.detector == WHOLE_IMAGE
    defaults = parse_streams_config({"streams": [{"path": "a.mp4"}]}, path)
    assert (defaults.mode, defaults.detector, defaults.detect_every) == ("bottom-up", None, 1)
    with pytest.raises(PosestreamError, match="mode: must be one of bottom-up, top-down"):
        parse_streams_config({"mode": "sideways", "streams": [{"path": "a.mp4"}]}, path)
    with pytest.raises(PosestreamError, match="detect_every: must be >= 1"):
        parse_streams_config({"detect_every": 0, "streams": [{"path": "a.mp4"}]}, path)
