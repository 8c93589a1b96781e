"""Reading a trainer's TOML config: tables checked by section, sections built key by key, paths expanded.

Both families (heatmap_paf/config.py, deeppose/config.py) describe their sections as frozen dataclasses
and build them here, so an unknown key, a wrong type or a bad value raises the same PosestreamError,
naming the file and the key, whichever trainer reads it.
"""
from __future__ import annotations

import os
import string
from dataclasses import MISSING, fields
from pathlib import Path

import tomllib

from posestream.pipeline.core.errors import PosestreamError
from posestream.pipeline.core.paths import shared_dir

OPTIMIZERS = ("adam", "adamw")
DEVICES = ("auto", "cpu", "cuda")


def expand_path(text: str, config_path: Path) -> Path:
    """``${POSESTREAM_SHARED}`` and environment variables expanded; relative paths are relative to the
    config file's folder."""
    try:
        expanded = string.Template(text).substitute({**os.environ, "POSESTREAM_SHARED": str(shared_dir())})
    except (KeyError, ValueError) as error:
        raise PosestreamError(str(config_path), f"path {text!r} has an unknown variable {error}") from None
    path = Path(expanded).expanduser()
    return path if path.is_absolute() else (config_path.parent / path).resolve()


def read_config_tables(config_path: Path, sections: set[str]) -> tuple[dict, list[dict]]:
    """A trainer config's TOML: (its tables, its [[datasets]] list), with every section known and of its kind.

    ``sections`` names the allowed tables, ``datasets`` (an array of tables) among them.
    """
    try:
        data = tomllib.loads(config_path.read_text())
    except OSError as error:
        raise PosestreamError(str(config_path), f"cannot read: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise PosestreamError(str(config_path), f"is not valid TOML: {error}") from None
    for key in data:
        if key not in sections:
            raise PosestreamError(str(config_path), f"unknown section [{key}] (known: {', '.join(sorted(sections))})")
    for key in sections - {"datasets"}:
        if not isinstance(data.get(key, {}), dict):
            raise PosestreamError(str(config_path), f"[{key}] must be a table")
    raw_datasets = data.get("datasets", [])
    if not isinstance(raw_datasets, list) or not all(isinstance(d, dict) for d in raw_datasets):
        raise PosestreamError(str(config_path), "datasets must be [[datasets]] tables")
    return data, raw_datasets


def _convert(value, default, where: str, config_path: Path):
    """``value`` as the type of the field's default, or an error naming the key."""
    def wrong(kind: str):
        return PosestreamError(str(config_path), f"{where} must be {kind}, got {value!r}")

    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise wrong("true or false")
        return value
    if isinstance(default, int):
        if not isinstance(value, int) or isinstance(value, bool):
            raise wrong("an integer")
        return value
    if isinstance(default, float):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise wrong("a number")
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise wrong("a string")
        return value
    if isinstance(default, tuple):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise wrong("a list of strings")
        return tuple(value)
    raise wrong(type(default).__name__)


def build_section(kind: type, table: dict, where: str, config_path: Path, required: tuple[str, ...] = (),
                  **fixed):
    """A dataclass from a TOML table: unknown keys and wrong types are errors naming the key."""
    names = {f.name: f for f in fields(kind)}
    values = dict(fixed)
    for key, value in table.items():
        if key not in names or key in fixed:
            known = ", ".join(n for n in names if n not in fixed)
            raise PosestreamError(str(config_path), f"unknown key {where}{key} (known: {known})")
        default = names[key].default
        if default is MISSING:
            default = ""  # the required fields (dataset name and kind, path) are strings
        values[key] = _convert(value, default, f"{where}{key}", config_path)
    for key in required:
        if key not in values:
            raise PosestreamError(str(config_path), f"missing key {where}{key}")
    return kind(**values)


def check_positive(config_path: Path, where: str, value: float, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise PosestreamError(str(config_path), f"{where} must be {bound}, got {value}")
