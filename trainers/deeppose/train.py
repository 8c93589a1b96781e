"""Train the DeepPose cascade: ``posestream train-deeppose --config trainers/configs/deeppose-cpu.toml``.

Laid out like torchvision's references: ``main(args)`` wires things up, ``train_one_epoch`` is the plain
loop, ``evaluate`` scores a stage. Stages train one after another, each with its own network:

1. stage 1 on each training image's box b⁰: the whole image for LSP, an LSP-like framing of the person
   for LSPET (``initial_boxes``, ``InitialStageSet``);
2. before stage s >= 2, stage s-1 runs on ``statistics_images`` training images; its per-joint errors,
   normalised by the crop side σ·diam(y), give N(μ_i, Σ_i), from which stage s's simulated estimates are
   drawn; the real estimates of those images are used too (``RefinementSet``);
3. after every stage the cascade so far runs on LSP test and is scored with
   posestream.pipeline.evaluation.lsp.score_lsp (strict PCP per limb, PCK@0.2 per joint):
   ``evaluation-stage-N.json``, and ``evaluation.json`` with the per-stage table at the end.

A run folder holds ``stage-N.pt`` (finished stages), ``last.pt`` (the stage in training: every epoch and
every ``checkpoint_every`` iterations), ``metrics.jsonl``, ``loss.png``, ``metrics.png``,
``predictions-stage-N.npz`` (test and statistics-image estimates, so a resumed run need not recompute
them) and the config. The learning rate is a function of the stage's step alone, so a resumed stage
continues exactly where its checkpoint left off.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure  # the object API draws PNGs without pyplot or a display
from tqdm import tqdm

from posestream.pipeline.core.errors import PosestreamError
from posestream.pipeline.evaluation.common import format_table
from posestream.pipeline.evaluation.lsp import LSP_LIMBS, score_lsp
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
from posestream.trainers.deeppose.checkpoint import (
    StageCheckpoint,
    load_stage_checkpoint,
    save_stage_checkpoint,
    stage_path,
)
from posestream.trainers.deeppose.config import DeepPoseTrainConfig, TrainSection, load_deeppose_config
from posestream.trainers.deeppose.data import (
    ImageBank,
    InitialStageSet,
    JitterStatistics,
    KeySampler,
    LspSelection,
    RefinementInputs,
    RefinementSet,
    load_image_bank,
    mean_initial_targets,
    measure_jitter,
    reference_diameters,
)
from posestream.trainers.deeppose.model import (
    DeepPoseNet,
    copy_all_but_output,
    deeppose_config,
    mirror_mean,
    predict_initial,
    refine,
    refinement_box_sides,
    set_output_bias,
)

# The paper's table groups limbs by kind (left and right together): Toshev & Szegedy 2014, Table 3.
PAPER_LIMB_GROUPS = {
    "upper_arms": ("right_upper_arm", "left_upper_arm"),
    "forearms": ("right_forearm", "left_forearm"),
    "upper_legs": ("right_thigh", "left_thigh"),
    "lower_legs": ("right_lower_leg", "left_lower_leg"),
}


# ----------------------------------------------------------------------------------------------
# Loss


def joint_loss(outputs: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Squared L2 distance per supervised joint, averaged over them (normalised coordinates)."""
    squared = ((outputs.float() - targets) ** 2).sum(dim=-1) * mask
    return squared.sum() / mask.sum().clamp(min=1.0)


# ----------------------------------------------------------------------------------------------
# The loop


@dataclass
class StageState:
    stage: int
    step: int = 0


