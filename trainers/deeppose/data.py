"""Training data for the DeepPose cascade: LSP/LSPET images decoded once into shared memory, the stage-1
and refinement-stage samples, the per-joint jitter statistics, and the key samplers.

``ImageBank`` holds every image of a dataset list in one uint8 tensor in shared memory, so loader
workers (started from a forkserver) map the same pages instead of each decoding or copying 2 GB.
Images whose longer side exceeds ``max_side`` are downscaled once (LSPET has a few wide scenes of up to
1316 px around a person of about 150 px) and their joints with them.

A sample depends only on its key (image, [joint,] seed), never on the worker that makes it; the samplers
draw keys from (seed, stage, epoch), so a resumed stage sees the same stream.
"""
from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image  # header-only reads of image sizes; pillow comes with matplotlib

from posestream.pipeline.core.errors import PosestreamError
from posestream.pipeline.evaluation.lsp import lsp_split_indices, read_lsp_dataset
from posestream.pipeline.sources.readers import read_image
from posestream.trainers.common.augment import AugmentConfig, jitter_colour, normalise
from posestream.trainers.common.sampling import ResumableSampler
from posestream.trainers.deeppose.model import (
    FLIP_JOINTS,
    JOINT_COUNT,
    LEFT_SHOULDER,
    RIGHT_HIP,
    corner_box,
    crop_image,
    crop_matrix,
    points_in_crop,
    torso_diameter,
)

RIGHT_SHOULDER = 8
LEFT_HIP = 3


# ----------------------------------------------------------------------------------------------
# Images


@dataclass(frozen=True)
class ImageBank:
    """Decoded images and their joints. ``joints`` (N, k, 2) in the stored (possibly downscaled) pixels,
    ``labelled`` (N, k): the joint has a true position; ``scales`` (N,): stored pixels per file pixel."""

    pixels: torch.Tensor  # every image's H*W*3 bytes one after another, in shared memory
    offsets: np.ndarray  # (N + 1,) start of each image in ``pixels``
    shapes: np.ndarray  # (N, 2) height, width
    joints: np.ndarray
    labelled: np.ndarray
    scales: np.ndarray
    names: tuple[str, ...]
    initial_boxes: np.ndarray  # (N, 4) x0 y0 x1 y1: stage 1's box b⁰ (``initial_boxes``)

    def __len__(self) -> int:
        return len(self.names)

    def image(self, index: int) -> np.ndarray:
        height, width = (int(v) for v in self.shapes[index])
        flat = self.pixels[int(self.offsets[index]):int(self.offsets[index + 1])].numpy()
        return flat.reshape(height, width, 3)

    def longer_sides(self) -> np.ndarray:
        return self.shapes.max(axis=1).astype(np.float64)


@dataclass(frozen=True)
class LspSelection:
    """Which images of one LSP-format folder to use: ``split`` as posestream.pipeline.evaluation.lsp reads it."""

    path: Path
    split: str = "train"
    max_items: int = 0  # the first N of the split; 0 = all


def _file_shape(path: Path) -> tuple[int, int]:
    """(height, width) from the file's header alone (no decoding)."""
    try:
        with Image.open(path) as header:
            width, height = header.size
    except (OSError, ValueError):
        raise PosestreamError(str(path), "could not be read as an image") from None
    return height, width


def _stored_shape(file_shape: tuple[int, int], max_side: int) -> tuple[tuple[int, int], float]:
    """((height, width) as stored, scale): at most ``max_side`` on the longer side (0 = as is)."""
    height, width = file_shape
    longest = max(height, width)
    if max_side and longest > max_side:
        scale = max_side / longest
        return (max(1, round(height * scale)), max(1, round(width * scale))), scale
    return (height, width), 1.0


def _decode_into(path: Path, file_shape: tuple[int, int], shape: tuple[int, int], destination: np.ndarray) -> None:
    image = read_image(path)
    if image is None:
        raise PosestreamError(str(path), "could not be read as an image")
    if image.shape[:2] != file_shape:
        # The joints are in the file's pixel grid; a decoder that turned the image (EXIF) would move them.
        raise PosestreamError(str(path), f"decodes to {image.shape[1]}x{image.shape[0]} but its header says "
                                         f"{file_shape[1]}x{file_shape[0]}")
    if file_shape != shape:
        image = cv2.resize(image, (shape[1], shape[0]), interpolation=cv2.INTER_AREA)
    destination[:] = image.reshape(-1)


