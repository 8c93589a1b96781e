"""From scored limb candidates to people: per-limb Hungarian assignment, then connect_parts."""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from numba import njit

from posestream.kernels.paf import PafScratch, allocate_paf_scratch


class AssignScratch(NamedTuple):
    """assign's working memory for capacity M, allocated once (a NamedTuple of arrays: Numba reads its fields)."""

    row_candidates: np.ndarray  # M int32: positive candidates per peak a
    col_candidates: np.ndarray  # M int32: positive candidates per peak b
    row_partner: np.ndarray  # M int32: a peak b with a positive candidate for peak a (its only one when count 1)
    col_partner: np.ndarray  # M int32: the same per peak b
    contested_rows: np.ndarray  # M int32
    contested_cols: np.ndarray  # M int32
    cost: np.ndarray  # M x M float64: the Hungarian's cost matrix
    row_of_col: np.ndarray  # M + 1 int64
    u: np.ndarray  # M + 1 float64: row potentials
    v: np.ndarray  # M + 1 float64: column potentials
    min_slack: np.ndarray  # M + 1 float64
    way: np.ndarray  # M + 1 int64
    used: np.ndarray  # M + 1 bool


def allocate_assign_scratch(max_peaks: int) -> AssignScratch:
    m = max_peaks
    return AssignScratch(
        row_candidates=np.zeros(m, np.int32), col_candidates=np.zeros(m, np.int32),
        row_partner=np.zeros(m, np.int32), col_partner=np.zeros(m, np.int32),
        contested_rows=np.zeros(m, np.int32), contested_cols=np.zeros(m, np.int32),
        cost=np.zeros((m, m), np.float64), row_of_col=np.zeros(m + 1, np.int64), u=np.zeros(m + 1, np.float64),
        v=np.zeros(m + 1, np.float64), min_slack=np.zeros(m + 1, np.float64), way=np.zeros(m + 1, np.int64),
        used=np.zeros(m + 1, np.bool_),
    )


class ConnectScratch(NamedTuple):
    """connect_parts' working memory for L limbs, K keypoints and capacity M: every match can start at most one
    person, so L * M candidate people."""

    parts: np.ndarray  # L*M x K int32: peak index per keypoint of each candidate person
    totals: np.ndarray  # L*M float32
    part_counts: np.ndarray  # L*M int32
    alive: np.ndarray  # L*M bool: False once merged into another person
    owner: np.ndarray  # K x M int32: the person owning each peak, -1 for none
    order: np.ndarray  # L*M int64: kept people, best first
    final_scores: np.ndarray  # L*M float32


def allocate_connect_scratch(keypoints: int, limbs: int, max_peaks: int) -> ConnectScratch:
    people = limbs * max_peaks
    return ConnectScratch(
        parts=np.zeros((people, keypoints), np.int32), totals=np.zeros(people, np.float32),
        part_counts=np.zeros(people, np.int32), alive=np.zeros(people, np.bool_),
        owner=np.zeros((keypoints, max_peaks), np.int32), order=np.zeros(people, np.int64),
        final_scores=np.zeros(people, np.float32),
    )


# find_peaks' working row holds this many columns: maps up to this wide (a stride-8 map of a 32k-pixel-wide
# input, or an upsampled one of an 8k-wide input at 4x).
MAX_MAP_WIDTH = 4096


@dataclass(frozen=True)
class ParseBuffers:
    """Every array the parse writes, allocated once per (N, K, L, M, P) and reused frame after frame."""

    peak_counts: np.ndarray  # N x K int32
    peaks: np.ndarray  # N x K x M x 2 int32 (y, x)
    peak_scores: np.ndarray  # N x K x M float32
    refined: np.ndarray  # N x K x M x 2 float32 (x, y)
    limb_scores: np.ndarray  # N x L x M x M float32
    match_counts: np.ndarray  # N x L int32
    matches: np.ndarray  # N x L x M x 2 int32 (peak a, peak b)
    match_scores: np.ndarray  # N x L x M float32
    person_counts: np.ndarray  # N int32
    person_parts: np.ndarray  # N x P x K int32 peak index per keypoint, -1 when missing
    person_scores: np.ndarray  # N x P float32
    people_dropped: np.ndarray  # N int32 -- people beyond capacity P, counted not kept
    peak_row_mask: np.ndarray  # MAX_MAP_WIDTH bool: find_peaks' working row
    paf_scratch: PafScratch  # working memory, so the chain allocates nothing per call
    assign_scratch: AssignScratch  # working memory, so the chain allocates nothing per call
    connect_scratch: ConnectScratch

    @property
    def batch_capacity(self) -> int:
        return self.peak_counts.shape[0]


