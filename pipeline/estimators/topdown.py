"""Top-down pose estimation: person detector -> crops -> heatmap+PAF network on the crops -> people.

Per image: the detector's boxes (or, with ``detect_every`` K > 1 on a video stream, on the frames between
detections, boxes around the people found on the stream's previous frame) are grown by ``expand_scale`` to the
crop's aspect and resampled into fixed-size crops (kernels/crop.py); the crops of every image in the call go
through the network together. Each crop is parsed bottom-up (kernels.parse_maps) first: a crop where that finds
two or more confident people (people overlapping in the crop) keeps them all; otherwise one person is decoded
from the crop's maps by per-joint argmax with sub-pixel refinement (kernels/topdown.py). Keypoints go back to
image pixels through each crop's inverse affine, and a person found in several crops is merged by OKS-NMS
(kernels/boxes.py). The result is what BottomUpEstimator gives: COCO-17 ``Person``s in image pixels.

Streams: called with ``streams`` (one key per image, as the runtime does for estimators that set
``wants_stream_keys``) it keeps per-stream state, created at a stream's first frame and dropped by
``end_stream``; called without, or with the key None (an unrelated picture), every image is detected on its
own (evaluation, image folders).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Hashable, Sequence

import numpy as np

from posestream import kernels
from posestream.kernels import ParseConfig
from posestream.kernels.boxes import oks_nms
from posestream.kernels.crop import apply_affines, crop_affines, crop_normalise_cpu, expand_boxes
from posestream.kernels.topdown import decode_single
from posestream.pipeline.core.errors import PosestreamError
from posestream.pipeline.core.model import ModelSpec
from posestream.pipeline.core.skeleton import COCO17_SIGMAS, coco17_index_map
from posestream.pipeline.core.types import Person, boxes_around_keypoints
from posestream.pipeline.estimators.bottomup import parse_buffers_for, skeleton_tables
from posestream.pipeline.estimators.detector import (
    WHOLE_IMAGE,
    DetectorConfig,
    PersonDetector,
    WholeImageDetector,
    create_detector,
)
from posestream.pipeline.inference.backends import Backend

JOINTS = len(COCO17_SIGMAS)


@dataclass(frozen=True)
class TopDownConfig:
    detector: DetectorConfig = DetectorConfig()
    crop_height: int = 256  # network input per person; a multiple of the model's stride
    crop_width: int = 192
    expand_scale: float = 1.25  # boxes grow by this (then to the crop's aspect) before cropping
    detect_every: int = 1  # on a stream, run the detector every K-th frame; between, carry the people's boxes
    carry_scale: float = 1.2  # a carried keypoint box grows by this to stand in for a detector box
    carry_min_score: float = 0.1  # people below this score are not carried to the next frame
    oks_threshold: float = 0.8  # a person overlapping a better one by more OKS than this is a duplicate
    multi_person_score: float = 0.2  # a crop's bottom-up parse counts people of at least this score
    keypoint_threshold: float = 0.05  # single-person joints below this heatmap value are not found
    max_crops_per_image: int = 32  # the best-scoring boxes; the rest are counted in stats.boxes_dropped
    crop_batch: int = 8  # most crops per network call; calls take power-of-two counts so few shapes compile
    parse: ParseConfig = field(default_factory=lambda: ParseConfig(max_peaks=16, max_people=16))
    min_score: float = 0.0  # people scoring below this are dropped from every output

    def __post_init__(self) -> None:
        for name in ("crop_height", "crop_width", "detect_every", "max_crops_per_image", "crop_batch"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise PosestreamError(name.replace("_", "-"), f"must be a positive integer, got {value!r}")
        for name in ("expand_scale", "carry_scale"):
            if not getattr(self, name) > 0:
                raise PosestreamError(name.replace("_", "-"), f"must be > 0, got {getattr(self, name)!r}")
        if not 0 < self.oks_threshold <= 1:
            raise PosestreamError("oks-threshold", f"must be in (0, 1], got {self.oks_threshold!r}")
        if self.parse.upsample != 1:
            raise PosestreamError("upsample", "top-down mode parses crops at the model's stride (upsample 1)")


@dataclass
class TopDownStats:
    frames: int = 0
    detector_frames: int = 0  # frames the detector ran on (the others carried boxes)
    crops: int = 0
    boxes_dropped: int = 0  # boxes beyond max_crops_per_image
    people_dropped: int = 0  # people beyond a crop's parse capacity
    duplicates_merged: int = 0  # people removed by OKS-NMS
    detect_seconds: float = 0.0
    crop_seconds: float = 0.0
    inference_seconds: float = 0.0
    parse_seconds: float = 0.0  # parse, single-person decode, back to the image, OKS-NMS


@dataclass
class _StreamState:
    frames: int = 0  # frames of this stream seen so far
    carried: np.ndarray = field(default_factory=lambda: np.zeros((0, 5), np.float32))  # x0 y0 x1 y1 score


@dataclass(frozen=True)
class _Found:
    """People of one image before OKS-NMS: keypoints (P, 17, 3) in image pixels, scores (P,)."""

    keypoints: np.ndarray
    scores: np.ndarray


def power_of_two_chunks(count: int, largest: int) -> list[int]:
    """Split ``count`` into chunk sizes that are powers of two, at most ``largest`` (rounded down to a power of
    two), biggest first: 13 with 8 -> [8, 4, 1]. Few distinct sizes keep shape-compiling backends warm."""
    cap = 1 << (max(1, largest).bit_length() - 1)
    chunks = []
    while count > 0:
        size = min(cap, 1 << (count.bit_length() - 1))
        chunks.append(size)
        count -= size
    return chunks


class TopDownEstimator:
    """Callable: a list of BGR images (and optionally one stream key per image) -> one list of Person per image."""

    wants_stream_keys = True  # the runtime passes ``streams=`` and calls ``end_stream``

    def __init__(self, spec: ModelSpec, backend: Backend, config: TopDownConfig,
                 detector: PersonDetector | WholeImageDetector | None = None):
        self.spec = spec
        self.backend = backend
        self.config = config
        self.detector = detector or create_detector(config.detector)
        detector_files = () if config.detector.path == WHOLE_IMAGE else ((str(config.detector.resolved_path),
                                                                          "the person detector"),)
        self.input_files = spec.input_files() + detector_files  # (path, role) the runtime keeps outputs off
        self.stats = TopDownStats()
        if backend.resizable and spec.input.resizable:
            height, width = config.crop_height, config.crop_width
            if height % spec.stride or width % spec.stride:
                raise PosestreamError(f"crop size {height}x{width}",
                                      f"must be a multiple of the model's stride {spec.stride}")
        else:  # a fixed-size network takes crops of its own size
            height, width = spec.input.height, spec.input.width
        self.crop_height, self.crop_width = height, width
        self._tables = skeleton_tables(spec)
        index_map = np.asarray(coco17_index_map(spec.keypoints), np.int64)
        self._coco_known = index_map >= 0  # 17: COCO joints the model has
        self._coco_from_model = np.where(self._coco_known, index_map, 0)
        self._sigmas = np.asarray(COCO17_SIGMAS, np.float32)
        self._streams: dict[Hashable, _StreamState] = {}
        self._buffers: kernels.ParseBuffers | None = None
        self._crops = np.empty((0, 3, height, width), np.float32)
        self._warm_up()

    # ------------------------------------------------------------------------------------------ setup

    def _warm_up(self) -> None:
        """Load (or compile) the Numba kernels now, so the first frame's latency and timings are real."""
        map_h, map_w = self.crop_height // self.spec.stride, self.crop_width // self.spec.stride
        heatmaps = np.zeros((1, self.spec.heatmap_channels, map_h, map_w), np.float32)
        pafs = np.zeros((1, self.spec.paf_channel_count, map_h, map_w), np.float32)
        to_image = crop_affines(np.array([[10.0, 10.0, 8.0, 8.0]]), self.crop_height, self.crop_width)[1]
        self._decode(heatmaps, pafs, to_image, [(0, 1)], [(8, 8)])
        self.stats = TopDownStats()

    def _buffers_for(self, crops: int) -> kernels.ParseBuffers:
        self._buffers = parse_buffers_for(self._buffers, crops, self.spec, self.config.parse)
        return self._buffers

    def end_stream(self, stream: Hashable) -> None:
        """Forget a stream's state (its carried boxes); the runtime calls this after the stream's last frame."""
        self._streams.pop(stream, None)

    # ------------------------------------------------------------------------------------------ the call

    def __call__(self, images: list[np.ndarray], streams: Sequence[Hashable] | None = None) -> list[list[Person]]:
        if streams is not None and len(streams) != len(images):
            raise ValueError(f"{len(streams)} stream keys for {len(images)} images")
        results: list[list[Person]] = [[] for _ in images]
        for wave in self._waves(streams, len(images)):
            people = self._estimate_wave([images[i] for i in wave],
                                         None if streams is None else [streams[i] for i in wave])
            for i, found in zip(wave, people):
                results[i] = found
        return results

    def _waves(self, streams: Sequence[Hashable] | None, count: int) -> list[list[int]]:
        """Image indices in groups that can run together. A frame that takes its boxes from its stream's
        previous frame must wait for that frame's people, so it starts a new group when its stream already has
        a frame in the current one (a batch can hold several frames of one stream)."""
        if streams is None or self.config.detect_every == 1:
            return [list(range(count))]
        waves: list[list[int]] = [[]]
        in_wave: set[Hashable] = set()
        seen: dict[Hashable, int] = {}
        for i, key in enumerate(streams):
            if key is None:  # an unrelated picture: always detected, never waits
                waves[-1].append(i)
                continue
            state = self._streams.get(key)
            position = seen.get(key, 0) + (state.frames if state is not None else 0)
            seen[key] = seen.get(key, 0) + 1
            detects = position % self.config.detect_every == 0
            if key in in_wave and not detects:
                waves.append([])
                in_wave = set()
            waves[-1].append(i)
            in_wave.add(key)
        return waves

    def _estimate_wave(self, images: list[np.ndarray], streams: list[Hashable] | None) -> list[list[Person]]:
        boxes: list[np.ndarray | None] = [None] * len(images)
        states: list[_StreamState | None] = [None] * len(images)
        if streams is not None:
            for i, key in enumerate(streams):
                if key is None:
                    continue
                state = self._streams.setdefault(key, _StreamState())
                states[i] = state
                # Carry only between detections, and only while there is something to carry.
                if state.frames % self.config.detect_every != 0 and len(state.carried):
                    boxes[i] = state.carried
                state.frames += 1
        started = time.perf_counter()
        to_detect = [i for i, b in enumerate(boxes) if b is None]
        for i, found in zip(to_detect, self.detector([images[i] for i in to_detect])):
            boxes[i] = found
        self.stats.detector_frames += len(to_detect)
        self.stats.detect_seconds += time.perf_counter() - started

        people = self._pose_on_boxes(images, boxes)  # type: ignore[arg-type]
        for state, found in zip(states, people):
            if state is not None:
                state.carried = self._carried_boxes(found)
        self.stats.frames += len(images)
        return people

    # ------------------------------------------------------------------------------------------ stages

    def _pose_on_boxes(self, images: list[np.ndarray], boxes: list[np.ndarray]) -> list[list[Person]]:
        config = self.config
        started = time.perf_counter()
        spans, sizes, affines = [], [], []
        total = 0
        for image, image_boxes in zip(images, boxes):
            kept = image_boxes[:config.max_crops_per_image]  # best first, from the detector or the last frame
            self.stats.boxes_dropped += len(image_boxes) - len(kept)
            spans.append((total, total + len(kept)))
            sizes.append(image.shape[:2])
            total += len(kept)
            if len(kept):
                centre_boxes = np.stack([(kept[:, 0] + kept[:, 2]) / 2, (kept[:, 1] + kept[:, 3]) / 2,
                                         kept[:, 2] - kept[:, 0], kept[:, 3] - kept[:, 1]], axis=1)
                expanded = expand_boxes(centre_boxes, self.crop_height, self.crop_width, config.expand_scale)
                affines.append(crop_affines(expanded, self.crop_height, self.crop_width)[1])
            else:
                affines.append(np.zeros((0, 2, 3)))
        if total == 0:
            return [[] for _ in images]
        if len(self._crops) < total:
            self._crops = np.empty((total, 3, self.crop_height, self.crop_width), np.float32)
        crops = self._crops[:total]
        spec = self.spec.input
        for image, (start, end), to_image in zip(images, spans, affines):
            if end > start:
                crop_normalise_cpu(image, to_image, crops[start:end], spec.mean, spec.scale,
                                   swap_rb=spec.color_order == "RGB", pad_value=spec.pad_value)
        to_image_all = np.concatenate(affines)
        inferred = time.perf_counter()
        self.stats.crop_seconds += inferred - started

        heatmap_parts, paf_parts = [], []
        position = 0
        for size in power_of_two_chunks(total, config.crop_batch):
            heatmaps, pafs = self.backend.infer(crops[position:position + size])
            heatmap_parts.append(heatmaps)
            paf_parts.append(pafs)
            position += size
        heatmaps = heatmap_parts[0] if len(heatmap_parts) == 1 else np.concatenate(heatmap_parts)
        pafs = paf_parts[0] if len(paf_parts) == 1 else np.concatenate(paf_parts)
        parsed = time.perf_counter()
        self.stats.inference_seconds += parsed - inferred
        self.stats.crops += total

        found = self._decode(heatmaps, pafs, to_image_all, spans, sizes)
        people = [self._merge(f) for f in found]
        self.stats.parse_seconds += time.perf_counter() - parsed
        return people

    def _decode(self, heatmaps: np.ndarray, pafs: np.ndarray, to_image: np.ndarray,
                spans: list[tuple[int, int]], sizes: list[tuple[int, int]]) -> list[_Found]:
        """Maps of every crop -> the people of each image (before merging), keypoints in image pixels."""
        heatmaps = np.ascontiguousarray(heatmaps, dtype=np.float32)
        pafs = np.ascontiguousarray(pafs, dtype=np.float32)
        crops = heatmaps.shape[0]
        buffers = self._buffers_for(crops)
        kernels.parse_maps(heatmaps, pafs, self._tables, self.config.parse, buffers)
        self.stats.people_dropped += int(buffers.people_dropped[:crops].sum())
        single_xy = np.empty((crops, self.spec.num_keypoints, 2), np.float32)
        single_conf = np.empty((crops, self.spec.num_keypoints), np.float32)
        decode_single(heatmaps, single_xy, single_conf)

        crop_keypoints: list[np.ndarray] = []  # per crop: (p, 17, 3) in map pixels
        crop_scores: list[np.ndarray] = []
        for b in range(crops):
            keypoints, scores = self._parsed_people(buffers, b)
            if len(scores) < 2:
                keypoints, scores = self._single_person(single_xy[b], single_conf[b])
            crop_keypoints.append(keypoints)
            crop_scores.append(scores)

        stride = float(self.spec.stride)
        found = []
        for (start, end), (height, width) in zip(spans, sizes):
            if end == start:
                found.append(_Found(np.zeros((0, JOINTS, 3), np.float32), np.zeros(0, np.float32)))
                continue
            counts = [len(crop_scores[b]) for b in range(start, end)]
            keypoints = np.concatenate(crop_keypoints[start:end])
            scores = np.concatenate(crop_scores[start:end])
            # Map pixel centres sit at (i + 0.5) * stride - 0.5 in crop pixels; each crop has its own affine.
            crop_xy = (keypoints[..., :2] + 0.5) * stride - 0.5
            affines = np.repeat(to_image[start:end], counts, axis=0)
            apply_affines(crop_xy, affines, keypoints[..., :2])
            np.clip(keypoints[..., 0], 0.0, width - 1.0, out=keypoints[..., 0])
            np.clip(keypoints[..., 1], 0.0, height - 1.0, out=keypoints[..., 1])
            keypoints[..., :2] *= (keypoints[..., 2:3] > 0)  # a joint not found stays at 0, 0
            found.append(_Found(keypoints, scores))
        return found

    def _parsed_people(self, buffers: kernels.ParseBuffers, crop: int) -> tuple[np.ndarray, np.ndarray]:
        """The confident people of a crop's bottom-up parse: (p, 17, 3) in map pixels, scores."""
        count = int(buffers.person_counts[crop])
        confident = np.flatnonzero(buffers.person_scores[crop, :count] >= self.config.multi_person_score)
        keypoints = np.zeros((len(confident), JOINTS, 3), np.float32)
        if not len(confident):
            return keypoints, np.zeros(0, np.float32)
        peaks = buffers.person_parts[crop, confident][:, self._coco_from_model]  # p x 17, -1 when missing
        found = self._coco_known[None, :] & (peaks >= 0)
        safe_peaks = np.where(found, peaks, 0)
        joint_index = self._coco_from_model[None, :]
        keypoints[..., :2] = np.where(found[..., None], buffers.refined[crop, joint_index, safe_peaks], 0.0)
        keypoints[..., 2] = np.where(found, np.minimum(buffers.peak_scores[crop, joint_index, safe_peaks], 1.0), 0.0)
        return keypoints, buffers.person_scores[crop, confident].astype(np.float32)

    def _single_person(self, xy: np.ndarray, confidence: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One person from per-joint maxima: (1, 17, 3) in map pixels, and its score = mean joint confidence
        over the 17 joints (a joint not found counts 0)."""
        keypoints = np.zeros((1, JOINTS, 3), np.float32)
        conf = np.where(self._coco_known, np.minimum(confidence[self._coco_from_model], 1.0), 0.0)
        found = conf >= self.config.keypoint_threshold
        keypoints[0, :, :2] = np.where(found[:, None], xy[self._coco_from_model], 0.0)
        keypoints[0, :, 2] = np.where(found, conf, 0.0)
        if not found.any():
            return keypoints[:0], np.zeros(0, np.float32)
        return keypoints, np.array([keypoints[0, :, 2].sum() / JOINTS], np.float32)

    def _merge(self, found: _Found) -> list[Person]:
        """OKS-NMS over one image's people, best first."""
        count = len(found.scores)
        if count == 0:
            return []
        boxes = boxes_around_keypoints(found.keypoints, fallback=np.zeros((count, 4)))
        areas = np.maximum(boxes[:, 2] * boxes[:, 3], 1.0).astype(np.float32)
        keep = np.empty(count, np.int64)
        kept = keep[:oks_nms(found.keypoints, found.scores, areas, self._sigmas, self.config.oks_threshold, keep)]
        self.stats.duplicates_merged += count - len(kept)
        return [Person(score=float(found.scores[p]), keypoints=found.keypoints[p],
                       bbox=tuple(float(v) for v in boxes[p])) for p in kept
                if found.scores[p] >= self.config.min_score]

    def _carried_boxes(self, people: list[Person]) -> np.ndarray:
        """Boxes for the stream's next frame: each confident person's keypoint box, widened to a body's width
        (half its height, as the tracker widens its boxes) and grown by carry_scale, scored by the person. People
        shorter than the detector's ``min_box_height`` are not carried."""
        config = self.config
        rows = []
        for person in people:
            if person.score < config.carry_min_score or int((person.keypoints[:, 2] > 0).sum()) < 3:
                continue
            x, y, w, h = person.bbox
            if h < config.detector.min_box_height:  # as the detector: too small to crop a pose from
                continue
            height = h * config.carry_scale
            width = max(w, 0.5 * h) * config.carry_scale
            cx, cy = x + w / 2, y + h / 2
            rows.append((cx - width / 2, cy - height / 2, cx + width / 2, cy + height / 2, person.score))
        return np.asarray(rows, np.float32).reshape(-1, 5)
