"""Stream config files for ``posestream run --config FILE`` (TOML, or YAML with PyYAML): global options and
one entry per stream. The format is documented in docs/streams-config.md (example: docs/streams.example.toml).

Every problem is a ``PosestreamError`` naming the file, the key path (``streams[2].url``) and the problem;
unknown keys are errors, so a misspelt option never goes unnoticed. Relative paths in the file are taken
relative to the file's folder. Precedence, most specific first: a stream's own entry, then ``overrides``
(the command line's flags, as key paths of this format), then the file's global keys, then the defaults.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from posestream.pipeline.core.errors import PosestreamError
from posestream.pipeline.core.model import MODEL_SUFFIXES
from posestream.pipeline.runtime.graph import OverlayTarget, RuntimeConfig, StreamSpec
from posestream.pipeline.sources.readers import SourceConfig, is_url
from posestream.pipeline.tracking.tracker import OneEuroConfig, TrackerConfig

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, from PyPI
    import tomli as tomllib

_RUNTIME_DEFAULTS = RuntimeConfig()
_TRACKER_DEFAULTS = TrackerConfig()


@dataclass(frozen=True)
class StreamsConfig:
    """A parsed config file: what ``posestream run`` needs besides the command line."""

    path: str
    model: str | None = None  # None: the built-in default model
    backend: str = "auto"
    input_height: int | None = None
    threads: int = 0
    device: str | None = None  # None: the backend's default (CPU)
    parse_device: str | None = None  # None: cpu
    mode: str = "bottom-up"  # or "top-down" (docs/topdown.md)
    detector: str | None = None  # top-down's person detector; None: yolox-nano from the shared folder
    detect_every: int = 1  # top-down: run the detector on every K-th frame of a stream
    batch: int = _RUNTIME_DEFAULTS.batch_size
    batch_wait_ms: float = _RUNTIME_DEFAULTS.batch_wait_ms
    queue_size: int = _RUNTIME_DEFAULTS.queue_size
    live_queue_size: int = _RUNTIME_DEFAULTS.live_queue_size
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    stats_interval_s: float = 0.0
    tracking: TrackerConfig | None = _TRACKER_DEFAULTS
    streams: tuple[StreamSpec, ...] = ()


# Value kinds: what a key accepts, and the word used in errors.
_KINDS = {
    "int": ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    "number": ("a number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)),
    "bool": ("true or false", lambda v: isinstance(v, bool)),
    "str": ("a string", lambda v: isinstance(v, str) and v != ""),
    "table": ("a table", lambda v: isinstance(v, dict)),
}

GLOBAL_KEYS = {
    "model": "str", "backend": "str", "input_height": "int", "threads": "int", "device": "str",
    "parse_device": "str", "batch": "int", "batch_wait_ms": "number", "queue_size": "int", "live_queue_size": "int",
    "metrics_port": "int", "metrics_host": "str", "stats_interval_s": "number",
    "mode": "str", "detector": "str", "detect_every": "int",
    "outputs": "table", "tracking": "table", "defaults": "table", "streams": "list",
}
OUTPUT_KEYS = {"jsonl": "str", "video": "str"}
TRACKING_KEYS = {"enabled": "bool", "track_buffer": "int", "min_hits": "int", "smooth": "bool",
                 "smooth_min_cutoff": "number", "smooth_beta": "number"}
# Per-stream options; ``defaults`` holds the same keys for every stream. All but pace/live go to SourceConfig.
SOURCE_OPTION_KEYS = {
    "max_frames": "int", "decode_threads": "int", "rtsp_transport": "str", "open_timeout_s": "number",
    "read_timeout_s": "number", "reconnect": "bool", "backoff_initial_s": "number", "backoff_max_s": "number",
    "backoff_jitter": "number", "max_reconnects": "int",
}
STREAM_OPTION_KEYS = {**SOURCE_OPTION_KEYS, "pace": "bool", "live": "bool"}
STREAM_KEYS = {"url": "str", "path": "str", "name": "str", "outputs": "table", **STREAM_OPTION_KEYS}


class _Checker:
    """Reads values out of the parsed file, with errors that name the file and the key path."""

    def __init__(self, path: str) -> None:
        self.path = path

    def error(self, key_path: str, problem: str) -> PosestreamError:
        return PosestreamError(f"{self.path}: {key_path}" if key_path else self.path, problem)

    def table(self, data: Any, key_path: str, known: Mapping[str, str]) -> dict:
        if not isinstance(data, dict):
            raise self.error(key_path, f"must be a table, got {_describe(data)}")
        for key, value in data.items():
            child = f"{key_path}.{key}" if key_path else str(key)
            if key not in known:
                raise self.error(child, f"unknown key (known: {', '.join(sorted(known))})")
            kind = known[key]
            if kind == "list":
                if not isinstance(value, list):
                    raise self.error(child, f"must be a list of tables, got {_describe(value)}")
                continue
            word, accepts = _KINDS[kind]
            if not accepts(value):
                raise self.error(child, f"must be {word}, got {_describe(value)}")
        return data


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return repr(value) if value else "an empty string"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _resolve(value: str, base: Path) -> str:
    """A path from the file, relative to the file's folder; URLs and "-" (stdout) as they are."""
    if value == "-" or is_url(value):
        return value
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else base / path)


