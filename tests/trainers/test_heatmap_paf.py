"""The training path: targets and masks, dataset readers, mosaics and flips, config errors, and a short
real `posestream train` run (loss falls, checkpoints in the shared format, resume continues exactly)."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.helpers import REPO

torch = pytest.importorskip("torch")

from posestream.pipeline.cli.main import main as cli_main  # noqa: E402
from posestream.pipeline.core.errors import PosestreamError  # noqa: E402
from posestream.pipeline.inference.preprocess import Letterbox  # noqa: E402
from posestream.pipeline.networks.layout import (  # noqa: E402
    FLIP_KEYPOINTS,
    HEATMAP_CHANNELS,
    KEYPOINTS,
    LIMBS,
    NUM_KEYPOINTS,
    PAF_CHANNEL_COUNT,
)
from posestream.trainers.common.augment import AugmentConfig, PoseSample, augment, plan_warp, warp_sample  # noqa: E402
from posestream.trainers.heatmap_paf.config import load_train_config  # noqa: E402
from posestream.trainers.heatmap_paf.datasets import (  # noqa: E402
    CocoSource,
    MosaicConfig,
    MosaicSource,
    SinglePersonSet,
    rasterise_ignore,
    read_coco_people,
    read_lsp_people,
)
from posestream.trainers.heatmap_paf.targets import TargetConfig, cell_centres, make_targets  # noqa: E402

K = {name: i for i, name in enumerate(KEYPOINTS)}
TINY_CONFIG = REPO / "trainers" / "configs" / "tiny.toml"
NO_JITTER = dict(brightness=0.0, contrast=0.0, saturation=0.0)


def person(points: dict[str, tuple[float, float]]) -> np.ndarray:
    """One 18 x 3 keypoint array with the named points labelled."""
    keypoints = np.zeros((NUM_KEYPOINTS, 3), np.float32)
    for name, (x, y) in points.items():
        keypoints[K[name]] = (x, y, 2)
    return keypoints


def limb_index(a: str, b: str) -> int:
    return LIMBS.index((K[a], K[b]))


# ----------------------------------------------------------------------------------------------
# Targets


def test_heatmap_peaks_sit_on_the_keypoints():
    config = TargetConfig(sigma=6.0, paf_width=8.0)
    centres = cell_centres(32, 8)
    # On cell centres (exact peak 1) and between cells (peak in the nearest cell).
    people = np.stack([person({"nose": (centres[5], centres[7]), "left_wrist": (centres[20], centres[3])}),
                       person({"nose": (centres[25] + 2.0, centres[28] - 1.0)})])
    targets = make_targets(people, np.zeros((2, 4)), None, 256, 256, config)
    nose = targets.heatmaps[K["nose"]]
    assert nose[7, 5] == pytest.approx(1.0)
    assert nose[28, 25] == pytest.approx(np.exp(-(2.0 ** 2 + 1.0 ** 2) / (2 * 6.0 ** 2)), rel=1e-5)
    assert nose.max() <= 1.0  # the max over people, never a sum
    assert np.unravel_index(targets.heatmaps[K["left_wrist"]].argmax(), (32, 32)) == (3, 20)
    # A neighbouring cell 8 px away follows the Gaussian of sigma 6.
    assert nose[7, 6] == pytest.approx(np.exp(-64 / 72), rel=1e-5)
    assert targets.heatmaps[K["right_ankle"]].max() == 0.0
    background = targets.heatmaps[-1]
    np.testing.assert_allclose(background, 1.0 - targets.heatmaps[:-1].max(axis=0))
    assert targets.heatmaps.shape == (HEATMAP_CHANNELS, 32, 32)


def test_paf_points_along_the_limb_inside_its_band_only():
    config = TargetConfig(sigma=7.0, paf_width=8.0)
    centres = cell_centres(32, 8)
    y = centres[16]
    start, end = centres[6], centres[26]
    one = person({"neck": (start, y), "right_shoulder": (end, y)})  # limb neck -> right shoulder, along +x
    targets = make_targets(one[None], np.zeros((1, 4)), None, 256, 256, config)
    limb = limb_index("neck", "right_shoulder")
    fx, fy = targets.pafs[2 * limb], targets.pafs[2 * limb + 1]
    np.testing.assert_allclose(fx[16, 6:27], 1.0)  # on the segment, ends included
    np.testing.assert_allclose(fx[15, 6:27], 1.0)  # one cell (8 px = paf_width) off it: still in the band
    assert np.all(fx[14] == 0) and np.all(fx[18] == 0)  # 16 px off: outside
    assert fx[16, 5] == 0 and fx[16, 27] == 0  # beyond the ends
    assert np.all(fy == 0)
    other = [c for c in range(PAF_CHANNEL_COUNT) if c not in (2 * limb, 2 * limb + 1)]
    assert np.all(targets.pafs[other] == 0)

    # Two people's limbs crossing at right angles: the field is their average where both cover a cell.
    down = person({"neck": (centres[16], centres[6]), "right_shoulder": (centres[16], centres[26])})
    crossing = make_targets(np.stack([one, down]), np.zeros((2, 4)), None, 256, 256, config)
    assert crossing.pafs[2 * limb, 16, 16] == pytest.approx(0.5)
    assert crossing.pafs[2 * limb + 1, 16, 16] == pytest.approx(0.5)
    assert crossing.pafs[2 * limb, 16, 10] == pytest.approx(1.0)  # only the horizontal limb there


def test_masks_hide_unlabelled_keypoints_and_ignore_regions():
    config = TargetConfig()
    centres = cell_centres(32, 8)
    # A person labelled everywhere except the left wrist, boxed in cells 4..11 x 4..11.
    points = {name: (centres[8], centres[8]) for name in KEYPOINTS if name != "left_wrist"}
    labelled = person(points)
    box = np.array([[centres[4], centres[4], centres[11], centres[11]]], np.float32)
    ignore = np.zeros((256, 256), np.uint8)
    ignore[200:216, 100:120] = 1  # a crowd: cells rows 25-26, columns 12-14
    targets = make_targets(labelled[None], box, ignore, 256, 256, config)
    mask = targets.mask
    assert mask.shape == (HEATMAP_CHANNELS + PAF_CHANNEL_COUNT, 32, 32)
    wrist = K["left_wrist"]
    assert np.all(mask[wrist, 4:12, 4:12] == 0)  # unknown inside the person's box ...
    assert mask[wrist, 3, 8] == 1 and mask[wrist, 12, 8] == 1 and mask[wrist, 8, 3] == 1  # ... known outside
    assert np.all(mask[K["nose"], 4:12, 4:12] == 1)  # labelled keypoints are supervised there
    assert np.all(mask[HEATMAP_CHANNELS - 1, 4:12, 4:12] == 0)  # background unknown where a keypoint is
    elbow_wrist = limb_index("left_elbow", "left_wrist")
    neck_shoulder = limb_index("neck", "left_shoulder")
    for channel in (HEATMAP_CHANNELS + 2 * elbow_wrist, HEATMAP_CHANNELS + 2 * elbow_wrist + 1):
        assert np.all(mask[channel, 4:12, 4:12] == 0)
        assert mask[channel, 20, 20] == 1
    assert np.all(mask[HEATMAP_CHANNELS + 2 * neck_shoulder, 4:12, 4:12] == 1)
    # The ignore region is unknown in every channel, and only there.
    assert np.all(mask[:, 25:27, 12:15] == 0)
    assert np.all(mask[:, 24, 12:15] == 1) and np.all(mask[:, 25:27, 16] == 1)


def test_targets_parse_back_to_the_people():
    """The targets follow the parse's conventions: maps made from people give those people back."""
    from posestream.pipeline.core.skeleton import COCO17_NAMES
    from posestream.pipeline.estimators.bottomup import BottomUpEstimator, EstimatorConfig
    from posestream.pipeline.networks.models import build_model
    from posestream.trainers.heatmap_paf.estimator import TrainingModelBackend, training_model_spec

    spec = training_model_spec("lightpose-tiny", 256, 256)
    backend = TrainingModelBackend(build_model("lightpose-tiny"), torch.device("cpu"), spec)
    estimator = BottomUpEstimator(spec, backend, EstimatorConfig())  # only its parse is used here
    body = {"nose": (60, 40), "neck": (60, 70), "right_shoulder": (40, 72), "right_elbow": (34, 100),
            "right_wrist": (30, 128), "left_shoulder": (80, 72), "left_elbow": (86, 100), "left_wrist": (90, 128),
            "right_hip": (48, 140), "right_knee": (46, 180), "right_ankle": (44, 220), "left_hip": (72, 140),
            "left_knee": (74, 180), "left_ankle": (76, 220), "right_eye": (55, 36), "left_eye": (65, 36),
            "right_ear": (50, 40), "left_ear": (70, 40)}
    first = person(body)
    second = person({name: (x + 120, y + 10) for name, (x, y) in body.items()})
    people = np.stack([first, second])
    targets = make_targets(people, np.zeros((2, 4)), None, 256, 256, TargetConfig(sigma=5.0, paf_width=6.0))
    found = estimator.parse(targets.heatmaps[None], targets.pafs[None], Letterbox(1.0, 0, 0, 256, 256, 256, 256))[0]
    assert len(found) == 2
    coco_from_layout = [K[name] for name in COCO17_NAMES]
    found = sorted(found, key=lambda p: p.keypoints[:, 0].mean())
    for truth, result in zip(people, found):
        assert np.all(result.keypoints[:, 2] > 0)
        np.testing.assert_allclose(result.keypoints[:, :2], truth[coco_from_layout, :2], atol=1.0)