def load_image_bank(selections: list[LspSelection], max_side: int = 0, threads: int = 2) -> ImageBank:
    """Decode every selected image once, straight into the shared tensor (its size is known from the
    files' headers, so no second copy of 2 GB is ever held); ``threads`` decoders (cv2 releases the GIL)."""
    paths, joints, labelled, names, cut_to_person = [], [], [], [], []
    for selection in selections:
        dataset = read_lsp_dataset(selection.path)
        indices = list(lsp_split_indices(selection.path, len(dataset.image_paths), selection.split))
        if selection.max_items:
            indices = indices[:selection.max_items]
        points = dataset.joints[indices]
        if dataset.layout == "lsp":
            present = np.ones(points.shape[:2], np.bool_)  # LSP's flag marks occlusion; every joint has a position
        else:
            # LSPET: a joint not flagged visible has no position (it sits at x <= 0 or y <= 0).
            present = dataset.visible[indices] & (points[..., 0] > 0) & (points[..., 1] > 0)
        usable = present.sum(axis=1) >= 2
        paths += [dataset.image_paths[i] for i, ok in zip(indices, usable) if ok]
        joints.append(points[usable])
        labelled.append(present[usable])
        names += [f"{dataset.layout}:{dataset.image_paths[i].stem}" for i, ok in zip(indices, usable) if ok]
        cut_to_person += [dataset.layout == "lsp"] * int(usable.sum())
    if not paths:
        raise PosestreamError(", ".join(str(s.path) for s in selections), "no usable images in the selection")
    file_shapes = [_file_shape(path) for path in paths]
    stored = [_stored_shape(shape, max_side) for shape in file_shapes]
    shapes = np.array([shape for shape, _ in stored], np.int64)
    scales = np.array([scale for _, scale in stored])
    offsets = np.concatenate([[0], np.cumsum(shapes[:, 0] * shapes[:, 1] * 3)])
    pixels = torch.empty(int(offsets[-1]), dtype=torch.uint8).share_memory_()
    flat = pixels.numpy()

    def decode(i: int) -> None:
        _decode_into(paths[i], file_shapes[i], (int(shapes[i, 0]), int(shapes[i, 1])), flat[offsets[i]:offsets[i + 1]])

    with ThreadPoolExecutor(max(1, threads)) as pool:
        list(pool.map(decode, range(len(paths))))
    all_joints = np.concatenate(joints) * scales[:, None, None]
    all_labelled = np.concatenate(labelled)
    all_joints[~all_labelled] = 0.0
    boxes = initial_boxes(all_joints, all_labelled, shapes, np.array(cut_to_person, np.bool_))
    return ImageBank(pixels, offsets, shapes, all_joints, all_labelled, scales, tuple(names), boxes)


# LSP cuts every image around its person: the labelled joints span a median 0.55 of the image's width and
# 0.76 of its height, centred (measured on LSP train: 10th-90th percentiles 0.55-0.59 and 0.62-0.83).
LSP_FRAMING = (0.55, 0.76)


def initial_boxes(joints: np.ndarray, labelled: np.ndarray, shapes: np.ndarray, cut_to_person: np.ndarray) -> np.ndarray:
    """Stage 1's box b⁰ per image (N, 4: x0 y0 x1 y1, pixel edges).

    An image cut around its person (LSP) is its own box, as the paper takes it and as LSP test is scored.
    Other images (LSPET: scenes of up to 1316 px with a person of about 150) get a box framed as LSP frames
    its people, centred on the labelled joints, so that stage 1 trains on the framing it is scored on and
    the errors it makes on training images (the next stage's jitter statistics) are the errors it makes on
    LSP test. Measured on the first run: with whole LSPET images as b⁰, stage 1's median error on them was
    0.64 of a refinement crop's side against 0.19 on LSP test, and stage 2 learnt those far too large moves.
    A side is at least a quarter of the other, so a lying person does not give a sliver.
    """
    boxes = np.zeros((len(joints), 4))
    for i in range(len(joints)):
        height, width = (float(v) for v in shapes[i])
        points = joints[i][labelled[i]]
        if cut_to_person[i] or len(points) < 2:
            boxes[i] = (-0.5, -0.5, width - 0.5, height - 0.5)
            continue
        low, high = points.min(axis=0), points.max(axis=0)
        size = np.maximum(high - low, 1.0) / LSP_FRAMING
        size = np.maximum(size, 0.25 * size.max())
        centre = (low + high) / 2
        boxes[i] = (*(centre - size / 2), *(centre + size / 2))
    return boxes


