"""Offline late fusion of saved per-video scores."""
import numpy as np
import pytest

from orchestrator.late_fusion import FUSION_MODES, fuse_scores
from orchestrator.runs import VideoScores, load_scores, save_scores
from orchestrator.metrics import topk_accuracy


def scores(ids, labels, logits) -> VideoScores:
    return VideoScores(np.array(ids), np.array(labels, dtype=np.int64), np.array(logits, dtype=np.float32))


def softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# Hand-computed example, 3 videos x 3 classes, logits mode so the arithmetic is plain.
# RGB gets v1 (label 0) right only; flow gets v2 and v3 right only.
RGB = scores(["v1", "v2", "v3"], [0, 1, 2], [[4, 0, 0], [3, 2, 0], [3, 0, 2]])
FLOW = scores(["v1", "v2", "v3"], [0, 1, 2], [[0, 2, 0], [0, 4, 0], [0, 0, 4]])


def test_hand_computed_example():
    assert topk_accuracy(RGB.labels, RGB.scores) == pytest.approx(1 / 3)
    assert topk_accuracy(FLOW.labels, FLOW.scores) == pytest.approx(2 / 3)
    assert topk_accuracy(RGB.labels, RGB.scores, k=2) == pytest.approx(1.0)
    fused = fuse_scores(RGB, FLOW, weight=0.5, mode="logits")
    # v1: (2, 1, 0) -> 0 right; v2: (1.5, 3, 0) -> 1 right; v3: (1.5, 0, 3) -> 2 right
    np.testing.assert_allclose(fused.scores, [[2, 1, 0], [1.5, 3, 0], [1.5, 0, 3]])
    assert topk_accuracy(fused.labels, fused.scores) == pytest.approx(1.0)


@pytest.mark.parametrize("mode", FUSION_MODES)
def test_weight_one_and_zero_reproduce_each_stream(mode):
    as_mode = softmax if mode == "softmax" else (lambda x: x)
    np.testing.assert_allclose(fuse_scores(RGB, FLOW, weight=1.0, mode=mode).scores, as_mode(RGB.scores), rtol=1e-6)
    np.testing.assert_allclose(fuse_scores(RGB, FLOW, weight=0.0, mode=mode).scores, as_mode(FLOW.scores), rtol=1e-6)


def test_misaligned_order_is_realigned():
    order = [2, 0, 1]
    shuffled = VideoScores(FLOW.video_ids[order], FLOW.labels[order], FLOW.scores[order])
    fused = fuse_scores(RGB, shuffled, weight=0.3)
    np.testing.assert_array_equal(fused.video_ids, RGB.video_ids)
    np.testing.assert_allclose(fused.scores, fuse_scores(RGB, FLOW, weight=0.3).scores)


def test_mismatched_videos_or_labels_raise():
    other = scores(["v1", "v2", "v9"], [0, 1, 2], FLOW.scores)
    with pytest.raises(ValueError, match=r"1 only in a \(e.g. \['v3'\]\), 1 only in b \(e.g. \['v9'\]\)"):
        fuse_scores(RGB, other)
    relabelled = scores(["v1", "v2", "v3"], [0, 2, 2], FLOW.scores)
    with pytest.raises(ValueError, match=r"label of 1 videos \(e.g. \['v2'\]\)"):
        fuse_scores(RGB, relabelled)
    duplicated = scores(["v1", "v1", "v3"], [0, 0, 2], FLOW.scores)
    with pytest.raises(ValueError, match=r"stream b lists 1 videos more than once \(e.g. \['v1'\]\)"):
        fuse_scores(RGB, duplicated)
    with pytest.raises(ValueError, match="softmax, logits"):
        fuse_scores(RGB, FLOW, mode="mean")


def test_save_load_round_trip(tmp_path):
    path = tmp_path / "rgb_scores.npz"
    save_scores(path, RGB)
    loaded = load_scores(path)
    np.testing.assert_array_equal(loaded.video_ids, RGB.video_ids)
    np.testing.assert_array_equal(loaded.labels, RGB.labels)
    np.testing.assert_array_equal(loaded.scores, RGB.scores)
    assert loaded.labels.dtype == np.int64 and loaded.scores.dtype == np.float32
    assert loaded.video_ids.dtype.kind == "U"  # strings, not pickled objects
