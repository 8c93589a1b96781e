"""COCO keypoint AP/AR of an estimator (common.Estimator) with pycocotools, and its text table.

Choices that change the numbers (also stated in the table and the result dict):

* COCO results: every returned Person becomes one result; its keypoints are written as x, y, v with
  v = the keypoint's confidence (0 for a missing keypoint, which stays at 0, 0). pycocotools ignores v
  when it scores OKS, so a missing keypoint is scored where it is, at the origin, i.e. as a miss.
  A result's bbox/area (used only to drop unmatched detections outside an area range, for AP_M/AP_L)
  spans the *found* keypoints; pycocotools' own loadRes would also stretch it to the origin.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from posestream.pipeline.core.errors import PosestreamError
from posestream.pipeline.core.types import Person
from posestream.pipeline.evaluation.common import Estimator, check_batching, format_table, run_estimator

PERSON_CATEGORY_ID = 1

# pycocotools' keypoint stats, in the order COCOeval.summarize() fills ``stats``.
COCO_STAT_NAMES = ("AP", "AP50", "AP75", "AP_M", "AP_L", "AR", "AR50", "AR75", "AR_M", "AR_L")


@dataclass(frozen=True)
class CocoEvalConfig:
    batch_size: int = 1
    max_images: int | None = None  # the first N person images, by image id; None = all
    show_progress: bool = True
    print_summary: bool = False  # let pycocotools print its usual 10-line summary

    def __post_init__(self) -> None:
        check_batching("CocoEvalConfig", self.batch_size, self.max_images)


def _load_coco_ground_truth(annotation_file: Path) -> COCO:
    if not annotation_file.is_file():
        raise PosestreamError(str(annotation_file), "annotation file not found")
    try:
        with annotation_file.open("r", encoding="utf-8") as handle:
            dataset = json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise PosestreamError(str(annotation_file), f"is not JSON ({error})") from None
    if not isinstance(dataset, dict) or not all(
        isinstance(dataset.get(key), list) for key in ("images", "annotations", "categories")
    ):
        raise PosestreamError(str(annotation_file), "is not a COCO annotation file (needs images, annotations, categories lists)")
    keypoint_annotations = [
        a for a in dataset["annotations"]
        if a.get("category_id") == PERSON_CATEGORY_ID and "keypoints" in a and a.get("num_keypoints", 0) > 0
    ]
    if not keypoint_annotations:
        raise PosestreamError(str(annotation_file), "has no person keypoint annotations (category 1 with keypoints)")
    ground_truth = COCO()
    ground_truth.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):  # createIndex prints progress lines
        ground_truth.createIndex()
    return ground_truth


def person_to_coco_result(person: Person, image_id: int) -> dict:
    """One COCO keypoint result: x, y, v per keypoint with v = confidence (0 where missing)."""
    keypoints = np.asarray(person.keypoints, dtype=np.float64)
    return {
        "image_id": int(image_id),
        "category_id": PERSON_CATEGORY_ID,
        "keypoints": [float(v) for v in keypoints.reshape(-1)],
        "score": float(person.score),
    }


def _detections_as_coco(ground_truth: COCO, results: list[dict]) -> COCO:
    """A results COCO object built directly, not with loadRes: loadRes fails on an empty list, and its
    bbox would stretch to the origin for keypoints that were not found."""
    annotations = []
    for number, result in enumerate(results, start=1):
        keypoints = np.asarray(result["keypoints"], dtype=np.float64).reshape(-1, 3)
        found = keypoints[keypoints[:, 2] > 0, :2]
        if len(found):
            x0, y0 = found.min(axis=0)
            x1, y1 = found.max(axis=0)
        else:
            x0 = y0 = x1 = y1 = 0.0
        annotations.append({
            **result, "id": number, "iscrowd": 0,
            "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
            "area": float((x1 - x0) * (y1 - y0)),
        })
    detections = COCO()
    detections.dataset = {
        "images": list(ground_truth.dataset["images"]),
        "categories": copy.deepcopy(ground_truth.dataset["categories"]),
        "annotations": annotations,
    }
    with contextlib.redirect_stdout(io.StringIO()):
        detections.createIndex()
    return detections


def evaluate_coco(images_dir: Path, annotation_file: Path, estimate: Estimator, config: CocoEvalConfig = CocoEvalConfig()) -> dict:
    """COCO keypoint AP/AR of ``estimate`` over the json's person images (``getImgIds(catIds=[1])``).

    Images in the json with no person annotation are not run and not scored (COCO's convention for
    person keypoints). ``seconds_per_image`` counts only the time inside ``estimate``.
    """
    images_dir, annotation_file = Path(images_dir), Path(annotation_file)
    ground_truth = _load_coco_ground_truth(annotation_file)
    image_ids = sorted(ground_truth.getImgIds(catIds=[PERSON_CATEGORY_ID]))
    if config.max_images is not None:
        image_ids = image_ids[:config.max_images]
    image_paths = []
    for image in ground_truth.loadImgs(image_ids):
        path = images_dir / image["file_name"]
        if not path.is_file():
            raise PosestreamError(str(path), f"image listed in {annotation_file} is missing")
        image_paths.append(path)

    people_per_image, estimate_seconds = run_estimator(
        image_paths, estimate, config.batch_size, config.show_progress, "COCO eval"
    )
    results = [
        person_to_coco_result(person, image_id)
        for image_id, people in zip(image_ids, people_per_image)
        for person in people
    ]

    evaluator = COCOeval(ground_truth, _detections_as_coco(ground_truth, results), "keypoints")
    evaluator.params.imgIds = image_ids
    summary = io.StringIO()
    with contextlib.redirect_stdout(summary):
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    if config.print_summary:
        print(summary.getvalue(), end="")

    gt_people = [
        a for a in ground_truth.loadAnns(ground_truth.getAnnIds(imgIds=image_ids, catIds=[PERSON_CATEGORY_ID]))
        if not a.get("iscrowd", 0) and a.get("num_keypoints", 0) > 0
    ]
    # stats are -1 where pycocotools found nothing to score (e.g. no medium people); keep that value.
    metrics: dict = {name: float(value) for name, value in zip(COCO_STAT_NAMES, evaluator.stats)}
    metrics.update({
        "images": len(image_ids),
        "people_gt": len(gt_people),
        "people_detected": len(results),
        "seconds_per_image": estimate_seconds / max(len(image_ids), 1),
    })
    return metrics


def _iter_rows(names: Sequence[str], values: dict) -> Iterator[tuple[str, object]]:
    for name in names:
        yield name, values.get(name)


def format_coco_table(metrics: dict) -> str:
    """AP/AR rows (-1 = nothing to score in that area range) and a footer with counts and speed."""
    table = format_table(list(_iter_rows(COCO_STAT_NAMES, metrics)), header=("metric", "value"))
    footer = (
        f"images {metrics['images']}, people annotated {metrics['people_gt']}, detected "
        f"{metrics['people_detected']}, {metrics['seconds_per_image'] * 1000:.1f} ms/image in estimate"
    )
    return f"{table}\n{footer}"
