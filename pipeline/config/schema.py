"""Every user-facing option of ``posestream run``, declared once.

An ``Option`` names its key in a streams config file (``batch``, ``tracking.min_hits``; stream options also
stand in ``[defaults]`` and in each ``[[streams]]`` entry), its command-line flag, its kind and limits, its
help text and its default, which is read off the dataclass that consumes it (``SourceConfig``,
``RuntimeConfig``, ``TrackerConfig``, ...), so a default lives in one place. From this table come:

- the config-file checks (``check_value``: one-line errors naming the file, the key path and the problem),
- the ``run`` flags (``add_flags``) and what the flags override (``overrides_from_flags``),
- the option tables of docs/streams-config.md (``markdown_tables``; a test keeps the docs in step).

Why our own table instead of pydantic or msgspec: the options already are frozen dataclasses that the
runtime and the Python API take directly; a validation library would need a second set of models beside them
(or replace them everywhere), and its messages would need rewording to keep today's one-line errors.
Declaring limits here, next to the flag and the help, is about as long as the library's field annotations.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from typing import Any, Iterable

from posestream.pipeline.core.model import DEFAULT_MODEL
from posestream.pipeline.estimators.create import MIN_SCORE
from posestream.pipeline.estimators.detector import DetectorConfig
from posestream.pipeline.estimators.topdown import TopDownConfig
from posestream.pipeline.runtime.graph import RuntimeConfig
from posestream.pipeline.sources.readers import RTSP_TRANSPORTS, SourceConfig
from posestream.pipeline.tracking.tracker import OneEuroConfig, TrackerConfig

RUN, STREAM = "run", "stream"  # where an option is set: once for the run, or per stream (and in [defaults])

KIND_WORDS = {"int": "an integer", "number": "a number", "bool": "true or false", "str": "a string",
              "size": "a size HEIGHTxWIDTH, e.g. 256x192"}


@dataclass(frozen=True)
class Bounds:
    """Numeric limits: ``low``/``high`` inclusive unless ``low_open``/``high_open``."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def holds(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return not (self.high is not None and (value >= self.high if self.high_open else value > self.high))

    def words(self) -> str:
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        return f"{'<' if self.high_open else '<='} {self.high:g}"


AT_LEAST_0, AT_LEAST_1, ABOVE_0 = Bounds(0), Bounds(1), Bounds(0, low_open=True)


@dataclass(frozen=True)
class Option:
    key: str  # key path in a config file; a STREAM option's key is its name in [defaults] and [[streams]]
    kind: str  # one of KIND_WORDS
    help: str
    default: Any = None  # None: not set (the consumer decides, as the help says)
    scope: str = RUN
    flag: str | None = None  # the run flag; None: config file only
    flag_value: Any = None  # for a bool option: the value its flag (which takes no argument) sets
    bounds: Bounds | None = None
    choices: tuple[str, ...] = ()
    metavar: str | None = None
    default_text: str | None = None  # how the docs show the default when it is not a plain value
    bounds_text: str | None = None  # the limits in words where ``bounds.words()`` says too little

    @property
    def dest(self) -> str:
        """The argparse attribute that holds the flag's value."""
        return self.flag.lstrip("-").replace("-", "_")

    @property
    def name(self) -> str:
        return self.key.rpartition(".")[2]

    def check(self, value: Any) -> str | None:
        """None when ``value`` is acceptable, else the problem ("must be >= 1, got 0")."""
        if not _is_kind(value, self.kind):
            return f"must be {KIND_WORDS[self.kind]}, got {describe(value)}"
        if self.choices and value not in self.choices:
            return f"must be one of {', '.join(self.choices)}, got {value!r}"
        if self.bounds is not None and not self.bounds.holds(value):
            return f"must be {self.bounds_text or self.bounds.words()}, got {value}"
        return None

    def shown_default(self) -> str:
        if self.default_text is not None:
            return self.default_text
        if self.default is None:
            return "none"
        if isinstance(self.default, bool):
            return str(self.default).lower()
        return f"{self.default:g}" if isinstance(self.default, float) else str(self.default)


def _is_kind(value: Any, kind: str) -> bool:
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "size":
        return parse_size(value) is not None
    return isinstance(value, str) and value != ""


def parse_size(value: Any) -> tuple[int, int] | None:
    """"256x192" -> (256, 192); None when it is not a size."""
    if not isinstance(value, str):
        return None
    height, sep, width = value.lower().partition("x")
    if not sep or not height.isdigit() or not width.isdigit() or min(int(height), int(width)) < 1:
        return None
    return int(height), int(width)


