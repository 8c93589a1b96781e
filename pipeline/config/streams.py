"""The run's configuration from a streams config file (TOML, or YAML with PyYAML) or from ``run SOURCE...``
with flags: both become the same plain data and go through ``parse_streams_config``, which checks every value
against the option table in ``posestream.pipeline.config.schema``. The file format is documented in
docs/streams-config.md (example: docs/streams.example.toml).

Every problem is a ``PosestreamError`` naming the file, the key path (``streams[2].url``) and the problem;
unknown keys are errors, so a misspelt option never goes unnoticed. Relative paths in a file are taken
relative to the file's folder. Precedence, most specific first: a stream's own entry, then ``overrides``
(the command line's flags, as key paths of this format), then the file's global keys, then the defaults.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from posestream.pipeline.config.schema import (
    OPTIONS_BY_KEY,
    RUN_OPTIONS,
    SOURCE_OPTION_NAMES,
    STREAM_OPTIONS,
    TABLES,
    describe,
    parse_size,
)
from posestream.pipeline.core.errors import PosestreamError
from posestream.pipeline.core.model import MODEL_SUFFIXES
from posestream.pipeline.estimators.create import EstimatorSettings
from posestream.pipeline.estimators.detector import WHOLE_IMAGE
from posestream.pipeline.runtime.graph import OverlayTarget, StreamSpec
from posestream.pipeline.sources.readers import SourceConfig, is_url
from posestream.pipeline.tracking.tracker import OneEuroConfig, TrackerConfig

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, from PyPI
    import tomli as tomllib


def _default(key: str) -> Any:
    return OPTIONS_BY_KEY[key].default


@dataclass(frozen=True)
class StreamsConfig:
    """Everything ``posestream run`` needs: the model and mode options, the graph's, the tracker, the streams."""

    path: str
    model: str | None = None  # None: the built-in default model
    backend: str = _default("backend")
    input_height: int | None = None
    threads: int = _default("threads")
    device: str | None = None  # None: the backend's default (CPU)
    parse_device: str | None = None  # None: cpu
    flip: bool = _default("flip")
    min_score: float = _default("min_score")
    mode: str = _default("mode")
    detector: str | None = None  # top-down's person detector; None: yolox-nano from the shared folder
    detect_every: int = _default("detect_every")
    detector_score: float = _default("detector_score")
    crop_size: tuple[int, int] = parse_size(_default("crop_size"))
    batch: int = _default("batch")
    batch_wait_ms: float = _default("batch_wait_ms")
    queue_size: int = _default("queue_size")
    live_queue_size: int = _default("live_queue_size")
    metrics_port: int | None = None
    metrics_host: str = _default("metrics_host")
    stats_interval_s: float = _default("stats_interval_s")
    tracking: TrackerConfig | None = TrackerConfig()
    streams: tuple[StreamSpec, ...] = ()


STREAM_KEYS = ("url", "path", "name", "outputs", *STREAM_OPTIONS)
OUTPUT_NAMES = ("jsonl", "video")


class _Checker:
    """Reads values out of the parsed data, with errors that name the file and the key path."""

    def __init__(self, path: str) -> None:
        self.path = path

    def error(self, key_path: str, problem: str) -> PosestreamError:
        return PosestreamError(f"{self.path}: {key_path}" if key_path else self.path, problem)

    def table(self, data: Any, key_path: str, known: Sequence[str]) -> dict:
        """``data`` as a table whose keys are all ``known``."""
        if not isinstance(data, dict):
            raise self.error(key_path, f"must be a table, got {describe(data)}")
        for key in data:
            if key not in known:
                child = f"{key_path}.{key}" if key_path else str(key)
                raise self.error(child, f"unknown key (known: {', '.join(sorted(known))})")
        return data

    def values(self, table: dict, key_path: str, option_keys: Mapping[str, str]) -> None:
        """Check each value of ``table`` whose key names an option (``option_keys``: table key -> option key)."""
        for key, value in table.items():
            if key in option_keys:
                problem = OPTIONS_BY_KEY[option_keys[key]].check(value)
                if problem is not None:
                    raise self.error(f"{key_path}.{key}" if key_path else key, problem)


def _resolve(value: str, base: Path | None) -> str:
    """A path from the data, relative to ``base`` (None: as it is); URLs and "-" (stdout) as they are."""
    if value == "-" or is_url(value) or base is None:
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
        raise PosestreamError(name, f"must hold a table of options at the top, got {describe(data)}")
    return data


def load_streams_config(path: str | Path, overrides: Mapping[str, Any] | None = None) -> StreamsConfig:
    """Read and check a config file. ``overrides`` maps key paths (``batch``, ``outputs.jsonl``,
    ``tracking.enabled``, ``defaults.max_frames``) to values that replace the file's global ones."""
    return parse_streams_config(read_config_file(path), str(path), overrides)


def sources_as_data(sources: Sequence[str], overrides: Mapping[str, Any]) -> dict:
    """``run SOURCE... --flags`` as config data: one stream per source, the flags as global options.

    ``--out-video`` names a file for a single source and a folder for several, as the flag's help says.
    """
    streams = [{"url": source} if is_url(source) else {"path": source} for source in sources]
    data = {key: value for key, value in overrides.items() if value is not None}
    video = data.pop("outputs.video", None)
    if video is not None:
        if len(streams) == 1:
            streams[0]["outputs"] = {"video": video}
        else:
            data["outputs.video"] = video
    return {"streams": streams, **_nest(data)}


def _nest(flat: Mapping[str, Any]) -> dict:
    """{"tracking.enabled": False, "batch": 2} -> {"tracking": {"enabled": False}, "batch": 2}."""
    nested: dict[str, Any] = {}
    for key_path, value in flat.items():
        table, _, key = key_path.rpartition(".")
        if table:
            nested.setdefault(table, {})[key] = value
        else:
            nested[key] = value
    return nested


