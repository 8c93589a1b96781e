"""Per-stream tracking: synthetic people with known identities scored with motmetrics, lifecycle edge cases,
the One Euro filter, and the output contract (every person back, in order; boxes around the keypoints).

The truth in each scenario is the set of people the detector reports on that frame (a person hidden for k
frames is absent from truth and detections alike): the tracker is judged on keeping identities, not on
guessing where hidden people are.
"""
from __future__ import annotations

import types

import motmetrics as mm
import numpy as np
import pytest

import posestream.kernels.tracking
import posestream.pipeline.tracking.tracker
from posestream.kernels import tracking as tracking_math
from posestream.pipeline.core.types import Person
from posestream.pipeline.tracking.tracker import OneEuroConfig, PoseTracker, TrackerConfig
from tests.helpers.walkers import DetectedFrame, boxes_of, pedestrian_crowd, pose, render, straight_path, walker

FPS = 25.0
DEFAULT = TrackerConfig()


# --------------------------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------------------------


def iou_distance(truth: np.ndarray, hypotheses: np.ndarray, min_iou: float = 0.5) -> np.ndarray:
    """1 - IoU between (x, y, w, h) boxes, NaN (no match) under ``min_iou``.

    Ours rather than motmetrics.distances.iou_matrix, which calls np.asfarray (gone in NumPy 2).
    """
    a = np.asarray(truth, np.float64).reshape(-1, 4)
    b = np.asarray(hypotheses, np.float64).reshape(-1, 4)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 0] + a[:, None, 2], b[None, :, 0] + b[None, :, 2])
    y1 = np.minimum(a[:, None, 1] + a[:, None, 3], b[None, :, 1] + b[None, :, 3])
    overlap = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    union = a[:, None, 2] * a[:, None, 3] + b[None, :, 2] * b[None, :, 3] - overlap
    iou = np.divide(overlap, union, out=np.zeros_like(overlap), where=union > 0)
    distance = 1.0 - iou
    distance[iou < min_iou] = np.nan
    return distance


class Scored(types.SimpleNamespace):
    idf1: float
    mota: float
    switches: int
    ids_issued: int
    outputs: list[list[Person]]


def track_and_score(frames: list[DetectedFrame], config: TrackerConfig = DEFAULT, fps: float = FPS) -> Scored:
    """Run one tracker over the frames (timestamps index / fps); IDF1, MOTA and ID switches against the truth.

    A person output with track_id None is no hypothesis: tentative frames count as misses.
    """
    tracker = PoseTracker(config, fps=fps)
    accumulator = mm.MOTAccumulator(auto_id=True)
    outputs = []
    for frame in frames:
        people = tracker.update(frame.people(), frame.index / fps)
        outputs.append(people)
        tracked = [p for p in people if p.track_id is not None]
        accumulator.update(frame.truth_ids.tolist(), [p.track_id for p in tracked],
                           iou_distance(frame.boxes, [p.bbox for p in tracked]))
    summary = mm.metrics.create().compute(accumulator, metrics=["idf1", "mota", "num_switches"], name="run")
    row = summary.iloc[0]
    return Scored(idf1=float(row["idf1"]), mota=float(row["mota"]), switches=int(row["num_switches"]),
                  ids_issued=tracker.ids_issued, outputs=outputs)


def identities(scored: Scored, frames: list[DetectedFrame]) -> dict[int, set[int]]:
    """For each true person, the track IDs it was given."""
    given: dict[int, set[int]] = {}
    for frame, people in zip(frames, scored.outputs):
        for truth, person in zip(frame.truth_ids, people):
            if person.track_id is not None:
                given.setdefault(int(truth), set()).add(person.track_id)
    return given


def one_id_each(given: dict[int, set[int]]) -> list[int]:
    """The true people, after checking that each got exactly one ID and no two got the same."""
    assert all(len(ids) == 1 for ids in given.values()), given
    assert len(set.union(*given.values())) == len(given), given
    return sorted(given)