def looks_like_a_path(model: str) -> bool:
    """A model given as a file (a sidecar or a network file), as opposed to a built-in name."""
    return "/" in model or "\\" in model or Path(model).suffix in (".json", *MODEL_SUFFIXES)


def read_config_file(path: str | Path) -> dict:
    """The file's contents as plain data (TOML by default; YAML for .yaml/.yml)."""
    path = Path(path)
    name = str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise PosestreamError(name, "no such config file") from None
    except OSError as error:
        raise PosestreamError(name, f"cannot read: {error.strerror or error}") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise PosestreamError(name, "YAML config files need PyYAML: pip install pyyaml") from None
        try:
            data = yaml.safe_load(raw.decode("utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as error:
            raise PosestreamError(name, f"not valid YAML: {' '.join(str(error).split())}") from None
        data = {} if data is None else data
    else:
        try:
            data = tomllib.loads(raw.decode("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
            raise PosestreamError(name, f"not valid TOML: {error}") from None
    if not isinstance(data, dict):
        raise PosestreamError(name, f"must hold a table of options at the top, got {_describe(data)}")
    return data


def load_streams_config(path: str | Path, overrides: Mapping[str, Any] | None = None) -> StreamsConfig:
    """Read and check a config file. ``overrides`` maps key paths (``batch``, ``outputs.jsonl``,
    ``tracking.enabled``, ``defaults.max_frames``) to values that replace the file's global ones."""
    return parse_streams_config(read_config_file(path), str(path), overrides)


def parse_streams_config(data: dict, path: str, overrides: Mapping[str, Any] | None = None) -> StreamsConfig:
    check = _Checker(path)
    base = Path(path).expanduser().resolve().parent
    data = _with_overrides(data, overrides or {}, check)
    check.table(data, "", GLOBAL_KEYS)
    outputs = check.table(data.get("outputs", {}), "outputs", OUTPUT_KEYS)
    defaults = check.table(data.get("defaults", {}), "defaults", STREAM_OPTION_KEYS)
    entries = data.get("streams", [])
    if not entries:
        raise check.error("streams", "no streams: add at least one [[streams]] entry with a url or a path")

    model = data.get("model")
    if model is not None and looks_like_a_path(model):
        model = _resolve(model, base)
    global_jsonl = _resolve(outputs["jsonl"], base) if "jsonl" in outputs else None
    global_video = _resolve(outputs["video"], base) if "video" in outputs else None

    streams = []
    names: dict[str, int] = {}
    for index, entry in enumerate(entries):
        key_path = f"streams[{index}]"
        check.table(entry, key_path, STREAM_KEYS)
        spec = _stream_spec(entry, key_path, defaults, global_jsonl, global_video, base, check)
        if spec.name:
            if spec.name in names:
                raise check.error(f"{key_path}.name",
                                  f"{spec.name!r} is already the name of streams[{names[spec.name]}]")
            names[spec.name] = index
        streams.append(spec)

    values = dict(path=path, model=model, streams=tuple(streams), tracking=_tracking(data.get("tracking", {}), check))
    if "parse_device" in data and data["parse_device"] not in ("cpu", "cuda"):
        raise check.error("parse_device", f"must be cpu or cuda, got {data['parse_device']!r}")
    if "mode" in data and data["mode"] not in ("bottom-up", "top-down"):
        raise check.error("mode", f"must be bottom-up or top-down, got {data['mode']!r}")
    if "detector" in data:
        from posestream.pipeline.estimators.detector import WHOLE_IMAGE

        values["detector"] = data["detector"] if data["detector"] == WHOLE_IMAGE else _resolve(data["detector"], base)
    for key in ("backend", "input_height", "threads", "device", "parse_device", "batch", "batch_wait_ms", "queue_size", "live_queue_size",
                "metrics_port", "metrics_host", "stats_interval_s", "mode", "detect_every"):
        if key in data:
            values[key] = data[key]
    for key in ("input_height", "batch", "queue_size", "live_queue_size", "detect_every"):
        if key in data and data[key] < 1:
            raise check.error(key, f"must be >= 1, got {data[key]}")
    for key in ("threads", "batch_wait_ms", "stats_interval_s"):
        if key in data and data[key] < 0:
            raise check.error(key, f"must be >= 0, got {data[key]}")
    if "metrics_port" in data and not 0 <= data["metrics_port"] <= 65535:
        raise check.error("metrics_port", f"must be a TCP port 0-65535 (0: any free port), got {data['metrics_port']}")
    return StreamsConfig(**values)


def _with_overrides(data: dict, overrides: Mapping[str, Any], check: _Checker) -> dict:
    """A copy of ``data`` with each override's key path set (one level of tables deep at most)."""
    merged = dict(data)
    for key_path, value in overrides.items():
        if value is None:
            continue
        table, _, key = key_path.rpartition(".")
        if not table:
            merged[key] = value
            continue
        inner = merged.get(table, {})
        if not isinstance(inner, dict):
            raise check.error(table, f"must be a table, got {_describe(inner)}")
        merged[table] = {**inner, key: value}
    return merged


def _stream_spec(entry: dict, key_path: str, defaults: dict, global_jsonl: str | None, global_video: str | None,
                 base: Path, check: _Checker) -> StreamSpec:
    if ("url" in entry) == ("path" in entry):
        raise check.error(key_path, "needs exactly one of url (a camera or stream URL) or path (a file or folder)")
    if "url" in entry:
        source = entry["url"]
        if not is_url(source):
            raise check.error(f"{key_path}.url", f"{source!r} is not a URL (rtsp://..., http://...); "
                                                 "use path for files")
    else:
        source = _resolve(entry["path"], base)
    options = {**defaults, **{key: entry[key] for key in STREAM_OPTION_KEYS if key in entry}}
    source_options = {key: value for key, value in options.items() if key in SOURCE_OPTION_KEYS}
    known_fields = {f.name for f in dataclasses.fields(SourceConfig)}
    for key in source_options:
        if key not in known_fields:
            where = f"{key_path}.{key}" if key in entry else f"defaults.{key}"
            raise check.error(where, "not supported by this build's sources")
    try:
        source_config = SourceConfig(**source_options)
    except PosestreamError as error:
        where = f"{key_path}.{error.subject}" if error.subject in entry else f"defaults.{error.subject}"
        raise check.error(where, error.problem) from None

    outputs = check.table(entry.get("outputs", {}), f"{key_path}.outputs", OUTPUT_KEYS)
    out_jsonl = _resolve(outputs["jsonl"], base) if "jsonl" in outputs else global_jsonl
    if "video" in outputs:
        overlay = OverlayTarget(_resolve(outputs["video"], base), folder=False)
    elif global_video is not None:
        overlay = OverlayTarget(global_video, folder=True)
    else:
        overlay = None
    name = entry.get("name", "")
    if name and not all(c.isalnum() or c in "._-" for c in name):
        raise check.error(f"{key_path}.name", f"{name!r}: use letters, digits, '.', '_' and '-' only "
                                              "(it names the stream's overlay file and metrics)")
    return StreamSpec(source=source, name=name, source_config=source_config, out_jsonl=out_jsonl, overlay=overlay,
                      live=options.get("live"), pace=options.get("pace", False))


def _tracking(table: Any, check: _Checker) -> TrackerConfig | None:
    check.table(table, "tracking", TRACKING_KEYS)
    limits = {"track_buffer": (0, ">= 0"), "min_hits": (1, ">= 1"), "smooth_beta": (0, ">= 0")}
    for key, (least, words) in limits.items():
        if key in table and table[key] < least:
            raise check.error(f"tracking.{key}", f"must be {words}, got {table[key]}")
    if "smooth_min_cutoff" in table and not table["smooth_min_cutoff"] > 0:
        raise check.error("tracking.smooth_min_cutoff", f"must be > 0 (Hz), got {table['smooth_min_cutoff']}")
    if not table.get("enabled", True):
        return None
    euro = OneEuroConfig()
    return TrackerConfig(track_buffer=table.get("track_buffer", _TRACKER_DEFAULTS.track_buffer),
                         min_hits=table.get("min_hits", _TRACKER_DEFAULTS.min_hits), smooth=table.get("smooth", True),
                         smoothing=OneEuroConfig(min_cutoff=table.get("smooth_min_cutoff", euro.min_cutoff),
                                                 beta=table.get("smooth_beta", euro.beta)))
