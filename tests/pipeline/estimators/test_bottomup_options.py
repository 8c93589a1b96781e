"""Bottom-up options: --flip (test-time flip) and --min-score, on the default model and real images."""
from __future__ import annotations

import numpy as np
import pytest

from posestream.pipeline.core.errors import PosestreamError
from posestream.pipeline.estimators.create import EstimatorSettings, create_estimator
from posestream.pipeline.sources.readers import read_image


@pytest.fixture(scope="module")
def image(shared):
    # 368 x 656 exactly (the sidecar size), so the letterbox adds no padding and a mirror is a pure mirror.
    import cv2
    picture = read_image(shared / "data/mmpose/coco/000000196141.jpg")
    return cv2.resize(picture, (656, 368), interpolation=cv2.INTER_AREA)


@pytest.mark.shared
def test_flip_makes_the_estimate_mirror_symmetric(image):
    """With flip the maps of an image and of its mirror are the same average, mirrored: so are the people."""
    estimator = create_estimator(EstimatorSettings(flip=True, threads=2))
    people = sorted(estimator([image])[0], key=lambda p: -p.score)
    mirrored = sorted(estimator([np.ascontiguousarray(image[:, ::-1])])[0], key=lambda p: -p.score)
    assert people and len(people) == len(mirrored)
    assert estimator.stats.frames == 2
    best, best_mirrored = people[0], mirrored[0]
    assert best.score == pytest.approx(best_mirrored.score, rel=1e-3)
    found = (best.keypoints[:, 2] > 0) & (best_mirrored.keypoints[:, 2] > 0)
    from posestream.kernels.flip import mirror_name
    from posestream.pipeline.core.skeleton import COCO17_NAMES
    swap = [COCO17_NAMES.index(mirror_name(name)) for name in COCO17_NAMES]
    back = best_mirrored.keypoints[swap]
    both = found & (back[:, 2] > 0)
    x_back = image.shape[1] - back[both, 0]
    assert np.abs(x_back - best.keypoints[both, 0]).max() <= 2.0
    assert np.abs(back[both, 1] - best.keypoints[both, 1]).max() <= 2.0


@pytest.mark.shared
def test_min_score_drops_people_below_it(image):
    everyone = create_estimator(EstimatorSettings(min_score=0.0, threads=2))([image])[0]
    assert len(everyone) >= 2
    cut = sorted(p.score for p in everyone)[len(everyone) // 2]
    kept = create_estimator(EstimatorSettings(min_score=cut, threads=2))([image])[0]
    assert 0 < len(kept) < len(everyone) and all(p.score >= cut for p in kept)


def test_flip_is_refused_where_it_cannot_run():
    with pytest.raises(PosestreamError, match="--flip"):
        create_estimator(EstimatorSettings(flip=True, mode="top-down", detector="whole-image"))
