"""``posestream import-openvino``: Intel's hpe-0001 IR into a posestream checkpoint, checked against the IR."""
from __future__ import annotations

import argparse

from posestream.pipeline.cli.common import positive_float
from posestream.pipeline.core.errors import PosestreamError


def add_parser(commands) -> None:
    command = commands.add_parser(
        "import-openvino", help="import human-pose-estimation-0001 (OpenVINO IR) as a trainable checkpoint",
        description="Read an OpenVINO IR of Lightweight OpenPose (Intel's human-pose-estimation-0001) with the "
                    "openvino API, dequantise every weight, load it one-to-one into the PyTorch network, convert "
                    "it to posestream's channel layout and write a checkpoint that `posestream train "
                    "--init-from`, `export` and the torch backend take. Prints parity against the IR (its "
                    "activation quantisation bypassed, and as shipped) on real images at two input sizes.")
    command.add_argument("xml", metavar="MODEL.xml", help="the IR's .xml (its .bin beside it)")
    command.add_argument("--out", required=True, metavar="CKPT", help="the checkpoint (.pt) to write")
    command.add_argument("--model", default="lwo-mobilenet", choices=("lwo-mobilenet", "lwo-mobilenet-bn"),
                         help="network to load into: lwo-mobilenet (BatchNorm folded, as the IR) or "
                              "lwo-mobilenet-bn (BatchNorm restored as an exact identity); default lwo-mobilenet")
    command.add_argument("--parity-images", default="mmpose-coco", metavar="DIR_OR_DATASET",
                         help="real images for the parity check (default mmpose-coco from ../shared)")
    command.add_argument("--tolerance", type=positive_float, default=1e-4, metavar="T",
                         help="largest allowed |torch - IR| with activation quantisation bypassed (default 1e-4)")
    command.set_defaults(handler=command_import_openvino)


def command_import_openvino(args: argparse.Namespace) -> int:
    try:
        from posestream.trainers.export.openvino_import import import_openvino
    except ModuleNotFoundError as error:
        raise PosestreamError("import-openvino", f"needs {error.name}: pip install 'posestream[train,openvino]'") from None
    report = import_openvino(args.xml, args.out, args.model, images=args.parity_images, tolerance=args.tolerance)
    print(report.table())
    return 0 if report.passed else 1
