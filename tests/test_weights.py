import numpy as np
import pytest

from ica_hub.weights import scores_to_weights, select_threshold, select_top_fraction


def test_minmax_is_the_papers_rule():
    weights = scores_to_weights([1.0, 3.0, 2.0])
    np.testing.assert_allclose(weights, [0.0, 1.0, 0.5])


def test_equal_scores_give_uniform_weights():
    np.testing.assert_allclose(scores_to_weights([2.0, 2.0, 2.0]), [1.0, 1.0, 1.0])


def test_negative_policy():
    scores = [-2.0, -1.0, 1.0, 3.0]
    np.testing.assert_allclose(scores_to_weights(scores), [0.0, 0.2, 0.6, 1.0])
    np.testing.assert_allclose(scores_to_weights(scores, negative="zero"),
                               [0.0, 0.0, 1 / 3, 1.0])


def test_softmax_and_rank():
    softmax = scores_to_weights([0.0, 1.0], rule="softmax", temperature=1.0)
    np.testing.assert_allclose(softmax, [np.exp(-1.0), 1.0])
    np.testing.assert_allclose(scores_to_weights([10, -5, 3], rule="rank"), [1.0, 0.0, 0.5])
    np.testing.assert_allclose(scores_to_weights([1, 1, 2], rule="rank"), [0.25, 0.25, 1.0])
    np.testing.assert_allclose(scores_to_weights([5, 7], rule="uniform"), [1.0, 1.0])


def test_missing_scores():
    np.testing.assert_allclose(scores_to_weights([1.0, None, 3.0]), [0.0, 0.0, 1.0])
    with pytest.raises(ValueError, match=r"rows \[1\]"):
        scores_to_weights([1.0, None, 3.0], missing="error")


def test_bad_options_and_values_are_named():
    with pytest.raises(ValueError, match="Unknown weight rule 'max'"):
        scores_to_weights([1.0], rule="max")
    with pytest.raises(ValueError, match="temperature"):
        scores_to_weights([1.0], rule="softmax", temperature=0)
    with pytest.raises(ValueError, match=r"Infinite scores at rows \[0\]"):
        scores_to_weights([float("inf"), 1.0])


def test_selections_keep_dataset_order_and_skip_missing():
    scores = [0.5, None, 0.9, 0.1, 0.7]
    np.testing.assert_array_equal(select_top_fraction(scores, 0.5), [2, 4])
    np.testing.assert_array_equal(select_threshold(scores, 0.5), [0, 2, 4])
    with pytest.raises(ValueError, match="fraction"):
        select_top_fraction(scores, 0)


def test_bad_policies_are_named():
    with pytest.raises(ValueError, match="negative='nope'"):
        scores_to_weights([1.0], negative="nope")
    with pytest.raises(ValueError, match="missing='drop'"):
        scores_to_weights([1.0], missing="drop")
