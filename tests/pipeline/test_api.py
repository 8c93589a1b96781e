"""The Python API: the README's example runs as it stands, and the API agrees with the command line."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

import posestream
from posestream.pipeline.cli.main import main
from tests.helpers import REPO


def readme_example() -> str:
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Python API"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.shared
def test_the_readme_example_runs(shared):
    result = subprocess.run([sys.executable, "-c", readme_example()], cwd=REPO, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.splitlines()
    assert re.match(r"1 person, score 0\.\d\d, nose at ", first)
    frames, people = map(int, re.match(r"(\d+) frames, (\d+) people", second).groups())
    assert frames == 20 and people > 20  # six to eight walkers a frame


@pytest.mark.shared
def test_run_streams_gives_the_people_of_the_json_lines(shared, tmp_path, capsys):
    video = str(shared / "data/video/vtest.avi")
    out = tmp_path / "cli.jsonl"
    assert main(["run", video, "--max-frames", "8", "--out-jsonl", str(out), "--no-progress"]) == 0
    from_cli = [json.loads(line) for line in out.read_text().splitlines()]
    seen = []
    reports = posestream.run_streams([video], on_frame=lambda frame, people: seen.append((frame.index, people)),
                                     max_frames=8)
    assert reports[0].frames == 8 and reports[0].error is None
    assert [index for index, _ in seen] == [line["frame"] for line in from_cli]
    for (_, people), line in zip(seen, from_cli):
        assert [round(float(p.score), 4) for p in people] == [p["score"] for p in line["persons"]]
        assert [p.track_id for p in people] == [p["track_id"] for p in line["persons"]]


def test_estimate_names_an_unreadable_image(tmp_path, tiny_model):
    bad = tmp_path / "not-an-image.jpg"
    bad.write_text("text")
    with pytest.raises(posestream.PosestreamError, match="not-an-image.jpg: not a readable image"):
        posestream.estimate([bad], posestream.load_estimator(str(tiny_model)))