# ----------------------------------------------------------------------------------------------
# Readers


def test_lsp_labels_occluded_joints_and_neck_is_the_shoulder_midpoint(shared):
    people = read_lsp_people(shared / "data" / "lsp", "train", max_items=5)
    assert len(people) == 5
    # im0004: LSP flags its left hip, left knee and left shoulder (joints 3, 4, 9) as occluded; they
    # still have a real position, so they are labelled.
    import scipy.io
    joints = scipy.io.loadmat(str(shared / "data" / "lsp" / "joints.mat"))["joints"][:, :, 3].T
    assert joints[3, 2] == 1 and joints[9, 2] == 1
    keypoints = people.keypoints[3]
    assert keypoints[K["left_hip"], 2] > 0 and keypoints[K["left_shoulder"], 2] > 0
    np.testing.assert_allclose(keypoints[K["left_hip"], :2], joints[3, :2], atol=1e-4)
    np.testing.assert_allclose(keypoints[K["right_wrist"], :2], joints[6, :2], atol=1e-4)
    np.testing.assert_allclose(keypoints[K["neck"], :2], (joints[8, :2] + joints[9, :2]) / 2, atol=1e-4)
    assert np.all(keypoints[[K[n] for n in ("nose", "left_eye", "right_eye", "left_ear", "right_ear")], 2] == 0)
    # The box covers the head top too (it has no keypoint slot).
    box = people.boxes[3]
    assert box[1] < joints[13, 1] and box[0] <= joints[:, 0].min() and box[2] >= joints[:, 0].max()
    assert read_lsp_people(shared / "data" / "lsp", "test", max_items=3).image_paths[0].name == "im1001.jpg"


