"""Per-stream multi-person tracking: stable track IDs and One Euro smoothing of keypoints.

One ``PoseTracker`` per stream, fed that stream's frames in order. It owns everything it needs, its ID
counter included (IDs start at 1 in every stream), so streams never influence each other and there is no
module-level mutable state. The math lives in ``posestream.kernels.tracking`` as Numba functions over arrays;
this module keeps the track table (one row per slot, struct-of-arrays) and the lifecycle.

Per frame (ByteTrack's scheme, with a pose-aware cost):
  1. Kalman predict every track. State (cx, cy, w, h, vcx, vcy, vw, vh): the centre and size of the
     person's box and their velocities in pixels per frame (BoT-SORT's xywh filter; noise scales with
     the box). The box is the one around the keypoints, completed and widened (below).
  2. Stage 1: people with score >= high_score against confirmed and lost tracks.
  3. Stage 2: people with low_score <= score < high_score against the confirmed tracks still unmatched
     (occluded people score low; this keeps their tracks alive without letting clutter start tracks).
  4. Stage 3: the stage-1 people left against tentative tracks.
  Each stage is a Hungarian assignment (scipy linear_sum_assignment) on 1 - similarity, where
  similarity = iou_weight * IoU + (1 - iou_weight) * OKS (COCO sigmas, s^2 from the box areas); pairs
  under the stage's min similarity are never matched, and a lost track pays ``lost_track_penalty`` so
  an ambiguous person goes to the track seen last frame.
  Boxes: a person seen in part (legs hidden, arms out of the picture) is completed with the track's
  remembered joints before IoU and before the Kalman update, so losing limbs does not read as motion;
  every box is widened to ``min_box_aspect`` * height, since a side-on walker's keypoint box can be a
  few pixels wide.
  5. Lifecycle: a new track is tentative; it is confirmed after ``min_hits`` consecutive matched frames
     and only then gets an ID; a tentative track dies at its first miss. A confirmed track that misses
     becomes lost, keeps its ID, keeps moving with its Kalman prediction, and is removed after
     ``track_buffer`` missed frames in a row; re-found before that, it carries on under the same ID.
  6. Unmatched stage-1 people with score >= new_track_score start tentative tracks.
  7. Keypoint smoothing: a One Euro filter per track, joint and axis, stepped with the frame's timestamp
     (see ``tracking_math.one_euro_update`` for the confidence rule).

Output rule: every person given to ``update`` comes back, in the same order, none dropped. A person on a
confirmed track carries its ID; a person on a tentative track or on no track has ``track_id`` None. IDs are
handed out at confirmation, so one-frame false positives use up no IDs and the IDs of a stream are dense.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from posestream.kernels import tracking as tracking_math
from posestream.pipeline.core.skeleton import COCO17_NAMES, COCO17_SIGMAS
from posestream.pipeline.core.types import Person, boxes_around_keypoints

FREE, TENTATIVE, CONFIRMED, LOST = 0, 1, 2, 3
STATE_NAMES = ("free", "tentative", "confirmed", "lost")  # indexed by state
JOINTS = len(COCO17_NAMES)
# Kalman noise as fractions of the box size (ByteTrack / BoT-SORT values).
STD_POSITION = 1.0 / 20.0
STD_VELOCITY = 1.0 / 160.0
_UNMATCHABLE = 1e6  # cost of a pair under the gate: assigned only when forced, then dropped


@dataclass(frozen=True)
class OneEuroConfig:
    """One Euro filter (Casiez et al. 2012) on each joint's x and y; units are pixels and seconds."""

    # Defaults measured on a 2 px-noise point: variance / 9 at 30 frames/s (/ 4.6 at 10), and on a 300 px/s
    # ramp a steady lag of 2.7 px (a One Euro filter's lag at speed tends to 1 / (2 pi beta) px).
    min_cutoff: float = 0.3  # Hz, cutoff at rest: lower is smoother when still, but lags more
    beta: float = 0.05  # Hz per (px/s): how fast the cutoff rises with speed; higher lags less when moving
    d_cutoff: float = 0.5  # Hz, cutoff of the speed estimate that drives the adaptive cutoff
    full_confidence: float = 0.3  # joints at or above this confidence update fully, weaker ones in proportion

    def __post_init__(self) -> None:
        for name in ("min_cutoff", "d_cutoff", "full_confidence"):
            if not getattr(self, name) > 0:
                raise ValueError(f"OneEuroConfig.{name} must be > 0, got {getattr(self, name)}")
        if not self.beta >= 0:
            raise ValueError(f"OneEuroConfig.beta must be >= 0, got {self.beta}")


