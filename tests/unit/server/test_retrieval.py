"""One conformance suite for every Retriever (hnswlib and exact) on the tiny build's item embeddings."""

from __future__ import annotations

import numpy as np
import pytest

from lmrec.export.index_build import INDEX_FILE, IndexConfig, build_index
from lmrec.server.retrieval import ExactRetriever, HnswRetriever, make_retriever

KINDS = ["hnsw", "exact"]


@pytest.fixture(scope="module")
def embeddings(tiny_build_dir) -> np.ndarray:
    return np.load(tiny_build_dir.bundle_dir / "item_embeddings.npy")


@pytest.fixture(params=KINDS)
def retriever(request, tiny_build_dir, embeddings):
    return make_retriever(request.param, embeddings=embeddings, index_path=tiny_build_dir.bundle_dir / INDEX_FILE)


def test_make_retriever_gives_the_right_kind(tiny_build_dir, embeddings):
    path = tiny_build_dir.bundle_dir / INDEX_FILE
    assert isinstance(make_retriever("hnsw", embeddings=embeddings, index_path=path), HnswRetriever)
    assert isinstance(make_retriever("exact", embeddings=embeddings), ExactRetriever)
    with pytest.raises(ValueError, match="unknown retriever 'faiss'"):
        make_retriever("faiss", embeddings=embeddings)
    with pytest.raises(ValueError, match="embeddings"):
        make_retriever("exact")
    with pytest.raises(ValueError, match="index file"):
        make_retriever("hnsw", embeddings=embeddings)


def test_len(retriever, embeddings):
    assert len(retriever) == len(embeddings)


def test_shapes_for_one_and_many_queries(retriever, embeddings):
    labels, sims = retriever.search(embeddings[0], 7)
    assert labels.shape == sims.shape == (1, 7)
    labels, sims = retriever.search(embeddings[:5], 7)
    assert labels.shape == sims.shape == (5, 7)
    assert np.issubdtype(labels.dtype, np.integer)
    assert ((labels >= 0) & (labels < len(embeddings))).all()
    for row in labels:
        assert len(set(row.tolist())) == len(row)


def test_similarities_sorted_and_true(retriever, embeddings):
    labels, sims = retriever.search(embeddings[:20], 10)
    assert (np.diff(sims, axis=1) <= 1e-6).all()
    # Each similarity is the cosine of the query and the returned item.
    expected = np.einsum("qd,qkd->qk", embeddings[:20], embeddings[labels])
    np.testing.assert_allclose(sims, expected, atol=1e-4)


def test_self_is_nearest(retriever, embeddings):
    labels, sims = retriever.search(embeddings, 1)
    np.testing.assert_array_equal(labels[:, 0], np.arange(len(embeddings)))
    np.testing.assert_allclose(sims[:, 0], 1.0, atol=1e-4)


def test_k_larger_than_the_catalogue_is_clipped(retriever, embeddings):
    n = len(embeddings)
    labels, sims = retriever.search(embeddings[3], n + 50)
    assert labels.shape == sims.shape == (1, n)
    assert sorted(labels[0].tolist()) == list(range(n))
    assert labels[0, 0] == 3


def test_top_k_agrees_with_brute_force(retriever, embeddings):
    query = embeddings[:10].mean(axis=0)
    query /= np.linalg.norm(query)
    labels, _ = retriever.search(query, 5)
    brute = np.argsort(-(embeddings @ query), kind="stable")[:5]
    assert set(labels[0].tolist()) == set(brute.tolist())


def test_hnsw_on_a_fresh_index(tmp_path):
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((50, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    meta = build_index(vectors, [f"i{n}" for n in range(50)], tmp_path, encoder_checksum="x", encoder_version=1,
                       config=IndexConfig(m=8, ef_construction=50, threads=1))
    assert meta["n_items"] == 50 and meta["dim"] == 16
    hnsw = HnswRetriever(tmp_path / INDEX_FILE, dim=16, n_items=50)
    exact = ExactRetriever(vectors)
    h_labels, h_sims = hnsw.search(vectors[:10], 5)
    e_labels, e_sims = exact.search(vectors[:10], 5)
    np.testing.assert_array_equal(h_labels, e_labels)
    np.testing.assert_allclose(h_sims, e_sims, atol=1e-4)


def test_a_wide_query_widens_ef_for_itself_only(tmp_path):
    rng = np.random.default_rng(2)
    vectors = rng.standard_normal((300, 8)).astype(np.float32)
    build_index(vectors, [f"i{n}" for n in range(300)], tmp_path, encoder_checksum="x", encoder_version=1,
                config=IndexConfig(m=8, ef_construction=50, threads=1))
    hnsw = HnswRetriever(tmp_path / INDEX_FILE, dim=8, n_items=300, ef_search=32)
    labels, _ = hnsw.search(vectors[0], 250)  # k beyond ef: hnswlib needs ef >= k
    assert labels.shape == (1, 250) and hnsw._index.ef >= 250
    hnsw.search(vectors[1], 10)
    assert hnsw._index.ef == 32  # back to the configured width, not stuck at the widest query's


def test_build_index_rejects_mismatched_ids(tmp_path):
    with pytest.raises(ValueError, match="3 embeddings for 2 item ids"):
        build_index(np.zeros((3, 4), np.float32), ["a", "b"], tmp_path, encoder_checksum="x", encoder_version=1)


def test_added_rows_are_found_and_replaced_rows_move(retriever, embeddings):
    rng = np.random.default_rng(3)
    new = rng.normal(size=(3, embeddings.shape[1])).astype(np.float32)
    new /= np.linalg.norm(new, axis=1, keepdims=True)
    labels = np.arange(len(embeddings), len(embeddings) + 3)
    retriever.add(new, labels)
    assert len(retriever) == len(embeddings) + 3
    found, sims = retriever.search(new, 1)
    assert found[:, 0].tolist() == labels.tolist() and np.allclose(sims[:, 0], 1.0, atol=1e-4)
    retriever.add(embeddings[:1], labels[:1])  # replace: the row now sits where item 0 is
    found, _ = retriever.search(embeddings[0], 2)
    assert set(found[0].tolist()) == {0, int(labels[0])}


def test_concurrent_add_and_search(retriever, embeddings):
    import threading

    errors = []

    def search():
        try:
            for _ in range(200):
                retriever.search(embeddings[:4], 5)
        except Exception as error:  # pragma: no cover - the assertion below reports it
            errors.append(error)

    threads = [threading.Thread(target=search) for _ in range(3)]
    for thread in threads:
        thread.start()
    start = len(embeddings)
    for n in range(50):
        retriever.add(embeddings[n % len(embeddings)][None, :] * 0.5 + 0.5 / np.sqrt(embeddings.shape[1]),
                      np.array([start + n]))
    for thread in threads:
        thread.join()
    assert not errors and len(retriever) == len(embeddings) + 50
