"""The DeepPose cascade: box normalisation and crops, the networks' shapes and sizes, the stage-2 jitter
statistics and sampler, the refinement samples, and a tiny real `posestream train-deeppose` run (stages
1 and 2 on a handful of LSP/LSPET images: loss falls, checkpoints written, per-stage LSP scores)."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import REPO

torch = pytest.importorskip("torch")

from posestream.pipeline.cli.main import main as cli_main  # noqa: E402
from posestream.pipeline.core.errors import PosestreamError  # noqa: E402
from posestream.trainers.deeppose.checkpoint import load_cascade, load_stage_checkpoint  # noqa: E402
from posestream.trainers.deeppose.config import load_deeppose_config  # noqa: E402
from posestream.trainers.deeppose.data import (  # noqa: E402
    LSP_FRAMING,
    DeepPoseAugment,
    JitterStatistics,
    LspSelection,
    RefinementInputs,
    RefinementSet,
    initial_boxes,
    load_image_bank,
    measure_jitter,
    reference_diameters,
    sample_jitter,
)
from posestream.trainers.deeppose.model import (  # noqa: E402
    DEEPPOSE_MODELS,
    FLIP_JOINTS,
    JOINT_COUNT,
    DeepPoseConfig,
    build_deeppose,
    copy_all_but_output,
    crop_image,
    crop_matrix,
    denormalise_points,
    model_size,
    normalise_points,
    points_in_crop,
    predict_initial,
    refine,
    torso_diameter,
)

CONFIGS = REPO / "trainers" / "configs"
TINY_CONFIG = CONFIGS / "deeppose-tiny.toml"


# ----------------------------------------------------------------------------------------------
# Boxes and crops


def test_normalisation_round_trips_and_matches_the_unrotated_crop():
    rng = np.random.default_rng(0)
    points = rng.uniform(-50, 400, (5, JOINT_COUNT, 2))
    centres = rng.uniform(50, 300, (5, 1, 2))
    sizes = rng.uniform(20, 200, (5, 1, 2))
    normalised = normalise_points(points, centres, sizes)
    np.testing.assert_allclose(denormalise_points(normalised, centres, sizes), points, atol=1e-9)
    # N(y; b) is (y - b_c) / (b_w, b_h): the box's corners sit at -0.5 and 0.5.
    corner = centres[0, 0] + sizes[0, 0] / 2
    np.testing.assert_allclose(normalise_points(corner, centres[0, 0], sizes[0, 0]), [0.5, 0.5])
    # Without rotation or mirror, the crop's frame is exactly N(·; b), and the box's edges are the
    # input's outer pixel edges (-0.5 and S - 0.5).
    matrix = crop_matrix(centres[0, 0], sizes[0, 0], 220)
    np.testing.assert_allclose(points_in_crop(points[0], matrix, 220), normalised[0], atol=1e-9)
    edge = matrix[:, :2] @ (centres[0, 0] - sizes[0, 0] / 2) + matrix[:, 2]
    np.testing.assert_allclose(edge, [-0.5, -0.5], atol=1e-9)


def marked_image(points: np.ndarray, height: int = 240, width: int = 320) -> np.ndarray:
    """A grey-green image with a 7 x 7 square per point; square j's blue value is 20 + 16 j."""
    image = np.zeros((height, width, 3), np.uint8)
    image[..., 1] = 90
    for j, (x, y) in enumerate(np.round(points).astype(int)):
        image[y - 3:y + 4, x - 3:x + 4] = (20 + 16 * j, 0, 0)
    return image


def marker_centres(crop: np.ndarray, count: int) -> np.ndarray:
    """Centroid (x, y) of each marker code's pixels in a BGR crop (NaN where the marker is not seen)."""
    blue, green = crop[..., 0].astype(int), crop[..., 1].astype(int)
    centres = np.full((count, 2), np.nan)
    for j in range(count):
        ys, xs = np.nonzero((np.abs(blue - (20 + 16 * j)) <= 3) & (green <= 3))
        if len(xs):
            centres[j] = xs.mean(), ys.mean()
    return centres