@dataclass(frozen=True)
class TrackerConfig:
    """Everything a ``PoseTracker`` needs to know, built once and shared by all streams' trackers.

    Scores are the person scores of the parse: about 0.25-0.75 for a well-seen pedestrian, 0.05-0.2 for one
    partly hidden or far away, 0.02-0.05 for head-only or one-limb fragments. So tracks start from well-seen
    people, are found again by partly seen ones, and fragments only keep a track alive (stage 2).
    Similarities are in [0, 1]; thresholds are the least similarity a pair needs to be matched in that stage.
    """

    high_score: float = 0.1  # stage 1 (and may find a lost track again)
    low_score: float = 0.02  # stage 2 from here; below it a person is not tracked (still output, track_id None)
    new_track_score: float = 0.2  # an unmatched person starts a track only from this score
    first_stage_min_similarity: float = 0.2
    second_stage_min_similarity: float = 0.4  # stricter: low-score people are often clutter
    tentative_min_similarity: float = 0.3
    iou_weight: float = 0.5  # similarity = iou_weight * IoU + (1 - iou_weight) * OKS
    lost_track_penalty: float = 0.1  # added to a lost track's matching cost: ties go to tracks seen last frame
    keypoint_min_confidence: float = 0.1  # joints used for OKS and for filling in partly seen people
    keypoint_memory: float = 0.8  # per frame, a remembered joint's confidence decays by this while unseen
    min_hits: int = 3  # matched frames in a row before a tentative track is confirmed and gets an ID
    track_buffer: int = 30  # missed frames a lost track is kept for, before it is removed
    min_box_size: float = 2.0  # px; boxes of one or two keypoints are widened to this
    min_box_aspect: float = 0.5  # tracking boxes are at least this wide per unit of height (a body's width)
    smooth: bool = True
    smoothing: OneEuroConfig = OneEuroConfig()

    def __post_init__(self) -> None:
        if not 0 <= self.low_score <= self.high_score:
            raise ValueError(f"need 0 <= low_score <= high_score, got {self.low_score}, {self.high_score}")
        if not 0 <= self.iou_weight <= 1:
            raise ValueError(f"iou_weight must be in [0, 1], got {self.iou_weight}")
        if self.min_hits < 1:
            raise ValueError(f"min_hits must be >= 1, got {self.min_hits}")
        if self.track_buffer < 0:
            raise ValueError(f"track_buffer must be >= 0, got {self.track_buffer}")
        if not 0 <= self.keypoint_memory < 1:
            raise ValueError(f"keypoint_memory must be in [0, 1), got {self.keypoint_memory}")
        if self.min_box_aspect < 0 or self.lost_track_penalty < 0 or self.min_box_size <= 0:
            raise ValueError("min_box_aspect and lost_track_penalty must be >= 0, min_box_size > 0")


@dataclass(frozen=True)
class TrackView:
    """A read-only look at one live track, for tests and debugging."""

    track_id: int | None  # None while tentative
    state: str  # "tentative", "confirmed" or "lost"
    hits: int  # frames matched in a row
    misses: int  # frames missed in a row
    box: tuple[float, float, float, float]  # Kalman (cx, cy, w, h) after this frame's update