# --------------------------------------------------------------------------------------------------------------
# Scenarios with known identities
# --------------------------------------------------------------------------------------------------------------


def crossing(occluded_frames: int, speed_wobble: float, frames: int = 120, same_direction: bool = False):
    """Two people of nearly the same size cross paths at nearly the same depth; B passes behind A.

    B is hidden for ``occluded_frames`` around the closest approach and half hidden (its right side and
    legs) for 3 frames on either side, with a lower score, as a real detector would see it.
    """
    a = straight_path((100, 300), (6.0, 0), frames, speed_wobble, phase=0.0)
    if same_direction:
        b = straight_path((250, 305), (2.4, 0), frames, speed_wobble, phase=1.5)
    else:
        b = straight_path((668, 305), (-6.0, 0), frames, speed_wobble, phase=1.5)
    closest = int(np.argmin(np.abs(a[:, 0] - b[:, 0])))
    hidden_from = closest - occluded_frames // 2
    seen = np.ones(frames, bool)
    seen[hidden_from:hidden_from + occluded_frames] = False
    joint_seen = np.ones((frames, 17), bool)
    score = np.full(frames, 0.5)
    back = hidden_from + occluded_frames
    for f in (*range(hidden_from - 3, hidden_from), *range(back, back + 3)):
        joint_seen[f, [2, 4, 6, 8, 10, 12, 13, 14, 15, 16]] = False
        score[f] = 0.25
    return [walker(1, a, 200), walker(2, b, 190, seen=seen, score=score, joint_seen=joint_seen)]


@pytest.mark.parametrize("speed_wobble", [0.0, 0.3], ids=["constant-speed", "varying-speed"])
@pytest.mark.parametrize("occluded_frames", [0, 1, 4, 7, 10])
def test_two_people_crossing_keep_their_ids(occluded_frames, speed_wobble):
    for seed in range(3):
        frames = render(crossing(occluded_frames, speed_wobble), 120, np.random.default_rng(seed))
        scored = track_and_score(frames)
        assert scored.switches == 0, (seed, scored)
        assert scored.idf1 >= 0.95, (seed, scored.idf1)
        assert scored.ids_issued == 2
        assert one_id_each(identities(scored, frames)) == [1, 2]


@pytest.mark.parametrize("occluded_frames", [4, 10])
def test_overtaking_behind_keeps_ids(occluded_frames):
    """Same direction, so the two are overlapped for a long time: the hardest case without appearance."""
    for seed in range(3):
        frames = render(crossing(occluded_frames, 0.3, frames=200, same_direction=True), 200,
                        np.random.default_rng(seed))
        scored = track_and_score(frames)
        assert scored.switches == 0, (seed, scored)
        assert scored.ids_issued == 2


def test_people_entering_and_leaving_get_one_id_each():
    frames_total = 260
    walkers = [
        walker(1, straight_path((-60, 300), (5.0, 0), frames_total), 200),  # in from the left, out on the right
        walker(2, straight_path((830, 320), (-4.0, 0), frames_total), 180),  # in from the right
        walker(3, np.repeat([[380.0, 260.0]], frames_total, axis=0), 160),  # stands in the middle throughout
    ]
    late = np.concatenate([np.repeat([[-60.0, 340.0]], 80, axis=0),
                           straight_path((-60, 340), (7.0, 0), frames_total - 80)])
    walkers.append(walker(4, late, 220))  # enters at frame 80
    frames = render(walkers, frames_total, np.random.default_rng(7))
    scored = track_and_score(frames)
    assert one_id_each(identities(scored, frames)) == [1, 2, 3, 4]
    assert scored.ids_issued == 4
    assert scored.switches == 0 and scored.idf1 >= 0.95

    # Everyone has left but walker 3; once they are gone for longer than the buffer, their tracks are removed.
    tracker = PoseTracker(DEFAULT, fps=FPS)
    for frame in frames:
        tracker.update(frame.people(), frame.index / FPS)
    assert {view.state for view in tracker.tracks()} <= {"confirmed", "lost"}
    for extra in range(DEFAULT.track_buffer + 1):
        tracker.update([], (frames_total + extra) / FPS)
    assert tracker.tracks() == []


