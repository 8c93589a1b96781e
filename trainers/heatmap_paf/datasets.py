"""Training data: COCO-format keypoint json, LSP and LSPET, multi-person mosaics, and the torch loader.

Readers turn each annotation format into people in our COCO-18 layout (``layout.KEYPOINTS``):

* COCO-17 keypoints map by name; the neck is the shoulders' midpoint when both shoulders are labelled.
  Crowd annotations and people with no labelled keypoint become ignore regions (their segmentation,
  else their box). Images without any person annotation are person-free backgrounds for mosaics.
* LSP / LSPET: the 12 limb joints map by name. The COCO-18 neck is the shoulders' midpoint (COCO's
  definition, which the evaluation also uses); LSP's own neck label sits about 0.14 torso lengths
  higher, so it is used only when a shoulder is unlabelled. The head top has no COCO-18 slot; it only
  widens the person's box. Nose, eyes and ears are unlabelled, so their channels are masked inside
  the person's box. LSP labels every joint (its flag marks occlusion); in LSPET only flagged-visible
  joints at positive coordinates are labelled (the others sit at x <= 0 or y <= 0 with no real position).

Sources draw one ``PoseSample`` from a random generator: ``SinglePersonSource`` frames one LSP person,
``CocoSource`` a whole image or one of its people, ``MosaicSource`` pastes 2-4 single people (cropped
around their joints, scaled to several sizes) onto a person-free background. ``PoseTrainingSet`` turns
a (source, seed) key into augmented network input and targets, so a sample depends only on its key,
not on the worker that makes it; ``MixtureSampler`` draws those keys with a weight per source
(trainers/common/sampling.py batches them).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from pycocotools import mask as coco_mask

from posestream.pipeline.core.errors import PosestreamError
from posestream.pipeline.core.skeleton import COCO17_NAMES
from posestream.pipeline.evaluation.lsp import LSP_JOINT_NAMES, lsp_split_indices, read_lsp_dataset
from posestream.pipeline.networks.layout import KEYPOINTS, NUM_KEYPOINTS
from posestream.pipeline.sources.readers import read_image
from posestream.trainers.common.augment import AugmentConfig, PoseSample, augment, normalise
from posestream.trainers.common.sampling import ResumableSampler
from posestream.trainers.heatmap_paf.targets import TargetConfig, make_targets

NECK = KEYPOINTS.index("neck")
LEFT_SHOULDER = KEYPOINTS.index("left_shoulder")
RIGHT_SHOULDER = KEYPOINTS.index("right_shoulder")
# For each COCO-18 keypoint, its COCO-17 index (-1 for the neck, which COCO-17 lacks).
LAYOUT_FROM_COCO17 = tuple(COCO17_NAMES.index(name) if name in COCO17_NAMES else -1 for name in KEYPOINTS)
# For each COCO-18 keypoint, its LSP joint index (-1 where LSP has none: the face).
LAYOUT_FROM_LSP = tuple(LSP_JOINT_NAMES.index(name) if name in LSP_JOINT_NAMES else -1 for name in KEYPOINTS)
LSP_NECK = LSP_JOINT_NAMES.index("neck")
PERSON_CATEGORY_ID = 1
# A person's box (where their unlabelled keypoints may be) is their labelled joints' box widened by
# this fraction of its larger side on every side.
PERSON_BOX_MARGIN = 0.2


# ----------------------------------------------------------------------------------------------
# Readers


def neck_from_shoulders(keypoints: np.ndarray) -> np.ndarray:
    """P x 18 x 3 with the neck set to the shoulders' midpoint where both are labelled (v = the lower)."""
    both = (keypoints[:, LEFT_SHOULDER, 2] > 0) & (keypoints[:, RIGHT_SHOULDER, 2] > 0)
    midpoint = (keypoints[:, LEFT_SHOULDER, :2] + keypoints[:, RIGHT_SHOULDER, :2]) / 2
    keypoints[both, NECK, :2] = midpoint[both]
    keypoints[both, NECK, 2] = np.minimum(keypoints[both, LEFT_SHOULDER, 2], keypoints[both, RIGHT_SHOULDER, 2])
    return keypoints