def allocate_parse_buffers(frames: int, keypoints: int, limbs: int, max_peaks: int, max_people: int) -> ParseBuffers:
    n, k, l, m, p = frames, keypoints, limbs, max_peaks, max_people
    return ParseBuffers(
        peak_counts=np.zeros((n, k), np.int32),
        peaks=np.full((n, k, m, 2), -1, np.int32),
        peak_scores=np.zeros((n, k, m), np.float32),
        refined=np.full((n, k, m, 2), -1.0, np.float32),
        limb_scores=np.zeros((n, l, m, m), np.float32),
        match_counts=np.zeros((n, l), np.int32),
        matches=np.full((n, l, m, 2), -1, np.int32),
        match_scores=np.zeros((n, l, m), np.float32),
        person_counts=np.zeros(n, np.int32),
        person_parts=np.full((n, p, k), -1, np.int32),
        person_scores=np.zeros((n, p), np.float32),
        people_dropped=np.zeros(n, np.int32),
        peak_row_mask=np.zeros(MAX_MAP_WIDTH, np.bool_),
        paf_scratch=allocate_paf_scratch(m),
        assign_scratch=allocate_assign_scratch(m),
        connect_scratch=allocate_connect_scratch(k, l, m),
    )


@njit(nogil=True, cache=True)
def _hungarian_min(cost, rows, cols, row_of_col, u, v, min_slack, way, used):
    """Minimum-cost assignment of every row of cost[:rows, :cols] (rows <= cols) to a distinct column.

    The shortest-augmenting-path Hungarian method with potentials, O(rows^2 * cols). Scratch arrays
    (length >= cols + 1) are the caller's. On return row_of_col[j + 1] is the row (1-based) given
    column j, 0 for none.
    """
    for j in range(cols + 1):
        row_of_col[j] = 0
        v[j] = 0.0
        way[j] = 0
    for i in range(rows + 1):
        u[i] = 0.0
    for i in range(1, rows + 1):
        row_of_col[0] = i
        free_col = 0
        for j in range(cols + 1):
            min_slack[j] = np.inf
            used[j] = False
        while True:
            used[free_col] = True
            row = row_of_col[free_col]
            delta = np.inf
            next_col = 0
            for j in range(1, cols + 1):
                if not used[j]:
                    slack = cost[row - 1, j - 1] - u[row] - v[j]
                    if slack < min_slack[j]:
                        min_slack[j] = slack
                        way[j] = free_col
                    if min_slack[j] < delta:
                        delta = min_slack[j]
                        next_col = j
            for j in range(cols + 1):
                if used[j]:
                    u[row_of_col[j]] += delta
                    v[j] -= delta
                else:
                    min_slack[j] -= delta
            free_col = next_col
            if row_of_col[free_col] == 0:
                break
        while free_col != 0:
            previous = way[free_col]
            row_of_col[free_col] = row_of_col[previous]
            free_col = previous