@pytest.mark.parametrize("people, seed", [(6, 1), (10, 2), (14, 3)])
def test_street_crowd(people, seed):
    """People cross a street scene in both directions, enter, leave, drop out and are hidden up to 10 frames."""
    rng = np.random.default_rng(seed)
    frames = render(pedestrian_crowd(people, 300, rng), 300, rng, image_size=(1280, 720))
    scored = track_and_score(frames)
    assert scored.idf1 >= 0.95, scored
    assert scored.mota >= 0.9, scored
    assert scored.switches <= 1, scored


@pytest.mark.parametrize("seed", [4, 5])
def test_far_camera_at_10_fps(seed):
    """vtest.avi-like: people 30-80 px tall, moving 8 % of their height per frame, 15 % of joints not found."""
    rng = np.random.default_rng(seed)
    walkers = pedestrian_crowd(8, 200, rng, image_size=(768, 576), size_scale=0.35, speed_scale=4.0)
    frames = render(walkers, 200, rng, noise_px=1.0, noise_per_height=0.03, joint_dropout=0.15)
    scored = track_and_score(frames, fps=10.0)
    assert scored.idf1 >= 0.95, scored
    assert scored.switches <= 1, scored


def test_two_streams_interleaved_have_their_own_ids():
    """Two trackers fed alternately: each stream's IDs start at 1 and are what that stream alone gets."""
    rng = np.random.default_rng(11)
    stream_a = render(pedestrian_crowd(6, 150, rng), 150, rng, image_size=(1280, 720))
    stream_b = render(crossing(6, 0.3), 120, np.random.default_rng(12))
    alone_a, alone_b = track_and_score(stream_a), track_and_score(stream_b)

    tracker_a, tracker_b = PoseTracker(DEFAULT, fps=FPS), PoseTracker(DEFAULT, fps=FPS)
    ids_a, ids_b = [], []
    for f in range(max(len(stream_a), len(stream_b))):
        if f < len(stream_a):
            ids_a.append([p.track_id for p in tracker_a.update(stream_a[f].people(), f / FPS)])
        if f < len(stream_b):
            ids_b.append([p.track_id for p in tracker_b.update(stream_b[f].people(), f / FPS)])
    assert ids_a == [[p.track_id for p in people] for people in alone_a.outputs]
    assert ids_b == [[p.track_id for p in people] for people in alone_b.outputs]
    for ids, tracker in ((ids_a, tracker_a), (ids_b, tracker_b)):
        seen = {i for frame in ids for i in frame if i is not None}
        assert seen == set(range(1, tracker.ids_issued + 1))  # from 1, dense, no other stream's numbers
        first_frame_with_ids = next(frame for frame in ids if any(i is not None for i in frame))
        assert min(i for i in first_frame_with_ids if i is not None) == 1


def test_low_score_person_is_kept_by_the_second_stage():
    """A person half hidden (score 0.05, legs not found) for 12 frames keeps its ID through them."""
    frames_total = 90
    path = straight_path((150, 300), (4.0, 0), frames_total)
    score = np.full(frames_total, 0.5)
    joint_seen = np.ones((frames_total, 17), bool)
    score[40:52] = 0.05  # between low_score and high_score
    joint_seen[40:52, 11:] = False
    frames = render([walker(1, path, 200, score=score, joint_seen=joint_seen)], frames_total, np.random.default_rng(3))

    with_second_stage = track_and_score(frames)
    ids = [people[0].track_id for people in with_second_stage.outputs]
    assert ids[DEFAULT.min_hits - 1:] == [1] * (frames_total - DEFAULT.min_hits + 1)

    # Without the second stage the low-score frames lose the ID (the track is lost, then found again).
    first_stage_only = track_and_score(frames, TrackerConfig(low_score=DEFAULT.high_score))
    ids = [people[0].track_id for people in first_stage_only.outputs]
    assert ids[40:52] == [None] * 12
    assert ids[52:] == [1] * (frames_total - 52)


