"""Implicit-feedback ALS (Hu, Koren & Volinsky 2008) via `implicit`'s CPU solver."""

from __future__ import annotations

import itertools
import threading
from typing import Any, ClassVar, Sequence

import numpy as np
from implicit.cpu.als import AlternatingLeastSquares
from threadpoolctl import threadpool_limits

from lmrec.export.dataset import Dataset, Interactions
from lmrec.export.models.matrices import binary_matrix, history_matrix


# Fewer users than this are folded in on the calling thread alone (see `_fold_in`).
PARALLEL_FOLD_IN_USERS = 64
_FOLD_IN_LOCK = threading.Lock()


class ALSRecommender:
    """Scores = user_factors @ item_factors.T, with confidence C = 1 + alpha on every interaction.

    Users without training interactions (anonymous sessions, users added later) are folded in from
    the history given at scoring time: the exact least-squares user step against the item factors.
    """

    name = "als"
    # 8 fits; each takes about a second on ml-100k on 2 cores.
    param_grid: ClassVar[list[dict[str, Any]]] = [
        {"factors": factors, "regularization": regularization, "alpha": alpha, "iterations": 15}
        for factors, regularization, alpha in itertools.product((64, 128), (0.01, 0.1), (2.0, 10.0))
    ]

    def __init__(
        self,
        *,
        factors: int = 64,
        regularization: float = 0.01,
        alpha: float = 10.0,
        iterations: int = 15,
        num_threads: int = 2,
        seed: int = 42,
    ) -> None:
        if min(factors, iterations) < 1:
            raise ValueError(f"factors and iterations must be >= 1 (got {factors}, {iterations})")
        if min(regularization, alpha, num_threads) < 0:  # num_threads 0: implicit uses every core
            raise ValueError(f"regularization, alpha and num_threads must be >= 0 (got {regularization}, {alpha}, "
                             f"{num_threads})")
        self.factors = factors
        self.regularization = regularization
        self.alpha = alpha
        self.iterations = iterations
        self.num_threads = num_threads
        self.seed = seed
        self.user_factors: np.ndarray | None = None  # (n_users, factors) float32
        self.item_factors: np.ndarray | None = None  # (n_items, factors) float32
        self._als: AlternatingLeastSquares | None = None
        self._has_training_data: np.ndarray | None = None  # bool per user

    def fit(self, dataset: Dataset, train: Interactions) -> "ALSRecommender":
        user_items = binary_matrix(train.user, train.item, (dataset.n_users, dataset.n_items))
        # implicit stores confidence C = implicit.alpha * value (unobserved C = 1); with binary values
        # its alpha must be 1 + our alpha to give the textbook C = 1 + alpha * r.
        with threadpool_limits(1, "blas"):  # implicit's solver threads; BLAS threads on top slow it down
            als = AlternatingLeastSquares(
                factors=self.factors,
                regularization=self.regularization,
                alpha=1.0 + self.alpha,
                iterations=self.iterations,
                num_threads=self.num_threads,
                random_state=self.seed,
            )
            als.fit(user_items, show_progress=False)
        self._als = als
        self._has_training_data = np.diff(user_items.indptr) > 0
        # Users and items without interactions keep (a few CG steps away from) their random init in
        # implicit; zero them so the saved factors carry no made-up signal: cold items score 0, and
        # scoring folds such users in from their history.
        user_factors = np.array(als.user_factors, dtype=np.float32, order="C")
        user_factors[~self._has_training_data] = 0.0
        item_factors = np.array(als.item_factors, dtype=np.float32, order="C")
        item_factors[np.bincount(user_items.indices, minlength=dataset.n_items) == 0] = 0.0
        als.item_factors = item_factors  # the fold-in solves against the same factors we expose
        self.user_factors, self.item_factors = user_factors, item_factors
        return self

    def user_vector_from_items(self, item_indices: np.ndarray) -> np.ndarray:
        """The user factor (float32, (factors,)) that ALS would learn from these items alone."""
        return self._fold_in([np.asarray(item_indices)])[0]

    def score(self, users: np.ndarray, histories: Sequence[np.ndarray]) -> np.ndarray:
        if self.user_factors is None or self.item_factors is None or self._has_training_data is None:
            raise RuntimeError("fit the model before scoring")
        users = np.asarray(users, dtype=np.int64)
        if len(users) != len(histories):
            raise ValueError("users and histories must have the same length")
        known = (users >= 0) & (users < len(self.user_factors))
        known[known] = self._has_training_data[users[known]]

        vectors = np.empty((len(users), self.factors), np.float32)
        vectors[known] = self.user_factors[users[known]]
        unknown = np.flatnonzero(~known)
        if len(unknown):
            vectors[unknown] = self._fold_in([np.asarray(histories[j]) for j in unknown])
        return vectors @ self.item_factors.T

    def _fold_in(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        if self._als is None:
            raise RuntimeError("fit the model before scoring")
        user_items = history_matrix(histories, self.item_factors.shape[0])  # unknown items carry no signal
        # A team of OpenMP threads pays off for many users at once. For the single user of a served
        # request, the second thread has nothing to do and spins after the call instead: 3-6 ms of CPU
        # per fold-in on this 2-core machine, taken from Triton and the gateway. Users are solved
        # independently, so the thread count does not change the vectors.
        # The count is an attribute of the shared solver, so it is changed and restored under a lock.
        with _FOLD_IN_LOCK:
            solver, threads = self._als, self._als.num_threads
            solver.num_threads = threads if len(histories) >= PARALLEL_FOLD_IN_USERS else 1
            try:
                # recalculate_user does implicit's exact (Cholesky) user step with the same confidence scaling.
                vectors = solver.recalculate_user(np.arange(len(histories)), user_items)
            finally:
                solver.num_threads = threads
        return np.asarray(vectors, dtype=np.float32).reshape(len(histories), self.factors)

