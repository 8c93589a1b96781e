"""``posestream train`` and ``posestream train-deeppose``: the trainers (they need posestream[train])."""
from __future__ import annotations

import argparse

from posestream.pipeline.cli.common import positive
from posestream.pipeline.core.errors import PosestreamError


def add_parser(commands) -> None:
    train = commands.add_parser("train", help="train a heatmap + PAF network (needs posestream[train])",
                                description="Train a network from a TOML config (docs/trainers.md); checkpoints, "
                                            "metrics.jsonl and curves go to the run folder.")
    train.add_argument("--config", required=True, help="training config, e.g. trainers/configs/default-cpu.toml")
    train.add_argument("--out", default=None,
                       help="run folder (default: runs/<config name>, or the resumed checkpoint's folder)")
    train.add_argument("--resume", default=None, metavar="CKPT", help="continue from this checkpoint's step")
    train.add_argument("--init-from", default=None, metavar="CKPT",
                       help="start from this checkpoint's weights at step 0 (e.g. from posestream import-openvino); "
                            "ignored with --resume")
    train.add_argument("--device", default=None, choices=("auto", "cpu", "cuda"),
                       help="where to train (default: the config's [train] device)")
    train.add_argument("--max-iters", type=positive, default=None, metavar="N",
                       help="stop at step N (the schedule shortens to match); for smoke tests")
    train.set_defaults(handler=command_train)


    deeppose = commands.add_parser(
        "train-deeppose", help="train the DeepPose cascade (stage by stage) and score each stage on LSP",
        description="Train the DeepPose regressor cascade from a TOML config (docs/deeppose.md): stage 1 on whole "
                    "images, then each refinement stage on crops around the previous stage's estimates; after "
                    "every stage, strict PCP and PCK@0.2 on LSP test go to the run folder.")
    deeppose.add_argument("--config", required=True, help="e.g. trainers/configs/deeppose-cpu.toml")
    deeppose.add_argument("--out", default=None,
                          help="run folder (default: runs/<config name>, or the resumed checkpoint's folder)")
    deeppose.add_argument("--resume", default=None, metavar="CKPT",
                          help="continue from a stage checkpoint (normally the run's last.pt)")
    deeppose.add_argument("--device", default=None, choices=("auto", "cpu", "cuda"),
                          help="where to train (default: the config's [train] device)")
    deeppose.add_argument("--stages", type=positive, default=None, metavar="N",
                          help="train stages 1..N (default: the config's [cascade] stages)")
    deeppose.add_argument("--max-iters", type=positive, default=None, metavar="N",
                          help="at most N steps per stage (the schedule shortens to match); for smoke tests")
    deeppose.set_defaults(handler=command_train_deeppose)

    blend = commands.add_parser(
        "blend", help="blend a fine-tuned checkpoint with its starting weights (WiSE-FT)",
        description="Write (1 - ALPHA) x START + ALPHA x TUNED as a new checkpoint: weight-space blending of a "
                    "fine-tuned network with the one it started from, which keeps most of the fine-tuning's gain "
                    "and more of what the start knew (docs/trainers.md).")
    blend.add_argument("start", metavar="START", help="the checkpoint fine-tuning began from")
    blend.add_argument("tuned", metavar="TUNED", help="the fine-tuned checkpoint (same network)")
    blend.add_argument("--alpha", type=float, required=True, help="weight of TUNED, 0..1")
    blend.add_argument("--out", required=True, metavar="CKPT", help="the checkpoint to write")
    blend.set_defaults(handler=command_blend)


def command_train(args: argparse.Namespace) -> int:
    try:
        from posestream.trainers.heatmap_paf.train import main as train_main  # imports torch: only for this command
    except ModuleNotFoundError as error:
        raise PosestreamError("train", f"needs {error.name}: pip install 'posestream[train]'") from None
    return train_main(args)


def command_train_deeppose(args: argparse.Namespace) -> int:
    try:
        from posestream.trainers.deeppose.train import main as train_main  # imports torch: only for this command
    except ModuleNotFoundError as error:
        raise PosestreamError("train-deeppose", f"needs {error.name}: pip install 'posestream[train]'") from None
    return train_main(args)


def command_blend(args: argparse.Namespace) -> int:
    try:
        from posestream.trainers.common.blend import blend_checkpoints
    except ModuleNotFoundError as error:
        raise PosestreamError("blend", f"needs {error.name}: pip install 'posestream[train]'") from None
    path = blend_checkpoints(args.start, args.tuned, args.alpha, args.out)
    print(f"wrote {path}: {1 - args.alpha:g} x {args.start} + {args.alpha:g} x {args.tuned}")
    return 0