@njit(nogil=True, cache=True)
def assign(limb_scores, limbs, peak_counts, frames, match_counts, matches, match_scores, scratch):
    """Per-limb maximum-weight bipartite matching (Hungarian) over candidates with a positive score.

    limb_scores: N x L x M x M; only the first ``frames`` frames are read.
    match_counts: N x L int32 (out); matches: N x L x M x 2 int32 (out, -1 past the count);
    match_scores: N x L x M (out, 0 past the count); matches sorted by score, best first.
    scratch: AssignScratch for capacity >= M (allocate_assign_scratch), overwritten.
    A candidate that is the only one of both its peaks is matched directly; the Hungarian method runs
    only on the rest (contested peaks), which gives the same optimum because the two parts share no
    candidate. Equal-score alternatives may be broken differently from scipy's solver.
    """
    row_candidates = scratch.row_candidates
    col_candidates = scratch.col_candidates
    row_partner = scratch.row_partner
    col_partner = scratch.col_partner
    contested_rows = scratch.contested_rows
    contested_cols = scratch.contested_cols
    cost = scratch.cost
    row_of_col, u, v, min_slack, way, used = (scratch.row_of_col, scratch.u, scratch.v, scratch.min_slack,
                                              scratch.way, scratch.used)
    for n in range(frames):
        for l in range(limbs.shape[0]):
            count_a = peak_counts[n, limbs[l, 0]]
            count_b = peak_counts[n, limbs[l, 1]]
            scores = limb_scores[n, l]
            found = 0
            for a in range(count_a):
                row_candidates[a] = 0
            for b in range(count_b):
                col_candidates[b] = 0
            # Counted without branches (a branch per cell mispredicts on every candidate); each peak also
            # remembers a partner, its only one when it has one candidate.
            for a in range(count_a):
                row_total = 0
                partner = -1
                for b in range(count_b):
                    positive = scores[a, b] > 0.0
                    row_total += int(positive)
                    partner = b if positive else partner
                    col_candidates[b] += int(positive)
                    col_partner[b] = a if positive else col_partner[b]
                row_candidates[a] = row_total
                row_partner[a] = partner
            rows = 0
            for a in range(count_a):
                if row_candidates[a] == 0:
                    continue
                direct = -1
                if row_candidates[a] == 1 and col_candidates[row_partner[a]] == 1:
                    direct = row_partner[a]
                if direct >= 0:
                    matches[n, l, found, 0] = a
                    matches[n, l, found, 1] = direct
                    match_scores[n, l, found] = scores[a, direct]
                    found += 1
                else:
                    contested_rows[rows] = a
                    rows += 1
            cols = 0
            for b in range(count_b):
                if col_candidates[b] > 1:
                    contested_cols[cols] = b
                    cols += 1
                elif col_candidates[b] == 1 and row_candidates[col_partner[b]] > 1:
                    # Its one candidate row is contested: that row has other candidates too.
                    contested_cols[cols] = b
                    cols += 1
            if rows > 0 and cols > 0:
                transposed = rows > cols  # the solver wants rows <= cols
                short = cols if transposed else rows
                long = rows if transposed else cols
                for i in range(short):
                    for j in range(long):
                        a = contested_rows[j] if transposed else contested_rows[i]
                        b = contested_cols[i] if transposed else contested_cols[j]
                        cost[i, j] = -scores[a, b]
                _hungarian_min(cost, short, long, row_of_col, u, v, min_slack, way, used)
                for j in range(1, long + 1):
                    i = row_of_col[j]
                    if i == 0:
                        continue
                    a = contested_rows[j - 1] if transposed else contested_rows[i - 1]
                    b = contested_cols[i - 1] if transposed else contested_cols[j - 1]
                    if scores[a, b] > 0.0:
                        matches[n, l, found, 0] = a
                        matches[n, l, found, 1] = b
                        match_scores[n, l, found] = scores[a, b]
                        found += 1
            # Best first (insertion sort: a handful of matches); equal scores keep their order.
            for i in range(1, found):
                a = matches[n, l, i, 0]
                b = matches[n, l, i, 1]
                score = match_scores[n, l, i]
                j = i
                while j > 0 and match_scores[n, l, j - 1] < score:
                    matches[n, l, j, 0] = matches[n, l, j - 1, 0]
                    matches[n, l, j, 1] = matches[n, l, j - 1, 1]
                    match_scores[n, l, j] = match_scores[n, l, j - 1]
                    j -= 1
                matches[n, l, j, 0] = a
                matches[n, l, j, 1] = b
                match_scores[n, l, j] = score
            match_counts[n, l] = found
            for i in range(found, matches.shape[2]):  # "missing" past the count
                matches[n, l, i, 0] = -1
                matches[n, l, i, 1] = -1
                match_scores[n, l, i] = 0.0


@njit(nogil=True, cache=True)
def _add_part(parts, totals, part_counts, owner, person, keypoint, peak, score):
    parts[person, keypoint] = peak
    owner[keypoint, peak] = person
    totals[person] += score
    part_counts[person] += 1


