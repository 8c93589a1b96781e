"""What every file-writing output shares: creating the output's folder, and the OS's words for a failure."""
from __future__ import annotations

from pathlib import Path

from posestream.pipeline.core.errors import PosestreamError


def ensure_output_folder(path: Path, shown_as: str) -> None:
    """Create the output file's folder (as ``mkdir -p`` would); fail naming the output when that cannot be."""
    folder = path.parent if str(path.parent) else Path(".")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise PosestreamError(shown_as, f"cannot create output folder {folder}: {error_reason(error)}") from error


def error_reason(error: BaseException) -> str:
    """The OS's or FFmpeg's own words (strerror), without the '[Errno …]' prefix and file name."""
    return getattr(error, "strerror", None) or str(error) or type(error).__name__
