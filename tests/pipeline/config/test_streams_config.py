"""Stream config files (pipeline/streams_config.py): the documented example parses, TOML and YAML agree,
precedence and relative paths, every kind of error names file + key path + problem, and `posestream run
--config` end to end on videos written here with the tiny model."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from posestream.pipeline.cli.main import main
from posestream.pipeline.config.streams import load_streams_config, parse_streams_config
from posestream.pipeline.core.errors import PosestreamError
from posestream.pipeline.runtime.graph import OverlayTarget
from tests.helpers import REPO
from tests.helpers.videos import count_video_frames, write_video

EXAMPLE = REPO / "docs" / "streams.example.toml"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_the_documented_example_parses():
    config = load_streams_config(EXAMPLE)
    docs = EXAMPLE.parent
    assert [s.name for s in config.streams] == ["entrance", "yard", "vtest"]
    assert (config.model, config.batch, config.batch_wait_ms, config.metrics_port) == ("hpe-0001", 4, 20, 9108)
    entrance, yard, vtest = config.streams
    assert entrance.source == "rtsp://127.0.0.1:8554/cam0"
    assert entrance.out_jsonl == str(docs / "../out/entrance.jsonl")
    assert entrance.overlay == OverlayTarget(str(docs / "../out/entrance.mp4"), folder=False)
    assert yard.out_jsonl == str(docs / "../out/people.jsonl")  # the global output
    assert yard.overlay == OverlayTarget(str(docs / "../out/overlays"), folder=True)
    assert yard.source_config.rtsp_transport == "udp" and entrance.source_config.rtsp_transport == "tcp"
    assert yard.source_config.max_reconnects == 20 and entrance.source_config.max_reconnects is None
    assert entrance.source_config.backoff_max_s == 10.0  # from [defaults]
    assert vtest.source == str(docs / "../../shared/data/video/vtest.avi")
    assert (vtest.source_config.max_frames, vtest.pace, vtest.live) == (200, True, True)
    assert entrance.live is None  # the source decides
    assert config.tracking is not None and config.tracking.track_buffer == 30


def test_yaml_reads_like_toml(tmp_path):
    data = {"batch": 2, "outputs": {"jsonl": "out.jsonl"}, "tracking": {"enabled": False},
            "streams": [{"path": "a.mp4", "name": "a", "max_frames": 5}, {"url": "rtsp://h/x", "reconnect": False}]}
    from_yaml = load_streams_config(write(tmp_path / "s.yaml", yaml.safe_dump(data)))
    from_toml = load_streams_config(write(tmp_path / "s.toml", """
batch = 2
outputs = { jsonl = "out.jsonl" }
tracking = { enabled = false }
[[streams]]
path = "a.mp4"
name = "a"
max_frames = 5
[[streams]]
url = "rtsp://h/x"
reconnect = false
"""))
    assert from_yaml.streams == from_toml.streams
    assert from_yaml.tracking is None and from_yaml.batch == 2
    assert from_yaml.streams[0].source == str(tmp_path / "a.mp4")
    assert from_yaml.streams[0].out_jsonl == str(tmp_path / "out.jsonl")
    assert from_yaml.streams[1].source_config.reconnect is False


def test_precedence_stream_then_overrides_then_file(tmp_path):
    path = write(tmp_path / "s.toml", """
