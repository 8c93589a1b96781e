"""Sinks on real files: JSON lines parsed back, videos read back with PyAV, images read back with OpenCV; the
built-in Sink-protocol sinks driven by hand, from several threads where they serve several streams."""
from __future__ import annotations

import dataclasses
import json
import threading
import time
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from posestream.pipeline.core.errors import PosestreamError
from posestream.pipeline.core.skeleton import COCO17_NAMES
from posestream.pipeline.core.types import Frame, Person
from posestream.pipeline.sinks.base import Sink, StreamInfo
from posestream.pipeline.sinks.callback import CallbackSink
from posestream.pipeline.sinks.draw import TrackTrails, draw_people, track_colour
from posestream.pipeline.sinks.images import ImageSink
from posestream.pipeline.sinks.jsonl import JsonlSink, SharedJsonlSink
from posestream.pipeline.sinks.overlay import OverlaySink
from posestream.pipeline.sinks.video import VideoSink
from posestream.pipeline.sources.readers import SourceConfig, open_source

# A standing person about 300 px tall, roughly centred in a 768x576 picture (COCO-17 order).
STANDING_XY = [
    (400, 100), (405, 95), (395, 95), (410, 98), (390, 98), (430, 140), (370, 140), (440, 190),
    (360, 190), (445, 240), (355, 240), (420, 250), (380, 250), (425, 320), (375, 320), (428, 390), (372, 390),
]


def standing_person(confidence: float = 0.9, score: float = 0.87654) -> Person:
    keypoints = np.zeros((17, 3), np.float32)
    keypoints[:, :2] = np.asarray(STANDING_XY, np.float32) + np.float32(0.123456)
    keypoints[:, 2] = confidence
    keypoints[4] = 0  # right ear not found
    found = keypoints[keypoints[:, 2] > 0]
    x0, y0 = found[:, :2].min(axis=0)
    x1, y1 = found[:, :2].max(axis=0)
    return Person(score=score, keypoints=keypoints, bbox=(float(x0), float(y0), float(x1 - x0), float(y1 - y0)))


def grey_frame(index: int = 0, pts: float | None = 0.0, width: int = 768, height: int = 576) -> Frame:
    return Frame(stream=1, source="clip.mp4", index=index, pts=pts, image=np.full((height, width, 3), 90, np.uint8))


def decimals(value: float) -> int:
    text = repr(value)
    return len(text.split(".")[1]) if "." in text else 0


def test_jsonl_round_trip_matches_schema(tmp_path):
    path = tmp_path / "poses.jsonl"
    with JsonlSink(path) as sink:
        sink.write(grey_frame(0, pts=0.1 + 0.2), [standing_person(), standing_person(0.5, 0.25)])
        sink.write(grey_frame(1, pts=None), [])
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)

    assert set(first) == {"stream", "source", "frame", "pts", "persons"}
    assert first["stream"] == 1 and first["source"] == "clip.mp4" and first["frame"] == 0
    assert first["pts"] == pytest.approx(0.3) and isinstance(first["pts"], float)
    assert second["pts"] is None and second["persons"] == [] and second["frame"] == 1

    assert len(first["persons"]) == 2
    person = first["persons"][0]
    assert set(person) == {"score", "bbox", "keypoints", "track_id"}
    assert person["track_id"] is None  # not tracked
    assert person["score"] == 0.8765
    assert len(person["bbox"]) == 4 and all(isinstance(value, float) for value in person["bbox"])
    assert len(person["keypoints"]) == len(COCO17_NAMES) == 17
    for x, y, confidence in person["keypoints"]:
        assert all(isinstance(value, float) for value in (x, y, confidence))
        assert decimals(x) <= 2 and decimals(y) <= 2 and decimals(confidence) <= 4
    assert person["keypoints"][0] == [400.12, 100.12, 0.9]
    assert person["keypoints"][4] == [0.0, 0.0, 0.0]  # not found
    assert person["bbox"][:2] == [355.12, 95.12]


