"""What COCO and LSP evaluation share: the estimator they run, running it over image files, text tables.

The estimator is any callable ``estimate(images) -> people per image`` (images are H x W x 3 uint8 BGR,
as cv2.imread gives them), so evaluation never imports a particular model; tests feed it estimators
built from the ground truth itself.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from posestream.pipeline.core.errors import PosestreamError
from posestream.pipeline.core.skeleton import COCO17_NAMES
from posestream.pipeline.core.types import Person
from posestream.pipeline.sources.readers import read_image

Estimator = Callable[[list[np.ndarray]], list[list[Person]]]


def check_batching(owner: str, batch_size: int, max_images: int | None) -> None:
    """The checks CocoEvalConfig and LspEvalConfig share; ``owner`` names the config in the error."""
    if batch_size < 1:
        raise PosestreamError(f"{owner}.batch_size", f"must be >= 1, got {batch_size}")
    if max_images is not None and max_images < 1:
        raise PosestreamError(f"{owner}.max_images", f"must be >= 1 or None, got {max_images}")


def _read_image(path: Path) -> np.ndarray:
    image = read_image(path)
    if image is None:
        raise PosestreamError(str(path), "could not be read as an image")
    return image


def _check_person(person: object) -> Person:
    if not isinstance(person, Person):
        raise PosestreamError("estimate", f"returned {type(person).__name__}, expected Person")
    if np.shape(person.keypoints) != (len(COCO17_NAMES), 3):
        raise PosestreamError("estimate", f"returned keypoints of shape {np.shape(person.keypoints)}, expected (17, 3)")
    return person


def run_estimator(
    image_paths: Sequence[Path], estimate: Estimator, batch_size: int, show_progress: bool, description: str
) -> tuple[list[list[Person]], float]:
    """People per image, in order, and the seconds spent inside ``estimate`` (image reading excluded)."""
    people_per_image: list[list[Person]] = []
    estimate_seconds = 0.0
    with tqdm(total=len(image_paths), desc=description, unit="img", disable=not show_progress) as progress:
        for start in range(0, len(image_paths), batch_size):
            batch = [_read_image(path) for path in image_paths[start:start + batch_size]]
            began = time.perf_counter()
            results = estimate(batch)
            estimate_seconds += time.perf_counter() - began
            if len(results) != len(batch):
                raise PosestreamError("estimate", f"returned {len(results)} results for {len(batch)} images")
            people_per_image.extend([_check_person(p) for p in people] for people in results)
            progress.update(len(batch))
    return people_per_image, estimate_seconds


def format_table(rows: Sequence[Sequence[object]], header: Sequence[str] | None = None) -> str:
    """Left-aligned first column, right-aligned others; floats with 3 decimals, None as '-'."""

    def cell(value: object) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.3f}"
        return str(value)

    table = [[cell(v) for v in row] for row in ([header] if header else []) + list(rows)]
    if not table:
        return ""
    widths = [max(len(row[c]) for row in table if c < len(row)) for c in range(max(len(r) for r in table))]

    def line(row: list[str]) -> str:
        parts = [row[0].ljust(widths[0])] + [v.rjust(widths[c]) for c, v in enumerate(row[1:], start=1)]
        return "  ".join(parts).rstrip()

    lines = [line(row) for row in table]
    if header:
        lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