def test_rotated_mirrored_crops_carry_their_points():
    rng = np.random.default_rng(1)
    points = rng.uniform(40, 200, (6, 2))
    image = marked_image(points)
    size = 160
    for angle, flip in ((0.0, False), (0.4, False), (-0.3, True)):
        matrix = crop_matrix(np.array([120.0, 110.0]), np.array([200.0, 170.0]), size, angle, flip)
        crop = crop_image(image, matrix, size)
        expected = points_in_crop(points, matrix, size) * size + (size - 1) / 2  # back to input pixels
        seen = marker_centres(crop, len(points))
        visible = ~np.isnan(seen[:, 0])
        assert visible.sum() >= 4
        np.testing.assert_allclose(seen[visible], expected[visible], atol=1.0)
    # A mirrored crop is the unmirrored one read right to left.
    plain = crop_image(image, crop_matrix(np.array([120.0, 110.0]), np.array([200.0, 170.0]), size), size)
    mirrored = crop_image(image, crop_matrix(np.array([120.0, 110.0]), np.array([200.0, 170.0]), size, flip=True), size)
    np.testing.assert_array_equal(mirrored, plain[:, ::-1])
    assert all(FLIP_JOINTS[FLIP_JOINTS[j]] == j for j in range(JOINT_COUNT))


class MarkerFinder(torch.nn.Module):
    """A perfect 'network' for marked_image crops: every joint's output is its marker's position in the
    crop's normalised frame (0 where the marker is outside the crop). It reads the same normalised input a
    DeepPoseNet reads, so the cascade's cropping and decoding are checked against pixels."""

    def __init__(self, input_size: int):
        super().__init__()
        self.config = DeepPoseConfig(conv_widths=(1, 1, 1, 1, 1), fc_width=1, input_size=input_size)

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        size = self.config.input_size
        pixels = (batch.numpy().transpose(0, 2, 3, 1) * 256 + 128).round().clip(0, 255).astype(np.uint8)
        outputs = np.zeros((len(batch), JOINT_COUNT, 2), np.float32)
        for n, crop in enumerate(pixels):
            seen = marker_centres(crop, JOINT_COUNT)
            found = ~np.isnan(seen[:, 0])
            outputs[n, found] = (seen[found] - (size - 1) / 2) / size
        return torch.from_numpy(outputs)