def train_one_epoch(net: DeepPoseNet, optimizer: torch.optim.Optimizer, loader, device: torch.device,
                    train: TrainSection, state: StageState, epoch: int, stop_step: int, total_steps: int,
                    log: MetricsLog, save_last, source: str) -> None:
    """Train until the loader is exhausted or ``state.step`` reaches ``stop_step`` (the schedule runs to
    ``total_steps``); ``save_last`` writes last.pt every ``checkpoint_every`` steps."""
    net.train()
    interactive = sys.stderr.isatty()
    progress = tqdm(total=stop_step - state.step, desc=f"stage {state.stage} epoch {epoch + 1}", unit="it",
                    dynamic_ncols=True, mininterval=0.5 if interactive else 30.0)
    window_loss, window_count, window_started = 0.0, 0, time.perf_counter()
    for crops, targets, mask in loader:
        if state.step >= stop_step:
            break
        lr = train.lr * learning_rate_factor(state.step, train.warmup_iterations, total_steps, train.final_lr_ratio)
        for group in optimizer.param_groups:
            group["lr"] = lr
        crops, targets, mask = (t.to(device, non_blocking=True) for t in (crops, targets, mask))
        loss = joint_loss(net(crops), targets, mask)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        state.step += 1
        window_loss += float(loss.detach())
        window_count += 1
        progress.update(1)
        if window_count == train.log_every or state.step == stop_step:
            mean_loss = window_loss / window_count
            if not math.isfinite(mean_loss):
                raise PosestreamError(source, f"stage {state.stage} diverged: loss {mean_loss} before step "
                                              f"{state.step}; try a lower [train] lr")
            elapsed = time.perf_counter() - window_started
            log.write({"kind": "train", "stage": state.stage, "step": state.step, "epoch": epoch, "lr": lr,
                       "loss": mean_loss, "joint_error": math.sqrt(max(mean_loss, 0.0)),
                       "images_per_second": window_count * train.batch_size / max(elapsed, 1e-9),
                       "time": time.time()})
            progress.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{lr:.1e}", refresh=False)
            window_loss, window_count, window_started = 0.0, 0, time.perf_counter()
        if train.checkpoint_every and state.step % train.checkpoint_every == 0 and state.step < stop_step:
            save_last()
    progress.close()


def stage_iterations(config: DeepPoseTrainConfig, stage: int, max_iters: int | None) -> int:
    total = config.train.stage1_iterations if stage == 1 else config.train.refine_iterations
    return min(total, max_iters) if max_iters else total


def train_stage(stage: int, config: DeepPoseTrainConfig, dataset, choices: np.ndarray, device: torch.device,
                out_dir: Path, log: MetricsLog, jitter: JitterStatistics | None, resume: StageCheckpoint | None,
                max_iters: int | None, mean_targets: np.ndarray, start_from: DeepPoseNet | None = None) -> DeepPoseNet:
    """Train stage ``stage``'s network (from ``resume`` when it is this stage's unfinished checkpoint);
    a fresh network starts predicting ``mean_targets`` (k, 2), the targets' mean before mirroring, with every
    other layer copied from ``start_from`` when given."""
    train = config.train
    net = DeepPoseNet(deeppose_config(config.model.name, input_size=config.input_size()))
    if start_from is not None:
        copy_all_but_output(start_from, net)
    set_output_bias(net, mirror_mean(mean_targets, config.augment.flip_probability))
    net = net.to(device)
    optimizer = make_optimizer(net, train.optimizer, train.lr, train.weight_decay)
    state = StageState(stage)
    if resume is not None:
        if resume.model_config != net.config:
            raise PosestreamError(str(resume.path), f"checkpoint is a {resume.model_name} with another "
                                                    f"configuration than [model] name {config.model.name!r}")
        net.load_state_dict(resume.model_state)
        if resume.optimizer_state is not None:
            optimizer.load_state_dict(resume.optimizer_state)
        state.step = resume.step
    total_steps = stage_iterations(config, stage, max_iters)
    sampler = KeySampler(choices, train.iterations_per_epoch * train.batch_size, train.seed, stage)
    loader = build_loader(dataset, sampler, train.batch_size, train.workers, pin_memory=device.type == "cuda")
    jitter_values = jitter.as_dict() if jitter is not None else None

    def save(path: Path, finished: bool) -> None:
        save_stage_checkpoint(path, net, config.model.name, stage, None if finished else optimizer, state.step,
                              total_steps, finished, config.cascade.sigma, config.cascade.min_diameter_fraction,
                              jitter_values, {**config.as_dict(), "total_steps": total_steps})

    print(f"stage {stage}: training {config.model.name} on {device.type}, steps {state.step}..{total_steps}, "
          f"batch {train.batch_size}, {len(choices)} {'images' if stage == 1 else 'labelled joints'}",
          file=sys.stderr)
    while state.step < total_steps:
        epoch = state.step // train.iterations_per_epoch
        epoch_end = min((epoch + 1) * train.iterations_per_epoch, total_steps)
        sampler.set_epoch(epoch, skip=(state.step - epoch * train.iterations_per_epoch) * train.batch_size)
        train_one_epoch(net, optimizer, loader, device, train, state, epoch, epoch_end, total_steps, log,
                        lambda: save(out_dir / "last.pt", False), config.source)
        save(out_dir / "last.pt", state.step >= total_steps)
        save_plots(log, out_dir)
    save(stage_path(out_dir, stage), True)
    del loader  # its persistent workers end with it
    return net.eval()