def describe(value: Any) -> str:
    """A value as errors show it."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return repr(value) if value else "an empty string"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return repr(value)


_SOURCE, _RUNTIME, _TRACKER, _EURO = SourceConfig(), RuntimeConfig(), TrackerConfig(), OneEuroConfig()
_TOP_DOWN, _DETECTOR = TopDownConfig(), DetectorConfig()
BACKEND_CHOICES = ("auto", "onnxruntime", "openvino", "torch", "tensorrt")

OPTIONS: tuple[Option, ...] = (
    # --------------------------------------------------------------------------------------------------- model
    Option("model", "str", "a built-in model name, a .pose.json sidecar, or a model file (.onnx, .xml, .engine, "
           ".pt) with its sidecar beside it", flag="--model", default_text=DEFAULT_MODEL),
    # No choices here: the backend factory names the unknown backend and lists the known ones.
    Option("backend", "str", f"inference backend: {', '.join(BACKEND_CHOICES)} (auto: OpenVINO for .xml, ONNX "
           "Runtime for .onnx, TensorRT for .engine, torch for .pt)", default="auto", flag="--backend"),
    Option("input_height", "int", "network input height for resizable models", flag="--input-height",
           bounds=AT_LEAST_1, default_text="the sidecar's"),
    Option("threads", "int", "inference threads (0: the runtime's default)", default=0, flag="--threads",
           bounds=AT_LEAST_0),
    Option("device", "str", "where the network runs: an OpenVINO device (CPU, GPU) or, for the torch backend, cpu "
           "or cuda[:N]", flag="--device", default_text="CPU"),
    Option("parse_device", "str", "where the maps are parsed: cpu (Numba), or cuda (the CUDA kernels read the "
           "torch or TensorRT outputs on the GPU; only compact results are copied back)", flag="--parse-device",
           choices=("cpu", "cuda"), default_text="cpu"),
    Option("flip", "bool", "bottom-up: test-time flip, the network also sees each frame mirrored and the maps "
           "are averaged (twice the network time; more accurate)", default=False, flag="--flip", flag_value=True),
    Option("min_score", "number", "drop people scoring below this from every output", default=MIN_SCORE,
           flag="--min-score", bounds=AT_LEAST_0, metavar="S"),
    # ---------------------------------------------------------------------------------------------------- mode
    Option("mode", "str", "bottom-up: people are assembled from the network's maps of whole frames; top-down: a "
           "person detector finds boxes and the network runs on one crop per person (docs/topdown.md)",
           default="bottom-up", flag="--mode", choices=("bottom-up", "top-down")),
    Option("detector", "str", "top-down: a YOLOX-format ONNX person detector, or 'whole-image' for images that "
           "are already one person's box (LSP's)", flag="--detector", metavar="PATH",
           default_text="yolox-nano from the shared folder"),
    Option("detect_every", "int", "top-down on video: detect on every K-th frame; between, each stream's boxes "
           "come from the people of its previous frame", default=_TOP_DOWN.detect_every, flag="--detect-every",
           bounds=AT_LEAST_1, metavar="K"),
    Option("detector_score", "number", "top-down: least detector score for a box",
           default=_DETECTOR.score_threshold, flag="--detector-score", bounds=Bounds(0, 1), metavar="S"),
    Option("crop_size", "size", "top-down: network input per person, HEIGHTxWIDTH, multiples of the model's stride",
           default=f"{_TOP_DOWN.crop_height}x{_TOP_DOWN.crop_width}", flag="--crop-size", metavar="HxW"),
    # ----------------------------------------------------------------------------------------------- the graph
    Option("batch", "int", "most frames per inference call, taken round-robin across streams",
           default=_RUNTIME.batch_size, flag="--batch", bounds=AT_LEAST_1),
    Option("batch_wait_ms", "number", "how long a started batch waits for frames of other streams",
           default=_RUNTIME.batch_wait_ms, flag="--batch-wait-ms", bounds=AT_LEAST_0, metavar="MS"),
    Option("queue_size", "int", "frames buffered per file or image stream; its decoder waits when full (nothing "
           "is lost)", default=_RUNTIME.queue_size, flag="--queue-size", bounds=AT_LEAST_1, metavar="N"),
    Option("live_queue_size", "int", "frames buffered per live stream; when full the oldest is dropped and "
           "counted as stale", default=_RUNTIME.live_queue_size, flag="--live-queue-size", bounds=AT_LEAST_1,
           metavar="N"),
    Option("metrics_port", "int", "serve Prometheus metrics on /metrics and stream states on /healthz on this TCP "
           "port (0: any free port)", flag="--metrics-port", bounds=Bounds(0, 65535), metavar="PORT",
           bounds_text="a TCP port 0-65535 (0: any free port)"),
    Option("metrics_host", "str", "address for the metrics server (0.0.0.0: every interface)",
           default="127.0.0.1", flag="--metrics-host", metavar="HOST"),
    Option("stats_interval_s", "number", "print a table of per-stream fps, latency, queues and drops to stderr "
           "this often in seconds (0: never)", default=0.0, flag="--stats-interval", bounds=AT_LEAST_0,
           metavar="S"),
    # ------------------------------------------------------------------------------------------------- outputs
    Option("outputs.jsonl", "str", "JSON lines, one object per frame, all streams (docs/output-schema.md); '-' "
           "for stdout, the default when no output is given", flag="--out-jsonl", metavar="FILE"),
    Option("outputs.video", "str", "overlay output: on the command line a video file for a single video source, "
           "otherwise a folder (one .mp4 per video stream, an annotated .jpg per image); in a config file always "
           "a folder", flag="--out-video", metavar="FILE_OR_DIR"),
    # ------------------------------------------------------------------------------------------------ tracking
    Option("tracking.enabled", "bool", "track each video stream: people get a track_id (from 1 per stream); off: "
           "track_id is null, keypoints raw", default=True, flag="--no-track", flag_value=False),
    Option("tracking.smooth", "bool", "smooth tracked keypoints (One Euro filter); off: the raw keypoints",
           default=True, flag="--no-smooth", flag_value=False),
    Option("tracking.track_buffer", "int", "frames a lost track keeps its ID while unseen",
           default=_TRACKER.track_buffer, flag="--track-buffer", bounds=AT_LEAST_0, metavar="N"),
    Option("tracking.min_hits", "int", "frames in a row a new track must be seen before it gets an ID; until then "
           "its person is output with track_id null", default=_TRACKER.min_hits, flag="--track-min-hits",
           bounds=AT_LEAST_1, metavar="N"),
    Option("tracking.smooth_min_cutoff", "number", "One Euro cutoff at rest in Hz: lower is steadier, lags more",
           default=_EURO.min_cutoff, flag="--smooth-min-cutoff", bounds=ABOVE_0, metavar="HZ"),
    Option("tracking.smooth_beta", "number", "One Euro speed coefficient: higher lags less on fast motion",
           default=_EURO.beta, flag="--smooth-beta", bounds=AT_LEAST_0, metavar="BETA"),
    # ------------------------------------------------------------------------------ per stream (and [defaults])
    Option("max_frames", "int", "stop the stream after this many frames", scope=STREAM, flag="--max-frames",
           bounds=AT_LEAST_1, metavar="N", default_text="all"),
    Option("pace", "bool", "read a file at its frame rate, as a camera delivers frames (to try live settings on "
           "files)", default=False, scope=STREAM, flag="--pace", flag_value=True),
    Option("live", "bool", "treat the stream as live: when inference falls behind, drop the oldest frames "
           "(counted) instead of waiting", scope=STREAM, flag="--live", flag_value=True,
           default_text="live for live URLs and webcams, not for files"),
    Option("decode_threads", "int", "FFmpeg decoder threads (0: FFmpeg picks)", default=_SOURCE.decode_threads,
           scope=STREAM, flag="--decode-threads", bounds=AT_LEAST_0, metavar="N"),
    Option("hwaccel", "str", "decode on this FFmpeg hardware device type (e.g. cuda, vaapi), falling back to "
           "software where the codec cannot", scope=STREAM, flag="--hwaccel", metavar="TYPE",
           default_text="software decoding"),
    Option("rtsp_transport", "str", "RTSP transport: tcp (RTP inside the RTSP connection) or udp",
           default=_SOURCE.rtsp_transport, scope=STREAM, flag="--rtsp-transport", choices=RTSP_TRANSPORTS),
    Option("open_timeout_s", "number", "live sources: give up connecting after this many seconds",
           default=_SOURCE.open_timeout_s, scope=STREAM, flag="--open-timeout", bounds=ABOVE_0, metavar="S"),
    Option("read_timeout_s", "number", "live sources: a connection that brings no data for this many seconds is "
           "lost", default=_SOURCE.read_timeout_s, scope=STREAM, flag="--read-timeout", bounds=ABOVE_0,
           metavar="S"),
    Option("reconnect", "bool", "live sources: re-open after an outage", default=_SOURCE.reconnect, scope=STREAM,
           flag="--no-reconnect", flag_value=False),
    Option("backoff_initial_s", "number", "live sources: wait before the first retry; retry k waits "
           "min(backoff_max_s, backoff_initial_s * 2^(k-1))", default=_SOURCE.backoff_initial_s, scope=STREAM,
           flag="--backoff-initial", bounds=ABOVE_0, metavar="S"),
    Option("backoff_max_s", "number", "live sources: the longest wait between retries",
           default=_SOURCE.backoff_max_s, scope=STREAM, flag="--backoff-max", bounds=ABOVE_0, metavar="S"),
    Option("backoff_jitter", "number", "live sources: each wait is jittered by +- this fraction",
           default=_SOURCE.backoff_jitter, scope=STREAM, flag="--backoff-jitter", bounds=Bounds(0, 1, high_open=True),
           metavar="F"),
    Option("max_reconnects", "int", "live sources: retries in a row before the stream fails", scope=STREAM,
           flag="--max-reconnects", bounds=AT_LEAST_0, metavar="N", default_text="retry forever"),
)

OPTIONS_BY_KEY = {option.key: option for option in OPTIONS}
RUN_OPTIONS = {option.key: option for option in OPTIONS if option.scope == RUN}
STREAM_OPTIONS = {option.key: option for option in OPTIONS if option.scope == STREAM}
SOURCE_OPTION_NAMES = tuple(key for key in STREAM_OPTIONS if key not in ("pace", "live"))
TABLES = ("outputs", "tracking")  # run options whose keys are "<table>.<name>"

# Flag groups in --help, in this order, by the first option of each group.
_FLAG_GROUPS = (
    ("model", "model", None),
    ("mode", "mode", "bottom-up or top-down (docs/topdown.md)"),
    ("batch", "streams", "all streams run at once; frames of different streams share inference batches"),
    ("outputs.jsonl", "outputs", None),
    ("tracking.enabled", "tracking", "each video stream is tracked on its own: people get a track_id (from 1 per "
                                     "stream) and smoothed keypoints; image inputs are not tracked"),
    ("max_frames", "sources", "per-stream source options; a config file sets them in [defaults] or per stream"),
)
MODEL_KEYS = ("model", "backend", "input_height", "threads", "device", "parse_device", "flip", "min_score")
MODE_KEYS = ("mode", "detector", "detect_every", "detector_score", "crop_size")


def _flag_type(option: Option):
    """argparse's converter for ``option``: the same limits as the config file, argparse's own error style."""
    def convert(text: str):
        if option.kind == "int":
            try:
                value: Any = int(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"must be an integer, got {text}") from None
        elif option.kind == "number":
            try:
                value = float(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"must be a number, got {text}") from None
        else:
            value = text
        problem = option.check(value)
        if problem is not None:
            raise argparse.ArgumentTypeError(problem)
        return value
    return convert


def add_flags(parser: argparse.ArgumentParser, keys: Iterable[str]) -> None:
    """Add the flags of the options ``keys`` to ``parser``, grouped as in ``posestream run --help``.

    Defaults are None (not given), so that with ``--config`` the file's values hold unless a flag is given; the
    help shows the real default.
    """
    wanted = [OPTIONS_BY_KEY[key] for key in keys]
    groups: dict[str, argparse._ArgumentGroup] = {}
    group_of = _group_names()
    for option in wanted:
        title, description = group_of[option.key]
        if title not in groups:
            groups[title] = parser.add_argument_group(title, description)
        group = groups[title]
        help_text = f"{option.help} (default: {option.shown_default()})"
        if option.kind == "bool":
            group.add_argument(option.flag, dest=option.dest, action="store_const", const=option.flag_value,
                               default=None, help=help_text)
        else:
            group.add_argument(option.flag, dest=option.dest, type=_flag_type(option), default=None,
                               choices=option.choices or None, metavar=option.metavar, help=help_text)


def _group_names() -> dict[str, tuple[str, str | None]]:
    starts = {first: (title, description) for first, title, description in _FLAG_GROUPS}
    names, current = {}, starts[OPTIONS[0].key]
    for option in OPTIONS:
        current = starts.get(option.key, current)
        names[option.key] = current
    return names


def overrides_from_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The options given as flags, as config-file key paths (stream options as ``defaults.<key>``)."""
    overrides = {}
    for option in OPTIONS:
        if option.flag is None:
            continue
        value = getattr(args, option.dest, None)
        if value is not None:
            overrides[f"defaults.{option.key}" if option.scope == STREAM else option.key] = value
    return overrides


def markdown_tables() -> str:
    """The option tables of docs/streams-config.md (run options, then per-stream options)."""
    def row(option: Option, key: str) -> str:
        kind = option.kind if not option.choices else " / ".join(f"`{choice}`" for choice in option.choices)
        limits = f", {option.bounds.words()}" if option.bounds is not None else ""
        flag = f"`{option.flag}`" if option.flag else ""
        return f"| `{key}` | {kind}{limits} | {option.shown_default()} | {flag} | {option.help} |"

    header = "| key | kind | default | flag | meaning |\n|---|---|---|---|---|"
    run_rows = [row(option, option.key) for option in RUN_OPTIONS.values()]
    stream_rows = [row(option, option.key) for option in STREAM_OPTIONS.values()]
    return ("### Run options (top level, `[outputs]`, `[tracking]`)\n\n" + header + "\n" + "\n".join(run_rows)
            + "\n\n### Stream options (`[defaults]` and each `[[streams]]` entry)\n\n" + header + "\n"
            + "\n".join(stream_rows) + "\n")