def _match(similarity: np.ndarray, min_similarity: float,
           row_penalty: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Hungarian assignment maximising similarity; pairs under ``min_similarity`` are never returned.

    ``row_penalty`` (one per row) is added to the cost of that row's pairs without changing the gate.
    """
    if similarity.size == 0:
        empty = np.empty(0, np.int64)
        return empty, empty
    cost = 1.0 - similarity
    if row_penalty is not None:
        cost += row_penalty[:, None]
    cost[similarity < min_similarity] = _UNMATCHABLE
    rows, cols = linear_sum_assignment(cost)
    keep = similarity[rows, cols] >= min_similarity
    return rows[keep].astype(np.int64), cols[keep].astype(np.int64)


def _without(indices: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """``indices`` minus the entries at ``positions``."""
    if positions.size == 0:
        return indices
    keep = np.ones(indices.size, bool)
    keep[positions] = False
    return indices[keep]


class PoseTracker:
    """Tracks the people of one stream; see the module docstring for the scheme.

    ``fps`` is the stream's frame rate, used for the One Euro time step when frames carry no timestamp.
    """

    def __init__(self, config: TrackerConfig, fps: float | None = None, capacity: int = 16) -> None:
        self.config = config
        self._frame_dt = 1.0 / fps if fps and fps > 0 else 1.0 / 25.0
        self._sigmas = np.asarray(COCO17_SIGMAS, np.float64)
        self._next_id = 1
        self._time: float | None = None
        self._allocate(max(1, capacity))

    # ----------------------------------------------------------------------------------------------------
    # Track table
    # ----------------------------------------------------------------------------------------------------

    def _allocate(self, capacity: int) -> None:
        self._states = np.zeros(capacity, np.int8)
        self._ids = np.zeros(capacity, np.int64)  # 0 until confirmed
        self._hits = np.zeros(capacity, np.int64)
        self._misses = np.zeros(capacity, np.int64)
        self._means = np.zeros((capacity, 8))
        self._covariances = np.zeros((capacity, 8, 8))
        self._keypoints = np.zeros((capacity, JOINTS, 3))  # last observed, raw
        self._observed_boxes = np.zeros((capacity, 4))  # completed (cx, cy, w, h) at the last observation
        self._euro_values = np.zeros((capacity, JOINTS, 2))
        self._euro_rates = np.zeros((capacity, JOINTS, 2))
        self._euro_times = np.zeros((capacity, JOINTS))
        self._euro_ready = np.zeros((capacity, JOINTS), np.bool_)

    _TABLE = ("_states", "_ids", "_hits", "_misses", "_means", "_covariances", "_keypoints",
              "_observed_boxes", "_euro_values", "_euro_rates", "_euro_times", "_euro_ready")

    def _claim_slots(self, count: int) -> np.ndarray:
        free = np.flatnonzero(self._states == FREE)
        if free.size < count:
            old = {name: getattr(self, name) for name in self._TABLE}
            old_capacity = self._states.size
            self._allocate(max(2 * old_capacity, old_capacity + count - free.size))
            for name, array in old.items():
                getattr(self, name)[:old_capacity] = array
            free = np.flatnonzero(self._states == FREE)
        return free[:count].astype(np.int64)

    def _release(self, rows: np.ndarray) -> None:
        self._states[rows] = FREE
        self._ids[rows] = 0
        self._euro_ready[rows] = False

    # ----------------------------------------------------------------------------------------------------
    # Public interface
    # ----------------------------------------------------------------------------------------------------

    @property
    def ids_issued(self) -> int:
        """How many track IDs this tracker has handed out (its IDs are 1 .. ids_issued)."""
        return self._next_id - 1

    def tracks(self) -> list[TrackView]:
        """The live tracks (tentative, confirmed, lost), in slot order."""
        views = []
        for row in np.flatnonzero(self._states != FREE):
            views.append(TrackView(
                track_id=int(self._ids[row]) or None, state=STATE_NAMES[int(self._states[row])],
                hits=int(self._hits[row]), misses=int(self._misses[row]),
                box=tuple(float(v) for v in self._means[row, :4])))
        return views

    def update(self, people: list[Person], timestamp: float | None = None) -> list[Person]:
        """This frame's people with ``track_id`` set (None: not on a confirmed track), in the same order.

        With smoothing on, keypoints are the filtered ones and ``bbox`` is the box around them.
        ``timestamp`` is the frame's time in seconds (pts); None means one nominal frame after the last.
        """
        if not people:
            self.update_arrays(np.zeros((0, JOINTS, 3)), np.zeros(0), np.zeros((0, 4)), timestamp)
            return []
        keypoints = np.stack([np.asarray(p.keypoints, np.float64) for p in people])
        scores = np.fromiter((p.score for p in people), np.float64, len(people))
        boxes = np.asarray([p.bbox for p in people], np.float64)
        track_ids, smoothed = self.update_arrays(keypoints, scores, boxes, timestamp)
        if not self.config.smooth:
            return [dataclasses.replace(p, track_id=int(i) or None) for p, i in zip(people, track_ids)]
        smoothed_boxes = boxes_around_keypoints(smoothed, boxes)
        smoothed32 = smoothed.astype(np.float32)
        return [
            dataclasses.replace(person, keypoints=smoothed32[n], bbox=tuple(float(v) for v in smoothed_boxes[n]),
                                track_id=int(track_ids[n]) or None)
            for n, person in enumerate(people)
        ]

    def update_arrays(self, keypoints: np.ndarray, scores: np.ndarray, boxes: np.ndarray,
                      timestamp: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The array form of ``update``: keypoints N x 17 x 3, scores N, boxes N x 4 (x, y, w, h).

        Returns (track_ids: N int64, 0 where ``update`` gives None; keypoints: N x 17 x 3 float64,
        smoothed when smoothing is on, else a copy of the input).
        """
        config = self.config
        keypoints = np.ascontiguousarray(keypoints, np.float64)
        scores = np.asarray(scores, np.float64)
        detections = scores.shape[0]
        boxes = np.asarray(boxes, np.float64).reshape(detections, 4)
        now = self._advance_clock(timestamp)

        states = self._states
        tracking_math.kalman_predict(self._means, self._covariances, states, STD_POSITION, STD_VELOCITY)

        high = np.flatnonzero(scores >= config.high_score)
        low = np.flatnonzero((scores >= config.low_score) & (scores < config.high_score))
        pool = np.flatnonzero(states >= CONFIRMED)  # confirmed and lost
        tentative = np.flatnonzero(states == TENTATIVE)

        rows1, cols1 = self._associate(pool, high, keypoints, config.first_stage_min_similarity)
        pool_left = _without(pool, rows1)
        high_left = _without(high, cols1)
        tracked_left = pool_left[states[pool_left] == CONFIRMED]  # lost tracks do not take low-score people
        rows2, cols2 = self._associate(tracked_left, low, keypoints, config.second_stage_min_similarity)
        rows3, cols3 = self._associate(tentative, high_left, keypoints, config.tentative_min_similarity)
        matched_rows = np.concatenate([pool[rows1], tracked_left[rows2], tentative[rows3]])
        matched_dets = np.concatenate([high[cols1], low[cols2], high_left[cols3]])
        high_left = _without(high_left, cols3)

        self._update_matched(matched_rows, matched_dets, keypoints)
        self._age_unmatched(matched_rows)
        started_rows, started_dets = self._start_tracks(high_left[scores[high_left] >= config.new_track_score],
                                                        boxes, keypoints)

        track_ids = np.zeros(detections, np.int64)
        track_ids[matched_dets] = self._ids[matched_rows]
        track_ids[started_dets] = self._ids[started_rows]
        out = keypoints.copy()
        if config.smooth:
            rows = np.concatenate([matched_rows, started_rows])
            dets = np.concatenate([matched_dets, started_dets])
            euro = config.smoothing
            tracking_math.one_euro_update(self._euro_values, self._euro_rates, self._euro_times, self._euro_ready,
                                          rows, keypoints, dets, now, euro.min_cutoff, euro.beta, euro.d_cutoff,
                                          euro.full_confidence, self._frame_dt, out)
        return track_ids, out

    # ----------------------------------------------------------------------------------------------------
    # Steps
    # ----------------------------------------------------------------------------------------------------

    def _advance_clock(self, timestamp: float | None) -> float:
        if timestamp is not None:
            now = float(timestamp)
        else:
            now = 0.0 if self._time is None else self._time + self._frame_dt
        self._time = now
        return now

    def _tracking_boxes(self, boxes: np.ndarray) -> np.ndarray:
        """(cx, cy, w, h) the tracker starts a track with: the (x, y, w, h) keypoint box, widened to at least
        min_box_aspect * h (``tracking_math._completed_box`` does the same for matched people).

        The box around a walker's keypoints swings between a few pixels and half its height as the limbs
        move; widening it to a body's width keeps IoU meaningful for thin, side-on people.
        """
        config = self.config
        heights = np.maximum(boxes[:, 3], config.min_box_size)
        widths = np.maximum(np.maximum(boxes[:, 2], config.min_box_aspect * heights), config.min_box_size)
        centre_boxes = np.empty_like(boxes)
        centre_boxes[:, 0] = boxes[:, 0] + 0.5 * boxes[:, 2]
        centre_boxes[:, 1] = boxes[:, 1] + 0.5 * boxes[:, 3]
        centre_boxes[:, 2] = widths
        centre_boxes[:, 3] = heights
        return centre_boxes

    def _associate(self, rows: np.ndarray, dets: np.ndarray, keypoints: np.ndarray,
                   min_similarity: float) -> tuple[np.ndarray, np.ndarray]:
        """Matched positions into ``rows`` and ``dets``."""
        if rows.size == 0 or dets.size == 0:
            empty = np.empty(0, np.int64)
            return empty, empty
        config = self.config
        similarity = tracking_math.pose_similarity(
            self._means, self._observed_boxes, self._keypoints, rows.astype(np.int64), keypoints,
            dets.astype(np.int64), self._sigmas, config.iou_weight, config.keypoint_min_confidence,
            config.min_box_aspect, config.min_box_size)
        # A track seen last frame is the likelier owner of an ambiguous person than one coasting unseen.
        penalty = np.where(self._states[rows] == LOST, self.config.lost_track_penalty, 0.0)
        return _match(similarity, min_similarity, penalty)

    def _update_matched(self, rows: np.ndarray, dets: np.ndarray, keypoints: np.ndarray) -> None:
        if rows.size == 0:
            return
        config = self.config
        measured = np.empty((keypoints.shape[0], 4))
        tracking_math.observe(self._keypoints, self._observed_boxes, rows, keypoints, dets,
                              config.keypoint_min_confidence, config.min_box_aspect, config.min_box_size,
                              config.keypoint_memory, measured)
        tracking_math.kalman_update(self._means, self._covariances, rows, measured, dets, STD_POSITION)
        self._hits[rows] += 1
        self._misses[rows] = 0
        was = self._states[rows]
        self._states[rows[was == LOST]] = CONFIRMED
        self._confirm(rows[(was == TENTATIVE) & (self._hits[rows] >= self.config.min_hits)])

    def _confirm(self, rows: np.ndarray) -> None:
        """Tentative -> confirmed, with the next IDs of this tracker's own counter."""
        if rows.size == 0:
            return
        self._states[rows] = CONFIRMED
        self._ids[rows] = np.arange(self._next_id, self._next_id + rows.size)
        self._next_id += rows.size

    def _age_unmatched(self, matched_rows: np.ndarray) -> None:
        unmatched = self._states != FREE
        unmatched[matched_rows] = False
        if not unmatched.any():
            return
        self._misses[unmatched] += 1
        self._hits[unmatched] = 0
        states = self._states
        self._release(np.flatnonzero(unmatched & (states == TENTATIVE)))
        states[unmatched & (states == CONFIRMED)] = LOST
        self._release(np.flatnonzero(unmatched & (states == LOST) & (self._misses > self.config.track_buffer)))

    def _start_tracks(self, dets: np.ndarray, boxes: np.ndarray,
                      keypoints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dets = dets.astype(np.int64)
        if dets.size == 0:
            return np.empty(0, np.int64), dets
        rows = self._claim_slots(dets.size)
        centre_boxes = self._tracking_boxes(boxes_around_keypoints(keypoints[dets], boxes[dets]))
        tracking_math.kalman_initiate(self._means, self._covariances, rows, centre_boxes,
                                      np.arange(dets.size, dtype=np.int64), STD_POSITION, STD_VELOCITY)
        self._keypoints[rows] = keypoints[dets]
        self._observed_boxes[rows] = centre_boxes
        self._hits[rows] = 1
        self._misses[rows] = 0
        self._states[rows] = TENTATIVE
        self._euro_ready[rows] = False
        self._confirm(rows[self._hits[rows] >= self.config.min_hits])  # min_hits = 1: confirmed at once
        return rows, dets
