"""``posestream export``: a trainer checkpoint to ONNX (and INT8), checked against PyTorch."""
from __future__ import annotations

import argparse

from posestream.pipeline.cli.common import positive, positive_float
from posestream.pipeline.core.errors import PosestreamError


def add_parser(commands) -> None:
    export = commands.add_parser(
        "export", help="export a trainer checkpoint to ONNX (and INT8), checked against PyTorch",
        description="Export CKPT's last stage to ONNX (dynamic batch, height and width) with its .pose.json "
                    "sidecar beside it; ONNX Runtime must match PyTorch on random and real batches. --int8 also "
                    "writes <out>.int8.onnx, statically calibrated (QDQ, per-channel weights) on real images.")
    export.add_argument("checkpoint", metavar="CKPT", help="a trainer checkpoint (.pt)")
    export.add_argument("--out", required=True, help="the .onnx file to write")
    export.add_argument("--height", type=positive, default=None, help="sidecar input height (default: training size)")
    export.add_argument("--width", type=positive, default=None, help="sidecar input width (default: training size)")
    export.add_argument("--name", default=None, help="model name in the sidecar (default: the file name)")
    export.add_argument("--origin", default=None, metavar="TEXT",
                        help="where the weights come from, with their licence, for the sidecar (default: the "
                             "checkpoint's, which import-openvino and train --init-from record)")
    export.add_argument("--no-parity", action="store_true", help="skip the ONNX Runtime vs PyTorch check")
    export.add_argument("--parity-tolerance", type=positive_float, default=1e-3, metavar="T",
                        help="largest allowed absolute difference (default 1e-3)")
    export.add_argument("--parity-images", default=None, metavar="DIR_OR_DATASET",
                        help="real images for the parity check (default: lsp from ../shared when present)")
    export.add_argument("--int8", action="store_true", help="also write an INT8 (QDQ) model")
    export.add_argument("--calib", default="lsp", metavar="DIR_OR_DATASET",
                        help="calibration images: a folder, or lsp, lspet, coco, mmpose-coco from ../shared "
                             "(default lsp)")
    export.add_argument("--calib-count", type=positive, default=64, metavar="N",
                        help="calibration images (default 64)")
    export.add_argument("--calib-method", default="minmax", choices=("minmax", "entropy", "percentile"),
                        help="how activation ranges are chosen (default minmax)")
    export.add_argument("--int8-target", default="cpu", choices=("cpu", "tensorrt"),
                        help="cpu: fastest in ONNX Runtime (uint8 activations); tensorrt: symmetric int8 "
                             "activations, which build-engine --int8 needs (default cpu)")
    export.set_defaults(handler=command_export)


def command_export(args: argparse.Namespace) -> int:
    try:  # torch, onnx and onnxscript (the exporter's translator) only for this command
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
        import torch  # noqa: F401
    except ModuleNotFoundError as error:
        raise PosestreamError("export", f"needs {error.name}: pip install 'posestream[train]'") from None
    from posestream.trainers.export.onnx import ExportConfig, export_onnx

    report = export_onnx(args.checkpoint, args.out, ExportConfig(
        height=args.height, width=args.width, name=args.name, parity=not args.no_parity,
        parity_tolerance=args.parity_tolerance, parity_images=args.parity_images,
        origin=args.origin))
    print(report.summary())
    if args.int8:
        from posestream.trainers.export.onnx import sample_images
        from posestream.trainers.export.quantize import QuantizeConfig, compare_models, quantize_onnx

        quantized = quantize_onnx(report.onnx_path, None, QuantizeConfig(
            calibration=args.calib, calibration_count=args.calib_count, method=args.calib_method,
            target=args.int8_target))
        print(quantized.summary())
        check_images = sample_images(args.calib, 4)
        agreement = compare_models(report.onnx_path, quantized.int8_path, check_images)
        print(f"{agreement.summary()} (on {len(check_images)} images of {args.calib})")
    return 0
