"""Train a heatmap + PAF network: ``posestream train --config trainers/configs/X.toml``.

Laid out like torchvision's references: ``main(args)`` wires things up, ``train_one_epoch`` is the plain
loop, ``evaluate`` validates. Validation runs the in-memory network through the same path users run
(``BottomUpEstimator`` over a pipeline Backend, heatmap_paf/estimator.py, then ``evaluate_lsp`` /
``evaluate_coco``), so its numbers are the numbers ``posestream eval`` would print for an export of the
same weights. The loss is heatmap_paf/loss.py's; the run folder, device, schedule and metrics log are
trainers/common/run.py's.

A run folder holds ``last.pt`` (every epoch, and every ``checkpoint_every`` iterations),
``epoch-NNN.pt``, ``best.pt`` (by ``best_metric``), ``metrics.jsonl``, ``loss.png``, ``metrics.png`` and
the config it ran with. The learning rate is a function of the step alone (linear warm-up, then
cosine), so a resumed run continues exactly where the checkpoint left off.
"""
from __future__ import annotations

import argparse
import math
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure  # the object API draws PNGs without pyplot or a display
from tqdm import tqdm

from posestream.pipeline.core.errors import PosestreamError
from posestream.pipeline.estimators.bottomup import BottomUpEstimator
from posestream.pipeline.evaluation.coco import CocoEvalConfig, evaluate_coco
from posestream.pipeline.evaluation.lsp import LspEvalConfig, evaluate_lsp
from posestream.pipeline.networks.checkpoint import load_checkpoint, save_checkpoint
from posestream.pipeline.networks.lightweight_openpose import freeze_batch_norm
from posestream.pipeline.networks.models import build_model
from posestream.trainers.common.config import expand_path
from posestream.trainers.common.run import (
    MetricsLog,
    finish_figure,
    learning_rate_factor,
    make_optimizer,
    pick_device,
    start_run,
)
from posestream.trainers.common.sampling import build_loader
from posestream.trainers.heatmap_paf.config import TrainConfig, load_train_config
from posestream.trainers.heatmap_paf.datasets import (
    CocoSource,
    MixtureSampler,
    MosaicSource,
    PoseTrainingSet,
    SampleConfig,
    SinglePersonSource,
    read_coco_people,
    read_lsp_people,
)
from posestream.trainers.heatmap_paf.estimator import make_estimator
from posestream.trainers.heatmap_paf.loss import LossWindow, empty_prediction_loss, pose_loss

# ----------------------------------------------------------------------------------------------
# Data


def build_sources(config: TrainConfig) -> tuple[list, list[float]]:
    """One sampling source per dataset with a weight > 0 (weight-0 datasets only feed mosaics)."""
    config_path = Path(config.source)
    people, cocos = {}, {}
    for dataset in config.datasets:
        limit = dataset.max_items or None
        if dataset.kind == "lsp":
            people[dataset.name] = read_lsp_people(expand_path(dataset.path, config_path), dataset.split, limit)
        elif dataset.kind == "coco":
            cocos[dataset.name] = read_coco_people(expand_path(dataset.images, config_path),
                                                   expand_path(dataset.annotations, config_path), limit)
    sources, weights = [], []
    for dataset in config.datasets:
        if dataset.weight <= 0:
            continue
        if dataset.kind == "lsp":
            source = SinglePersonSource(people[dataset.name], dataset.person_fill)
        elif dataset.kind == "coco":
            source = CocoSource(cocos[dataset.name], dataset.person_fill)
        else:
            backgrounds = tuple(path for name in dataset.backgrounds for path in cocos[name].backgrounds)
            source = MosaicSource(tuple(people[name] for name in dataset.people), backgrounds,
                                  config.model.input_height, config.model.input_width, dataset.mosaic)
        sources.append(source)
        weights.append(dataset.weight)
    return sources, weights


# ----------------------------------------------------------------------------------------------
# The loop


@dataclass
class RunState:
    """What changes as training goes: the step counter and the best validation value so far."""

    step: int = 0
    best_value: float | None = None
    last_validation: dict | None = None
    # Where the weights first came from (import-openvino names Intel's model and licence); exports put it in
    # the sidecar, so derived weights keep their attribution.
    origin: str | None = None