def test_lspet_labels_only_visible_joints(shared):
    people = read_lsp_people(shared / "data" / "lspet", "all", max_items=3)
    import scipy.io
    joints = scipy.io.loadmat(str(shared / "data" / "lspet" / "joints.mat"))["joints"]
    # im00001: right ankle flagged not visible and sitting at y < 0; im00003: right wrist and elbow not visible.
    assert joints[0, 2, 0] == 0 and people.keypoints[0, K["right_ankle"], 2] == 0
    assert joints[6, 2, 2] == 0 and people.keypoints[2, K["right_wrist"], 2] == 0
    assert joints[7, 2, 2] == 0 and people.keypoints[2, K["right_elbow"], 2] == 0
    assert joints[1, 2, 0] == 1 and people.keypoints[0, K["right_knee"], 2] > 0
    np.testing.assert_allclose(people.keypoints[0, K["right_knee"], :2], joints[1, :2, 0], atol=1e-4)
    # Unlabelled points carry no position (never a negative coordinate in the targets).
    assert np.all(people.keypoints[people.keypoints[..., 2] == 0, :2] == 0)


def uncompressed_rle(mask: np.ndarray) -> list[int]:
    """COCO's uncompressed RLE: run lengths over the column-major pixels, starting with a run of zeros."""
    flat = mask.ravel(order="F")
    changes = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], changes, [flat.size]])).tolist()
    return ([0] + runs) if flat[0] else runs


