from __future__ import annotations

import numpy as np
import pytest

from m3engine import InputError, SparseVector, colbert_score, lexical_matching_score
from m3engine.models.scores import hybrid_score


def test_lexical_matching_sums_shared_ids() -> None:
    q = {"5": 0.5, "9": 0.2}
    p = SparseVector(np.array([5, 7]), np.array([0.4, 0.9], dtype=np.float32))
    assert lexical_matching_score(q, p) == pytest.approx(0.2)
    assert lexical_matching_score(q, {"1": 1.0}) == 0.0


def test_colbert_maxsim_is_the_mean_of_best_matches() -> None:
    q = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    p = np.array([[0.6, 0.8], [1.0, 0.0], [0.0, -1.0]], dtype=np.float32)
    assert colbert_score(q, p) == pytest.approx((1.0 + 0.8) / 2)


def test_hybrid_weights_divide_by_their_sum() -> None:
    s = hybrid_score(0.8, 0.2, 0.6, [0.4, 0.2, 0.4])
    assert s.sparse_dense == pytest.approx((0.8 * 0.4 + 0.2 * 0.2) / 0.6)
    assert s.colbert_sparse_dense == pytest.approx(0.8 * 0.4 + 0.2 * 0.2 + 0.6 * 0.4)
    assert set(s.to_json()) == {"dense", "sparse", "colbert", "sparse+dense", "colbert+sparse+dense"}


@pytest.mark.parametrize("weights", [[1.0, 1.0], [-1.0, 1.0, 1.0], [0.0, 0.0, 1.0]])
def test_bad_weights_are_refused(weights: list[float]) -> None:
    with pytest.raises(InputError, match="weights"):
        hybrid_score(0.1, 0.1, 0.1, weights)
