"""The content-demand regression that orders new items for the fused model."""

from __future__ import annotations

import numpy as np
import pytest

from lmrec.export.models.content_demand import fit_content_demand, ranks_against_reference, ranks_among_new_items


def _items(n: int = 200, dim: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    embeddings = rng.normal(size=(n, dim))
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    demand = 2.0 + 1.5 * embeddings[:, 0] - 1.0 * embeddings[:, 1]  # demand follows two directions
    return embeddings.astype(np.float32), demand


def test_the_regression_learns_demand_from_items_with_interactions_only():
    embeddings, demand = _items()
    log_popularity = demand.copy()
    log_popularity[:50] = 0.0  # new items: their demand is unknown and must not be learnt as zero
    model = fit_content_demand(embeddings, log_popularity, l2=1e-3)
    predicted = model.predict(embeddings)
    assert predicted.dtype == np.float32
    # Unseen new items are predicted from their text, close to their true demand.
    assert np.corrcoef(predicted[:50], demand[:50])[0, 1] > 0.99
    assert abs(float(predicted[:50].mean()) - float(demand[:50].mean())) < 0.05


def test_new_items_are_ranked_among_themselves_and_items_with_interactions_get_zero():
    log_popularity = np.array([0.0, 1.0, 0.0, 2.0, 0.0], np.float32)
    predicted = np.array([0.5, 9.0, 3.0, 9.0, 3.0], np.float32)
    ranks = ranks_among_new_items(predicted, log_popularity)
    # Item 2 and 4 tie at 3.0: the lower index first; item 0 last among the new ones.
    np.testing.assert_allclose(ranks, [1 / 3, 0.0, 1.0, 0.0, 0.5])


def test_new_items_are_ranked_against_a_fixed_reference_however_many_are_new():
    log_popularity = np.array([0.0, 1.0, 0.0, 2.0, 0.0], np.float32)
    predicted = np.array([0.5, 9.0, 3.0, 9.0, 3.0], np.float32)
    reference = np.array([4.0, 2.0, 1.0, 0.0], np.float32)
    # Item 0 (0.5) has 3 reference scores above it, items 2 and 4 (3.0) one each; warm items get 0.
    np.testing.assert_allclose(ranks_against_reference(predicted, reference, log_popularity), [0.25, 0, 0.5, 0, 0.5])
    # Their own scores as the reference: their ranks among themselves (ties share the better rank).
    own = ranks_against_reference(predicted, predicted[log_popularity == 0], log_popularity)
    np.testing.assert_allclose(own, [1 / 3, 0.0, 1.0, 0.0, 1.0])
    # An empty reference (nothing was new while the ranker learnt) puts every new item first.
    np.testing.assert_allclose(ranks_against_reference(predicted, np.zeros(0), log_popularity), [1, 0, 1, 0, 1])


def test_with_fewer_than_two_items_with_interactions_every_item_is_predicted_alike():
    embeddings, _ = _items(n=5)
    model = fit_content_demand(embeddings, np.array([0, 0, 0, 0, 1.5]))
    np.testing.assert_allclose(model.predict(embeddings), 1.5)
    ranks = ranks_among_new_items(model.predict(embeddings), np.array([0, 0, 0, 0, 1.5]))
    np.testing.assert_allclose(ranks, [1.0, 0.5, 1 / 3, 0.25, 0.0])  # ties: index order


def test_mismatched_lengths_are_refused():
    embeddings, _ = _items(n=5)
    with pytest.raises(ValueError, match="5 item embeddings but 4 popularity values"):
        fit_content_demand(embeddings, np.ones(4))
