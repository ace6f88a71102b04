"""Novelty from hand-made vectors (table), and the embedded embedder itself."""

import numpy as np
import pytest

from opensir_lite.embedding import novelty_scores

E1, E2, E3 = np.eye(3, dtype=np.float32)

CASES = [
    # (candidates, pool, k, expected novelty per candidate)
    (np.stack([E1]), np.stack([E1]), 5, [0.0]),  # identical to the pool: sim 1 -> 0
    (np.stack([E1]), np.stack([-E1]), 5, [1.0]),  # opposite: sim -1 -> 1
    (np.stack([E1]), np.stack([E2]), 5, [0.5]),  # orthogonal: sim 0 -> 0.5
    (np.stack([E1]), np.stack([E1, E2, E3]), 1, [0.0]),  # k=1 takes the nearest only
    (np.stack([E1]), np.stack([E1, E2, E3]), 5, [(1 - 1 / 3) / 2]),  # k larger than the pool: all 3 used
    (np.stack([E1, E1]), np.zeros((0, 0)), 5, [0.0, 0.0]),  # empty pool: batch neighbours only
    (np.stack([E1]), np.zeros((0, 0)), 5, [0.5]),  # no neighbour at all: similarity 0
    (np.stack([E1, E2]), np.stack([E1]), 2, [(1 - 0.5) / 2, (1 - 0) / 2]),  # batch + pool mixed
    (np.stack([2 * E1]), np.stack([3 * E1]), 5, [0.0]),  # vectors are normalised first
]


@pytest.mark.parametrize("cand,pool,k,expected", CASES)
def test_novelty(cand, pool, k, expected):
    assert novelty_scores(cand, pool, k) == pytest.approx(expected)


def test_no_candidates():
    assert novelty_scores(np.zeros((0, 0)), np.stack([E1]), 5) == []


def test_embedded_embedder(embedder):
    vectors = embedder(["What is 1+1?", "What is 2+2?", "Describe the French revolution."])
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    sims = vectors @ vectors.T
    assert sims[0, 1] > sims[0, 2]  # two sums are closer than a sum and history