def test_low_score_clutter_never_starts_a_track():
    clutter = [DetectedFrame(index=f, truth_ids=np.array([9]), keypoints=k, scores=np.array([0.1]), boxes=boxes_of(k))
               for f, k in enumerate([person_keypoints(400, 300, 60)[None]] * 40)]
    scored = track_and_score(clutter)
    assert scored.ids_issued == 0
    assert all(people[0].track_id is None for people in scored.outputs)


# --------------------------------------------------------------------------------------------------------------
# Lifecycle
# --------------------------------------------------------------------------------------------------------------


def person_keypoints(cx: float, cy: float, height: float = 200.0, confidence: float = 0.8) -> np.ndarray:
    keypoints = np.zeros((17, 3))
    keypoints[:, :2] = pose(np.array([cx, cy]), height, 0.0)
    keypoints[:, 2] = confidence
    return keypoints


def person_at(cx: float, cy: float, height: float = 200.0, score: float = 0.5) -> Person:
    keypoints = person_keypoints(cx, cy, height)
    return Person(score=score, keypoints=keypoints.astype(np.float32), bbox=tuple(boxes_of(keypoints[None])[0]))


def states(tracker: PoseTracker) -> list[tuple[int | None, str]]:
    return [(view.track_id, view.state) for view in tracker.tracks()]


def test_tentative_track_is_confirmed_after_min_hits():
    tracker = PoseTracker(TrackerConfig(min_hits=3), fps=FPS)
    assert [tracker.update([person_at(300, 300)])[0].track_id for _ in range(2)] == [None, None]
    assert states(tracker) == [(None, "tentative")]
    assert tracker.update([person_at(300, 300)])[0].track_id == 1
    assert states(tracker) == [(1, "confirmed")]


def test_min_hits_one_confirms_at_once():
    tracker = PoseTracker(TrackerConfig(min_hits=1), fps=FPS)
    assert tracker.update([person_at(300, 300)])[0].track_id == 1


def test_tentative_track_dies_on_a_miss_and_uses_up_no_id():
    tracker = PoseTracker(TrackerConfig(min_hits=3), fps=FPS)
    tracker.update([person_at(300, 300)])
    tracker.update([person_at(300, 300)])
    tracker.update([])
    assert tracker.tracks() == []
    ids = [tracker.update([person_at(300, 300)])[0].track_id for _ in range(3)]
    assert ids == [None, None, 1]  # a fresh tentative track, and the first ID is still 1


def test_lost_track_is_removed_after_the_buffer():
    config = TrackerConfig(min_hits=1, track_buffer=5)
    tracker = PoseTracker(config, fps=FPS)
    tracker.update([person_at(300, 300)])
    for missed in range(1, config.track_buffer + 1):
        tracker.update([])
        assert [(v.track_id, v.state, v.misses) for v in tracker.tracks()] == [(1, "lost", missed)]
    tracker.update([])
    assert tracker.tracks() == []
    assert tracker.update([person_at(300, 300)])[0].track_id == 2  # a new person to the tracker


def test_track_refound_within_the_buffer_keeps_its_id():
    tracker = PoseTracker(TrackerConfig(track_buffer=30), fps=FPS)
    for f in range(20):
        out = tracker.update([person_at(100 + 5 * f, 300)])
    assert out[0].track_id == 1
    for f in range(20, 45):  # 25 frames unseen, still moving
        tracker.update([])
    assert states(tracker) == [(1, "lost")]
    assert tracker.update([person_at(100 + 5 * 45, 300)])[0].track_id == 1  # back where it was heading
    assert states(tracker) == [(1, "confirmed")]