def test_coco_mapping_neck_and_ignore_regions(shared, tmp_path):
    image_dir = shared / "data" / "coco-mini-train" / "images"
    image_name = sorted(p.name for p in image_dir.iterdir())[0]
    height, width = cv2.imread(str(image_dir / image_name)).shape[:2]
    crowd = np.zeros((height, width), np.uint8)
    crowd[:30, :40] = 1
    coco17 = np.zeros((17, 3))
    coco17[0] = (100, 50, 2)  # nose
    coco17[5] = (120, 90, 2)  # left shoulder
    coco17[6] = (80, 94, 1)  # right shoulder, occluded but labelled
    coco17[9] = (130, 150, 2)  # left wrist
    one_shoulder = np.zeros((17, 3))
    one_shoulder[5] = (300, 90, 2)
    one_shoulder[11] = (300, 200, 2)
    annotations = [
        {"id": 1, "image_id": 7, "category_id": 1, "iscrowd": 0, "num_keypoints": 4, "bbox": [60, 40, 90, 160],
         "keypoints": coco17.ravel().tolist()},
        {"id": 2, "image_id": 7, "category_id": 1, "iscrowd": 0, "num_keypoints": 2, "bbox": [280, 80, 50, 140],
         "keypoints": one_shoulder.ravel().tolist()},
        {"id": 3, "image_id": 7, "category_id": 1, "iscrowd": 1, "num_keypoints": 0, "bbox": [0, 0, 40, 30],
         "segmentation": {"counts": uncompressed_rle(crowd), "size": [height, width]}},
        {"id": 4, "image_id": 7, "category_id": 1, "iscrowd": 0, "num_keypoints": 0, "bbox": [10, 200, 20, 20],
         "segmentation": [[10, 200, 30, 200, 30, 220, 10, 220]]},
    ]
    json_path = tmp_path / "people.json"
    json_path.write_text(json.dumps({
        "images": [{"id": 7, "file_name": image_name, "height": height, "width": width},
                   {"id": 8, "file_name": sorted(p.name for p in image_dir.iterdir())[1], "height": 1, "width": 1}],
        "annotations": annotations, "categories": [{"id": 1, "name": "person"}]}))
    coco = read_coco_people(image_dir, json_path)
    assert len(coco.images) == 1 and len(coco.backgrounds) == 1  # image 8 has no person: a background
    record = coco.images[0]
    assert record.keypoints.shape == (2, NUM_KEYPOINTS, 3)
    first = record.keypoints[0]
    np.testing.assert_allclose(first[K["nose"]], (100, 50, 2))
    np.testing.assert_allclose(first[K["left_wrist"]], (130, 150, 2))
    np.testing.assert_allclose(first[K["right_shoulder"]], (80, 94, 1))
    np.testing.assert_allclose(first[K["neck"]], (100, 92, 1))  # midpoint; visibility of the lesser
    assert record.keypoints[1, K["neck"], 2] == 0  # one shoulder only: no neck
    np.testing.assert_allclose(record.boxes[0], (60, 40, 150, 200))
    ignore = rasterise_ignore(record.ignore_regions, height, width)
    assert ignore[:30, :40].all() and not ignore[31:190, 41:].any()  # the crowd's RLE, column-major
    assert ignore[205, 20] == 1  # the unlabelled person's polygon

    # Through a source and the warp: the crowd stays an ignore region in input pixels.
    sample = CocoSource(coco).draw(np.random.default_rng(0))
    assert sample.ignore is not None and sample.ignore.shape == (height, width)


def test_coco_mini_train_reads(shared):
    coco = read_coco_people(shared / "data" / "coco-mini-train" / "images",
                            shared / "data" / "coco-mini-train" / "person_keypoints_train2017.json")
    assert sum(len(r.keypoints) for r in coco.images) == 86  # the 86 labelled people of the README
    assert any(r.ignore_regions for r in coco.images)
    assert len(coco.backgrounds) > 0


# ----------------------------------------------------------------------------------------------
# Mosaics and flips, checked with synthetic people whose keypoints are painted green