def coco17_to_layout(keypoints17: np.ndarray) -> np.ndarray:
    """P x 17 x 3 COCO keypoints (v: 0 unlabelled, 1 occluded, 2 visible) -> P x 18 x 3 in our layout."""
    keypoints17 = np.asarray(keypoints17, np.float32).reshape(-1, len(COCO17_NAMES), 3)
    index = np.asarray(LAYOUT_FROM_COCO17)
    out = keypoints17[:, np.maximum(index, 0)].copy()
    out[:, index < 0] = 0.0
    out[out[..., 2] <= 0, :2] = 0.0
    return neck_from_shoulders(out)


def box_around(points: np.ndarray, labelled: np.ndarray, margin: float = PERSON_BOX_MARGIN) -> np.ndarray:
    """(N, J, 2) points with (N, J) labelled flags -> N x 4 boxes around the labelled ones, widened."""
    big = np.float32(1e9)
    x0 = np.where(labelled, points[..., 0], big).min(axis=1)
    y0 = np.where(labelled, points[..., 1], big).min(axis=1)
    x1 = np.where(labelled, points[..., 0], -big).max(axis=1)
    y1 = np.where(labelled, points[..., 1], -big).max(axis=1)
    pad = margin * np.maximum(x1 - x0, y1 - y0)
    return np.stack([x0 - pad, y0 - pad, x1 + pad, y1 + pad], axis=1).astype(np.float32)


@dataclass(frozen=True)
class SinglePersonSet:
    """One person per image: ``keypoints`` N x 18 x 3 in our layout, ``boxes`` N x 4 (all joints incl.
    the head top, widened)."""

    name: str
    image_paths: tuple[Path, ...]
    keypoints: np.ndarray
    boxes: np.ndarray

    def __len__(self) -> int:
        return len(self.image_paths)


def read_lsp_people(data_dir: Path, split: str = "train", max_items: int | None = None) -> SinglePersonSet:
    """LSP (split train = im0001-1000, test = im1001-2000, all) or LSPET (train/all = all 10,000)."""
    dataset = read_lsp_dataset(Path(data_dir))
    indices = list(lsp_split_indices(Path(data_dir), len(dataset.image_paths), split))[:max_items]
    joints = dataset.joints[indices].astype(np.float32)  # N x 14 x 2
    if dataset.layout == "lsp":
        labelled = np.ones(joints.shape[:2], np.bool_)  # LSP's flag marks occlusion; every joint has a position
    else:
        labelled = dataset.visible[indices] & (joints[..., 0] > 0) & (joints[..., 1] > 0)
    index = np.asarray(LAYOUT_FROM_LSP)
    keypoints = np.zeros((len(indices), NUM_KEYPOINTS, 3), np.float32)
    mapped = index >= 0
    keypoints[:, mapped, :2] = joints[:, index[mapped]]
    keypoints[:, mapped, 2] = labelled[:, index[mapped]]
    keypoints[keypoints[..., 2] <= 0, :2] = 0.0
    keypoints = neck_from_shoulders(keypoints)  # LSP's own neck stays only where a shoulder is missing
    usable = labelled.sum(axis=1) >= 2
    boxes = box_around(joints, labelled)
    return SinglePersonSet(
        name=f"{dataset.layout}:{Path(data_dir).name}",
        image_paths=tuple(dataset.image_paths[i] for i, ok in zip(indices, usable) if ok),
        keypoints=keypoints[usable], boxes=boxes[usable])


@dataclass(frozen=True)
class CocoImage:
    path: Path
    height: int
    width: int
    keypoints: np.ndarray  # P x 18 x 3, people with at least one labelled keypoint
    boxes: np.ndarray  # P x 4 from their annotated bbox
    ignore_regions: tuple  # segmentations (polygons or RLE) or [x, y, w, h] boxes of unlabelled people


@dataclass(frozen=True)
class CocoPeople:
    images: tuple[CocoImage, ...]  # images with at least one labelled person
    backgrounds: tuple[Path, ...]  # images with no person at all


