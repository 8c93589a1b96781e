"""Bottom-up pose estimation: letterbox -> heatmap+PAF network -> kernels parse -> people in image pixels."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from posestream import kernels
from posestream.kernels import ParseConfig, SkeletonTables  # noqa: F401  (ParseConfig is part of this module's API)
from posestream.kernels.flip import flip_tables, merge_flipped_cpu
from posestream.kernels.upsample import upsample_cpu
from posestream.pipeline.core.errors import PosestreamError
from posestream.pipeline.core.model import ModelSpec
from posestream.pipeline.core.skeleton import coco17_index_map
from posestream.pipeline.core.types import Person
from posestream.pipeline.inference.backends import Backend
from posestream.pipeline.inference.preprocess import Letterbox, fill_input, plan_letterbox


def skeleton_tables(spec: ModelSpec) -> SkeletonTables:
    """A model's skeleton (from its sidecar) as the parse kernels read it."""
    redundant = np.zeros(len(spec.limbs), np.bool_)
    redundant[list(spec.redundant_limbs)] = True
    return SkeletonTables(num_keypoints=spec.num_keypoints, limbs=np.asarray(spec.limbs, np.int32).reshape(-1, 2),
                          paf_channels=np.asarray(spec.paf_channels, np.int32).reshape(-1, 2), redundant=redundant)


def parse_buffers_for(buffers: kernels.ParseBuffers | None, frames: int, spec: ModelSpec,
                      config: ParseConfig) -> kernels.ParseBuffers:
    """``buffers`` when they hold ``frames`` frames, else new ones: allocated once per larger batch, then reused."""
    if buffers is None or buffers.batch_capacity < frames:
        buffers = kernels.allocate_parse_buffers(frames, spec.num_keypoints, len(spec.limbs), config.max_peaks,
                                                 config.max_people)
    return buffers


# The fewest rows of map a network input may give: a person filling the frame then spans about 8 cells,
# the least over which a limb's PAF line integral still has several samples.
MIN_MAP_ROWS = 8


@dataclass(frozen=True)
class EstimatorConfig:
    input_height: int | None = None  # network input height for resizable models; None = sidecar's
    parse: ParseConfig = field(default_factory=ParseConfig)
    # "cpu": maps come to the host and the Numba kernels parse them. "cuda": the backend's device outputs
    # go straight into the CUDA kernels (kernels.cuda.parse_on_device) and only compact results come back.
    parse_device: str = "cpu"
    # Test-time flip: the network also sees the mirror image and the two maps are averaged (twice the
    # network time; docs/trainers.md measures the gain).
    flip: bool = False
    min_score: float = 0.0  # people scoring below this are dropped from every output


@dataclass
class EstimatorStats:
    frames: int = 0
    inference_seconds: float = 0.0
    parse_seconds: float = 0.0
    people_dropped: int = 0  # over the per-frame capacity P