# ----------------------------------------------------------------------------------------------
# Evaluation


def predict_stage(stage: int, net: DeepPoseNet, images: list[np.ndarray], boxes: np.ndarray,
                  previous: np.ndarray | None, config: DeepPoseTrainConfig, device: torch.device) -> np.ndarray:
    """Stage ``stage``'s joints (N, k, 2) in the images' pixels: stage 1 from the images' boxes b⁰ (N, 4),
    later stages from stage ``stage - 1``'s joints."""
    batch = config.train.eval_batch_size
    if stage == 1:
        return predict_initial(net, images, device, initial_boxes=boxes, batch_size=batch)
    return refine(net, images, previous, config.cascade.sigma, device, config.cascade.min_diameter_fraction, batch)


def evaluate(predictions: np.ndarray, bank: ImageBank) -> dict:
    """score_lsp's PCK@0.2 and strict PCP@0.5 (every joint is predicted), plus the paper's limb groups."""
    to_file = 1.0 / bank.scales[:, None, None]
    metrics = score_lsp(predictions * to_file, np.ones(predictions.shape[:2], np.bool_), bank.joints * to_file,
                        bank.labelled)
    pcp = metrics["pcp"]
    groups = {name: float(np.mean([pcp[limb] for limb in limbs])) for name, limbs in PAPER_LIMB_GROUPS.items()}
    groups["mean"] = float(np.mean(list(groups.values())))
    metrics["pcp_paper_groups"] = groups
    metrics["images"] = len(bank)
    return metrics


def format_stage_table(evaluations: dict[int, dict]) -> str:
    """Rows: strict PCP per limb, the paper's limb groups, PCK@0.2; one column per stage."""
    stages = sorted(evaluations)
    header = ("metric", *(f"stage {s}" for s in stages))
    rows = [(f"PCP {name}", *(evaluations[s]["pcp"][name] for s in stages)) for name, _, _ in LSP_LIMBS]
    rows.append(("PCP mean (10 limbs)", *(evaluations[s]["pcp_mean"] for s in stages)))
    rows += [(f"PCP {name} (paper group)", *(evaluations[s]["pcp_paper_groups"][name] for s in stages))
             for name in (*PAPER_LIMB_GROUPS, "mean")]
    rows.append(("PCK@0.2 mean (14 joints)", *(evaluations[s]["pck_mean"] for s in stages)))
    rows.append(("PCK@0.2 mean (12 body joints)", *(evaluations[s]["pck_mean_body"] for s in stages)))
    images = evaluations[stages[-1]]["images"]
    return format_table(rows, header) + f"\n(LSP, {images} images; strict PCP@0.5, PCK@0.2 of the torso)"


