from __future__ import annotations

import pytest

from pipeline.paths import shared_dir


@pytest.fixture(scope="session")
def shared():
    """The shared real-data folder; tests that need it are skipped with a clear reason when it is absent."""
    root = shared_dir()
    if not (root / "README.md").exists():
        pytest.skip(f"shared data not found at {root} (set POSESTREAM_SHARED)")
    return root
