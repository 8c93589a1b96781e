"""Where posestream finds data it does not ship, and where it keeps caches: environment variables first, then
the platform's user folders (platformdirs), never the layout of a source checkout.

- The shared folder (real data and third-party models, see ../shared/README.md in the repository):
  ``$POSESTREAM_SHARED``; else ``<user data dir>/shared`` when it exists; else ``../shared`` seen from the current
  folder, which is where it lies beside a checkout that commands are run from.
- The cache (TensorRT engines and other built artefacts): ``$POSESTREAM_CACHE``, else the user cache dir.
"""
from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP_NAME = "posestream"


def user_data_dir() -> Path:
    return Path(platformdirs.user_data_dir(APP_NAME))


def shared_dir() -> Path:
    """The folder holding real data and models that are never committed (see ../shared/README.md)."""
    configured = os.environ.get("POSESTREAM_SHARED")
    if configured:
        return Path(configured).expanduser().resolve()
    installed = user_data_dir() / "shared"
    if installed.is_dir():
        return installed
    return (Path.cwd().parent / "shared").resolve()


def cache_dir() -> Path:
    """posestream's cache folder (not created here)."""
    configured = os.environ.get("POSESTREAM_CACHE")
    if configured:
        return Path(configured).expanduser().resolve()
    return Path(platformdirs.user_cache_dir(APP_NAME))