def test_lost_track_does_not_take_a_low_score_person():
    """Stage 2 only serves tracks seen last frame: a low-score person never revives a lost track."""
    tracker = PoseTracker(TrackerConfig(min_hits=1), fps=FPS)
    tracker.update([person_at(300, 300)])
    tracker.update([])
    assert tracker.update([person_at(300, 300, score=0.05)])[0].track_id is None
    assert states(tracker) == [(1, "lost")]


# --------------------------------------------------------------------------------------------------------------
# Output contract
# --------------------------------------------------------------------------------------------------------------


def test_every_person_comes_back_in_order():
    tracker = PoseTracker(DEFAULT, fps=FPS)
    people = [person_at(150, 300, score=0.6), person_at(400, 300, score=0.1), person_at(650, 300, score=0.01)]
    for _ in range(5):
        out = tracker.update(people)
    assert [p.score for p in out] == [p.score for p in people]
    assert out[0].track_id == 1  # the high-score person is tracked
    assert out[1].track_id is None and out[2].track_id is None  # low scores never start tracks
    assert tracker.update([]) == []


def test_smoothed_people_keep_the_schema():
    rng = np.random.default_rng(5)
    tracker = PoseTracker(DEFAULT, fps=FPS)
    for f in range(30):
        keypoints = person_keypoints(200 + 4 * f, 300)
        keypoints[:, :2] += rng.normal(0, 2, (17, 2))
        keypoints[[3, 4], :] = 0  # ears not found
        person = Person(0.5, keypoints.astype(np.float32), tuple(boxes_of(keypoints[None])[0]))
        out = tracker.update([person])[0]
        assert out.keypoints.shape == (17, 3) and out.keypoints.dtype == np.float32
        assert (out.keypoints[[3, 4]] == 0).all()  # not found stays [0, 0, 0]
        np.testing.assert_array_equal(out.keypoints[:, 2], person.keypoints[:, 2])  # confidences untouched
        np.testing.assert_allclose(out.bbox, boxes_of(out.keypoints[None].astype(np.float64))[0], atol=1e-3)
    assert not np.allclose(out.keypoints, person.keypoints)  # smoothed


def test_smoothing_off_gives_the_raw_keypoints():
    tracker = PoseTracker(TrackerConfig(smooth=False), fps=FPS)
    for f in range(5):
        person = person_at(200 + 10 * f, 300)
        out = tracker.update([person])[0]
        assert out.keypoints is person.keypoints and out.bbox == person.bbox
    assert out.track_id == 1


def test_person_without_track_id_still_constructs():
    person = Person(0.5, np.zeros((17, 3), np.float32), (0.0, 0.0, 0.0, 0.0))
    assert person.track_id is None
    with pytest.raises(AttributeError):
        person.track_id = 3  # frozen


@pytest.mark.parametrize("bad", [dict(low_score=0.5, high_score=0.2), dict(min_hits=0), dict(track_buffer=-1),
                                 dict(iou_weight=1.5)])
def test_tracker_config_rejects_nonsense(bad):
    with pytest.raises(ValueError):
        TrackerConfig(**bad)


def test_no_module_level_mutable_state():
    """Streams must not share anything: no module-level dicts, lists, sets or arrays in the tracking code."""
    for module in (posestream.pipeline.tracking.tracker, posestream.kernels.tracking):
        mutable = [name for name, value in vars(module).items()
                   if not name.startswith("__") and isinstance(value, (dict, list, set, bytearray, np.ndarray))]
        assert mutable == [], f"{module.__name__}: {mutable}"


# --------------------------------------------------------------------------------------------------------------
# One Euro filter
# --------------------------------------------------------------------------------------------------------------