class BottomUpEstimator:
    """Callable: a list of BGR images -> one list of Person per image.

    Images in one call are batched together when they share a size (a video's frames do).
    """

    def __init__(self, spec: ModelSpec, backend: Backend, config: EstimatorConfig):
        self.spec = spec
        self.backend = backend
        self.config = config
        self.input_files = spec.input_files()  # (path, role) the runtime keeps outputs off
        smallest = MIN_MAP_ROWS * spec.stride
        if config.input_height is not None and config.input_height < smallest:
            raise PosestreamError(f"--input-height {config.input_height}",
                                  f"too small: the maps would have {config.input_height // spec.stride} rows (stride "
                                  f"{spec.stride}) and no person could be assembled; use at least {smallest}")
        self.stats = EstimatorStats()
        self._tables = skeleton_tables(spec)
        index_map = np.asarray(coco17_index_map(spec.keypoints), np.int64)
        self._coco_from_model = index_map
        self._buffers: kernels.ParseBuffers | None = None
        self._flip_tables = None
        if config.flip:
            if config.parse_device == "cuda":
                raise PosestreamError("--flip", "test-time flip parses on the CPU; drop --parse-device cuda")
            try:
                self._flip_tables = flip_tables(spec.keypoints, spec.limbs, spec.paf_channels, spec.heatmap_channels)
            except ValueError as error:
                raise PosestreamError(str(spec.sidecar_path), f"--flip needs a left/right symmetric skeleton: "
                                                              f"{error}") from None
        self._device_buffers = None  # kernels.cuda.DeviceParseBuffers, for parse_device "cuda"
        self._image_people: ImagePeople | None = None
        self._device_tables = None
        if config.parse_device not in ("cpu", "cuda"):
            raise PosestreamError("parse_device", f"must be 'cpu' or 'cuda', got {config.parse_device!r}")
        if config.parse_device == "cuda" and not getattr(backend, "outputs_on_gpu", False):
            raise PosestreamError(backend.name, "cannot parse on the GPU: this backend's outputs are not on a GPU "
                                                "(use tensorrt, or torch with --device cuda; or parse on the CPU)")
        self._warm_up()

    def _warm_up(self) -> None:
        """Load (or compile) the Numba kernels now, so the first frame's latency and timings are real."""
        maps = np.zeros((1, self.spec.heatmap_channels, 4, 4), np.float32)
        pafs = np.zeros((1, self.spec.paf_channel_count, 4, 4), np.float32)
        side = 4 * self.spec.stride
        self.parse(maps, pafs, Letterbox(1.0, 0.0, 0.0, side, side, side, side))
        self.stats = EstimatorStats()

    def _buffers_for(self, frames: int) -> kernels.ParseBuffers:
        self._buffers = parse_buffers_for(self._buffers, frames, self.spec, self.config.parse)
        return self._buffers

    def __call__(self, images: list[np.ndarray]) -> list[list[Person]]:
        results: list[list[Person] | None] = [None] * len(images)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, image in enumerate(images):
            groups.setdefault(image.shape[:2], []).append(i)
        for (height, width), indices in groups.items():
            box = plan_letterbox(height, width, self.spec.input, self.spec.stride,
                                 self.backend.resizable and self.spec.input.resizable, self.config.input_height)
            people = self._estimate_batch([images[i] for i in indices], box)
            for i, found in zip(indices, people):
                results[i] = found
        return results  # type: ignore[return-value]

    def _estimate_batch(self, images: list[np.ndarray], box: Letterbox) -> list[list[Person]]:
        batch = np.empty((len(images), 3, box.input_height, box.input_width), np.float32)
        for image, slot in zip(images, batch):
            fill_input(image, box, self.spec.input, slot)
        started = time.perf_counter()
        if self.config.parse_device == "cuda":
            heatmaps, pafs = self.backend.infer_device(batch)
            inferred = time.perf_counter()
            people = self.parse_on_device(heatmaps, pafs, box)
        else:
            heatmaps, pafs = self.backend.infer(batch)
            if self._flip_tables is not None:
                heatmaps, pafs = self._average_with_mirror(batch, heatmaps, pafs)
            inferred = time.perf_counter()
            people = self.parse(heatmaps, pafs, box)
        self.stats.frames += len(images)
        self.stats.inference_seconds += inferred - started
        self.stats.parse_seconds += time.perf_counter() - inferred
        return people

    def _average_with_mirror(self, batch: np.ndarray, heatmaps: np.ndarray,
                             pafs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The maps of ``batch`` averaged with those of its mirror image (kernels/flip.py)."""
        # Copies first: a backend may hand out its own output buffers, which the next call overwrites.
        heatmaps = np.array(heatmaps, np.float32, order="C", copy=True)
        pafs = np.array(pafs, np.float32, order="C", copy=True)
        flipped_heatmaps, flipped_pafs = self.backend.infer(np.ascontiguousarray(batch[..., ::-1]))
        merge_flipped_cpu(heatmaps, pafs, np.ascontiguousarray(flipped_heatmaps, dtype=np.float32),
                          np.ascontiguousarray(flipped_pafs, dtype=np.float32), *self._flip_tables)
        return heatmaps, pafs

    def parse(self, heatmaps: np.ndarray, pafs: np.ndarray, box: Letterbox) -> list[list[Person]]:
        """Network outputs for a batch -> people in original-image pixels."""
        config = self.config.parse
        stride = float(self.spec.stride)
        if config.upsample > 1:
            heatmaps = _upsample(heatmaps, config.upsample)
            pafs = _upsample(pafs, config.upsample)
            stride /= config.upsample
        heatmaps = np.ascontiguousarray(heatmaps, dtype=np.float32)
        pafs = np.ascontiguousarray(pafs, dtype=np.float32)
        frames = heatmaps.shape[0]
        buffers = self._buffers_for(frames)
        kernels.parse_maps(heatmaps, pafs, self._tables, config, buffers)
        self.stats.people_dropped += int(buffers.people_dropped[:frames].sum())
        return self._people(buffers, frames, box, stride)

    def parse_on_device(self, heatmaps, pafs, box: Letterbox) -> list[list[Person]]:
        """Device maps (the backend's outputs, no copy) -> people; the CUDA kernels run on the backend's stream."""
        from posestream.kernels import cuda as cuda_kernels  # only this path needs numba.cuda

        config = self.config.parse
        frames = heatmaps.shape[0]
        stream = getattr(self.backend, "cuda_stream", None)
        if self._device_buffers is None or self._device_buffers.batch_capacity < frames:
            self._device_buffers = cuda_kernels.allocate_device_parse_buffers(
                frames, self.spec.num_keypoints, len(self.spec.limbs), config.max_peaks, config.max_people)
            self._device_tables = cuda_kernels.tables_on_device(self._tables)
        cuda_kernels.parse_on_device(heatmaps, pafs, self._device_tables, config, self._device_buffers, stream=stream)
        buffers = self._device_buffers.host
        self.stats.people_dropped += int(buffers.people_dropped[:frames].sum())
        stride = float(self.spec.stride) / max(1, config.upsample)
        return self._people(buffers, frames, box, stride)

    def _people(self, buffers: kernels.ParseBuffers, frames: int, box: Letterbox, stride: float) -> list[list[Person]]:
        """The parse's people of ``frames`` frames in original-image pixels, one kernel call for the batch."""
        image_people = self._image_people_for(buffers.batch_capacity, buffers.person_parts.shape[1])
        kernels.people_to_image(buffers.person_counts, buffers.person_parts, buffers.refined, buffers.peak_scores,
                                frames, self._coco_from_model, stride, box.scale, box.pad_x, box.pad_y,
                                box.image_width, box.image_height, image_people.keypoints, image_people.boxes,
                                image_people.kept)
        keypoints = image_people.keypoints[:frames].copy()  # the buffers are reused by the next batch
        min_score = self.config.min_score
        people = []
        for n in range(frames):
            found = []
            for p in range(int(buffers.person_counts[n])):
                # A person of only a neck is nothing in COCO-17 (not kept).
                if image_people.kept[n, p] and buffers.person_scores[n, p] >= min_score:
                    x, y, w, h = image_people.boxes[n, p].tolist()
                    found.append(Person(score=float(buffers.person_scores[n, p]),
                                        keypoints=keypoints[n, p], bbox=(x, y, w, h)))
            people.append(found)
        return people

    def _image_people_for(self, frames: int, max_people: int) -> ImagePeople:
        if self._image_people is None or self._image_people.kept.shape[0] < frames:
            self._image_people = ImagePeople(
                keypoints=np.zeros((frames, max_people, len(self._coco_from_model), 3), np.float32),
                boxes=np.zeros((frames, max_people, 4), np.float32), kept=np.zeros((frames, max_people), np.bool_))
        return self._image_people


@dataclass(frozen=True)
class ImagePeople:
    """people_to_image's outputs for a batch, allocated once per larger batch (see kernels.people_to_image)."""

    keypoints: np.ndarray  # N x P x 17 x 3 float32
    boxes: np.ndarray  # N x P x 4 float32
    kept: np.ndarray  # N x P bool


def _upsample(maps: np.ndarray, factor: int) -> np.ndarray:
    """N x C x H x W -> a new N x C x (H*f) x (W*f) float32 array, bicubic (kernels.upsample.upsample_cpu)."""
    n, c, h, w = maps.shape
    out = np.empty((n, c, h * factor, w * factor), np.float32)
    upsample_cpu(maps, factor, out)
    return out