def reference_diameters(bank: ImageBank) -> np.ndarray:
    """The true diam(y) per image (N,), the scale of a refinement crop in training.

    Left shoulder to right hip where both are labelled, else the other torso diagonal; LSPET images
    with neither (about 17 %) get the median ratio of diam to their labelled joints' extent (measured on
    the images that have it) times that extent.
    """
    joints, labelled = bank.joints, bank.labelled
    diameter = torso_diameter(joints)
    known = labelled[:, LEFT_SHOULDER] & labelled[:, RIGHT_HIP] & (diameter > 0)
    other = np.linalg.norm(joints[:, RIGHT_SHOULDER] - joints[:, LEFT_HIP], axis=1)
    use_other = ~known & labelled[:, RIGHT_SHOULDER] & labelled[:, LEFT_HIP] & (other > 0)
    big = 1e9
    low = np.where(labelled[..., None], joints, big).min(axis=1)
    high = np.where(labelled[..., None], joints, -big).max(axis=1)
    extent = np.maximum((high - low).max(axis=1), 1.0)
    ratio = float(np.median(diameter[known] / extent[known])) if known.any() else 0.5
    return np.where(known, diameter, np.where(use_other, other, ratio * extent))


def mean_initial_targets(bank: ImageBank) -> np.ndarray:
    """Mean over the labelled joints of N(y; b⁰), per joint (k, 2), before augmentation."""
    boxes = bank.initial_boxes
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2.0
    sizes = boxes[:, 2:] - boxes[:, :2]
    normalised = (bank.joints - centres[:, None]) / sizes[:, None]
    counts = np.maximum(bank.labelled.sum(axis=0), 1)[:, None]
    return (normalised * bank.labelled[..., None]).sum(axis=0) / counts


# ----------------------------------------------------------------------------------------------
# Jitter statistics


@dataclass(frozen=True)
class JitterStatistics:
    """What a refinement stage's simulated estimates are drawn from, measured on the previous stage.

    ``mean`` (k, 2) and ``covariance`` (k, 2, 2) per joint of the errors y^{s-1} - y in N(·; b_i)
    coordinates, b_i being the crop the next stage really gets (side σ·diam(y^{s-1})); ``counts`` (k,)
    errors measured per joint; ``side_ratios`` (M,) that crop side over σ·diam(y), per measured image: a
    stage that shrinks poses towards the mean pose gives smaller crops than the true diam would, and
    simulated crops are scaled by a ratio drawn from these (empty = 1)."""

    mean: np.ndarray
    covariance: np.ndarray
    counts: np.ndarray
    side_ratios: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def as_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "covariance": self.covariance.tolist(), "counts": self.counts.tolist(),
                "side_ratios": self.side_ratios.tolist()}

    @staticmethod
    def from_dict(values: dict) -> JitterStatistics:
        return JitterStatistics(np.asarray(values["mean"], np.float64), np.asarray(values["covariance"], np.float64),
                                np.asarray(values["counts"], np.int64),
                                np.asarray(values.get("side_ratios", []), np.float64))


