"""The DeepPose cascade's training configuration: a TOML file read once into frozen dataclasses.

Sections: ``[model]``, ``[cascade]``, ``[augment]``, ``[train]``, ``[evaluation]`` and one
``[[datasets]]`` table per LSP-format training folder. docs/deeppose.md describes every key;
trainers/configs/deeppose-*.toml are working examples. A bad key or value raises PosestreamError
naming the file and the key (the table reading and checks are trainers/common/config.py's).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from posestream.pipeline.core.errors import PosestreamError
from posestream.trainers.common.config import DEVICES, OPTIMIZERS, build_section, check_positive, read_config_tables
from posestream.trainers.deeppose.data import DeepPoseAugment
from posestream.trainers.deeppose.model import DEEPPOSE_MODELS, feature_size


@dataclass(frozen=True)
class ModelSection:
    name: str = "deeppose-s"
    input_size: int = 0  # 0 = the model's own (220 for the paper's sizes)


@dataclass(frozen=True)
class CascadeSection:
    stages: int = 3  # S
    sigma: float = 2.0  # a refinement crop's side is sigma x diam(y); the paper chose 2.0 for LSP
    statistics_images: int = 1000  # training images on which each stage's errors are measured
    real_estimate_probability: float = 0.5  # share of refinement samples centred on a real estimate
    min_diameter_fraction: float = 0.05  # diam(y) is at least this fraction of the image's longer side
    # Measure errors in the crops a stage really gets (side σ·diam(y^{s-1})) and scale simulated crops by
    # the measured side ratios; false = the paper's σ·diam(y) of the truth for both.
    scale_simulated_crops: bool = True
    # Start a refinement stage's network from the previous stage's (all but the output layer) instead of
    # from scratch (the paper trains every stage from scratch, for days).
    init_from_previous_stage: bool = False


@dataclass(frozen=True)
class TrainSection:
    batch_size: int = 32
    stage1_iterations: int = 2000
    refine_iterations: int = 2000  # per refinement stage
    iterations_per_epoch: int = 500  # checkpoint (and epoch-NNN) granularity
    optimizer: str = "adamw"
    lr: float = 5e-4
    weight_decay: float = 5e-4
    warmup_iterations: int = 200
    final_lr_ratio: float = 0.02
    workers: int = 1
    threads: int = 0  # torch threads for the training step; 0 = torch's default
    seed: int = 0
    device: str = "auto"
    log_every: int = 20
    checkpoint_every: int = 0  # iterations between last.pt saves inside an epoch; 0 = at epoch ends
    max_image_side: int = 512  # training images are downscaled once to at most this (0 = never)
    eval_batch_size: int = 64


@dataclass(frozen=True)
class EvaluationSection:
    lsp_data: str = "${POSESTREAM_SHARED}/data/lsp"
    split: str = "test"
    max_images: int = 0  # the first N of the split; 0 = all (LSP test: 1000)


@dataclass(frozen=True)
class DatasetSection:
    name: str
    path: str  # a folder with images/ and joints.mat (LSP or LSPET)
    split: str = "train"
    max_items: int = 0


@dataclass(frozen=True)
class DeepPoseTrainConfig:
    source: str
    model: ModelSection
    cascade: CascadeSection
    augment: DeepPoseAugment
    train: TrainSection
    evaluation: EvaluationSection
    datasets: tuple[DatasetSection, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict:
        return asdict(self)

    def input_size(self) -> int:
        return self.model.input_size or DEEPPOSE_MODELS[self.model.name].input_size


def _check(config: DeepPoseTrainConfig, path: Path) -> None:
    where = str(path)
    if config.model.name not in DEEPPOSE_MODELS:
        raise PosestreamError(where, f"[model] name {config.model.name!r} is unknown; choose one of: "
                                     f"{', '.join(DEEPPOSE_MODELS)}")
    check_positive(path, "[model] input_size", config.model.input_size, allow_zero=True)
    if feature_size(config.input_size()) < 1:
        raise PosestreamError(where, f"[model] input_size {config.input_size()} is too small (at least 64)")
    cascade, train = config.cascade, config.train
    check_positive(path, "[cascade] stages", cascade.stages)
    check_positive(path, "[cascade] sigma", cascade.sigma)
    check_positive(path, "[cascade] statistics_images", cascade.statistics_images)
    if not 0 <= cascade.real_estimate_probability <= 1:
        raise PosestreamError(where, "[cascade] real_estimate_probability must be in 0..1")
    if not 0 < cascade.min_diameter_fraction < 1:
        raise PosestreamError(where, "[cascade] min_diameter_fraction must be in (0, 1)")
    augment = config.augment
    if not 0 < augment.scale_min <= augment.scale_max:
        raise PosestreamError(where, "[augment] needs 0 < scale_min <= scale_max")
    if not 0 <= augment.flip_probability <= 1:
        raise PosestreamError(where, "[augment] flip_probability must be in 0..1")
    for key in ("rotation_degrees", "translate", "brightness", "contrast", "saturation"):
        check_positive(path, f"[augment] {key}", getattr(augment, key), allow_zero=True)
    for key in ("batch_size", "stage1_iterations", "refine_iterations", "iterations_per_epoch", "log_every",
                "eval_batch_size"):
        check_positive(path, f"[train] {key}", getattr(train, key))
    for key in ("warmup_iterations", "workers", "threads", "checkpoint_every", "weight_decay", "max_image_side"):
        check_positive(path, f"[train] {key}", getattr(train, key), allow_zero=True)
    check_positive(path, "[train] lr", train.lr)
    if not 0 <= train.final_lr_ratio <= 1:
        raise PosestreamError(where, f"[train] final_lr_ratio must be in 0..1, got {train.final_lr_ratio}")
    if train.optimizer not in OPTIMIZERS:
        raise PosestreamError(where, f"[train] optimizer must be one of {', '.join(OPTIMIZERS)}, "
                                     f"got {train.optimizer!r}")
    if train.device not in DEVICES:
        raise PosestreamError(where, f"[train] device must be one of {', '.join(DEVICES)}, got {train.device!r}")
    check_positive(path, "[evaluation] max_images", config.evaluation.max_images, allow_zero=True)
    if not config.datasets:
        raise PosestreamError(where, "no [[datasets]] table")
    names = [d.name for d in config.datasets]
    for i, dataset in enumerate(config.datasets):
        if names.count(dataset.name) > 1:
            raise PosestreamError(where, f"[[datasets]] #{i + 1} ({dataset.name}) name is used twice")
        check_positive(path, f"[[datasets]] #{i + 1} ({dataset.name}) max_items", dataset.max_items, allow_zero=True)


def load_deeppose_config(path: str | Path) -> DeepPoseTrainConfig:
    config_path = Path(path)
    data, raw_datasets = read_config_tables(config_path, {"model", "cascade", "augment", "train", "evaluation",
                                                          "datasets"})
    config = DeepPoseTrainConfig(
        source=str(config_path),
        model=build_section(ModelSection, data.get("model", {}), "[model] ", config_path),
        cascade=build_section(CascadeSection, data.get("cascade", {}), "[cascade] ", config_path),
        augment=build_section(DeepPoseAugment, data.get("augment", {}), "[augment] ", config_path),
        train=build_section(TrainSection, data.get("train", {}), "[train] ", config_path),
        evaluation=build_section(EvaluationSection, data.get("evaluation", {}), "[evaluation] ", config_path),
        datasets=tuple(build_section(DatasetSection, table, f"[[datasets]] #{i + 1} ", config_path,
                              required=("name", "path"))
                       for i, table in enumerate(raw_datasets)),
    )
    _check(config, config_path)
    return config