GREEN = np.array([0, 255, 0])


def painted_people(folder: Path, count: int = 3) -> SinglePersonSet:
    rng = np.random.default_rng(1)
    paths, keypoints, boxes = [], [], []
    for i in range(count):
        image = np.zeros((160, 120, 3), np.uint8)
        points = np.zeros((NUM_KEYPOINTS, 3), np.float32)
        for k in range(1, NUM_KEYPOINTS - 4):  # body keypoints only, like LSP
            x, y = rng.uniform(20, 100), rng.uniform(20, 140)
            points[k] = (x, y, 1)
            cv2.rectangle(image, (int(x) - 6, int(y) - 6), (int(x) + 6, int(y) + 6), (0, 255, 0), -1)
        path = folder / f"person{i}.png"
        cv2.imwrite(str(path), image)
        paths.append(path)
        keypoints.append(points)
        boxes.append((5, 5, 115, 155))
    return SinglePersonSet("painted", tuple(paths), np.array(keypoints), np.array(boxes, np.float32))


def on_green(image: np.ndarray, points: np.ndarray) -> np.ndarray:
    """For each labelled point, whether the pixel under it is (nearly) the painted green."""
    labelled = points[:, 2] > 0
    x = np.clip(np.round(points[labelled, 0]).astype(int), 0, image.shape[1] - 1)
    y = np.clip(np.round(points[labelled, 1]).astype(int), 0, image.shape[0] - 1)
    return np.abs(image[y, x].astype(int) - GREEN).max(axis=1) < 60


def test_mosaic_keypoints_land_on_the_pasted_people(tmp_path):
    people = painted_people(tmp_path)
    source = MosaicSource((people,), (), 256, 256, MosaicConfig(people_min=3, people_max=3))
    pasted = 0
    for seed in range(8):
        sample = source.draw(np.random.default_rng(seed))
        assert sample.image.shape == (256, 256, 3)
        for points, box in zip(sample.keypoints, sample.boxes):
            labelled = points[:, 2] > 0
            assert on_green(sample.image, points).all()
            assert np.all(points[labelled, 0] >= box[0]) and np.all(points[labelled, 0] <= box[2])
            assert np.all(points[labelled, 1] >= box[1]) and np.all(points[labelled, 1] <= box[3])
            pasted += 1
        # And after the random warp and flip, still on the green marks.
        warped = augment(sample, 256, 256, np.random.default_rng(seed), AugmentConfig(**NO_JITTER))
        for points in warped.keypoints:
            inside = (points[:, 0] >= 2) & (points[:, 0] < 254) & (points[:, 1] >= 2) & (points[:, 1] < 254)
            assert on_green(warped.image, np.where(inside[:, None], points, 0)).all()
    assert pasted >= 16  # most tries place all three people


def test_flip_mirrors_the_image_and_swaps_left_and_right():
    image = np.zeros((64, 64, 3), np.uint8)
    image[10, 5] = 255
    keypoints = person({"left_wrist": (5, 10), "right_wrist": (50, 12), "nose": (30, 8)})[None]
    sample = PoseSample(image=image, keypoints=keypoints, boxes=np.array([[0, 0, 63, 63]], np.float32),
                        ignore=None, centre=(31.5, 31.5), size=64)
    config = AugmentConfig(scale_min=1, scale_max=1, rotation_degrees=0, translate=0, flip_probability=1)
    matrix, flipped = plan_warp(sample.centre, sample.size, 64, 64, np.random.default_rng(0), config)
    assert flipped
    out = warp_sample(sample, matrix, flipped, 64, 64)
    np.testing.assert_array_equal(out.image, image[:, ::-1])
    # The wrist drawn at x=5 is now at x=58, and it is the person's left wrist seen mirrored: a right wrist.
    np.testing.assert_allclose(out.keypoints[0, K["right_wrist"]], (58, 10, 2), atol=1e-4)
    np.testing.assert_allclose(out.keypoints[0, K["left_wrist"]], (13, 12, 2), atol=1e-4)
    np.testing.assert_allclose(out.keypoints[0, K["nose"]], (33, 8, 2), atol=1e-4)
    assert all(FLIP_KEYPOINTS[FLIP_KEYPOINTS[k]] == k for k in range(NUM_KEYPOINTS))