def measure_jitter(estimates: np.ndarray, truth: np.ndarray, labelled: np.ndarray, crop_sides: np.ndarray,
                   reference_sides: np.ndarray | None = None) -> JitterStatistics:
    """Mean and covariance per joint of (estimates - truth) / crop side, over the labelled joints.

    estimates, truth (N, k, 2); labelled (N, k); crop_sides (N,): the sides of the crops the next stage
    gets, σ·diam(estimates); reference_sides (N,): σ·diam(truth), for the side ratios. A joint with fewer
    than three errors gets mean 0 and the average covariance of the others.
    """
    crop_sides = np.asarray(crop_sides, np.float64)
    errors = (np.asarray(estimates, np.float64) - truth) / crop_sides[:, None, None]
    joints = truth.shape[1]
    mean = np.zeros((joints, 2))
    covariance = np.zeros((joints, 2, 2))
    counts = labelled.sum(axis=0).astype(np.int64)
    measured = counts >= 3
    for j in np.flatnonzero(measured):
        values = errors[labelled[:, j], j]
        mean[j] = values.mean(axis=0)
        covariance[j] = np.cov(values, rowvar=False)
    fallback = covariance[measured].mean(axis=0) if measured.any() else np.eye(2) * 0.01
    covariance[~measured] = fallback
    ratios = crop_sides / np.asarray(reference_sides, np.float64) if reference_sides is not None else np.zeros(0)
    return JitterStatistics(mean, covariance, counts, ratios)


def sample_jitter(statistics: JitterStatistics, joint: int, rng: np.random.Generator, count: int | None = None) -> np.ndarray:
    """Draws from N(μ_joint, Σ_joint): (2,) or (count, 2) normalised displacements."""
    return rng.multivariate_normal(statistics.mean[joint], statistics.covariance[joint], size=count,
                                   method="eigh")


def sample_side_ratio(statistics: JitterStatistics, rng: np.random.Generator) -> float:
    """One of the measured crop-side ratios, uniformly (1 when none were measured)."""
    if len(statistics.side_ratios) == 0:
        return 1.0
    return float(statistics.side_ratios[int(rng.integers(len(statistics.side_ratios)))])


# ----------------------------------------------------------------------------------------------
# Samples


@dataclass(frozen=True)
class DeepPoseAugment:
    flip_probability: float = 0.5
    rotation_degrees: float = 15.0  # uniform in +-this
    scale_min: float = 0.9  # the box's side times this (>1 zooms out)
    scale_max: float = 1.1
    translate: float = 0.05  # stage 1: the box's centre moves by up to this fraction of its size
    brightness: float = 0.15
    contrast: float = 0.2
    saturation: float = 0.2

    def colour(self) -> AugmentConfig:
        return AugmentConfig(brightness=self.brightness, contrast=self.contrast, saturation=self.saturation)


def _random_view(rng: np.random.Generator, augment: DeepPoseAugment) -> tuple[float, float, bool]:
    """(scale, angle in radians, flip) of one sample's crop."""
    scale = rng.uniform(augment.scale_min, augment.scale_max)
    angle = math.radians(rng.uniform(-augment.rotation_degrees, augment.rotation_degrees))
    return scale, angle, bool(rng.random() < augment.flip_probability)


def _finish(crop: np.ndarray, targets: np.ndarray, mask: np.ndarray, rng: np.random.Generator | None,
            colour: AugmentConfig):
    if rng is not None:
        crop = jitter_colour(crop, rng, colour)
    return (torch.from_numpy(normalise(crop)), torch.from_numpy(targets.astype(np.float32)),
            torch.from_numpy(mask.astype(np.float32)))


class InitialStageSet(torch.utils.data.Dataset):
    """Key (image, seed) -> (crop 3 x S x S, targets k x 2 in the crop's normalised frame, mask k).

    The crop is the image's box b⁰ (the whole image for LSP; ``initial_boxes``), scaled, turned, shifted and maybe mirrored at random; a mirrored
    sample swaps left and right joints so that "left" keeps meaning the person's left."""

    def __init__(self, bank: ImageBank, input_size: int, augment: DeepPoseAugment):
        self.bank = bank
        self.input_size = input_size
        self.augment = augment
        self.colour = augment.colour()

    def __getitem__(self, key: tuple[int, int]):
        index, seed = key
        rng = np.random.default_rng(seed)
        image = self.bank.image(index)
        centre, size = corner_box(self.bank.initial_boxes[index])
        scale, angle, flip = _random_view(rng, self.augment)
        centre = centre + rng.uniform(-self.augment.translate, self.augment.translate, 2) * size
        matrix = crop_matrix(centre, size * scale, self.input_size, angle, flip)
        targets = points_in_crop(self.bank.joints[index], matrix, self.input_size)
        mask = self.bank.labelled[index].astype(np.float32)
        if flip:
            targets, mask = targets[list(FLIP_JOINTS)], mask[list(FLIP_JOINTS)]
        targets[mask == 0] = 0.0
        return _finish(crop_image(image, matrix, self.input_size), targets, mask, rng, self.colour)


