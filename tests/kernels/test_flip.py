"""Test-time flip tables and the merge kernel, against the numpy reference."""
from __future__ import annotations

import numpy as np
import pytest

from posestream.kernels.flip import flip_tables, merge_flipped_cpu, merge_flipped_reference, mirror_name
from posestream.pipeline.networks import layout


def layout_tables():
    return flip_tables(layout.KEYPOINTS, layout.LIMBS, layout.PAF_CHANNELS, layout.HEATMAP_CHANNELS)


def test_tables_swap_left_and_right_and_negate_x():
    heatmap_source, paf_source, paf_sign = layout_tables()
    names = list(layout.KEYPOINTS) + ["background"]
    assert names[heatmap_source[layout.KEYPOINTS.index("left_wrist")]] == "right_wrist"
    assert names[heatmap_source[layout.KEYPOINTS.index("nose")]] == "nose"
    assert heatmap_source[-1] == layout.HEATMAP_CHANNELS - 1  # background
    assert (heatmap_source[heatmap_source] == np.arange(len(heatmap_source))).all()  # an involution
    assert (paf_source[paf_source] == np.arange(len(paf_source))).all()
    # neck -> right shoulder reads neck -> left shoulder, x negated, y kept
    right, left = layout.LIMBS.index((1, 2)), layout.LIMBS.index((1, 5))
    assert paf_source[2 * right] == 2 * left and paf_sign[2 * right] == -1
    assert paf_source[2 * right + 1] == 2 * left + 1 and paf_sign[2 * right + 1] == 1
    assert mirror_name("left_ear") == "right_ear" and mirror_name("neck") == "neck"


def test_a_limb_stored_from_its_other_end_reverses_the_field():
    keypoints = ("neck", "left_hand", "right_hand")
    limbs = ((0, 1), (2, 0))  # the right arm is stored hand -> neck
    _, paf_source, paf_sign = flip_tables(keypoints, limbs, ((0, 1), (2, 3)), 3)
    assert list(paf_source) == [2, 3, 0, 1]
    assert list(paf_sign) == [1, -1, 1, -1]


def test_an_asymmetric_skeleton_cannot_be_flipped():
    with pytest.raises(ValueError, match="left_hand"):
        flip_tables(("neck", "left_hand"), ((0, 1),), ((0, 1),), 2)


def test_merge_matches_the_reference():
    rng = np.random.default_rng(0)
    tables = layout_tables()
    heatmaps = rng.random((2, layout.HEATMAP_CHANNELS, 5, 7), dtype=np.float32)
    pafs = rng.standard_normal((2, layout.PAF_CHANNEL_COUNT, 5, 7)).astype(np.float32)
    flipped_heatmaps = rng.random(heatmaps.shape, dtype=np.float32)
    flipped_pafs = rng.standard_normal(pafs.shape).astype(np.float32)
    expected = merge_flipped_reference(heatmaps, pafs, flipped_heatmaps, flipped_pafs, *tables)
    merge_flipped_cpu(heatmaps, pafs, flipped_heatmaps, flipped_pafs, *tables)
    np.testing.assert_allclose(heatmaps, expected[0], atol=1e-6)
    np.testing.assert_allclose(pafs, expected[1], atol=1e-6)


def test_maps_of_a_perfectly_mirrored_image_merge_to_themselves():
    """A network that sees the mirror image exactly mirrored: the merge must give back its own maps."""
    rng = np.random.default_rng(1)
    heatmap_source, paf_source, paf_sign = layout_tables()
    heatmaps = rng.random((1, layout.HEATMAP_CHANNELS, 4, 6), dtype=np.float32)
    pafs = rng.standard_normal((1, layout.PAF_CHANNEL_COUNT, 4, 6)).astype(np.float32)
    mirrored_heatmaps = np.ascontiguousarray(heatmaps[:, heatmap_source, :, ::-1])
    mirrored_pafs = np.empty_like(pafs)
    mirrored_pafs[:, paf_source] = (pafs * paf_sign[None, :, None, None])[..., ::-1]
    merged_heatmaps, merged_pafs = heatmaps.copy(), pafs.copy()
    merge_flipped_cpu(merged_heatmaps, merged_pafs, mirrored_heatmaps, mirrored_pafs,
                      heatmap_source, paf_source, paf_sign)
    np.testing.assert_allclose(merged_heatmaps, heatmaps, atol=1e-6)
    np.testing.assert_allclose(merged_pafs, pafs, atol=1e-6)
