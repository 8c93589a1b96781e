"""A user's files are never destroyed and finished outputs are never lost: a real ``posestream run`` subprocess
per case, with real files, real signals, a real full disk, and PyAV reading back the videos.

Each case was found by trying to break posestream (issue 16); each failed before the fix.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.helpers.videos import count_video_frames, read_jsonl, write_video

ERROR = "posestream: error: "


def posestream(*argv: object) -> list[str]:
    script = Path(sys.executable).with_name("posestream")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "posestream.pipeline.cli"]
    return command + [str(a) for a in argv]


def run(*argv: object, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(posestream("run", *argv), capture_output=True, text=True, cwd=cwd, timeout=timeout)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(ERROR)]


def write_image(path: Path, shade: int) -> Path:
    image = np.full((96, 128, 3), shade, np.uint8)
    cv2.rectangle(image, (40, 20), (80, 90), (255 - shade, 90, 30), -1)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)
    return path


@pytest.fixture
def clip(tmp_path) -> Path:
    return write_video(tmp_path / "a.mp4", 40)


# ------------------------------------------------------------------------------------------------------------
# 1. An output never writes over an input
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["--out-video", "--out-jsonl"])
def test_an_output_named_as_the_source_is_refused_and_the_source_kept(tmp_path, clip, tiny_model, flag):
    before = digest(clip)
    result = run(clip, "--model", tiny_model, flag, clip, "--no-progress")
    assert result.returncode == 1, result.stderr
    [line] = errors(result.stderr)
    assert str(clip) in line and "would overwrite stream 0's source" in line
    assert digest(clip) == before


def test_the_same_file_by_another_spelling_or_a_link_is_an_input_too(tmp_path, clip, tiny_model):
    before = digest(clip)
    os.link(clip, tmp_path / "hard-link.mp4")
    (tmp_path / "soft-link.mp4").symlink_to(clip)
    for output in ("./a.mp4", "hard-link.mp4", "soft-link.mp4", "sub/../a.mp4"):
        (tmp_path / "sub").mkdir(exist_ok=True)
        result = run("a.mp4", "--model", tiny_model, "--out-video", output, "--no-progress", cwd=tmp_path)
        assert result.returncode == 1 and "would overwrite stream 0's source" in result.stderr, (output, result.stderr)
    assert digest(clip) == before


def test_annotated_images_never_go_into_their_source_folder(tmp_path, tiny_model):
    photos = tmp_path / "photos"
    originals = {name: digest(write_image(photos / name, 40 * i)) for i, name in enumerate(["x.jpg", "y.png"])}
    result = run(photos, "--model", tiny_model, "--out-video", photos, "--no-progress")
    assert result.returncode == 1
    [line] = errors(result.stderr)
    assert "source folder" in line and str(photos) in line
    assert {path.name: digest(path) for path in photos.iterdir()} == originals


def test_the_model_is_an_input(tmp_path, clip, tiny_model):
    model = tmp_path / "model" / tiny_model.name  # a copy: a failing build would destroy the session's model
    shutil.copytree(tiny_model.parent, model.parent)
    before = digest(model)
    result = run(clip, "--model", model, "--out-jsonl", model, "--no-progress")
    assert result.returncode == 1 and "would overwrite the model" in result.stderr
    assert digest(model) == before


# ------------------------------------------------------------------------------------------------------------
# 3. No two outputs write the same file
# ------------------------------------------------------------------------------------------------------------


def test_images_of_the_same_name_get_an_output_each(tmp_path, tiny_model):
    write_image(tmp_path / "a" / "x.jpg", 30)
    write_image(tmp_path / "b" / "x.jpg", 200)
    write_image(tmp_path / "c" / "y.jpg", 60)
    write_image(tmp_path / "c" / "y.png", 120)
    out = tmp_path / "out"
    result = run(tmp_path / "a" / "x.jpg", tmp_path / "b" / "x.jpg", tmp_path / "c", "--model", tiny_model,
                 "--out-video", out, "--no-progress")
    assert result.returncode == 0, result.stderr
    names = sorted(path.name for path in out.iterdir())
    assert names == ["x-jpg-0.jpg", "x-jpg-1.jpg", "y-jpg.jpg", "y-png.jpg"]
    # each output is its own input's picture (the background shade survives the drawing)
    assert cv2.imread(str(out / "x-jpg-0.jpg"))[2, 2].mean() < 60
    assert cv2.imread(str(out / "x-jpg-1.jpg"))[2, 2].mean() > 170


def test_two_streams_given_one_overlay_file_are_refused(tmp_path, clip, tiny_model):
    other = write_video(tmp_path / "b.mp4", 20)
    config = tmp_path / "streams.toml"
    config.write_text(f'model = "{tiny_model}"\n'
                      f'[[streams]]\npath = "{clip}"\noutputs = {{ video = "same.mp4" }}\n'
                      f'[[streams]]\npath = "{other}"\noutputs = {{ video = "same.mp4" }}\n')
    result = run("--config", config, "--no-progress")
    assert result.returncode == 1
    [line] = errors(result.stderr)
    assert "stream 1's overlay video and stream 0's overlay video would write the same file" in line
    assert not (tmp_path / "same.mp4").exists()


def test_json_lines_and_overlay_on_one_file_are_refused(tmp_path, clip, tiny_model):
    result = run(clip, "--model", tiny_model, "--out-jsonl", tmp_path / "o.mp4", "--out-video", tmp_path / "o.mp4",
                 "--no-progress")
    assert result.returncode == 1 and "would write the same file" in result.stderr


# ------------------------------------------------------------------------------------------------------------
# 4. A run that fails before its first frame leaves yesterday's results as they were
# ------------------------------------------------------------------------------------------------------------


def test_a_run_that_fails_early_keeps_the_existing_results(tmp_path, tiny_model):
    results = tmp_path / "results.jsonl"
    results.write_text('{"yesterday": true}\n')
    result = run(tmp_path / "typo.mp4", "--model", tiny_model, "--out-jsonl", results, "--no-progress")
    assert result.returncode == 1
    assert results.read_text() == '{"yesterday": true}\n'


def test_a_run_with_frames_replaces_the_results(tmp_path, clip, tiny_model):
    results = tmp_path / "results.jsonl"
    results.write_text('{"yesterday": true}\n')
    result = run(clip, "--model", tiny_model, "--out-jsonl", results, "--no-progress")
    assert result.returncode == 0, result.stderr
    assert len(read_jsonl(results)) == 40


# ------------------------------------------------------------------------------------------------------------
# 5. A full disk: the summary still says what every stream did
# ------------------------------------------------------------------------------------------------------------


def test_a_full_disk_fails_its_stream_and_the_summary_prints(tmp_path, clip, tiny_model):
    config = tmp_path / "streams.toml"
    config.write_text(f'model = "{tiny_model}"\n'
                      f'[[streams]]\npath = "{clip}"\nname = "full"\noutputs = {{ jsonl = "/dev/full" }}\n'
                      f'[[streams]]\npath = "{clip}"\nname = "good"\noutputs = {{ jsonl = "good.jsonl" }}\n')
    result = run("--config", config, "--no-progress")
    assert result.returncode == 1
    assert "/dev/full: cannot write: No space left on device" in result.stderr
    assert "stream 0 [full]" in result.stderr and "FAILED" in result.stderr
    assert f"stream 1 [good] {clip}: 40 frames" in result.stderr
    assert len(read_jsonl(tmp_path / "good.jsonl")) == 40


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB tmpfs (needs root, as CI and the development machines have); skipped where it cannot mount."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount_point)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs: {mounted.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=False)


def test_an_overlay_video_filling_the_disk_fails_its_stream_only(tmp_path, tiny_model, small_disk):
    noisy = tmp_path / "noisy.mp4"  # noise does not compress: the overlay outgrows the small disk
    from posestream.pipeline.sinks.video import VideoSink

    rng = np.random.default_rng(0)
    with VideoSink(noisy, 10.0, 320, 240) as sink:
        for _ in range(60):
            sink.write(rng.integers(0, 256, (240, 320, 3), np.uint8))
    clean = write_video(tmp_path / "clean.mp4", 30)
    config = tmp_path / "streams.toml"
    config.write_text(f'model = "{tiny_model}"\n'
                      f'[[streams]]\npath = "{noisy}"\nname = "big"\noutputs = {{ video = "{small_disk}/big.mp4" }}\n'
                      f'[[streams]]\npath = "{clean}"\nname = "good"\noutputs = {{ jsonl = "good.jsonl" }}\n')
    result = run("--config", config, "--no-progress")
    assert result.returncode == 1
    assert "No space left on device" in result.stderr
    assert "stream 0 [big]" in result.stderr and "FAILED" in result.stderr
    assert f"stream 1 [good] {clean}: 30 frames" in result.stderr


# ------------------------------------------------------------------------------------------------------------
# 2 and 6. Signals and kills: the stop is idempotent, and overlay videos survive a kill
# ------------------------------------------------------------------------------------------------------------


def start_run(tmp_path: Path, *argv: object) -> tuple[subprocess.Popen, Path]:
    """A run of the real vtest clip, with the default model so that frames take a while to drain."""
    jsonl = tmp_path / "people.jsonl"
    process = subprocess.Popen(posestream("run", *argv, "--out-jsonl", jsonl, "--no-progress"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return process, jsonl


def wait_for_lines(process: subprocess.Popen, jsonl: Path, lines: int, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if jsonl.exists() and len(jsonl.read_text().splitlines()) >= lines:
            return
        time.sleep(0.05)
    raise AssertionError(f"no {lines} lines in time: {process.communicate()}")


@pytest.mark.shared
def test_a_second_signal_during_the_drain_is_acknowledged_and_outputs_finish(tmp_path, shared):
    overlay = tmp_path / "overlay.mp4"
    process, jsonl = start_run(tmp_path, shared / "data/video/vtest.avi", "--queue-size", "12",
                               "--out-video", overlay)
    try:
        wait_for_lines(process, jsonl, 2)
        process.send_signal(signal.SIGINT)
        time.sleep(0.4)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr  # the first signal's exit status, not an abort (134)
    assert "terminate called" not in stderr and "Traceback" not in stderr
    assert "posestream: stopping (SIGINT): finishing" in stderr  # the drain shows its progress
    assert "press again to abandon outputs" in stderr  # the second signal is acknowledged
    written = len(read_jsonl(jsonl))
    assert count_video_frames(overlay) == written  # the overlay was finished: every frame plays


@pytest.mark.shared
def test_a_third_signal_exits_at_once_leaving_playable_outputs(tmp_path, shared):
    overlay = tmp_path / "overlay.mp4"
    process, jsonl = start_run(tmp_path, shared / "data/video/vtest.avi", "--queue-size", "32",
                               "--out-video", overlay)
    try:
        wait_for_lines(process, jsonl, 2)
        for _ in range(3):
            process.send_signal(signal.SIGINT)
            time.sleep(0.2)
        started = time.monotonic()
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert time.monotonic() - started < 5
    assert process.returncode == 130, stderr
    assert "abandoning the outputs still open" in stderr
    written = len(read_jsonl(jsonl))  # every line whole
    # The encoder holds frames back for look-ahead, so the file may not exist yet; if it does, what is in it plays.
    assert not overlay.exists() or count_video_frames(overlay) <= written


@pytest.mark.parametrize("suffix", [".mp4", ".mov"])
def test_an_overlay_video_survives_sigkill(tmp_path, tiny_model, suffix):
    video = write_video(tmp_path / "camera.mp4", 400, fps=25.0)  # 16 s when paced
    overlay = tmp_path / f"overlay{suffix}"
    process, jsonl = start_run(tmp_path, video, "--model", tiny_model, "--pace", "--out-video", overlay)
    try:
        wait_for_lines(process, jsonl, 130)  # 5.2 s of video: two fragments of 2 s are complete
        process.kill()
        process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    frames = count_video_frames(overlay)
    assert 100 <= frames <= len(read_jsonl(jsonl))  # whole fragments up to the kill, decoded without an error


def test_a_finished_overlay_video_is_complete(tmp_path, clip, tiny_model):
    overlay = tmp_path / "overlay.mp4"
    result = run(clip, "--model", tiny_model, "--out-video", overlay, "--no-progress")
    assert result.returncode == 0, result.stderr
    import av

    with av.open(str(overlay)) as container:
        assert container.duration == pytest.approx(4_000_000, rel=0.05)  # 40 frames at 10 fps
    assert count_video_frames(overlay) == 40


# ------------------------------------------------------------------------------------------------------------
# 9. Checks at start-up, one line each
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv, expected", [
    (["--input-height", "7"], "--input-height 7: too small"),
    (["--device", "GPU", "--backend", "openvino"], "--device GPU: no OpenVINO device GPU on this machine"),
    (["--device", "GPU"], "--device GPU: the onnxruntime backend runs on the CPU only"),
    (["--out-video", "{tmp}/o.webm"], "o.webm: cannot write video: 'webm' format does not support"),
    (["--out-video", "{tmp}/o.foo"], "o.foo: cannot write video"),
])
def test_bad_options_are_one_line_at_start_up(tmp_path, clip, tiny_model, argv, expected):
    argv = [arg.format(tmp=tmp_path) for arg in argv]
    result = run(clip, "--model", tiny_model, *argv, "--no-progress")
    assert result.returncode == 1
    assert errors(result.stderr) == [line for line in result.stderr.splitlines() if line.strip()]
    [line] = errors(result.stderr)
    assert expected in line
    assert not list(tmp_path.glob("o.*"))  # nothing was created


def test_a_bad_source_is_one_error_line(tmp_path, clip, tiny_model):
    result = run(tmp_path / "typo.mp4", clip, "--model", tiny_model, "--out-jsonl", tmp_path / "r.jsonl",
                 "--no-progress")
    assert result.returncode == 1
    assert errors(result.stderr) == [f"{ERROR}{tmp_path / 'typo.mp4'}: no such file or directory"]
    assert f"stream 0 {tmp_path / 'typo.mp4'}: FAILED after 0 frames (error above)" in result.stderr
    assert f"stream 1 {clip}: 40 frames" in result.stderr


def test_the_progress_bar_ends_at_the_last_frame(tmp_path, clip, tiny_model):
    result = run(clip, "--model", tiny_model, "--out-jsonl", tmp_path / "r.jsonl")
    assert result.returncode == 0
    bar = [part for part in result.stderr.replace("\r", "\n").splitlines() if part.startswith("frames:")]
    assert bar and bar[-1].startswith("frames: 40frame"), bar


def test_no_output_files_are_touched_when_the_model_is_bad(tmp_path, clip):
    results = tmp_path / "results.jsonl"
    results.write_text("kept\n")
    result = run(clip, "--model", tmp_path / "missing.onnx", "--out-jsonl", results, "--no-progress")
    assert result.returncode == 1 and results.read_text() == "kept\n"