@dataclass(frozen=True)
class RefinementInputs:
    """What a refinement stage's samples need besides the images: the jitter statistics of the previous
    stage, the crop scale, and the previous stage's real estimates where they were computed."""

    sigma: float
    statistics: JitterStatistics
    reference_diameters: np.ndarray  # (N,) true diam(y), see reference_diameters
    estimates: np.ndarray  # (N, k, 2) the previous stage's joints; rows without one are ignored
    has_estimate: np.ndarray  # (N,) bool
    real_estimate_probability: float  # share of samples centred on a real estimate, where one exists
    min_diameter_fraction: float


class RefinementSet(torch.utils.data.Dataset):
    """Key (image, joint, seed) -> (crop, targets k x 2, mask k): a crop around a previous-stage estimate
    of the joint, real (side σ·diam(estimate), as at inference) or simulated (true position + a
    displacement drawn from N(μ_i, Σ_i), side σ·diam(y) times a measured side ratio); the target is the
    true joint in the crop's normalised frame, in the joint's own slot only."""

    def __init__(self, bank: ImageBank, input_size: int, augment: DeepPoseAugment, inputs: RefinementInputs):
        self.bank = bank
        self.input_size = input_size
        self.augment = augment
        self.inputs = inputs
        self.colour = augment.colour()

    def crop_box(self, index: int, joint: int, rng: np.random.Generator) -> tuple[np.ndarray, float]:
        """(centre, side) of the crop before the random scale, rotation and mirror."""
        inputs = self.inputs
        if inputs.has_estimate[index] and rng.random() < inputs.real_estimate_probability:
            estimate = inputs.estimates[index]
            diameter = max(float(torso_diameter(estimate)),
                           inputs.min_diameter_fraction * float(self.bank.shapes[index].max()))
            return estimate[joint], inputs.sigma * diameter
        side = inputs.sigma * float(inputs.reference_diameters[index]) * sample_side_ratio(inputs.statistics, rng)
        displacement = sample_jitter(inputs.statistics, joint, rng) * side
        return self.bank.joints[index, joint] + displacement, side

    def __getitem__(self, key: tuple[int, int, int]):
        index, joint, seed = key
        rng = np.random.default_rng(seed)
        centre, side = self.crop_box(index, joint, rng)
        scale, angle, flip = _random_view(rng, self.augment)
        matrix = crop_matrix(centre, np.array([side, side]) * scale, self.input_size, angle, flip)
        targets = np.zeros((JOINT_COUNT, 2))
        mask = np.zeros(JOINT_COUNT)
        slot = FLIP_JOINTS[joint] if flip else joint
        targets[slot] = points_in_crop(self.bank.joints[index, joint], matrix, self.input_size)
        mask[slot] = 1.0
        return _finish(crop_image(self.bank.image(index), matrix, self.input_size), targets, mask, rng, self.colour)


# ----------------------------------------------------------------------------------------------
# Keys


class KeySampler(ResumableSampler):
    """Per epoch, ``samples`` keys: a row of ``choices`` (image) or (image, joint), drawn uniformly with
    replacement, plus a fresh seed; both depend only on (seed, stage, epoch)."""

    def __init__(self, choices: np.ndarray, samples: int, seed: int, stage: int):
        self.choices = np.asarray(choices, np.int64).reshape(len(choices), -1)
        if len(self.choices) == 0:
            raise PosestreamError(f"stage {stage}", "no training samples to draw")
        super().__init__(samples, seed)
        self.stage = stage

    def epoch_keys(self) -> list[tuple[int, ...]]:
        rng = np.random.default_rng([self.seed, self.stage, self.epoch])
        rows = rng.integers(len(self.choices), size=self.samples)
        seeds = rng.integers(0, 2 ** 63 - 1, size=self.samples)
        return [(*(int(v) for v in self.choices[row]), int(seed)) for row, seed in zip(rows, seeds)]