def train_one_epoch(model: torch.nn.Module, optimizer: torch.optim.Optimizer, loader, device: torch.device,
                    config: TrainConfig, state: RunState, epoch: int, stop_step: int, total_steps: int,
                    log: MetricsLog, scaler: torch.amp.GradScaler | None, save_last) -> None:
    """Train until the loader is exhausted or ``state.step`` reaches ``stop_step`` (the schedule runs
    to ``total_steps``); ``save_last`` writes last.pt every ``checkpoint_every`` steps."""
    train = config.train
    model.train()
    use_amp = scaler is not None
    memory_format = torch.channels_last if device.type == "cuda" and train.channels_last else torch.contiguous_format
    window = LossWindow()
    interactive = sys.stderr.isatty()
    progress = tqdm(total=stop_step - state.step, desc=f"epoch {epoch + 1}", unit="it", dynamic_ncols=True,
                    mininterval=0.5 if interactive else 30.0)
    for images, heatmaps, pafs, mask in loader:
        if state.step >= stop_step:
            break
        lr = train.lr * learning_rate_factor(state.step, train.warmup_iterations, total_steps, train.final_lr_ratio)
        for group in optimizer.param_groups:
            group["lr"] = lr
        images = images.to(device, non_blocking=True).contiguous(memory_format=memory_format)
        heatmaps, pafs, mask = (t.to(device, non_blocking=True) for t in (heatmaps, pafs, mask))
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
            stages = model(images)
        loss, heatmap_loss, paf_loss = pose_loss(stages, heatmaps, pafs, mask, train.foreground_weight)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        state.step += 1
        with torch.no_grad():
            window.add(torch.stack([loss.detach(), heatmap_loss, paf_loss,
                                    *empty_prediction_loss(heatmaps, pafs, mask)]))
        progress.update(1)
        if window.count == train.log_every or state.step == stop_step:
            record = window.summary(train.batch_size)
            if not math.isfinite(record["loss"]):
                raise PosestreamError(config.source, f"training diverged: loss {record['loss']} before step "
                                                     f"{state.step}; try a lower [train] lr")
            log.write({"kind": "train", "step": state.step, "epoch": epoch, "lr": lr, **record, "time": time.time()})
            progress.set_postfix(loss=f"{record['loss']:.2f}", lr=f"{lr:.2e}", refresh=False)
            window = LossWindow()
        if train.checkpoint_every and state.step % train.checkpoint_every == 0 and state.step < stop_step:
            save_last()
    progress.close()


def evaluate(estimator: BottomUpEstimator, config: TrainConfig, lsp_images: int) -> dict:
    """Validation metrics as flat keys: lsp.pck, lsp.pck_body, lsp.pcp, coco.AP, coco.AP50, coco.AR."""
    validation = config.validation
    config_path = Path(config.source)
    metrics: dict = {}
    if validation.lsp_data:
        lsp = evaluate_lsp(expand_path(validation.lsp_data, config_path), validation.lsp_split, estimator,
                           LspEvalConfig(max_images=lsp_images, show_progress=False))
        metrics.update({"lsp.pck": lsp["pck_mean"], "lsp.pck_body": lsp["pck_mean_body"],
                        "lsp.pcp": lsp["pcp_mean"], "lsp.images": lsp["images"]})
    if validation.coco_images:
        coco = evaluate_coco(expand_path(validation.coco_images, config_path),
                             expand_path(validation.coco_annotations, config_path), estimator,
                             CocoEvalConfig(max_images=validation.coco_max_images or None, show_progress=False))
        metrics.update({"coco.AP": coco["AP"], "coco.AP50": coco["AP50"], "coco.AR": coco["AR"],
                        "coco.images": coco["images"]})
    return metrics


def save_plots(log: MetricsLog, out_dir: Path) -> None:
    """loss.png (training loss per logged window) and metrics.png (validation metrics) in the run folder."""
    records = log.read()
    train = [r for r in records if r["kind"] == "train"]
    validation = [r for r in records if r["kind"] == "validation"]
    if train:
        figure = Figure(figsize=(7, 4))
        axis = figure.subplots()
        steps = [r["step"] for r in train]
        for key, label in (("loss", "loss (all stages, as optimised)"),
                           ("loss_heatmaps", "heatmaps (last stage, masked MSE)"),
                           ("loss_pafs", "PAFs (last stage, masked MSE)")):
            axis.plot(steps, [r[key] for r in train], label=label)
        axis.set_yscale("log")
        axis.set_xlabel("step")
        axis.set_ylabel("loss per image")
        finish_figure(figure, axis, out_dir / "loss.png")
    if validation:
        figure = Figure(figsize=(7, 4))
        axis = figure.subplots()
        steps = [r["step"] for r in validation]
        keys = sorted({k for r in validation for k in r if k.count(".") == 1 and not k.endswith(".images")})
        for key in keys:
            values = [r.get(key) for r in validation]
            axis.plot(steps, [v if v is not None else float("nan") for v in values], marker="o", label=key)
        axis.set_xlabel("step")
        axis.set_ylim(0, 1)
        finish_figure(figure, axis, out_dir / "metrics.png")


# ----------------------------------------------------------------------------------------------
# Wiring


def initial_weights(model: torch.nn.Module, config: TrainConfig, path: str) -> str:
    """Start from a checkpoint's weights (``--init-from``, e.g. one ``posestream import-openvino`` wrote):
    same network, step 0, a fresh optimiser and schedule. Returns the weights' origin, for the checkpoints."""
    start = load_checkpoint(path)
    if start.model_config != model.config:
        raise PosestreamError(str(start.path), f"--init-from checkpoint is a {start.model_name}, which does not "
                                               f"fit [model] name {config.model.name!r}")
    model.load_state_dict(start.model_state)
    print(f"initial weights from {start.path} ({start.model_name}, step {start.step})", file=sys.stderr)
    return start.metrics.get("origin") or f"initialised from {start.path.name}"