# ----------------------------------------------------------------------------------------------
# Configs and the command


def test_config_errors_name_the_file_and_key(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text(TINY_CONFIG.read_text().replace("lr = 3e-3", 'lr = "fast"'))
    with pytest.raises(PosestreamError) as error:
        load_train_config(bad)
    assert str(bad) in str(error.value) and "[train] lr" in str(error.value)

    bad.write_text(TINY_CONFIG.read_text().replace("batch_size = 4", "batch_size = 4\nbatch = 4"))
    assert cli_main(["train", "--config", str(bad), "--out", str(tmp_path / "run")]) == 1
    message = capsys.readouterr().err
    assert str(bad) in message and "unknown key [train] batch" in message

    bad.write_text(TINY_CONFIG.read_text().replace('people = ["lsp-train"]', 'people = ["lspet"]'))
    with pytest.raises(PosestreamError, match=r"\(mosaics\) people names 'lspet'"):
        load_train_config(bad)


def test_shipped_configs_load():
    for name in ("tiny", "default-cpu", "default-gpu", "lwo-finetune-cpu"):
        config = load_train_config(TINY_CONFIG.parent / f"{name}.toml")
        assert config.datasets


def train_losses(run: Path) -> dict[int, float]:
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in lines if r["kind"] == "train"}


def test_train_command_loss_falls_checkpoints_and_resumes(shared, tmp_path):
    run = tmp_path / "run"
    assert cli_main(["train", "--config", str(TINY_CONFIG), "--out", str(run), "--max-iters", "40"]) == 0
    losses = train_losses(run)
    assert sorted(losses) == list(range(1, 41))
    first, last = np.mean([losses[s] for s in range(1, 11)]), np.mean([losses[s] for s in range(31, 41)])
    assert last < 0.7 * first, (first, last)

    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    validations = [r for r in records if r["kind"] == "validation"]
    assert [v["step"] for v in validations] == [20, 40]
    assert validations[-1]["lsp.images"] == 8 and "coco.AP" in validations[-1]
    for name in ("last.pt", "best.pt", "epoch-001.pt", "epoch-002.pt", "loss.png", "metrics.png", "config.toml"):
        assert (run / name).is_file(), name

    data = torch.load(run / "last.pt", weights_only=True)
    assert data["format"] == "posestream.checkpoint/1"
    assert data["model_name"] == "lightpose-tiny" and data["input_size"] == [128, 128]
    assert data["step"] == 40 and data["epoch"] == 2
    assert data["optimizer"]["state"] and data["train_config"]["train"]["batch_size"] == 4
    assert set(data["model_config"]) >= {"backbone_widths", "features", "refinement_stages"}
    from posestream.pipeline.networks.models import build_network, config_from_dict
    assert data["model_config"]["family"] == "posenet"
    build_network(config_from_dict(data["model_config"])).load_state_dict(data["model"])

    # Resuming from epoch 1 repeats steps 21-40 exactly: same weights, optimizer state, data and rate.
    resumed = tmp_path / "resumed"
    assert cli_main(["train", "--config", str(TINY_CONFIG), "--out", str(resumed), "--resume",
                     str(run / "epoch-001.pt"), "--max-iters", "40"]) == 0
    again = train_losses(resumed)
    assert sorted(again) == list(range(21, 41))
    assert again[21] == pytest.approx(losses[21], rel=1e-3)
    assert torch.load(resumed / "last.pt", weights_only=True)["step"] == 40