class OneJointFilter:
    """tracking_math.one_euro_update on one track, all 17 joints fed the same observation, joint 0 read."""

    def __init__(self, config: OneEuroConfig = OneEuroConfig(), fps: float = 30.0):
        self.config, self.fps = config, fps
        self.values = np.zeros((1, 17, 2))
        self.rates = np.zeros((1, 17, 2))
        self.times = np.zeros((1, 17))
        self.ready = np.zeros((1, 17), np.bool_)

    def step(self, x: float, y: float, confidence: float, now: float) -> np.ndarray:
        keypoints = np.zeros((1, 17, 3))
        keypoints[0] = (x, y, confidence)
        out = keypoints.copy()
        c = self.config
        tracking_math.one_euro_update(self.values, self.rates, self.times, self.ready, np.array([0]), keypoints,
                                      np.array([0]), now, c.min_cutoff, c.beta, c.d_cutoff, c.full_confidence,
                                      1.0 / self.fps, out)
        return out[0, 0]


def test_one_euro_reduces_jitter_on_a_still_point():
    rng = np.random.default_rng(0)
    fps, frames = 30.0, 900
    noise = rng.normal(0, 2.0, (frames, 2))
    joint = OneJointFilter(fps=fps)
    filtered = np.array([joint.step(300 + nx, 200 + ny, 0.8, f / fps)[:2] for f, (nx, ny) in enumerate(noise)])
    settled = slice(60, None)
    ratio = noise[settled].var() / (filtered[settled] - (300, 200)).var()
    assert ratio >= 5.0, ratio  # about 9 with the defaults


def test_one_euro_lags_little_on_a_fast_ramp():
    fps, speed = 30.0, 300.0  # px/s: 10 px per frame
    rng = np.random.default_rng(1)
    joint = OneJointFilter(fps=fps)
    truth = 100 + speed * np.arange(150) / fps
    filtered = np.array([joint.step(x + rng.normal(0, 2.0), 200, 0.8, f / fps)[0] for f, x in enumerate(truth)])
    lag = truth[30:] - filtered[30:]
    assert abs(lag.mean()) < 5.0, lag.mean()  # under half a frame's travel; about 2.7 px with the defaults
    assert np.abs(lag).max() < 12.0


def test_one_euro_missing_joint_holds_its_last_value():
    joint = OneJointFilter()
    for f in range(30):
        joint.step(300.0, 200.0, 0.8, f / 30)
    held = joint.values[0, 0].copy()
    for f in range(30, 40):
        out = joint.step(0.0, 0.0, 0.0, f / 30)  # not found
        np.testing.assert_array_equal(out, [0.0, 0.0, 0.0])  # reported as not found
        np.testing.assert_array_equal(joint.values[0, 0], held)  # and the filter is not dragged to (0, 0)
    back = joint.step(301.0, 200.0, 0.8, 40 / 30)
    assert abs(back[0] - 300.0) <= 1.0 and abs(back[1] - 200.0) < 1e-9


def test_one_euro_weak_joint_moves_the_filter_less():
    moved = {}
    for confidence in (0.9, 0.05):
        joint = OneJointFilter()
        for f in range(30):
            joint.step(300.0, 200.0, 0.8, f / 30)
        moved[confidence] = joint.step(340.0, 200.0, confidence, 30 / 30)[0] - 300.0
    assert 0 < moved[0.05] < 0.25 * moved[0.9]  # 0.05 / full_confidence 0.3: a sixth of the step


def test_one_euro_uses_the_time_between_frames():
    """The same jump, seen after a longer time, is followed further; no timestamp means 1 / fps."""
    followed = {}
    for dt in (1 / 30, 1 / 5):
        joint = OneJointFilter()
        for f in range(10):
            joint.step(300.0, 200.0, 0.8, f * dt)
        followed[dt] = joint.step(320.0, 200.0, 0.8, 10 * dt)[0]
    assert followed[1 / 5] > followed[1 / 30] + 2

    explicit, implicit = PoseTracker(DEFAULT, fps=10.0), PoseTracker(DEFAULT, fps=10.0)
    for f in range(20):
        person = person_at(200 + 8 * f, 300)
        a = explicit.update([person], f / 10.0)[0]
        b = implicit.update([person], None)[0]
        np.testing.assert_array_equal(a.keypoints, b.keypoints)
