"""Candidate retrieval over item embeddings: one interface, an hnswlib and an exact implementation.

`make_retriever("hnsw", ...)` / `make_retriever("exact", ...)`; both return (labels, similarities)
with labels being row numbers into the bundle's item list, most similar first.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Protocol

import numpy as np


class Retriever(Protocol):
    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...

    def add(self, vectors: np.ndarray, labels: np.ndarray) -> None:
        """Insert rows `labels` (or replace them when present), safely while searches run."""

    def __len__(self) -> int: ...


class ExactRetriever:
    """Brute-force cosine similarity with numpy: the reference the ANN index is checked against."""

    def __init__(self, embeddings: np.ndarray) -> None:
        self._embeddings = np.ascontiguousarray(embeddings, np.float32)

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        vectors = np.atleast_2d(np.asarray(vectors, np.float32))
        k = min(k, len(self._embeddings))
        sims = vectors @ self._embeddings.T
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        top_sims = np.take_along_axis(sims, top, axis=1)
        order = np.argsort(-top_sims, axis=1, kind="stable")
        return np.take_along_axis(top, order, axis=1), np.take_along_axis(top_sims, order, axis=1)

    def add(self, vectors: np.ndarray, labels: np.ndarray) -> None:
        # Copy and swap: a search running meanwhile keeps the matrix it started with.
        labels = np.asarray(labels, np.int64)
        size = max(len(self._embeddings), int(labels.max(initial=-1)) + 1)
        grown = np.zeros((size, self._embeddings.shape[1]), np.float32)
        grown[: len(self._embeddings)] = self._embeddings
        grown[labels] = np.asarray(vectors, np.float32)
        self._embeddings = grown

    def __len__(self) -> int:
        return len(self._embeddings)


class HnswRetriever:
    """hnswlib index (cosine space). A lock guards it: hnswlib is not safe for concurrent insert + search."""

    def __init__(self, index_path: Path, dim: int, n_items: int, ef_search: int = 128, threads: int = 1) -> None:
        import hnswlib

        self._index = hnswlib.Index(space="cosine", dim=dim)
        self._index.load_index(str(index_path), max_elements=max(n_items * 2, 1024))
        self.ef_search = ef_search
        self._index.set_ef(ef_search)
        self._index.set_num_threads(threads)
        self._lock = threading.Lock()
        self._n = self._index.get_current_count()

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        vectors = np.atleast_2d(np.asarray(vectors, np.float32))
        k = min(k, self._n)
        with self._lock:
            # Per query: k past the configured ef needs ef >= k, and the next query goes back down.
            # (Raising it from the index's current ef ratcheted it up for good: after one user with
            # hundreds of seen items, every later query searched that wide.)
            self._index.set_ef(max(k, self.ef_search))
            labels, distances = self._index.knn_query(vectors, k=k)
        return labels.astype(np.int64), (1.0 - distances).astype(np.float32)

    def add(self, vectors: np.ndarray, labels: np.ndarray) -> None:
        vectors = np.atleast_2d(np.asarray(vectors, np.float32))
        with self._lock:
            needed = self._index.get_current_count() + len(vectors)
            if needed > self._index.get_max_elements():
                self._index.resize_index(max(needed, 2 * self._index.get_max_elements()))
            # An existing label is updated in place by hnswlib (a replaced item's new text).
            self._index.add_items(vectors, np.asarray(labels, np.int64))
            self._n = self._index.get_current_count()

    def __len__(self) -> int:
        return self._n


def make_retriever(kind: str, *, embeddings: np.ndarray | None = None, index_path: Path | None = None,
                   ef_search: int = 128) -> Retriever:
    if kind == "exact":
        if embeddings is None:
            raise ValueError("the exact retriever needs item embeddings")
        return ExactRetriever(embeddings)
    if kind == "hnsw":
        if index_path is None or embeddings is None:
            raise ValueError("the hnsw retriever needs the index file and the item embeddings' shape")
        return HnswRetriever(index_path, dim=embeddings.shape[1], n_items=len(embeddings), ef_search=ef_search)
    raise ValueError(f"unknown retriever '{kind}' (known: hnsw, exact)")
