"""Annotated images for image and folder inputs, one JPEG per input."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import cv2
import numpy as np

from posestream.pipeline.core.closing import Closing
from posestream.pipeline.core.errors import PosestreamError
from posestream.pipeline.sinks.files import error_reason


class ImageSink(Closing):
    """Annotated images for image inputs: ``names[real path of the input]`` where given (the run's output plan
    makes names unique, see ``posestream.pipeline.runtime.outputs``), else ``<directory>/<original stem>.jpg``;
    creates the directory.
    """

    JPEG_QUALITY = 92

    def __init__(self, directory: str | Path, names: Mapping[str, Path] | None = None) -> None:
        self.directory = Path(directory)
        self._names = dict(names or {})
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise PosestreamError(str(self.directory), f"cannot create output folder: {error_reason(error)}") from error

    def write(self, image_bgr: np.ndarray, source: str | Path) -> Path:
        """Write ``image_bgr`` as the JPEG for input ``source``; returns the path written."""
        target = self._names.get(os.path.realpath(source)) or self.directory / f"{Path(source).stem}.jpg"
        ok, encoded = cv2.imencode(".jpg", image_bgr, [cv2.IMWRITE_JPEG_QUALITY, self.JPEG_QUALITY])
        if not ok:
            raise PosestreamError(str(target), "could not encode the image as JPEG")
        try:
            # tofile rather than cv2.imwrite: imwrite reports failure only as False, without the reason.
            encoded.tofile(target)
        except OSError as error:
            raise PosestreamError(str(target), f"cannot write: {error_reason(error)}") from error
        return target

    def close(self) -> None:
        """Nothing to flush: each image is complete when written. Present so all sinks close alike."""