batch = 2
[defaults]
max_frames = 10
[[streams]]
path = "a.mp4"
[[streams]]
path = "b.mp4"
max_frames = 3
""")
    config = load_streams_config(path, {"batch": 6, "defaults.max_frames": 20, "queue_size": None})
    assert config.batch == 6
    assert config.queue_size == 8  # None: not given, the default stays
    assert [s.source_config.max_frames for s in config.streams] == [20, 3]


@pytest.mark.parametrize("text, key_path, problem", [
    ("batchsize = 2\n[[streams]]\npath = 'a.mp4'", "batchsize", "unknown key"),
    ("[[streams]]\npath = 'a.mp4'\n[[streams]]\npath = 'b.mp4'\n[[streams]]\nurl = 'rtsp://x/y'\nfps = 5",
     "streams[2].fps", "unknown key"),
    ("[[streams]]\npath = 'a.mp4'\n[[streams]]\npath = 'b.mp4'\nmax_frames = 'ten'", "streams[1].max_frames",
     "must be an integer, got 'ten'"),
    ("[[streams]]\nurl = 'cam.mp4'", "streams[0].url", "is not a URL"),
    ("[[streams]]\nurl = 'rtsp://x/y'\npath = 'a.mp4'", "streams[0]", "exactly one of url"),
    ("[[streams]]\nname = 'a'", "streams[0]", "exactly one of url"),
    ("batch = 4", "streams", "no streams"),
    ("batch = 0\n[[streams]]\npath = 'a.mp4'", "batch", "must be >= 1"),
    ("metrics_port = 70000\n[[streams]]\npath = 'a.mp4'", "metrics_port", "TCP port"),
    ("[[streams]]\npath = 'a.mp4'\nname = 'x'\n[[streams]]\npath = 'b.mp4'\nname = 'x'", "streams[1].name",
     "already the name of streams[0]"),
    ("[[streams]]\npath = 'a.mp4'\nname = 'door/1'", "streams[0].name", "letters, digits"),
    ("[[streams]]\npath = 'a.mp4'\nrtsp_transport = 'quic'", "streams[0].rtsp_transport", "must be one of"),
    ("[defaults]\nopen_timeout_s = -1\n[[streams]]\npath = 'a.mp4'", "defaults.open_timeout_s", "> 0"),
    ("[tracking]\nmin_hits = 0\n[[streams]]\npath = 'a.mp4'", "tracking.min_hits", "must be >= 1"),
    ("[outputs]\nvideo = 3\n[[streams]]\npath = 'a.mp4'", "outputs.video", "must be a string, got 3"),
    ("streams = 'a.mp4'", "streams", "must be a list of tables"),
    ("[[streams]]\npath = 'a.mp4'\npace = 'yes'", "streams[0].pace", "must be true or false"),
])
def test_errors_name_the_file_the_key_and_the_problem(tmp_path, text, key_path, problem):
    path = write(tmp_path / "streams.toml", text)
    with pytest.raises(PosestreamError) as caught:
        load_streams_config(path)
    assert caught.value.subject == f"{path}: {key_path}"
    assert problem in caught.value.problem


@pytest.mark.parametrize("name, text, problem", [
    ("bad.toml", "batch = = 2", "not valid TOML"),
    ("bad.yaml", "streams: [a, b", "not valid YAML"),
    ("list.yaml", "- a\n- b\n", "table of options at the top"),
])
def test_unreadable_files(tmp_path, name, text, problem):
    path = write(tmp_path / name, text)
    with pytest.raises(PosestreamError) as caught:
        load_streams_config(path)
    assert caught.value.subject == str(path) and problem in caught.value.problem
    with pytest.raises(PosestreamError, match="no such config file"):
        load_streams_config(tmp_path / "absent.toml")


def test_parse_from_plain_data_names_the_file():
    with pytest.raises(PosestreamError, match=r"^cams.toml: streams\[0\]\.outputs\.gif: unknown key"):
        parse_streams_config({"streams": [{"path": "a.mp4", "outputs": {"gif": "x"}}]}, "cams.toml")


# --------------------------------------------------------------------------------------------------------------
# posestream run --config
# --------------------------------------------------------------------------------------------------------------


def test_run_with_a_config_file(tmp_path, tiny_model, capsys):
    write_video(tmp_path / "front.mp4", 6)
    write_video(tmp_path / "back.mp4", 4, width=128, height=96)
    config = write(tmp_path / "streams.toml", f"""
model = "{tiny_model}"
batch = 3
[outputs]
jsonl = "out/all.jsonl"
[[streams]]
name = "front"
path = "front.mp4"
outputs = {{ video = "out/front.mp4" }}
[[streams]]
name = "back"
path = "back.mp4"
outputs = {{ jsonl = "out/back.jsonl" }}
""")
    code = main(["run", "--config", str(config), "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.out == ""
    shared = [json.loads(line) for line in (tmp_path / "out/all.jsonl").read_text().splitlines()]
    own = [json.loads(line) for line in (tmp_path / "out/back.jsonl").read_text().splitlines()]
    assert [(r["stream"], r["frame"]) for r in shared] == [(0, i) for i in range(6)]
    assert [(r["stream"], r["frame"]) for r in own] == [(1, i) for i in range(4)]
    assert count_video_frames(tmp_path / "out/front.mp4") == 6
    assert f"stream 0 [front] {tmp_path / 'front.mp4'}: 6 frames" in captured.err
    assert f"stream 1 [back] {tmp_path / 'back.mp4'}: 4 frames" in captured.err


def test_run_config_flags_override_the_file(tmp_path, tiny_model, capsys):
    write_video(tmp_path / "clip.mp4", 8)
    config = write(tmp_path / "streams.toml",
                   f'model = "{tiny_model}"\n[defaults]\nmax_frames = 2\n[[streams]]\npath = "clip.mp4"\n')
    code = main(["run", "--config", str(config), "--max-frames", "5"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert [json.loads(line)["frame"] for line in captured.out.splitlines()] == list(range(5))  # stdout default


def test_run_config_error_is_one_line_exit_1(tmp_path, capsys):
    config = write(tmp_path / "streams.toml", "[[streams]]\npath = 'a.mp4'\nbogus = 1\n")
    code = main(["run", "--config", str(config)])
    captured = capsys.readouterr()
    assert code == 1
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"posestream: error: {config}: streams[0].bogus: unknown key")


@pytest.mark.parametrize("argv", [["run"], ["run", "a.mp4", "--config", "s.toml"]], ids=["neither", "both"])
def test_run_needs_sources_or_config(capsys, argv):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert "SOURCE arguments or --config FILE" in capsys.readouterr().err