def test_cascade_decodes_a_perfect_regressor_to_the_truth():
    rng = np.random.default_rng(2)
    # Joints on a jittered 5 x 3 grid inside the 320 x 240 image, so that no marker hides another.
    grid = np.array([(40 + 60 * (j % 5), 40 + 75 * (j // 5)) for j in range(JOINT_COUNT)], np.float64)
    truth = np.stack([grid + rng.uniform(-8, 8, grid.shape) for _ in range(2)])
    images = [marked_image(points) for points in truth]
    finder = MarkerFinder(input_size=192)
    device = torch.device("cpu")
    # Stage 1 on the whole (non-square) image: exact up to the 320/192 px input resolution.
    np.testing.assert_allclose(predict_initial(finder, images, device), truth, atol=1.0)
    # A refinement stage centred on estimates up to 25 px off brings every joint back to its marker.
    previous = truth + rng.uniform(-25, 25, truth.shape)
    refined = refine(finder, images, previous, 2.0, device)
    np.testing.assert_allclose(refined, truth, atol=1.0)
    assert np.all(np.abs(previous - truth).max(axis=(1, 2)) > 10)


# ----------------------------------------------------------------------------------------------
# Networks


@pytest.mark.parametrize("name, parameters", [("deeppose-alexnet", 58_396_060), ("deeppose-s", 6_744_124)])
def test_networks_regress_k_joints(name, parameters):
    net = build_deeppose(name).eval()
    assert net.config.input_size == 220 and net.config.joints == JOINT_COUNT
    with torch.no_grad():
        out = net(torch.zeros(2, 3, 220, 220))
    assert out.shape == (2, JOINT_COUNT, 2)
    size = model_size(net)
    assert size["parameters"] == parameters  # the numbers docs/deeppose.md gives
    # The paper's feature maps: 55x55x96, 27x27x256, 13x13x384/384/256, pooled to 6x6 before the FC layers.
    shapes = []
    x = torch.zeros(1, 3, 220, 220)
    for layer in net.features:
        x = layer(x)
        if isinstance(layer, torch.nn.Conv2d):
            shapes.append(tuple(x.shape[2:]))
    assert shapes == [(55, 55), (27, 27), (13, 13), (13, 13), (13, 13)] and x.shape[2:] == (6, 6)
    if name == "deeppose-alexnet":
        assert [m.out_channels for m in net.features if isinstance(m, torch.nn.Conv2d)] == [96, 256, 384, 384, 256]
        assert net.regressor[1].out_features == 4096 and net.regressor[-1].out_features == 2 * JOINT_COUNT
    assert set(DEEPPOSE_MODELS) >= {"deeppose-alexnet", "deeppose-s"}


# ----------------------------------------------------------------------------------------------
# Jitter statistics and refinement samples


def test_a_refinement_stage_can_start_from_the_previous_stage():
    previous, fresh = build_deeppose("deeppose-tiny"), build_deeppose("deeppose-tiny")
    output_before = {name: value.clone() for name, value in fresh.regressor[-1].state_dict().items()}
    copy_all_but_output(previous, fresh)
    for (name, mine), theirs in zip(fresh.state_dict().items(), previous.state_dict().values()):
        if name.startswith(f"regressor.{len(fresh.regressor) - 1}."):
            assert torch.equal(mine, output_before[name.rsplit(".", 1)[1]]), name  # kept its own
        else:
            assert torch.equal(mine, theirs), name


def test_jitter_sampler_draws_from_the_measured_mean_and_covariance():
    rng = np.random.default_rng(3)
    count = 4000
    truth = rng.uniform(0, 300, (count, JOINT_COUNT, 2))
    sides = rng.uniform(80, 160, count)
    true_means = rng.uniform(-0.2, 0.2, (JOINT_COUNT, 2))
    errors = np.empty((count, JOINT_COUNT, 2))
    for j in range(JOINT_COUNT):
        a = rng.normal(size=(2, 2)) * 0.1
        errors[:, j] = rng.multivariate_normal(true_means[j], a @ a.T + 0.001 * np.eye(2), size=count)
    labelled = rng.random((count, JOINT_COUNT)) > 0.1
    estimates = truth + errors * sides[:, None, None]
    statistics = measure_jitter(estimates, truth, labelled, sides, reference_sides=sides * 1.25)
    np.testing.assert_allclose(statistics.side_ratios, np.full(count, 0.8))
    # Measured on the labelled joints only, in units of the crop side.
    for j in (0, 7, 13):
        own = errors[labelled[:, j], j]
        np.testing.assert_allclose(statistics.mean[j], own.mean(axis=0), atol=1e-9)
        np.testing.assert_allclose(statistics.covariance[j], np.cov(own, rowvar=False), atol=1e-9)
    assert statistics.counts.tolist() == labelled.sum(axis=0).tolist()
    # Many draws have the measured mean and covariance.
    draws_rng = np.random.default_rng(4)
    for j in (0, 7, 13):
        draws = sample_jitter(statistics, j, draws_rng, 40_000)
        assert draws.shape == (40_000, 2)
        spread = np.sqrt(np.diag(statistics.covariance[j]))
        np.testing.assert_allclose(draws.mean(axis=0), statistics.mean[j], atol=4 * spread.max() / np.sqrt(40_000))
        np.testing.assert_allclose(np.cov(draws, rowvar=False), statistics.covariance[j],
                                   atol=0.03 * spread.max() ** 2)
    assert JitterStatistics.from_dict(json.loads(json.dumps(statistics.as_dict()))).mean.tolist() == statistics.mean.tolist()


def test_initial_boxes_frame_lspet_people_as_lsp_frames_its_own(shared):
    lsp = load_image_bank([LspSelection(shared / "data" / "lsp", "train", 50)])
    heights, widths = lsp.shapes[:, 0], lsp.shapes[:, 1]
    # LSP images are cut around their person: b⁰ is the whole image.
    np.testing.assert_allclose(lsp.initial_boxes, np.stack([np.full(50, -0.5), np.full(50, -0.5), widths - 0.5,
                                                            heights - 0.5], axis=1))
    # The framing rule, applied to LSP's own people, gives back boxes close to LSP's images.
    framed = initial_boxes(lsp.joints, lsp.labelled, lsp.shapes, np.zeros(50, np.bool_))
    sides = framed[:, 2:] - framed[:, :2]
    assert np.median(np.abs(sides[:, 0] / widths - 1)) < 0.05 and np.median(np.abs(sides[:, 1] / heights - 1)) < 0.1
    # LSPET: a box around the labelled joints, which span LSP_FRAMING of it, inside a larger scene.
    lspet = load_image_bank([LspSelection(shared / "data" / "lspet", "train", 50)], max_side=512)
    boxes = lspet.initial_boxes
    for i in range(50):
        points = lspet.joints[i][lspet.labelled[i]]
        low, high = points.min(axis=0), points.max(axis=0)
        assert np.all(low >= boxes[i, :2]) and np.all(high <= boxes[i, 2:])
        np.testing.assert_allclose((boxes[i, :2] + boxes[i, 2:]) / 2, (low + high) / 2)
        side = boxes[i, 2:] - boxes[i, :2]
        assert side.min() >= 0.25 * side.max() - 1e-9
        assert np.any(np.isclose(np.maximum(high - low, 1.0) / side, LSP_FRAMING))
    assert np.median((boxes[:, 2] - boxes[:, 0]) / lspet.shapes[:, 1]) < 0.9  # the person, not the scene


def test_refinement_samples_centre_on_jittered_joints(shared):
    bank = load_image_bank([LspSelection(shared / "data" / "lsp", "train", 6)])
    diameters = reference_diameters(bank)
    np.testing.assert_allclose(diameters, torso_diameter(bank.joints))  # LSP labels every joint
    shift = np.zeros((JOINT_COUNT, 2))
    shift[:, 0] = 0.15  # previous estimates sit 0.15 crop sides right of the truth, +-0.02
    statistics = JitterStatistics(shift, np.tile(np.eye(2) * 0.02 ** 2, (JOINT_COUNT, 1, 1)),
                                  np.full(JOINT_COUNT, 100))
    inputs = RefinementInputs(sigma=2.0, statistics=statistics, reference_diameters=diameters,
                              estimates=np.zeros_like(bank.joints), has_estimate=np.zeros(len(bank), np.bool_),
                              real_estimate_probability=0.5, min_diameter_fraction=0.05)
    still = DeepPoseAugment(rotation_degrees=0, scale_min=1, scale_max=1, flip_probability=0, brightness=0,
                            contrast=0, saturation=0)
    dataset = RefinementSet(bank, 96, still, inputs)
    targets = []
    for seed in range(60):
        crop, target, mask = dataset[(seed % len(bank), 7, seed)]
        assert crop.shape == (3, 96, 96) and mask.tolist() == [float(j == 7) for j in range(JOINT_COUNT)]
        targets.append(target[7].numpy())
        assert np.all(target.numpy()[np.arange(JOINT_COUNT) != 7] == 0)
    # The target is the truth seen from the displaced centre: minus the displacement.
    np.testing.assert_allclose(np.mean(targets, axis=0), [-0.15, 0.0], atol=0.01)
    # Where a real previous-stage estimate exists, samples may centre on it instead (all of them here).
    real = replace(inputs, estimates=bank.joints + [10.0, 0.0], has_estimate=np.ones(len(bank), np.bool_),
                   real_estimate_probability=1.0)
    _, target, _ = RefinementSet(bank, 96, still, real)[(2, 7, 0)]
    np.testing.assert_allclose(target[7].numpy(), [-10.0 / (2.0 * diameters[2]), 0.0], atol=1e-5)
    # A mirrored sample supervises the joint's mirror slot (the right elbow looks like a left one).
    flipping = RefinementSet(bank, 96, DeepPoseAugment(flip_probability=1.0), inputs)
    _, target, mask = flipping[(0, 7, 0)]
    assert mask[FLIP_JOINTS[7]] == 1 and mask.sum() == 1


# ----------------------------------------------------------------------------------------------
# Configs and the command


def test_configs_load_and_errors_name_the_key(tmp_path):
    for name in ("deeppose-tiny", "deeppose-cpu", "deeppose-gpu"):
        config = load_deeppose_config(CONFIGS / f"{name}.toml")
        assert config.datasets and config.model.name in DEEPPOSE_MODELS
    assert load_deeppose_config(CONFIGS / "deeppose-gpu.toml").model.name == "deeppose-alexnet"
    bad = tmp_path / "bad.toml"
    bad.write_text(TINY_CONFIG.read_text().replace("sigma = 2.0", "sigma = 2.0\nsigmma = 1.0"))
    with pytest.raises(PosestreamError, match=r"unknown key \[cascade\] sigmma") as error:
        load_deeppose_config(bad)
    assert str(bad) in str(error.value)
    bad.write_text(TINY_CONFIG.read_text().replace('name = "deeppose-tiny"', 'name = "deeppose-xl"'))
    with pytest.raises(PosestreamError, match="deeppose-xl"):
        load_deeppose_config(bad)


def train_losses(run: Path, stage: int) -> list[float]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if r["kind"] == "train" and r["stage"] == stage]


def test_tiny_cascade_trains_stages_one_and_two(shared, tmp_path, capsys):
    run = tmp_path / "run"
    assert cli_main(["train-deeppose", "--config", str(TINY_CONFIG), "--out", str(run)]) == 0
    table = capsys.readouterr().out
    assert "stage 1" in table and "stage 2" in table and "PCP torso" in table

    first = train_losses(run, 1)
    assert len(first) == 8  # 40 steps, logged every 5
    assert np.mean(first[-2:]) < 0.7 * np.mean(first[:2]), first
    assert len(train_losses(run, 2)) == 8

    for name in ("stage-1.pt", "stage-2.pt", "last.pt", "loss.png", "metrics.png", "config.toml",
                 "evaluation-stage-1.json", "evaluation-stage-2.json", "evaluation.json"):
        assert (run / name).is_file(), name
    second = load_stage_checkpoint(run / "stage-2.pt")
    assert second.stage == 2 and second.finished and second.step == 40 and second.model_name == "deeppose-tiny"
    assert len(second.jitter["mean"]) == JOINT_COUNT and second.sigma == 2.0
    nets, sigma, _ = load_cascade(run)
    assert len(nets) == 2 and sigma == 2.0

    evaluation = json.loads((run / "evaluation.json").read_text())
    for stage in ("1", "2"):
        metrics = evaluation["stages"][stage]
        assert metrics["images"] == 16
        assert 0.0 <= metrics["pck_mean"] <= 1.0 and 0.0 <= metrics["pcp_mean"] <= 1.0
        assert set(metrics["pcp"]) >= {"torso", "left_forearm"} and "upper_legs" in metrics["pcp_paper_groups"]

    # The paper's crop sides for simulated estimates (σ·diam of the truth): no side ratios are measured.
    paper = tmp_path / "paper.toml"
    paper.write_text(TINY_CONFIG.read_text().replace("sigma = 2.0", "sigma = 2.0\nscale_simulated_crops = false"))
    assert cli_main(["train-deeppose", "--config", str(paper), "--out", str(tmp_path / "paper"),
                     "--max-iters", "5"]) == 0
    paper_jitter = load_stage_checkpoint(tmp_path / "paper" / "stage-2.pt").jitter
    assert paper_jitter["side_ratios"] == [] and len(second.jitter["side_ratios"]) == 16

    # Resuming a finished run re-scores it from its saved checkpoints and estimates: the same numbers.
    assert cli_main(["train-deeppose", "--config", str(TINY_CONFIG), "--resume", str(run / "last.pt")]) == 0
    again = json.loads((run / "evaluation.json").read_text())
    assert again["stages"]["2"]["pcp"] == evaluation["stages"]["2"]["pcp"]
