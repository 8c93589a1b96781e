"""Synthetic network outputs for the parse kernels' tests (a helper module, not a test file).

Renders heatmaps and PAFs the way OpenPose's ground truth is made, for the real hpe-0001 COCO-18 layout:
a Gaussian blob of peak 1.0 per keypoint (max over people), a background channel of 1 - max over keypoints,
and per limb a unit vector from its first to its second keypoint on every pixel within ``limb_width`` of the
segment, averaged over the people whose same limb covers that pixel.

People are dicts keypoint index -> (x, y) in map pixels (pixel centres at integers); a keypoint left out is
missing: no blob, and no PAF for the limbs that touch it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tests.helpers import REPO

SIDECAR = REPO / "pipeline" / "models" / "human-pose-estimation-0001.pose.json"
MAP_HEIGHT = 46  # a 368 x 656 input at stride 8
MAP_WIDTH = 82

Person = dict[int, tuple[float, float]]


@dataclass(frozen=True)
class Layout:
    """Keypoint, limb and PAF tables, read from the sidecar itself (load_model_spec also wants the weights)."""

    keypoints: tuple[str, ...]
    limbs: np.ndarray  # L x 2 int32
    paf_channels: np.ndarray  # L x 2 int32, (x, y) channel per limb
    redundant: np.ndarray  # L bool
    background_channel: bool

    @property
    def num_keypoints(self) -> int:
        return len(self.keypoints)

    @property
    def heatmap_channels(self) -> int:
        return self.num_keypoints + (1 if self.background_channel else 0)

    @property
    def limb_weight(self) -> float:
        """What BottomUpEstimator passes to connect_parts: the number of non-redundant limbs."""
        return float(len(self.limbs) - self.redundant.sum())

    def index(self, name: str) -> int:
        return self.keypoints.index(name)

    def with_limb_order(self, order) -> Layout:
        """The same skeleton with its limbs (and their PAF channels and redundant flags) listed in another order."""
        order = np.asarray(order)
        return Layout(self.keypoints, self.limbs[order], self.paf_channels[order], self.redundant[order],
                      self.background_channel)


def load_layout(sidecar: Path = SIDECAR) -> Layout:
    data = json.loads(sidecar.read_text())
    redundant = np.zeros(len(data["limbs"]), np.bool_)
    redundant[data.get("redundant_limbs", [])] = True
    return Layout(
        keypoints=tuple(data["keypoints"]),
        limbs=np.asarray(data["limbs"], np.int32),
        paf_channels=np.asarray(data["paf_channels"], np.int32),
        redundant=redundant,
        background_channel=bool(data["background_channel"]),
    )


HPE_0001 = load_layout()

# A person facing the camera, about 27 map pixels from nose to ankles, relative to the point between the hips.
# Their right side is on the image's left. Keyed by name so the table reads as a body.
STANDING_POSE = {
    "nose": (0.0, -13.0), "neck": (0.0, -9.5),
    "right_shoulder": (-3.6, -9.2), "right_elbow": (-4.8, -4.4), "right_wrist": (-5.4, 0.3),
    "left_shoulder": (3.6, -9.2), "left_elbow": (4.8, -4.4), "left_wrist": (5.4, 0.3),
    "right_hip": (-2.0, 0.0), "right_knee": (-2.2, 6.6), "right_ankle": (-2.4, 13.4),
    "left_hip": (2.0, 0.0), "left_knee": (2.2, 6.6), "left_ankle": (2.4, 13.4),
    "right_eye": (-0.9, -14.2), "left_eye": (0.9, -14.2), "right_ear": (-2.0, -13.6), "left_ear": (2.0, -13.6),
}


def standing_person(centre_x: float, centre_y: float, scale: float = 1.0, layout: Layout = HPE_0001,
                    without: tuple[str, ...] = ()) -> Person:
    """The standing pose placed with its hip centre at (centre_x, centre_y); ``without`` names missing keypoints."""
    return {
        layout.index(name): (centre_x + scale * dx, centre_y + scale * dy)
        for name, (dx, dy) in STANDING_POSE.items() if name not in without
    }


def render_maps(people: list[Person], height: int = MAP_HEIGHT, width: int = MAP_WIDTH, sigma: float = 1.5,
                limb_width: float = 1.0, layout: Layout = HPE_0001,
                amplitudes: list[float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """-> (heatmaps C x H x W float32, pafs 2L x H x W float32) for one frame.

    ``amplitudes`` scales each person's blobs (default 1.0: a blob centred on a pixel peaks at exactly 1).
    """
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    heatmaps = np.zeros((layout.heatmap_channels, height, width), np.float64)
    for person, amplitude in zip(people, amplitudes or [1.0] * len(people)):
        for keypoint, (x, y) in person.items():
            blob = amplitude * np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2.0 * sigma ** 2))
            heatmaps[keypoint] = np.maximum(heatmaps[keypoint], blob)
    if layout.background_channel:
        heatmaps[layout.num_keypoints] = 1.0 - heatmaps[:layout.num_keypoints].max(axis=0)

    pafs = np.zeros((2 * len(layout.limbs), height, width), np.float64)
    for (ka, kb), (channel_x, channel_y) in zip(layout.limbs, layout.paf_channels):
        vector_sum = np.zeros((2, height, width))
        covering = np.zeros((height, width))
        for person in people:
            if ka not in person or kb not in person:
                continue
            (xa, ya), (xb, yb) = person[ka], person[kb]
            length = np.hypot(xb - xa, yb - ya)
            if length < 1e-6:
                continue
            ux, uy = (xb - xa) / length, (yb - ya) / length
            along = (xs - xa) * ux + (ys - ya) * uy
            across = np.abs((xs - xa) * uy - (ys - ya) * ux)
            # The band around the segment, a limb width past either end like OpenPose's bounding box.
            inside = (across <= limb_width) & (along >= -limb_width) & (along <= length + limb_width)
            vector_sum[0][inside] += ux
            vector_sum[1][inside] += uy
            covering[inside] += 1
        covered = covering > 0
        pafs[channel_x][covered] = vector_sum[0][covered] / covering[covered]
        pafs[channel_y][covered] = vector_sum[1][covered] / covering[covered]
    return heatmaps.astype(np.float32), pafs.astype(np.float32)


def render_batch(frames: list[list[Person]], **render_options) -> tuple[np.ndarray, np.ndarray]:
    """Several frames -> (N x C x H x W, N x 2L x H x W), the layout the network hands the parse."""
    rendered = [render_maps(people, **render_options) for people in frames]
    return np.stack([h for h, _ in rendered]), np.stack([p for _, p in rendered])


def random_people(rng: np.random.Generator, count: int, height: int = MAP_HEIGHT, width: int = MAP_WIDTH,
                  missing_probability: float = 0.1, layout: Layout = HPE_0001) -> list[Person]:
    """``count`` people: the standing pose scaled, tilted, jittered, with keypoints dropped at random.

    They may overlap and may stand partly off the map (those keypoints are dropped): parity needs variety, not
    well-posed scenes.
    """
    people = []
    for _ in range(count):
        centre_x = rng.uniform(0.0, width)
        centre_y = rng.uniform(0.3 * height, 0.8 * height)
        scale = rng.uniform(0.45, 1.2)
        angle = rng.uniform(-0.4, 0.4)
        cos, sin = np.cos(angle), np.sin(angle)
        person = {}
        for name, (dx, dy) in STANDING_POSE.items():
            if rng.random() < missing_probability:
                continue
            dx, dy = scale * dx + rng.normal(0.0, 0.6), scale * dy + rng.normal(0.0, 0.6)
            x, y = centre_x + cos * dx - sin * dy, centre_y + sin * dx + cos * dy
            if 0.0 <= x <= width - 1 and 0.0 <= y <= height - 1:
                person[layout.index(name)] = (float(x), float(y))
        people.append(person)
    return people


def add_noise(heatmaps: np.ndarray, pafs: np.ndarray, rng: np.random.Generator, level: float = 0.03,
              spurious_blobs: int = 3, sigma: float = 1.5,
              layout: Layout = HPE_0001) -> tuple[np.ndarray, np.ndarray]:
    """Network-like imperfections on one frame: Gaussian noise everywhere, heatmaps clipped to [0, 1] (which
    also makes flat tops, exercising the plateau rule), and a few isolated blobs with no PAF support."""
    height, width = heatmaps.shape[1:]
    ys, xs = np.mgrid[0:height, 0:width]
    heatmaps = heatmaps + rng.normal(0.0, level, heatmaps.shape)
    for _ in range(spurious_blobs):
        keypoint = rng.integers(layout.num_keypoints)
        x, y, amplitude = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(0.2, 1.0)
        blob = amplitude * np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2.0 * sigma ** 2))
        heatmaps[keypoint] = np.maximum(heatmaps[keypoint], blob)
    pafs = pafs + rng.normal(0.0, level, pafs.shape)
    return np.clip(heatmaps, 0.0, 1.0).astype(np.float32), pafs.astype(np.float32)
