"""What every file-writing output shares: creating the output's folder, checking a path can be written, and
the OS's words for a failure."""
from __future__ import annotations

import os
from pathlib import Path

from posestream.pipeline.core.errors import PosestreamError


def ensure_output_folder(path: Path, shown_as: str) -> None:
    """Create the output file's folder (as ``mkdir -p`` would); fail naming the output when that cannot be."""
    folder = path.parent if str(path.parent) else Path(".")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise PosestreamError(shown_as, f"cannot create output folder {folder}: {error_reason(error)}") from error


def check_output_file(path: Path, shown_as: str) -> None:
    """Fail now, naming the output, if ``path`` cannot be written later: its folder is created (as
    ``ensure_output_folder``), and the path must not be a folder, nor a file or folder without write
    permission. Nothing is opened or truncated."""
    ensure_output_folder(path, shown_as)
    if path.is_dir():
        raise PosestreamError(shown_as, "is a folder, not a file")
    folder = path.parent if str(path.parent) else Path(".")
    if path.exists() and not os.access(path, os.W_OK):
        raise PosestreamError(shown_as, "cannot write: Permission denied")
    if not path.exists() and not os.access(folder, os.W_OK):
        raise PosestreamError(shown_as, f"cannot write: Permission denied (folder {folder})")


def error_reason(error: BaseException) -> str:
    """The OS's or FFmpeg's own words (strerror), without the '[Errno …]' prefix and file name."""
    return getattr(error, "strerror", None) or str(error) or type(error).__name__