def save_plots(log: MetricsLog, out_dir: Path) -> None:
    """loss.png (training loss per stage) and metrics.png (PCP and PCK after each stage)."""
    records = log.read()
    train = [r for r in records if r["kind"] == "train"]
    validation = [r for r in records if r["kind"] == "validation"]
    if train:
        figure = Figure(figsize=(7, 4))
        axis = figure.subplots()
        for stage in sorted({r["stage"] for r in train}):
            rows = [r for r in train if r["stage"] == stage]
            axis.plot([r["step"] for r in rows], [r["loss"] for r in rows], label=f"stage {stage}")
        axis.set_yscale("log")
        axis.set_xlabel("step (within the stage)")
        axis.set_ylabel("mean squared joint error (normalised)")
        finish_figure(figure, axis, out_dir / "loss.png")
    if validation:
        figure = Figure(figsize=(7, 4))
        axis = figure.subplots()
        stages = [r["stage"] for r in validation]
        for key, label in (("pcp_mean", "strict PCP@0.5, mean of 10 limbs"),
                           ("pcp_paper_mean", "strict PCP@0.5, paper's 4 limb groups"),
                           ("pck_mean", "PCK@0.2, 14 joints")):
            axis.plot(stages, [r[key] for r in validation], marker="o", label=label)
        axis.set_xticks(stages)
        axis.set_xlabel("cascade stage")
        axis.set_ylim(0, 1)
        finish_figure(figure, axis, out_dir / "metrics.png")


# ----------------------------------------------------------------------------------------------
# Wiring


def _predictions_file(out_dir: Path, stage: int) -> Path:
    return out_dir / f"predictions-stage-{stage}.npz"


def _load_predictions(out_dir: Path, stage: int, test_count: int, statistics_count: int | None):
    """(test, statistics) estimates saved by an earlier run of this stage, or None when they do not fit
    (``statistics_count`` None: the statistics estimates are not needed)."""
    path = _predictions_file(out_dir, stage)
    if not path.is_file():
        return None
    with np.load(path) as data:
        test, statistics = data["test"], data["statistics"]
    if len(test) != test_count or (statistics_count is not None and len(statistics) != statistics_count):
        return None
    return test, statistics


def refinement_inputs(config: DeepPoseTrainConfig, bank: ImageBank, diameters: np.ndarray,
                      statistics_rows: np.ndarray, statistics_estimates: np.ndarray) -> RefinementInputs:
    """The next refinement stage's N(μ_i, Σ_i), measured from the previous stage's estimates on the
    statistics images, and those estimates as real crop centres."""
    cascade = config.cascade
    true_sides = cascade.sigma * diameters[statistics_rows]
    if cascade.scale_simulated_crops:
        # Errors in the frame of the crops the stage will really get: side σ·diam(previous estimate),
        # floored as at inference (refinement_box_sides).
        crop_sides = refinement_box_sides(statistics_estimates, cascade.sigma, bank.longer_sides()[statistics_rows],
                                          cascade.min_diameter_fraction)
        jitter = measure_jitter(statistics_estimates, bank.joints[statistics_rows], bank.labelled[statistics_rows],
                                crop_sides, true_sides)
    else:  # the paper: errors and simulated crops in units of σ·diam(y)
        jitter = measure_jitter(statistics_estimates, bank.joints[statistics_rows], bank.labelled[statistics_rows],
                                true_sides)
    has_estimate = np.zeros(len(bank), np.bool_)
    has_estimate[statistics_rows] = True
    estimates = np.zeros_like(bank.joints)
    estimates[statistics_rows] = statistics_estimates
    return RefinementInputs(cascade.sigma, jitter, diameters, estimates, has_estimate,
                            cascade.real_estimate_probability, cascade.min_diameter_fraction)


