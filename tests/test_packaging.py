"""A wheel built from the repository installs only under posestream/, and `posestream run` works from it
outside the checkout."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

import pytest

from tests.helpers import REPO

VTEST = "data/video/vtest.avi"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    # No build isolation: the test venv has setuptools, and CI needs no download for this.
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(REPO)], check=True, capture_output=True, text=True, timeout=300)
    (path,) = out.glob("posestream-*.whl")
    return path


def test_the_wheel_holds_only_the_posestream_package(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        scripts = archive.read(entry_points).decode()
    tops = {name.split("/")[0] for name in names}
    assert {top for top in tops if not top.endswith(".dist-info")} == {"posestream"}
    assert "posestream/pipeline/models/posestream-lwo-mobilenet.onnx" in names  # the default model ships
    assert "posestream/NOTICE" in names  # with the attribution its weights need
    assert not any(name.startswith(("posestream/tests/", "posestream/benchmarks/")) for name in names)
    assert "posestream = posestream.pipeline.cli.main:main" in scripts


@pytest.mark.shared
def test_posestream_run_works_from_the_wheel_outside_the_checkout(wheel, shared, tmp_path):
    installed = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(installed)  # a pure-Python wheel unpacked is its installed layout
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    environment = {**os.environ, "PYTHONPATH": str(installed), "POSESTREAM_SHARED": str(shared)}
    where = subprocess.run([sys.executable, "-c", "import posestream; print(posestream.__file__)"], cwd=elsewhere,
                           env=environment, capture_output=True, text=True, check=True).stdout.strip()
    assert where.startswith(str(installed)), f"imported {where}, not the wheel's copy"
    result = subprocess.run([sys.executable, "-c", "import sys; from posestream.pipeline.cli.main import main; "
                             "sys.exit(main())", "run", str(shared / VTEST), "--max-frames", "3",
                             "--out-jsonl", "out.jsonl"], cwd=elsewhere, env=environment, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in (elsewhere / "out.jsonl").read_text().splitlines()]
    assert [line["frame"] for line in lines] == [0, 1, 2]
    assert all(line["persons"] for line in lines)  # vtest's walkers are found by the built-in model
