"""Where the shared real data and third-party models live: POSESTREAM_SHARED, else ../shared beside the repo."""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_dir() -> Path:
    """The folder holding real data and models that are never committed (see ../shared/README.md)."""
    configured = os.environ.get("POSESTREAM_SHARED")
    if configured:
        return Path(configured).expanduser().resolve()
    return (REPO_ROOT.parent / "shared").resolve()