def parse_streams_config(data: dict, path: str, overrides: Mapping[str, Any] | None = None,
                         relative_to_file: bool = True) -> StreamsConfig:
    """Check ``data`` (a parsed file, or ``sources_as_data``'s) and build the run's configuration.

    ``path`` names the data in errors; relative paths are taken from its folder, or as they are when
    ``relative_to_file`` is False (sources and outputs given on the command line).
    """
    check = _Checker(path)
    base = Path(path).expanduser().resolve().parent if relative_to_file else None
    data = _with_overrides(data, overrides or {}, check)
    top_keys = [key for key in RUN_OPTIONS if "." not in key]
    check.table(data, "", (*top_keys, *TABLES, "defaults", "streams"))
    check.values(data, "", {key: key for key in top_keys})
    tables = {}
    for table in TABLES:
        names = {key.partition(".")[2]: key for key in RUN_OPTIONS if key.startswith(f"{table}.")}
        tables[table] = check.table(data.get(table, {}), table, tuple(names))
        check.values(tables[table], table, names)
    defaults = check.table(data.get("defaults", {}), "defaults", tuple(STREAM_OPTIONS))
    check.values(defaults, "defaults", {key: key for key in STREAM_OPTIONS})
    entries = data.get("streams", [])
    if not isinstance(entries, list):
        raise check.error("streams", f"must be a list of tables, got {describe(entries)}")
    if not entries:
        raise check.error("streams", "no streams: add at least one [[streams]] entry with a url or a path")

    outputs = tables["outputs"]
    global_jsonl = _resolve(outputs["jsonl"], base) if "jsonl" in outputs else None
    global_video = _resolve(outputs["video"], base) if "video" in outputs else None
    streams = []
    names: dict[str, int] = {}
    for index, entry in enumerate(entries):
        key_path = f"streams[{index}]"
        check.table(entry, key_path, STREAM_KEYS)
        check.values(entry, key_path, {key: key for key in STREAM_OPTIONS})
        spec = _stream_spec(entry, key_path, defaults, global_jsonl, global_video, base, check)
        if spec.name:
            if spec.name in names:
                raise check.error(f"{key_path}.name",
                                  f"{spec.name!r} is already the name of streams[{names[spec.name]}]")
            names[spec.name] = index
        streams.append(spec)

    values: dict[str, Any] = {key: data[key] for key in top_keys if key in data}
    if "model" in values and looks_like_a_path(values["model"]):
        values["model"] = _resolve(values["model"], base)
    if "detector" in values and values["detector"] != WHOLE_IMAGE:
        values["detector"] = _resolve(values["detector"], base)
    if "crop_size" in values:
        values["crop_size"] = parse_size(values["crop_size"])
    return StreamsConfig(path=path, streams=tuple(streams), tracking=_tracking(tables["tracking"]), **values)


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
            raise check.error(table, f"must be a table, got {describe(inner)}")
        merged[table] = {**inner, key: value}
    return merged


def _stream_spec(entry: dict, key_path: str, defaults: dict, global_jsonl: str | None, global_video: str | None,
                 base: Path | None, check: _Checker) -> StreamSpec:
    if ("url" in entry) == ("path" in entry):
        raise check.error(key_path, "needs exactly one of url (a camera or stream URL) or path (a file or folder)")
    for key in ("url", "path", "name"):
        if key in entry and not (isinstance(entry[key], str) and entry[key]):
            raise check.error(f"{key_path}.{key}", f"must be a string, got {describe(entry[key])}")
    if "url" in entry:
        source = entry["url"]
        if not is_url(source):
            raise check.error(f"{key_path}.url", f"{source!r} is not a URL (rtsp://..., http://...); "
                                                 "use path for files")
    else:
        source = _resolve(entry["path"], base)
    options = {**defaults, **{key: entry[key] for key in STREAM_OPTIONS if key in entry}}
    source_options = {key: value for key, value in options.items() if key in SOURCE_OPTION_NAMES}
    try:
        source_config = SourceConfig(**source_options)
    except PosestreamError as error:  # checks across options (backoff_max_s >= backoff_initial_s), hwaccel
        where = f"{key_path}.{error.subject}" if error.subject in entry else f"defaults.{error.subject}"
        raise check.error(where, error.problem) from None

    outputs = check.table(entry.get("outputs", {}), f"{key_path}.outputs", OUTPUT_NAMES)
    for key, value in outputs.items():
        if not (isinstance(value, str) and value):
            raise check.error(f"{key_path}.outputs.{key}", f"must be a string, got {describe(value)}")
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


def _tracking(table: dict) -> TrackerConfig | None:
    if not table.get("enabled", True):
        return None
    tracker, euro = TrackerConfig(), OneEuroConfig()
    return TrackerConfig(track_buffer=table.get("track_buffer", tracker.track_buffer),
                         min_hits=table.get("min_hits", tracker.min_hits), smooth=table.get("smooth", True),
                         smoothing=OneEuroConfig(min_cutoff=table.get("smooth_min_cutoff", euro.min_cutoff),
                                                 beta=table.get("smooth_beta", euro.beta)))


def estimator_settings(config: StreamsConfig) -> EstimatorSettings:
    """The estimator part of a run's configuration."""
    return EstimatorSettings(model=config.model, backend=config.backend, input_height=config.input_height,
                             threads=config.threads, device=config.device, parse_device=config.parse_device,
                             mode=config.mode, detector=config.detector, detect_every=config.detect_every,
                             detector_score=config.detector_score, crop_size=config.crop_size,
                             max_batch=config.batch, flip=config.flip, min_score=config.min_score)