def main(args: argparse.Namespace) -> int:
    """Train and evaluate the cascade as ``args`` (config, out, resume, device, max_iters, stages) says."""
    config = load_deeppose_config(args.config)
    train, cascade = config.train, config.cascade
    stages = args.stages or cascade.stages
    device = pick_device(args.device or train.device)
    resume = load_stage_checkpoint(args.resume) if args.resume else None
    out_dir = start_run(args, resume.path if resume else None, train.threads, train.seed)

    config_path = Path(config.source)
    began = time.perf_counter()
    train_bank = load_image_bank([LspSelection(expand_path(d.path, config_path), d.split, d.max_items)
                                  for d in config.datasets], train.max_image_side)
    evaluation = config.evaluation
    test_bank = load_image_bank([LspSelection(expand_path(evaluation.lsp_data, config_path), evaluation.split,
                                              evaluation.max_images)])
    print(f"decoded {len(train_bank)} training and {len(test_bank)} test images "
          f"({train_bank.pixels.numel() / 2 ** 20:.0f} MiB) in {time.perf_counter() - began:.1f} s", file=sys.stderr)

    statistics_rows = np.sort(np.random.default_rng(train.seed).permutation(len(train_bank))[:cascade.statistics_images])
    diameters = reference_diameters(train_bank)
    test_images = [test_bank.image(i) for i in range(len(test_bank))]
    statistics_images = [train_bank.image(int(i)) for i in statistics_rows]
    input_size = config.input_size()
    log = MetricsLog(out_dir / "metrics.jsonl")

    evaluations: dict[int, dict] = {}
    test_estimates = statistics_estimates = None
    for stage in range(1, stages + 1):
        done_before = resume is not None and (stage < resume.stage or (stage == resume.stage and resume.finished))
        jitter = None
        if done_before:
            net = load_stage_checkpoint(stage_path(out_dir, stage)).build_model().to(device)
        else:
            if stage == 1:
                dataset = InitialStageSet(train_bank, input_size, config.augment)
                choices = np.arange(len(train_bank))
                mean_targets = mean_initial_targets(train_bank)
            else:
                inputs = refinement_inputs(config, train_bank, diameters, statistics_rows, statistics_estimates)
                jitter = inputs.statistics
                dataset = RefinementSet(train_bank, input_size, config.augment, inputs)
                choices = np.argwhere(train_bank.labelled)
                mean_targets = -jitter.mean  # the truth seen from the estimate: minus the mean error
                log.write({"kind": "jitter", "stage": stage, "mean": jitter.mean.tolist(),
                           "covariance": jitter.covariance.tolist(), "counts": jitter.counts.tolist(),
                           "side_ratio_quartiles": (np.percentile(jitter.side_ratios, [25, 50, 75]).tolist()
                                                    if len(jitter.side_ratios) else None),
                           "time": time.time()})
            continuing = resume if resume is not None and resume.stage == stage and not resume.finished else None
            start_from = net if stage > 1 and cascade.init_from_previous_stage else None
            net = train_stage(stage, config, dataset, choices, device, out_dir, log, jitter, continuing,
                              args.max_iters, mean_targets, start_from)

        needed = len(statistics_rows) if stage < stages else None
        saved = _load_predictions(out_dir, stage, len(test_bank), needed) if done_before else None
        if saved is not None:
            test_estimates, statistics_estimates = saved
        else:
            test_estimates = predict_stage(stage, net, test_images, test_bank.initial_boxes, test_estimates, config,
                                           device)
            if stage < stages:
                statistics_estimates = predict_stage(stage, net, statistics_images,
                                                     train_bank.initial_boxes[statistics_rows], statistics_estimates,
                                                     config, device)
            np.savez(_predictions_file(out_dir, stage), test=test_estimates,
                     statistics=statistics_estimates if stage < stages else np.zeros((0,)))
        metrics = evaluate(test_estimates, test_bank)
        evaluations[stage] = metrics
        (out_dir / f"evaluation-stage-{stage}.json").write_text(json.dumps(metrics, indent=2) + "\n")
        log.write({"kind": "validation", "stage": stage, "pcp_mean": metrics["pcp_mean"],
                   "pcp_paper_mean": metrics["pcp_paper_groups"]["mean"], "pck_mean": metrics["pck_mean"],
                   "pck_mean_body": metrics["pck_mean_body"], "images": metrics["images"], "time": time.time()})
        save_plots(log, out_dir)
        print(f"stage {stage}: LSP {evaluation.split} strict PCP {metrics['pcp_mean']:.3f}, "
              f"PCK@0.2 {metrics['pck_mean']:.3f} ({len(test_bank)} images)", file=sys.stderr)

    table = format_stage_table(evaluations)
    (out_dir / "evaluation.json").write_text(json.dumps(
        {"stages": {str(s): m for s, m in evaluations.items()}, "table": table.splitlines()}, indent=2) + "\n")
    print(table)
    print(f"done: stages 1-{stages} in {out_dir}", file=sys.stderr)
    return 0

