"""Where a run's output files go, decided and checked before any file is opened or truncated.

Two rules keep a user's files safe, whatever the flags or the streams config say:

- no output writes over an input of the same run (a source video or image, an image in a source folder, the
  model and its sidecar, the detector, the streams config), and no image output goes into a source folder;
- no two outputs write the same file.

A path the user named (``--out-jsonl``, a stream's ``outputs.video``) that breaks a rule is refused with one
line naming both files and their roles. Names posestream derives itself are made unique instead: an overlay
video in a folder is ``<stream name or source stem>.mp4``, with ``-<stream>`` added where two streams would
share it; an annotated image is ``<image stem>.jpg``, with ``-<extension>`` added where two inputs share a stem
(``x.jpg``, ``x.png``), then ``-<stream>`` where that is not enough (``a/x.jpg``, ``b/x.jpg``). The names of a
folder's images come from listing it here, as its source will.

Files are compared by their real path (symbolic links and ``./`` resolved) and, when both exist, by device and
inode, so a hard link to an input is an input too.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

from posestream.pipeline.core.errors import PosestreamError
from posestream.pipeline.sources.readers import IMAGE_EXTENSIONS, is_live_spec, is_url, list_image_files

STDOUT = "-"


@dataclass(frozen=True)
class OverlayTarget:
    """Where one stream's overlay goes. ``folder``: ``path`` is a folder and a video source writes
    ``<path>/<stream name or source stem>.mp4`` in it (made unique, see the module docstring); otherwise a video
    source writes the file ``path``. Image and folder sources always write annotated images into ``path``."""

    path: str
    folder: bool = False


@dataclass(frozen=True)
class OutputPlan:
    """Every output file of a run, checked: ``videos`` maps a stream to its overlay video file; ``images`` maps
    a stream to {input image (real path) -> its annotated image}."""

    videos: dict[int, Path]
    images: dict[int, dict[str, Path]]

class StreamOutputs(Protocol):
    """What ``plan_outputs`` reads of a stream (``posestream.pipeline.runtime.graph.StreamSpec`` has it)."""

    source: str
    name: str
    out_jsonl: str | None
    overlay: OverlayTarget | None


def source_kind(source: str) -> str:
    """"video", "image" or "folder", as ``open_source`` will open ``source`` (URLs and webcams are videos)."""
    if is_live_spec(source) or is_url(source):
        return "video"
    path = Path(source).expanduser()
    if path.is_dir():
        return "folder"
    return "image" if path.suffix.lower() in IMAGE_EXTENSIONS else "video"


class _Files:
    """Files by identity, each with the role it plays in the run (for the error line)."""

    def __init__(self) -> None:
        self._roles: dict[str, tuple[str, str]] = {}  # real path -> (path as given, role)
        self._inodes: dict[tuple[int, int], str] = {}  # (device, inode) -> real path, for existing files

    @staticmethod
    def _identity(path: str | Path) -> tuple[str, tuple[int, int] | None]:
        real = os.path.realpath(os.path.expanduser(str(path)))
        try:
            status = os.stat(real)
        except OSError:
            return real, None
        return real, (status.st_dev, status.st_ino)

    def find(self, path: str | Path) -> tuple[str, str] | None:
        """(path as given, role) of the file ``path`` is, if it is one of these."""
        real, inode = self._identity(path)
        if real not in self._roles and inode is not None and inode in self._inodes:
            real = self._inodes[inode]
        return self._roles.get(real)

    def add(self, path: str | Path, role: str) -> None:
        real, inode = self._identity(path)
        self._roles.setdefault(real, (str(path), role))
        if inode is not None:
            self._inodes.setdefault(inode, real)


def _stream_label(index: int, stream: StreamOutputs) -> str:
    return f"stream {index} [{stream.name}]" if stream.name else f"stream {index}"


def _input_files(streams: Sequence[StreamOutputs], other_inputs: Sequence[tuple[str, str]]
                 ) -> tuple[_Files, _Files, dict[int, list[Path]]]:
    """(input files, source folders, the images of each folder or image stream)."""
    inputs, folders = _Files(), _Files()
    images: dict[int, list[Path]] = {}
    for index, stream in enumerate(streams):
        label = _stream_label(index, stream)
        kind = source_kind(stream.source)
        if kind == "folder":
            folders.add(stream.source, f"{label}'s source folder")
            try:
                images[index] = list_image_files(Path(stream.source).expanduser())
            except OSError:
                images[index] = []  # the source reports the unreadable folder when it opens
            for image in images[index]:
                inputs.add(image, f"{label}'s input image")
        elif not (is_live_spec(stream.source) or is_url(stream.source)):
            inputs.add(stream.source, f"{label}'s source")
            if kind == "image":
                images[index] = [Path(stream.source).expanduser()]
    for path, role in other_inputs:
        inputs.add(path, role)
    return inputs, folders, images


def _video_paths(streams: Sequence[StreamOutputs]) -> dict[int, Path]:
    def in_folder(stream: StreamOutputs) -> Path:
        return Path(stream.overlay.path) / f"{stream.name or Path(stream.source).stem}.mp4"

    video_streams = [(index, stream) for index, stream in enumerate(streams)
                     if stream.overlay is not None and source_kind(stream.source) == "video"]
    shared: dict[Path, int] = {}
    for _, stream in video_streams:
        if stream.overlay.folder:
            shared[in_folder(stream)] = shared.get(in_folder(stream), 0) + 1
    paths = {}
    for index, stream in video_streams:
        if not stream.overlay.folder:
            paths[index] = Path(stream.overlay.path)
            continue
        path = in_folder(stream)
        paths[index] = path.with_name(f"{path.stem}-{index}.mp4") if shared[path] > 1 else path
    return paths


def _image_paths(streams: Sequence[StreamOutputs], images: dict[int, list[Path]]) -> dict[int, dict[str, Path]]:
    wanted = [(index, image, Path(streams[index].overlay.path)) for index in sorted(images)
              if streams[index].overlay is not None for image in images[index]]

    def by_name(names: list[Path]) -> dict[Path, int]:
        counts: dict[Path, int] = {}
        for name in names:
            counts[name] = counts.get(name, 0) + 1
        return counts

    names = [folder / f"{image.stem}.jpg" for _, image, folder in wanted]
    for widen in (lambda i, image, folder: folder / f"{image.stem}-{image.suffix.lstrip('.').lower()}.jpg",
                  lambda i, image, folder: folder / f"{image.stem}-{image.suffix.lstrip('.').lower()}-{i}.jpg"):
        counts = by_name(names)
        names = [widen(*entry) if counts[name] > 1 else name for entry, name in zip(wanted, names)]
    plan: dict[int, dict[str, Path]] = {}
    for (index, image, _), name in zip(wanted, names):
        plan.setdefault(index, {})[os.path.realpath(image)] = name
    return plan


def plan_outputs(streams: Sequence[StreamOutputs], other_inputs: Sequence[tuple[str, str]] = ()) -> OutputPlan:
    """Every output file of the run, checked against the two rules (module docstring); ``other_inputs`` are
    (path, role) of further files the run reads, such as ("m.onnx", "the model"). Reads folder listings and file
    identities only: nothing is opened for writing, created or truncated. Raises ``PosestreamError``."""
    inputs, folders, images = _input_files(streams, other_inputs)
    videos = _video_paths(streams)
    annotated = _image_paths(streams, images)
    outputs = _Files()

    def claim(path: str | Path, role: str) -> None:
        overwritten = inputs.find(path)
        if overwritten is not None:
            raise PosestreamError(str(path), f"{role} would overwrite {overwritten[1]} {overwritten[0]}; "
                                             f"an output never writes over an input: give it another path")
        taken = outputs.find(path)
        if taken is not None:
            raise PosestreamError(str(path), f"{role} and {taken[1]} would write the same file; "
                                             f"give each its own path")
        outputs.add(path, role)

    for path in dict.fromkeys(s.out_jsonl for s in streams if s.out_jsonl and s.out_jsonl != STDOUT):
        claim(path, "the JSON-lines output")
    for index, path in videos.items():
        claim(path, f"{_stream_label(index, streams[index])}'s overlay video")
    for index, targets in annotated.items():
        label = _stream_label(index, streams[index])
        folder = Path(streams[index].overlay.path)
        if folder.exists() and not folder.is_dir():
            raise PosestreamError(str(folder), f"is a file, but {label}'s annotated images need a folder")
        source_folder = folders.find(folder)
        if source_folder is not None:
            raise PosestreamError(str(folder), f"{label}'s annotated images would go into {source_folder[1]} "
                                               f"{source_folder[0]}; give the overlay output another folder")
        for image, target in targets.items():
            claim(target, f"{label}'s annotated image of {Path(image).name}")
    return OutputPlan(videos=videos, images=annotated)