def read_coco_people(images_dir: Path, annotation_file: Path, max_items: int | None = None) -> CocoPeople:
    """People from a COCO person-keypoints json (COCO-17 keypoints), in our layout."""
    images_dir, annotation_file = Path(images_dir), Path(annotation_file)
    try:
        data = json.loads(annotation_file.read_text())
    except OSError as error:
        raise PosestreamError(str(annotation_file), f"cannot read: {error.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise PosestreamError(str(annotation_file), f"is not JSON ({error})") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "annotations")):
        raise PosestreamError(str(annotation_file), "is not a COCO annotation file (needs images and annotations lists)")
    by_image: dict[int, list[dict]] = {}
    for annotation in data["annotations"]:
        if annotation.get("category_id") == PERSON_CATEGORY_ID:
            by_image.setdefault(annotation["image_id"], []).append(annotation)
    images, backgrounds = [], []
    for image in sorted(data["images"], key=lambda i: i["id"]):
        path = images_dir / image["file_name"]
        people = by_image.get(image["id"], [])
        if not people:
            if path.is_file():
                backgrounds.append(path)
            continue
        is_labelled = [not a.get("iscrowd", 0) and a.get("num_keypoints", 0) > 0
                       and len(a.get("keypoints", ())) == 3 * len(COCO17_NAMES) for a in people]
        labelled = [a for a, ok in zip(people, is_labelled) if ok]
        if not labelled:
            continue
        if not path.is_file():
            raise PosestreamError(str(path), f"image listed in {annotation_file} is missing")
        keypoints = coco17_to_layout(np.array([a["keypoints"] for a in labelled], np.float32))
        boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in labelled)], np.float32)
        ignore = tuple(a.get("segmentation") or a["bbox"] for a, ok in zip(people, is_labelled) if not ok)
        images.append(CocoImage(path, int(image["height"]), int(image["width"]), keypoints, boxes, ignore))
    if not images:
        raise PosestreamError(str(annotation_file), "has no person with labelled keypoints")
    return CocoPeople(tuple(images[:max_items]), tuple(backgrounds))


def rasterise_ignore(regions: tuple, height: int, width: int) -> np.ndarray | None:
    """Ignore regions (COCO polygons, RLE or [x, y, w, h]) -> H x W uint8 mask, or None when there are none."""
    if not regions:
        return None
    mask = np.zeros((height, width), np.uint8)
    for region in regions:
        if isinstance(region, dict) and isinstance(region.get("counts"), str):
            mask |= coco_mask.decode(region).astype(np.uint8)  # compressed RLE
        elif isinstance(region, dict) or (isinstance(region, list) and region and isinstance(region[0], list)):
            rles = coco_mask.frPyObjects(region, height, width)  # uncompressed RLE or polygons
            rle = coco_mask.merge(rles) if isinstance(rles, list) else rles
            mask |= coco_mask.decode(rle).astype(np.uint8)
        else:
            x, y, w, h = (int(round(v)) for v in region[:4])
            mask[max(y, 0):max(y + h, 0), max(x, 0):max(x + w, 0)] = 1
    return mask


def _load_image(path: Path) -> np.ndarray:
    image = read_image(path)
    if image is None:
        raise PosestreamError(str(path), "could not be read as an image")
    return image


# ----------------------------------------------------------------------------------------------
# Sources: each draws one PoseSample (in its own image's pixels) from a random generator


@dataclass(frozen=True)
class SinglePersonSource:
    """One LSP-style person per sample, framed so the person fills ``person_fill`` of the input."""

    people: SinglePersonSet
    person_fill: float = 0.8

    def draw(self, rng: np.random.Generator) -> PoseSample:
        i = int(rng.integers(len(self.people)))
        box = self.people.boxes[i]
        return PoseSample(
            image=_load_image(self.people.image_paths[i]), keypoints=self.people.keypoints[i:i + 1].copy(),
            boxes=box[None].copy(), ignore=None, centre=((box[0] + box[2]) / 2, (box[1] + box[3]) / 2),
            size=max(box[2] - box[0], box[3] - box[1]) / self.person_fill)


@dataclass(frozen=True)
class CocoSource:
    """A COCO image: half the time the whole image, half the time centred on one of its people."""

    coco: CocoPeople
    person_fill: float = 0.8

    def draw(self, rng: np.random.Generator) -> PoseSample:
        record = self.coco.images[int(rng.integers(len(self.coco.images)))]
        image = _load_image(record.path)
        height, width = image.shape[:2]
        if rng.random() < 0.5:
            centre, size = ((width - 1) / 2, (height - 1) / 2), float(max(height, width))
        else:
            box = record.boxes[int(rng.integers(len(record.boxes)))]
            centre = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
            size = max(box[2] - box[0], box[3] - box[1], 16.0) / self.person_fill
        return PoseSample(image=image, keypoints=record.keypoints.copy(), boxes=record.boxes.copy(),
                          ignore=rasterise_ignore(record.ignore_regions, height, width), centre=centre, size=size)