@njit(nogil=True, cache=True)
def connect_parts(matches, match_scores, match_counts, limbs, redundant, peak_scores, frames,
                  min_parts, min_mean_score, limb_weight, person_counts, person_parts, person_scores,
                  people_dropped, scratch):
    """Grow people from matched limbs, limb by limb in the sidecar's order (parents before children).

    A match extends the person that owns one of its peaks, starts a person when neither peak is owned,
    and joins two people when each owns one end and they share no keypoint type. Redundant limbs only
    complete a person that owns one end, adding the new peak's score but not their own limb score. A
    person's total is the sum of its peak scores and its (non-redundant) limb scores; people with fewer than ``min_parts`` keypoints or a mean below ``min_mean_score`` per
    keypoint are discarded. The reported score is total / (K + limb_weight) in [0, 1]: complete,
    confident people score near 1, partial ones lower.

    redundant: L bool; peak_scores: N x K x M. Outputs: person_counts N, person_parts N x P x K (peak
    index or -1), person_scores N x P (sorted best first), people_dropped N (over capacity P).
    scratch: ConnectScratch for at least these L, K and M (allocate_connect_scratch), overwritten.
    """
    n_keypoints = peak_scores.shape[1]
    capacity_peaks = peak_scores.shape[2]
    capacity_people = person_parts.shape[1]
    parts, totals, part_counts, alive = scratch.parts, scratch.totals, scratch.part_counts, scratch.alive
    owner, order, final_scores = scratch.owner, scratch.order, scratch.final_scores
    for n in range(frames):
        for k in range(n_keypoints):
            for m in range(capacity_peaks):
                owner[k, m] = -1
        people = 0
        for l in range(limbs.shape[0]):
            ka = limbs[l, 0]
            kb = limbs[l, 1]
            for i in range(match_counts[n, l]):
                a = matches[n, l, i, 0]
                b = matches[n, l, i, 1]
                limb_score = match_scores[n, l, i]
                pa = owner[ka, a]
                pb = owner[kb, b]
                if redundant[l]:
                    if pa >= 0 and pb < 0 and parts[pa, kb] < 0:
                        _add_part(parts, totals, part_counts, owner, pa, kb, b, peak_scores[n, kb, b])
                    elif pb >= 0 and pa < 0 and parts[pb, ka] < 0:
                        _add_part(parts, totals, part_counts, owner, pb, ka, a, peak_scores[n, ka, a])
                    continue
                if pa >= 0 and pb < 0:
                    if parts[pa, kb] < 0:
                        _add_part(parts, totals, part_counts, owner, pa, kb, b, peak_scores[n, kb, b] + limb_score)
                elif pb >= 0 and pa < 0:
                    if parts[pb, ka] < 0:
                        _add_part(parts, totals, part_counts, owner, pb, ka, a, peak_scores[n, ka, a] + limb_score)
                elif pa < 0 and pb < 0:
                    person = people
                    people += 1
                    parts[person, :] = -1
                    totals[person] = 0.0
                    part_counts[person] = 0
                    alive[person] = True
                    _add_part(parts, totals, part_counts, owner, person, ka, a, peak_scores[n, ka, a])
                    _add_part(parts, totals, part_counts, owner, person, kb, b, peak_scores[n, kb, b] + limb_score)
                elif pa != pb:
                    disjoint = True
                    for k in range(n_keypoints):
                        if parts[pa, k] >= 0 and parts[pb, k] >= 0:
                            disjoint = False
                            break
                    if disjoint:
                        for k in range(n_keypoints):
                            if parts[pb, k] >= 0:
                                parts[pa, k] = parts[pb, k]
                                owner[k, parts[pb, k]] = pa
                        totals[pa] += totals[pb] + limb_score
                        part_counts[pa] += part_counts[pb]
                        alive[pb] = False
        kept = 0
        for person in range(people):
            if not alive[person] or part_counts[person] < min_parts:
                continue
            if totals[person] / part_counts[person] < min_mean_score:
                continue
            # Insertion into the best-first list; equal scores keep creation order.
            score = min(1.0, totals[person] / (n_keypoints + limb_weight))
            rank = kept
            while rank > 0 and final_scores[rank - 1] < score:
                order[rank] = order[rank - 1]
                final_scores[rank] = final_scores[rank - 1]
                rank -= 1
            order[rank] = person
            final_scores[rank] = score
            kept += 1
        stored = min(kept, capacity_people)
        for rank in range(stored):
            person = order[rank]
            person_parts[n, rank, :] = parts[person, :]
            person_scores[n, rank] = final_scores[rank]
        for rank in range(stored, capacity_people):
            person_parts[n, rank, :] = -1
            person_scores[n, rank] = 0.0
        person_counts[n] = stored
        people_dropped[n] = kept - stored