def test_jsonl_writes_track_ids_as_integers(tmp_path):
    path = tmp_path / "tracked.jsonl"
    tracked = dataclasses.replace(standing_person(), track_id=np.int64(7))  # numpy ints must serialise too
    with JsonlSink(path) as sink:
        sink.write(grey_frame(), [tracked, standing_person()])
    persons = json.loads(path.read_text())["persons"]
    assert [p["track_id"] for p in persons] == [7, None]
    assert isinstance(persons[0]["track_id"], int)


def test_jsonl_dash_writes_to_stdout(capsys):
    with JsonlSink("-") as sink:
        sink.write(grey_frame(), [standing_person()])
    record = json.loads(capsys.readouterr().out)
    assert record["frame"] == 0 and len(record["persons"]) == 1


def test_jsonl_creates_its_output_folder(tmp_path):
    path = tmp_path / "new" / "folder" / "poses.jsonl"
    with JsonlSink(path) as sink:
        sink.write(grey_frame(), [standing_person()])
    assert len(path.read_text().splitlines()) == 1


def test_jsonl_under_a_file_names_the_path(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    path = blocker / "poses.jsonl"
    with pytest.raises(PosestreamError) as caught:
        JsonlSink(path)
    assert caught.value.subject == str(path)
    assert "cannot create output folder" in caught.value.problem


def test_jsonl_onto_a_folder_names_the_path(tmp_path):
    with pytest.raises(PosestreamError) as caught:
        JsonlSink(tmp_path)
    assert caught.value.subject == str(tmp_path)


def read_video(path: Path) -> tuple[int, int, int, float, str]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        count = sum(1 for _ in container.decode(stream))
        return count, stream.width, stream.height, float(stream.average_rate), stream.codec_context.name


@pytest.mark.shared
def test_video_sink_writes_overlay_video_of_vtest(shared, tmp_path):
    output = tmp_path / "overlay.mp4"
    with open_source(str(shared / "data/video/vtest.avi"), 0, SourceConfig(max_frames=12)) as source:
        with VideoSink(output, source.fps, source.width, source.height) as sink:
            for frame in source:
                sink.write(draw_people(frame.image, [standing_person()]))
    count, width, height, fps, codec = read_video(output)
    assert (count, width, height) == (12, 768, 576)
    assert fps == pytest.approx(10.0)
    assert codec in {"h264", "mpeg4"}


def test_video_sink_pads_odd_sizes_and_keeps_fractional_rates(tmp_path):
    output = tmp_path / "odd.mkv"
    with VideoSink(output, 29.97, 161, 99) as sink:
        for i in range(7):
            image = np.zeros((99, 161, 3), np.uint8)
            image[:, i * 10 : i * 10 + 20] = 255
            sink.write(image)
    count, width, height, fps, _ = read_video(output)
    assert (count, width, height) == (7, 162, 100)
    assert fps == pytest.approx(29.97, abs=0.01)


def test_video_sink_under_a_file_names_the_path(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    path = blocker / "out.mp4"
    with pytest.raises(PosestreamError) as caught:
        VideoSink(path, 10.0, 64, 48)
    assert caught.value.subject == str(path)


def test_video_sink_with_unknown_format_names_the_path(tmp_path):
    path = tmp_path / "out.notavideo"
    with pytest.raises(PosestreamError) as caught:
        VideoSink(path, 10.0, 64, 48)
    assert caught.value.subject == str(path)


def test_video_sink_rejects_a_zero_frame_rate(tmp_path):
    with pytest.raises(PosestreamError, match="frame rate"):
        VideoSink(tmp_path / "out.mp4", 0.0, 64, 48)


@pytest.mark.shared
def test_image_sink_writes_one_jpeg_per_input(shared, tmp_path):
    output = tmp_path / "annotated" / "coco"  # created, parents included
    sink = ImageSink(output)
    with open_source(str(shared / "data/mmpose/coco"), 0, SourceConfig(max_frames=2)) as source:
        for frame in source:
            written = sink.write(draw_people(frame.image, [standing_person()]), frame.source)
            assert written == output / f"{Path(frame.source).stem}.jpg"
            back = cv2.imread(str(written))
            assert back is not None and back.shape == frame.image.shape
    assert len(list(output.glob("*.jpg"))) == 2


def test_image_sink_onto_a_file_names_the_path(tmp_path):
    occupied = tmp_path / "out"
    occupied.write_text("a file where the folder should be")
    with pytest.raises(PosestreamError) as caught:
        ImageSink(occupied)
    assert caught.value.subject == str(occupied)


def test_draw_people_marks_the_skeleton_and_nothing_far_away():
    image = grey_frame().image
    person = standing_person()
    stray = person.keypoints.copy()
    stray[0] = (700, 500, 0.05)  # below min_confidence: neither its dot nor its limbs may appear
    person = Person(person.score, stray, person.bbox)

    drawn = draw_people(image, [person])

    assert np.array_equal(image, grey_frame().image), "the input must not be modified"
    changed = np.any(drawn != image, axis=2)
    # On the limbs: midpoints of left shoulder-elbow and of left hip-knee, and the left ankle dot.
    for start, end in ((5, 7), (11, 13), (15, 15)):
        x, y = (np.asarray(STANDING_XY[start]) + np.asarray(STANDING_XY[end])) // 2
        assert changed[y, x], f"nothing drawn at {x}, {y}"
    # Far from the person (40 px around the box, which also holds the score text): untouched.
    x, y, w, h = (int(value) for value in person.bbox)
    far = np.ones_like(changed)
    far[max(0, y - 40) : y + h + 40, max(0, x - 40) : x + w + 40] = False
    assert not changed[far].any()
    assert changed.sum() > 2000  # clearly visible on 768x576, not a hairline


def test_draw_people_without_found_keypoints_draws_nothing():
    image = grey_frame().image
    nobody = Person(score=0.5, keypoints=np.zeros((17, 3), np.float32), bbox=(0.0, 0.0, 0.0, 0.0))
    assert np.array_equal(draw_people(image, [nobody]), image)


def test_draw_people_shows_track_id_box_and_trail_in_the_id_colour():
    image = grey_frame().image
    person = dataclasses.replace(standing_person(), track_id=5)
    trail = np.array([(150.0, 400.0 + 0.0 * k) + np.array([10.0 * k, 0.0]) for k in range(20)])
    drawn = draw_people(image, [person], trails={5: trail, 9: trail + 50})
    colour = np.array(track_colour(5))
    assert (np.abs(drawn.astype(int) - colour).sum(axis=2) < 30).sum() > 150  # box, label, trail in its colour
    # The trail: drawn along its path, far from the skeleton.
    assert np.any(drawn[400, 200] != image[400, 200])
    # Trails of IDs not in this frame are not drawn.
    assert np.array_equal(drawn[450, 200:300], image[450, 200:300])
    # Without a track ID there is no box in an ID colour and no trail.
    untracked = draw_people(image, [standing_person()], trails={5: trail})
    assert np.array_equal(untracked[400, 150:340], image[400, 150:340])


def test_track_colours_differ_between_neighbouring_ids():
    colours = [np.array(track_colour(i)) for i in range(1, 12)]
    for a, b in zip(colours, colours[1:]):
        assert np.abs(a.astype(int) - b.astype(int)).max() > 60


def test_track_trails_keep_the_last_positions_and_forget_old_tracks():
    trails = TrackTrails(length=20, forget_after=5)
    for frame in range(30):
        keypoints = standing_person().keypoints.copy()
        keypoints[:, 0] += frame
        people = [Person(0.9, keypoints, (0, 0, 1, 1), track_id=1)]
        if frame < 3:
            people.append(Person(0.9, standing_person().keypoints, (0, 0, 1, 1), track_id=2))
        shown = trails.update(people)
    assert set(shown) == {1}  # track 2 unseen for more than 5 frames
    assert shown[1].shape == (20, 2)
    assert shown[1][-1, 0] == pytest.approx(400.123456 + 29, abs=1e-3)  # mid-hip x, newest last
    no_hips = standing_person().keypoints.copy()
    no_hips[[11, 12]] = 0
    assert set(trails.update([Person(0.9, no_hips, (0, 0, 1, 1), track_id=3)])) == {1}  # no hips, no point


# --------------------------------------------------------------------------------------------------------------
# The Sink protocol's built-in sinks, driven by hand as the runtime drives them
# --------------------------------------------------------------------------------------------------------------


def stream_info(index: int = 1, kind: str = "video", fps: float | None = 10.0) -> StreamInfo:
    return StreamInfo(index=index, label=f"cam{index}", source="clip.mp4", kind=kind, fps=fps)


def test_built_in_sinks_are_sinks():
    for sink in (CallbackSink(lambda frame, people: None), OverlaySink("a.mp4", "images")):
        assert isinstance(sink, Sink)


def test_shared_jsonl_keeps_lines_whole_when_streams_write_at_once(tmp_path):
    path = tmp_path / "shared.jsonl"
    sink = SharedJsonlSink(path)
    people = [standing_person(), standing_person(0.5, 0.25)]

    def write_stream(index: int) -> None:
        info = stream_info(index)
        sink.open_stream(info)
        for frame in range(40):
            sink.write(info, dataclasses.replace(grey_frame(frame, width=8, height=8), stream=index), people)
        sink.close_stream(info)

    threads = [threading.Thread(target=write_stream, args=(index,)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    write_stream(4)  # a stream closing leaves the file open for the streams still to come
    sink.close()
    records = [json.loads(line) for line in path.read_text().splitlines()]  # every line whole JSON
    for index in range(5):
        assert [r["frame"] for r in records if r["stream"] == index] == list(range(40))


def test_callback_sink_serialises_calls_from_several_streams():
    active, most_at_once, calls = [0], [0], []

    def not_thread_safe(frame: Frame, people) -> None:
        active[0] += 1
        most_at_once[0] = max(most_at_once[0], active[0])
        time.sleep(0.001)  # give another thread every chance to come in
        calls.append((frame.stream, frame.index, len(people)))
        active[0] -= 1

    sink = CallbackSink(not_thread_safe)

    def write_stream(index: int) -> None:
        info = stream_info(index)
        for frame in range(20):
            sink.write(info, dataclasses.replace(grey_frame(frame, width=8, height=8), stream=index),
                       (standing_person(),))

    threads = [threading.Thread(target=write_stream, args=(index,)) for index in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most_at_once[0] == 1
    for index in range(3):
        assert [(f, n) for s, f, n in calls if s == index] == [(f, 1) for f in range(20)]


def test_overlay_sink_writes_a_video_finished_at_close_stream(tmp_path):
    path = tmp_path / "out" / "overlay.mp4"
    sink = OverlaySink(path, tmp_path / "unused")
    info = stream_info(kind="video", fps=None)  # no frame rate: the default is used
    sink.open_stream(info)
    for index in range(5):
        sink.write(info, grey_frame(index, width=160, height=120), [standing_person()])
    sink.close_stream(info)
    count, width, height, fps, _ = read_video(path)
    assert (count, width, height, fps) == (5, 160, 120, 25.0)
    sink.close()  # nothing left to close: harmless
    assert not (tmp_path / "unused").exists()


def test_overlay_sink_writes_images_for_an_image_stream(tmp_path):
    folder = tmp_path / "annotated"
    sink = OverlaySink(tmp_path / "unused.mp4", folder)
    info = stream_info(kind="folder", fps=None)
    sink.open_stream(info)
    for name in ("a.png", "b.jpg"):
        sink.write(info, dataclasses.replace(grey_frame(width=64, height=48), source=name), [])
    sink.close_stream(info)
    sink.close()
    assert sorted(p.name for p in folder.iterdir()) == ["a.jpg", "b.jpg"]
    assert not (tmp_path / "unused.mp4").exists()


def test_overlay_sink_serves_one_stream(tmp_path):
    sink = OverlaySink(tmp_path / "overlay.mp4", tmp_path)
    sink.open_stream(stream_info(0))
    with pytest.raises(PosestreamError, match="already serves stream 0"):
        sink.open_stream(stream_info(1))