@dataclass(frozen=True)
class MosaicConfig:
    people_min: int = 2
    people_max: int = 4
    height_min: float = 0.25  # a pasted person's box height, as a fraction of the canvas height
    height_max: float = 0.85
    max_overlap: float = 0.3  # largest fraction of a pasted crop that may cover an earlier one (or vice versa)
    placement_tries: int = 10


@dataclass(frozen=True)
class MosaicSource:
    """Several single people pasted onto one canvas, so PAF grouping sees many people at many scales.

    Each person is cropped around their box, scaled to a random height and pasted where it overlaps
    earlier crops little; an earlier person's keypoints that a later crop covers become unlabelled.
    The canvas is a random crop of a person-free image, or a flat random colour when there is none.
    """

    people: tuple[SinglePersonSet, ...]
    backgrounds: tuple[Path, ...]
    canvas_height: int
    canvas_width: int
    config: MosaicConfig = MosaicConfig()

    def _background(self, rng: np.random.Generator) -> np.ndarray:
        height, width = self.canvas_height, self.canvas_width
        if not self.backgrounds:
            return np.full((height, width, 3), rng.integers(0, 256, 3), np.uint8)
        image = _load_image(self.backgrounds[int(rng.integers(len(self.backgrounds)))])
        scale = max(height / image.shape[0], width / image.shape[1]) * rng.uniform(1.0, 1.5)
        resized = cv2.resize(image, (max(width, round(image.shape[1] * scale)),
                                     max(height, round(image.shape[0] * scale))), interpolation=cv2.INTER_AREA)
        y = int(rng.integers(resized.shape[0] - height + 1))
        x = int(rng.integers(resized.shape[1] - width + 1))
        return resized[y:y + height, x:x + width].copy()

    def _pick_person(self, rng: np.random.Generator) -> tuple[Path, np.ndarray, np.ndarray]:
        sizes = np.array([len(s) for s in self.people], np.float64)
        chosen = self.people[int(rng.choice(len(self.people), p=sizes / sizes.sum()))]
        i = int(rng.integers(len(chosen)))
        return chosen.image_paths[i], chosen.keypoints[i], chosen.boxes[i]

    def draw(self, rng: np.random.Generator) -> PoseSample:
        canvas = self._background(rng)
        height, width = canvas.shape[:2]
        config = self.config
        placed: list[tuple[int, int, int, int]] = []
        keypoints: list[np.ndarray] = []
        boxes: list[np.ndarray] = []
        for _ in range(int(rng.integers(config.people_min, config.people_max + 1))):
            path, person_keypoints, box = self._pick_person(rng)
            image = _load_image(path)
            x0, y0 = max(int(box[0]), 0), max(int(box[1]), 0)
            x1, y1 = min(int(np.ceil(box[2])), image.shape[1]), min(int(np.ceil(box[3])), image.shape[0])
            if x1 - x0 < 4 or y1 - y0 < 4:
                continue
            scale = rng.uniform(config.height_min, config.height_max) * height / (y1 - y0)
            scale = min(scale, 0.95 * width / (x1 - x0))
            crop_w, crop_h = max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale))
            spot = self._place(crop_w, crop_h, placed, rng)
            if spot is None:
                continue
            px, py = spot
            canvas[py:py + crop_h, px:px + crop_w] = cv2.resize(image[y0:y1, x0:x1], (crop_w, crop_h),
                                                                interpolation=cv2.INTER_LINEAR)
            # Earlier people's keypoints under the new crop are hidden by it: no longer labelled.
            for earlier in keypoints:
                earlier[_inside_pixels(earlier, px, py, px + crop_w, py + crop_h)] = 0.0
            moved = person_keypoints.copy()
            # A joint outside the crop (the box was clipped to the image) would land on the background.
            moved[~_inside_pixels(moved, x0, y0, x1, y1)] = 0.0
            labelled = moved[:, 2] > 0
            moved[labelled, 0] = (moved[labelled, 0] - x0) * scale + px
            moved[labelled, 1] = (moved[labelled, 1] - y0) * scale + py
            keypoints.append(moved)
            boxes.append(np.array([(box[0] - x0) * scale + px, (box[1] - y0) * scale + py,
                                   (box[2] - x0) * scale + px, (box[3] - y0) * scale + py], np.float32))
            placed.append((px, py, crop_w, crop_h))
        return PoseSample(
            image=canvas, keypoints=np.array(keypoints, np.float32).reshape(-1, NUM_KEYPOINTS, 3),
            boxes=np.array(boxes, np.float32).reshape(-1, 4), ignore=None,
            centre=((width - 1) / 2, (height - 1) / 2), size=float(min(height, width)))

    def _place(self, crop_w: int, crop_h: int, placed: list[tuple[int, int, int, int]],
               rng: np.random.Generator) -> tuple[int, int] | None:
        for _ in range(self.config.placement_tries):
            px = int(rng.integers(max(self.canvas_width - crop_w, 0) + 1))
            py = int(rng.integers(max(self.canvas_height - crop_h, 0) + 1))
            if all(_overlap_fraction((px, py, crop_w, crop_h), other) <= self.config.max_overlap
                   for other in placed):
                return px, py
        return None