def freeze_backbone_blocks(model: torch.nn.Module, count: int, source: str) -> None:
    """requires_grad False on the first ``count`` blocks of ``model.backbone`` (both families have one)."""
    blocks = list(model.backbone)
    if count > len(blocks):
        raise PosestreamError(source, f"[train] frozen_backbone_blocks is {count}, but the backbone has "
                                      f"{len(blocks)} blocks")
    for block in blocks[:count]:
        for parameter in block.parameters():
            parameter.requires_grad_(False)


def _total_steps(config: TrainConfig, max_iters: int | None) -> int:
    total = config.train.epochs * config.train.iterations_per_epoch
    return min(total, max_iters) if max_iters else total


def main(args: argparse.Namespace) -> int:
    """Run training as ``args`` (config, out, resume, init_from, device, max_iters) says; returns the exit
    status."""
    config = load_train_config(args.config)
    train = config.train
    device = pick_device(args.device or train.device)
    resume = load_checkpoint(args.resume) if args.resume else None
    out_dir = start_run(args, resume.path if resume else None, train.threads, train.seed)
    np.random.seed(train.seed)

    sources, weights = build_sources(config)
    sample_config = SampleConfig(config.model.input_height, config.model.input_width, config.targets, config.augment)
    samples_per_epoch = train.iterations_per_epoch * train.batch_size
    sampler = MixtureSampler(weights, samples_per_epoch, train.seed)
    loader = build_loader(PoseTrainingSet(sources, sample_config), sampler, train.batch_size, train.workers,
                          pin_memory=device.type == "cuda")

    model = build_model(config.model.name)
    state = RunState()
    if getattr(args, "init_from", None) and not resume:
        state.origin = initial_weights(model, config, args.init_from)
    if train.freeze_batch_norm:
        freeze_batch_norm(model)
    freeze_backbone_blocks(model, train.frozen_backbone_blocks, config.source)
    model = model.to(device)
    if device.type == "cuda" and train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, train.optimizer, train.lr, train.weight_decay)
    scaler = torch.amp.GradScaler("cuda") if device.type == "cuda" and train.amp else None
    if resume:
        if resume.model_config != model.config:
            raise PosestreamError(str(resume.path), f"checkpoint is a {resume.model_name} with another "
                                                    f"configuration than [model] name {config.model.name!r}")
        model.load_state_dict(resume.model_state)
        if resume.optimizer_state is not None:
            optimizer.load_state_dict(resume.optimizer_state)
        state.step = resume.step
        state.best_value = resume.metrics.get("best_value")
        state.last_validation = resume.metrics.get("validation")
        state.origin = resume.metrics.get("origin")
    total_steps = _total_steps(config, args.max_iters)
    log = MetricsLog(out_dir / "metrics.jsonl")
    input_size = (config.model.input_height, config.model.input_width)

    def save(path: Path) -> None:
        metrics = {"validation": state.last_validation, "best_metric": train.best_metric,
                   "best_value": state.best_value, "origin": state.origin}
        completed_epochs = state.step // train.iterations_per_epoch
        save_checkpoint(path, model, config.model.name, input_size, optimizer, completed_epochs, state.step,
                        {**config.as_dict(), "total_steps": total_steps}, metrics)

    estimator = None
    print(f"training {config.model.name} on {device.type}: steps {state.step}..{total_steps}, "
          f"batch {train.batch_size}, {len(sources)} sources, run folder {out_dir}", file=sys.stderr)
    while state.step < total_steps:
        epoch = state.step // train.iterations_per_epoch
        epoch_end = min((epoch + 1) * train.iterations_per_epoch, total_steps)
        sampler.set_epoch(epoch, skip=(state.step - epoch * train.iterations_per_epoch) * train.batch_size)
        train_one_epoch(model, optimizer, loader, device, config, state, epoch, epoch_end, total_steps, log,
                        scaler, lambda: save(out_dir / "last.pt"))
        finished = state.step == (epoch + 1) * train.iterations_per_epoch
        last = state.step >= total_steps
        if (finished and (epoch + 1) % config.validation.every_epochs == 0) or last:
            if estimator is None:
                estimator = make_estimator(model, device, config)
            lsp_images = config.validation.lsp_final_images if last else config.validation.lsp_images
            state.last_validation = evaluate(estimator, config, lsp_images)
            log.write({"kind": "validation", "step": state.step, "epoch": epoch, "final": last,
                       **state.last_validation, "time": time.time()})
            print(f"step {state.step}: " + ", ".join(f"{k} {v:.3f}" for k, v in state.last_validation.items()
                                                     if isinstance(v, float)), file=sys.stderr)
            value = state.last_validation.get(train.best_metric)
            if value is not None and (state.best_value is None or value > state.best_value):
                state.best_value = value
                save(out_dir / "best.pt")
        save(out_dir / "last.pt")
        if finished:
            shutil.copyfile(out_dir / "last.pt", out_dir / f"epoch-{epoch + 1:03d}.pt")
        save_plots(log, out_dir)
    print(f"done: step {state.step}, checkpoints in {out_dir}", file=sys.stderr)
    return 0