def test_loss_is_masked_mse_and_foreground_weight_favours_people():
    from posestream.trainers.heatmap_paf.loss import empty_prediction_loss, pose_loss

    generator = torch.Generator().manual_seed(0)
    heatmaps = torch.zeros(2, HEATMAP_CHANNELS, 4, 4)
    heatmaps[:, -1] = 1.0
    heatmaps[0, 3, 1, 2] = 1.0  # one keypoint peak
    heatmaps[0, -1, 1, 2] = 0.0
    pafs = torch.zeros(2, PAF_CHANNEL_COUNT, 4, 4)
    pafs[1, 4, 2, :] = 1.0  # one limb's x field
    mask = torch.ones(2, HEATMAP_CHANNELS + PAF_CHANNEL_COUNT, 4, 4)
    mask[1, :, 0, 0] = 0.0
    predicted = (torch.rand(heatmaps.shape, generator=generator), torch.rand(pafs.shape, generator=generator))
    stages = [predicted, predicted]
    total, heatmap_part, paf_part = pose_loss(stages, heatmaps, pafs, mask)
    expected_heatmaps = ((predicted[0] - heatmaps) ** 2 * mask[:, :HEATMAP_CHANNELS]).sum() / 4
    expected_pafs = ((predicted[1] - pafs) ** 2 * mask[:, HEATMAP_CHANNELS:]).sum() / 4
    assert heatmap_part.item() == pytest.approx(expected_heatmaps.item(), rel=1e-5)
    assert paf_part.item() == pytest.approx(expected_pafs.item(), rel=1e-5)
    assert total.item() == pytest.approx(2 * (expected_heatmaps + expected_pafs).item(), rel=1e-5)

    # Weighted: the error at the peak and on the limb counts 1 + 10 times; logged parts stay unweighted.
    weighted, heatmap_again, _ = pose_loss(stages, heatmaps, pafs, mask, foreground_weight=10.0)
    extra = 10 * ((predicted[0][0, 3, 1, 2] - 1) ** 2 + predicted[0][0, -1, 1, 2] ** 2
                  + ((predicted[1][1, 4, 2] - 1) ** 2).sum()) / 4
    assert weighted.item() == pytest.approx(total.item() + 2 * extra.item(), rel=1e-5)
    assert heatmap_again.item() == pytest.approx(heatmap_part.item(), rel=1e-6)

    # Predicting nobody scores exactly the empty-prediction loss.
    empty = (torch.zeros_like(heatmaps), torch.zeros_like(pafs))
    empty[0][:, -1] = 1.0
    _, heatmap_empty, paf_empty = pose_loss([empty], heatmaps, pafs, mask)
    reference = empty_prediction_loss(heatmaps, pafs, mask)
    assert heatmap_empty.item() == pytest.approx(reference[0].item())
    assert paf_empty.item() == pytest.approx(reference[1].item())


def test_init_from_starts_at_step_0_from_the_weights_and_frozen_blocks_stay(shared, tmp_path):
    from posestream.pipeline.networks.checkpoint import load_checkpoint, save_checkpoint
    from posestream.pipeline.networks.models import build_model

    torch.manual_seed(5)
    start = build_model("lightpose-tiny")
    save_checkpoint(tmp_path / "start.pt", start, "lightpose-tiny", (128, 128), step=77)
    config = tmp_path / "frozen.toml"
    config.write_text(TINY_CONFIG.read_text().replace("[train]\n", "[train]\nfrozen_backbone_blocks = 2\n")
                      .replace("${POSESTREAM_SHARED}", str(shared)))
    run = tmp_path / "run"
    assert cli_main(["train", "--config", str(config), "--out", str(run), "--init-from", str(tmp_path / "start.pt"),
                     "--max-iters", "3"]) == 0
    assert sorted(train_losses(run)) == [1, 2, 3]  # step 0, not the checkpoint's 77
    trained = load_checkpoint(run / "last.pt").model_state
    initial = start.state_dict()
    frozen = [k for k in initial if k.startswith(("backbone.0.", "backbone.1."))]
    assert frozen and all(torch.equal(trained[k], initial[k]) for k in frozen if "running" not in k
                          and "num_batches" not in k)
    assert any(not torch.equal(trained[k], initial[k]) for k in initial if k.startswith("initial."))


def test_init_from_a_checkpoint_of_another_network_fails_naming_it(shared, tmp_path, capsys):
    from posestream.pipeline.networks.checkpoint import save_checkpoint
    from posestream.pipeline.networks.models import build_model

    save_checkpoint(tmp_path / "other.pt", build_model("lightpose-xs"), "lightpose-xs", (256, 256))
    assert cli_main(["train", "--config", str(TINY_CONFIG), "--out", str(tmp_path / "run"), "--init-from",
                     str(tmp_path / "other.pt"), "--max-iters", "1"]) == 1
    error = capsys.readouterr().err
    assert "other.pt" in error and "lightpose-tiny" in error
