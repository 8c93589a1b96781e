"""The training configuration: a TOML file read once into frozen dataclasses, checked key by key.

Sections: ``[model]`` (network and input size), ``[targets]``, ``[augment]``, ``[train]`` (optimiser,
schedule, loader, device, checkpoints), ``[validation]`` and one ``[[datasets]]`` table per data
source. docs/trainers.md describes every key; trainers/configs/ holds working examples. A bad key or
value raises PosestreamError naming the file and the key (the table reading and checks are
trainers/common/config.py's).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from posestream.pipeline.core.errors import PosestreamError
from posestream.pipeline.networks.layout import STRIDE
from posestream.pipeline.networks.models import MODELS
from posestream.trainers.common.augment import AugmentConfig
from posestream.trainers.common.config import DEVICES, OPTIMIZERS, build_section, check_positive, read_config_tables
from posestream.trainers.heatmap_paf.datasets import MosaicConfig
from posestream.trainers.heatmap_paf.targets import TargetConfig

DATASET_KINDS = ("lsp", "coco", "mosaic")


@dataclass(frozen=True)
class ModelSection:
    name: str = "lightpose-xs"
    input_height: int = 256
    input_width: int = 256


@dataclass(frozen=True)
class TrainSection:
    batch_size: int = 8
    epochs: int = 10
    iterations_per_epoch: int = 500
    optimizer: str = "adamw"
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_iterations: int = 200
    final_lr_ratio: float = 0.02  # the cosine ends at lr * this
    foreground_weight: float = 0.0  # 0 = plain masked MSE; > 0 weighs cells holding people more (see pose_loss)
    workers: int = 2
    threads: int = 0  # torch threads for the training step; 0 = torch's default
    seed: int = 0
    device: str = "auto"
    amp: bool = True  # mixed precision, on CUDA only
    channels_last: bool = True  # on CUDA only
    log_every: int = 20  # iterations per metrics.jsonl line
    checkpoint_every: int = 0  # iterations between last.pt saves inside an epoch; 0 = at epoch ends only
    best_metric: str = "lsp.pck_body"
    # Keep every BatchNorm on its stored statistics with its scale and shift fixed (fine-tuning with small
    # batches, where batch statistics would be noise); networks without BatchNorm ignore it.
    freeze_batch_norm: bool = False
    # The first N blocks of the backbone keep their initial weights (fine-tuning: less to learn, and the
    # backward pass stops early; on two CPU cores freezing 13 of lwo-mobilenet's 23 cuts a step from 3.1 to 2.4 s).
    frozen_backbone_blocks: int = 0


@dataclass(frozen=True)
class ValidationSection:
    every_epochs: int = 1
    input_height: int = 256  # the estimator's network input height, as `posestream eval --input-height`
    lsp_data: str = ""  # LSP-format folder; empty = no LSP validation
    lsp_split: str = "test"
    lsp_images: int = 200  # first N images of the split at each validation
    lsp_final_images: int = 1000  # at the end of training
    coco_images: str = ""  # COCO image folder; empty = no COCO validation
    coco_annotations: str = ""
    coco_max_images: int = 0  # 0 = all person images in the json


@dataclass(frozen=True)
class DatasetSection:
    name: str
    kind: str  # lsp (LSP or LSPET, told apart by joints.mat) | coco | mosaic
    weight: float = 1.0  # share of samples; 0 = only a source of people or backgrounds for mosaics
    path: str = ""  # lsp: the folder with images/ and joints.mat
    split: str = "train"  # lsp: train | test | all
    images: str = ""  # coco: image folder
    annotations: str = ""  # coco: person-keypoints json
    max_items: int = 0  # use only the first N images/people (0 = all)
    person_fill: float = 0.8  # lsp, coco: a framed person's box fills this fraction of the input
    people: tuple[str, ...] = ()  # mosaic: names of lsp datasets to take people from
    backgrounds: tuple[str, ...] = ()  # mosaic: names of coco datasets whose person-free images are canvases
    mosaic: MosaicConfig = MosaicConfig()


@dataclass(frozen=True)
class TrainConfig:
    source: str  # the TOML file
    model: ModelSection
    targets: TargetConfig
    augment: AugmentConfig
    train: TrainSection
    validation: ValidationSection
    datasets: tuple[DatasetSection, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict:
        return asdict(self)


def _check(config: TrainConfig, config_path: Path) -> None:
    model, train, validation = config.model, config.train, config.validation
    if model.name not in MODELS:
        raise PosestreamError(str(config_path), f"[model] name {model.name!r} is unknown; choose one of: "
                                                f"{', '.join(MODELS)}")
    for key in ("input_height", "input_width"):
        value = getattr(model, key)
        if value <= 0 or value % config.targets.stride:
            raise PosestreamError(str(config_path), f"[model] {key} must be a positive multiple of "
                                                    f"{config.targets.stride}, got {value}")
    for key in ("batch_size", "epochs", "iterations_per_epoch", "log_every"):
        check_positive(config_path, f"[train] {key}", getattr(train, key))
    for key in ("warmup_iterations", "workers", "threads", "checkpoint_every", "weight_decay", "foreground_weight",
                "frozen_backbone_blocks"):
        check_positive(config_path, f"[train] {key}", getattr(train, key), allow_zero=True)
    check_positive(config_path, "[train] lr", train.lr)
    if not 0 <= train.final_lr_ratio <= 1:
        raise PosestreamError(str(config_path), f"[train] final_lr_ratio must be in 0..1, got {train.final_lr_ratio}")
    if train.optimizer not in OPTIMIZERS:
        raise PosestreamError(str(config_path), f"[train] optimizer must be one of {', '.join(OPTIMIZERS)}, "
                                                f"got {train.optimizer!r}")
    if train.device not in DEVICES:
        raise PosestreamError(str(config_path), f"[train] device must be one of {', '.join(DEVICES)}, "
                                                f"got {train.device!r}")
    for key in ("sigma", "paf_width"):
        check_positive(config_path, f"[targets] {key}", getattr(config.targets, key))
    augment = config.augment
    if not 0 < augment.scale_min <= augment.scale_max:
        raise PosestreamError(str(config_path), "[augment] needs 0 < scale_min <= scale_max")
    if not 0 <= augment.flip_probability <= 1:
        raise PosestreamError(str(config_path), "[augment] flip_probability must be in 0..1")
    for key in ("every_epochs", "input_height", "lsp_images", "lsp_final_images"):
        check_positive(config_path, f"[validation] {key}", getattr(validation, key))
    check_positive(config_path, "[validation] coco_max_images", validation.coco_max_images, allow_zero=True)
    if bool(validation.coco_images) != bool(validation.coco_annotations):
        raise PosestreamError(str(config_path), "[validation] coco_images and coco_annotations go together")

    if not config.datasets:
        raise PosestreamError(str(config_path), "no [[datasets]] table")
    names = [d.name for d in config.datasets]
    by_name = {d.name: d for d in config.datasets}
    for i, dataset in enumerate(config.datasets):
        where = f"[[datasets]] #{i + 1} ({dataset.name})"
        if names.count(dataset.name) > 1:
            raise PosestreamError(str(config_path), f"{where} name is used twice")
        if dataset.kind not in DATASET_KINDS:
            raise PosestreamError(str(config_path), f"{where} kind must be one of {', '.join(DATASET_KINDS)}, "
                                                    f"got {dataset.kind!r}")
        check_positive(config_path, f"{where} weight", dataset.weight, allow_zero=True)
        check_positive(config_path, f"{where} max_items", dataset.max_items, allow_zero=True)
        check_positive(config_path, f"{where} person_fill", dataset.person_fill)
        needed = {"lsp": ("path",), "coco": ("images", "annotations"), "mosaic": ("people",)}[dataset.kind]
        for key in needed:
            if not getattr(dataset, key):
                raise PosestreamError(str(config_path), f"{where} kind {dataset.kind} needs {key}")
        for key, kind in (("people", "lsp"), ("backgrounds", "coco")):
            for reference in getattr(dataset, key):
                if reference not in by_name or by_name[reference].kind != kind:
                    raise PosestreamError(str(config_path), f"{where} {key} names {reference!r}, which is not "
                                                            f"a {kind} dataset in this file")
        mosaic = dataset.mosaic
        if not 1 <= mosaic.people_min <= mosaic.people_max:
            raise PosestreamError(str(config_path), f"{where} needs 1 <= people_min <= people_max")
        if not 0 < mosaic.height_min <= mosaic.height_max <= 1:
            raise PosestreamError(str(config_path), f"{where} needs 0 < height_min <= height_max <= 1")
    if sum(d.weight for d in config.datasets) <= 0:
        raise PosestreamError(str(config_path), "[[datasets]] weights sum to 0: nothing to sample")


def load_train_config(path: str | Path) -> TrainConfig:
    config_path = Path(path)
    data, raw_datasets = read_config_tables(config_path, {"model", "targets", "augment", "train", "validation",
                                                          "datasets"})
    mosaic_keys = {f.name for f in fields(MosaicConfig)}
    datasets = []
    for i, table in enumerate(raw_datasets):
        where = f"[[datasets]] #{i + 1} "
        mosaic = build_section(MosaicConfig, {k: v for k, v in table.items() if k in mosaic_keys}, where, config_path)
        rest = {k: v for k, v in table.items() if k not in mosaic_keys}
        datasets.append(build_section(DatasetSection, rest, where, config_path, required=("name", "kind"), mosaic=mosaic))
    config = TrainConfig(
        source=str(config_path),
        model=build_section(ModelSection, data.get("model", {}), "[model] ", config_path),
        targets=build_section(TargetConfig, data.get("targets", {}), "[targets] ", config_path, stride=STRIDE),
        augment=build_section(AugmentConfig, data.get("augment", {}), "[augment] ", config_path),
        train=build_section(TrainSection, data.get("train", {}), "[train] ", config_path),
        validation=build_section(ValidationSection, data.get("validation", {}), "[validation] ", config_path),
        datasets=tuple(datasets),
    )
    _check(config, config_path)
    return config
