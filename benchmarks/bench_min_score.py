"""Where to set ``--min-score``: COCO AP and people per frame against the least person score kept.

The network runs once per image (min_score 0); each threshold then filters the same people, so the rows
differ only by the threshold. Columns: AP on the mmpose COCO val images and on coco-mini-train, and the
mean people per frame on street.mp4 (5 frames of a busy street) and on the first 100 frames of vtest.avi
(6-8 walkers), where people past the walkers are fragments or background. A table and JSON
(benchmarks/results/min-score.json) out.

    python -m benchmarks.bench_min_score [--model lwo-mobilenet] [--thresholds 0 0.05 0.1 0.2 0.3 0.5]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2

from posestream.pipeline.core.paths import shared_dir
from posestream.pipeline.estimators.create import EstimatorSettings, create_estimator
from posestream.pipeline.evaluation.coco import CocoEvalConfig, evaluate_coco

REPO = Path(__file__).resolve().parents[1]


class Recorded:
    """An estimator that runs once per image and afterwards answers from memory, filtered by a threshold."""

    def __init__(self, estimator):
        self.estimator = estimator
        self.people: list[list] = []
        self.threshold = 0.0
        self.position = 0

    def __call__(self, images):
        if self.position == len(self.people):
            self.people.extend(self.estimator(images))
        found = self.people[self.position:self.position + len(images)]
        self.position += len(images)
        return [[p for p in people if p.score >= self.threshold] for people in found]

    def replay(self, threshold: float) -> None:
        self.threshold, self.position = threshold, 0


def video_frames(path: Path, count: int) -> list:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while len(frames) < count:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out-json", default=str(REPO / "benchmarks/results/min-score.json"))
    args = parser.parse_args(argv)
    shared = shared_dir()
    estimator = create_estimator(EstimatorSettings(model=args.model, threads=args.threads, min_score=0.0))
    coco_sets = {"mmpose": ("data/mmpose/coco", "data/mmpose/coco/test_coco.json"),
                 "coco_mini_train": ("data/coco-mini-train/images",
                                     "data/coco-mini-train/person_keypoints_train2017.json")}
    recorded = {name: Recorded(estimator) for name in coco_sets}
    videos = {"street": (shared / "data/video/street.mp4", 5), "vtest": (shared / "data/video/vtest.avi", 100)}
    video_people = {name: estimator(video_frames(path, count)) for name, (path, count) in videos.items()}
    rows = []
    for threshold in args.thresholds:
        row = {"min_score": threshold}
        for name, (images, annotation_file) in coco_sets.items():
            recorded[name].replay(threshold)
            row[f"{name}_ap"] = evaluate_coco(shared / images, shared / annotation_file, recorded[name],
                                              CocoEvalConfig(show_progress=False))["AP"]
        for name, frames in video_people.items():
            row[f"{name}_people_per_frame"] = sum(sum(p.score >= threshold for p in people)
                                                  for people in frames) / len(frames)
        rows.append(row)
    print(f"{'min_score':>9} {'AP mmpose':>10} {'AP mini':>8} {'street ppl/frame':>17} {'vtest ppl/frame':>16}")
    for r in rows:
        print(f"{r['min_score']:>9.2f} {r['mmpose_ap']:>10.3f} {r['coco_mini_train_ap']:>8.3f} "
              f"{r['street_people_per_frame']:>17.1f} {r['vtest_people_per_frame']:>16.1f}")
    out = Path(args.out_json)
    out.write_text(json.dumps({"model": estimator.spec.name, "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