def _inside_pixels(points: np.ndarray, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    """Which points fall on pixel columns x0..x1-1 and rows y0..y1-1 (pixel i spans i - 0.5 to i + 0.5)."""
    return ((points[:, 0] >= x0 - 0.5) & (points[:, 0] < x1 - 0.5)
            & (points[:, 1] >= y0 - 0.5) & (points[:, 1] < y1 - 0.5))


def _overlap_fraction(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """Intersection over the smaller of two (x, y, w, h) rectangles."""
    w = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    h = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    return w * h / min(a[2] * a[3], b[2] * b[3])


# ----------------------------------------------------------------------------------------------
# Torch side


@dataclass(frozen=True)
class SampleConfig:
    input_height: int = 256
    input_width: int = 256
    targets: TargetConfig = TargetConfig()
    augment: AugmentConfig = AugmentConfig()


def make_training_sample(sample: PoseSample, rng: np.random.Generator | None, config: SampleConfig):
    """Augment one sample and build (image 3 x H x W normalised, heatmaps, pafs, mask) as numpy arrays."""
    warped = augment(sample, config.input_height, config.input_width, rng, config.augment)
    targets = make_targets(warped.keypoints, warped.boxes, warped.ignore, config.input_height,
                           config.input_width, config.targets)
    return normalise(warped.image), targets.heatmaps, targets.pafs, targets.mask


class PoseTrainingSet(torch.utils.data.Dataset):
    """Key (source index, seed) -> tensors (image, heatmaps, pafs, mask); the seed drives every random
    choice, so a key always gives the same sample whichever worker makes it."""

    def __init__(self, sources: list, config: SampleConfig):
        self.sources = list(sources)
        self.config = config

    def __getitem__(self, key: tuple[int, int]):
        source_index, seed = key
        rng = np.random.default_rng(seed)
        sample = self.sources[source_index].draw(rng)
        return tuple(torch.from_numpy(a) for a in make_training_sample(sample, rng, self.config))


class MixtureSampler(ResumableSampler):
    """Per epoch, ``samples`` keys (source index, seed): the source drawn with the given weights, the seed
    fresh; both depend only on (seed, epoch), so a resumed run sees the same stream."""

    def __init__(self, weights: list[float], samples: int, seed: int):
        total = float(sum(weights))
        if total <= 0 or any(w < 0 for w in weights):
            raise ValueError(f"source weights must be non-negative with a positive sum, got {weights}")
        super().__init__(samples, seed)
        self.probabilities = np.asarray(weights, np.float64) / total

    def epoch_keys(self) -> list[tuple[int, int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        sources = rng.choice(len(self.probabilities), size=self.samples, p=self.probabilities)
        seeds = rng.integers(0, 2 ** 63 - 1, size=self.samples)
        return [(int(source), int(seed)) for source, seed in zip(sources, seeds)]
