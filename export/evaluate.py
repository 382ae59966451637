"""The evaluation harness behind `lmrec evaluate`: tune on validation, refit, rank the test users.

Protocol (design brief, "Evaluation protocol"): full ranking over all items with the user's known
items excluded, never sampled negatives; hyper-parameters chosen on validation only; the chosen
setting is refit on train + valid and scored once on test.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from lmrec.export.dataset import Dataset, Interactions, Split, concat, histories_of, targets_by_user
from lmrec.export.metrics import PER_USER_METRIC, compute_metrics, per_user_values, rank_top_k
from lmrec.export.models.base import Recommender, check_settings, make_model, model_param_grid
from lmrec.export.splits import Protocol

if TYPE_CHECKING:  # the loaders are only needed when the harness loads data itself
    from lmrec.export.loaders import DataConfig

SplitProtocol = Protocol  # the names in export/splits.PROTOCOLS

# Users scored at once: bounds the dense (users, n_items) float32 score block.
SCORE_BATCH_SIZE = 512

# Columns of the human-readable table, per K.
TABLE_METRICS = ("recall", "ndcg", "precision", "f1", "hit", "mrr")


@dataclass(frozen=True, kw_only=True)
class EvaluateConfig:
    data: DataConfig
    protocol: SplitProtocol
    methods: tuple[str, ...]
    seed: int = 42
    ks: tuple[int, ...] = (10, 20)
    tune_metric: str = "ndcg@10"
    # method -> fixed hyper-parameters; a method listed here is not tuned.
    model_params: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.methods:
            raise ValueError("name at least one method to evaluate")
        if not self.ks or min(self.ks) < 1:
            raise ValueError("ks must be positive cutoffs")
        name, _, k = self.tune_metric.partition("@")
        if not k.isdecimal() or int(k) not in self.ks or name not in TABLE_METRICS + ("coverage",):
            raise ValueError(f"tune_metric {self.tune_metric!r} must be one of the metrics at a K in {self.ks}")


@dataclass(frozen=True, kw_only=True)
class EvaluationRecord:
    dataset: str
    protocol: str
    seed: int
    method: str
    params: dict[str, Any]  # the chosen hyper-parameters
    metrics: dict[str, float]  # on test, after refitting on train + valid
    valid_metrics: dict[str, float]  # of the chosen params; empty when there was nothing to tune
    n_test_users: int
    seconds: float  # tuning + refit + test scoring
    # cold-items protocol: metrics over the test cases whose target is a cold item only (`cold_` keys)
    cold_metrics: dict[str, float] = field(default_factory=dict)
    n_cold_test_users: int = 0
    # PER_USER_METRIC (when measured) of each test user, in the order of the sorted test user indices:
    # two methods on one split can then be compared user by user (`paired_bootstrap_ratio`).
    per_user: dict[str, tuple[float, ...]] = field(default_factory=dict)
    # sha1 of the test users and their targets: what makes two records' per-user values a pair.
    test_set: str = ""


@dataclass(frozen=True)
class _RankingTask:
    """Users to rank, what each is known to have done (shown to the model, excluded from the
    ranking), and the held-out items that count as hits."""

    users: np.ndarray
    histories: list[np.ndarray]
    targets: list[np.ndarray]


def run_evaluation(
    config: EvaluateConfig,
    *,
    dataset: Dataset | None = None,
    split: Split | None = None,
    progress: Callable[[str], None] = print,
) -> list[EvaluationRecord]:
    """One record per method in `config.methods`; loads and splits the data unless given."""
    for method in config.methods:
        model_param_grid(method)  # fail on an unknown name before any loading or fitting
    if dataset is None:
        from lmrec.export.loaders import load_dataset

        dataset = load_dataset(config.data).dataset
    if split is None:
        from lmrec.export.splits import split_dataset

        split = split_dataset(dataset, config.protocol, seed=config.seed)
    if (split.protocol, split.seed) != (config.protocol, config.seed):
        raise ValueError(
            f"split is {split.protocol!r} seed {split.seed}, config asks {config.protocol!r} seed {config.seed}"
        )

    if max(config.ks) > dataset.n_items:
        raise ValueError(f"k={max(config.ks)} is larger than the catalogue of '{dataset.name}' ({dataset.n_items} items)")
    check_methods(config.methods, config.model_params, dataset, split.train, config.seed)
    train_valid = concat(split.train, split.valid)
    valid_task = _ranking_task(split.train, split.valid, dataset.n_users)
    test_task = _ranking_task(train_valid, split.test, dataset.n_users)
    if len(test_task.users) == 0:
        raise ValueError("the split has no test interactions")
    progress(
        f"{dataset.name} {split.protocol} seed {split.seed}: {dataset.n_users} users, {dataset.n_items} items, "
        f"{len(split.train)}/{len(split.valid)}/{len(split.test)} train/valid/test interactions"
    )
    return [
        _evaluate_method(method, config, dataset, split, train_valid, valid_task, test_task, progress)
        for method in config.methods
    ]


def _evaluate_method(
    method: str,
    config: EvaluateConfig,
    dataset: Dataset,
    split: Split,
    train_valid: Interactions,
    valid_task: _RankingTask,
    test_task: _RankingTask,
    progress: Callable[[str], None],
) -> EvaluationRecord:
    started = time.perf_counter()
    fixed = config.model_params.get(method)
    candidates = [dict(fixed)] if fixed is not None else model_param_grid(method)

    chosen, chosen_valid = candidates[0], {}
    if len(candidates) > 1 and not len(valid_task.users):
        progress(f"  {method}: no validation users, so no tuning; using {_format_params(chosen)}")
    # Validation fits only pay off when there is a choice to make.
    if len(candidates) > 1 and len(valid_task.users):
        best_score = -math.inf
        for params in candidates:
            fit_started = time.perf_counter()
            model = _build(method, params, config.seed).fit(dataset, split.train)
            metrics = _rank_and_measure(model, dataset, valid_task, config.ks)
            progress(
                f"  {method} {_format_params(params)}: valid {config.tune_metric}="
                f"{metrics[config.tune_metric]:.4f} ({time.perf_counter() - fit_started:.1f}s)"
            )
            # Strictly better only: of equal candidates the first in grid order wins, deterministically.
            if metrics[config.tune_metric] > best_score:
                best_score, chosen, chosen_valid = metrics[config.tune_metric], params, metrics

    fit_started = time.perf_counter()
    model = _build(method, chosen, config.seed).fit(dataset, train_valid)
    test_metrics, top = _rank_and_measure(model, dataset, test_task, config.ks, return_top=True)
    cold_metrics, n_cold = _cold_target_metrics(top, test_task, split.cold_items, dataset.n_items, config.ks,
                                                known=train_valid)
    per_user = ({PER_USER_METRIC: tuple(per_user_values(top, test_task.targets, n_items=dataset.n_items).tolist())}
                if PER_USER_METRIC in test_metrics else {})
    progress(
        f"  {method} {_format_params(chosen)}: test {config.tune_metric}={test_metrics[config.tune_metric]:.4f} "
        f"recall@{config.ks[0]}={test_metrics[f'recall@{config.ks[0]}']:.4f} "
        f"({time.perf_counter() - fit_started:.1f}s)"
    )
    return EvaluationRecord(
        dataset=dataset.name,
        protocol=split.protocol,
        seed=config.seed,
        method=method,
        params=chosen,
        metrics=test_metrics,
        valid_metrics=chosen_valid,
        n_test_users=len(test_task.users),
        seconds=time.perf_counter() - started,
        cold_metrics=cold_metrics,
        n_cold_test_users=n_cold,
        per_user=per_user,
        test_set=fingerprint_of_test_set(test_task),
    )


def _cold_target_metrics(top: np.ndarray, task: _RankingTask, cold_items: np.ndarray, n_items: int,
                         ks: Sequence[int], known: Interactions | None = None) -> tuple[dict[str, float], int]:
    """The same metrics restricted to test targets that are cold items (no training interaction), with the
    random references of `cold_random_references`."""
    rows, targets = cold_target_rows(task, cold_items)
    if not rows:
        return {}, 0
    metrics = compute_metrics(top[rows], targets, n_items=n_items, ks=ks)
    chance = cold_random_references(task, rows, targets, n_items, ks, known)
    return {f"cold_{key}": value for key, value in {**metrics, **chance}.items()}, len(rows)


def cold_target_rows(task: _RankingTask, cold_items: np.ndarray) -> tuple[list[int], list[np.ndarray]]:
    """The task's rows with a cold target, and each one's cold targets."""
    rows, targets = [], []
    if len(cold_items) == 0:
        return rows, targets
    for row, user_targets in enumerate(task.targets):
        cold = user_targets[np.isin(user_targets, cold_items)]
        if len(cold):
            rows.append(row)
            targets.append(cold)
    return rows, targets


def cold_random_references(task: _RankingTask, rows: list[int], targets: list[np.ndarray], n_items: int,
                           ks: Sequence[int], known: Interactions | None = None) -> dict[str, float]:
    """Mean over `rows` of two random references: `random_hit@k`, a random order of each user's unseen items,
    and, given the `known` interactions, `no_interactions_random_hit@k`, a random order of the items nobody
    has interacted with, put first. On cold-items test, after the refit on train + valid, nearly all such
    items are test targets (cold items, and warm items whose every interaction was drawn into test): the
    second reference is what knowing only "this item is new" gets."""
    unseen = np.array([n_items - len(np.unique(task.histories[row])) for row in rows])
    n_targets = np.array([len(t) for t in targets])
    chance = {f"random_hit@{k}": float(random_hit_rate(unseen, n_targets, k).mean()) for k in ks}
    if known is not None:
        untouched = n_items - len(np.unique(known.item))  # every cold target is one of them
        chance.update({f"no_interactions_random_hit@{k}": float(random_hit_rate(
            np.full(len(rows), untouched), n_targets, k).mean()) for k in ks})
    return chance


def random_hit_rate(n_candidates: np.ndarray, n_targets: np.ndarray, k: int) -> np.ndarray:
    """Per user, the chance that a uniformly random order of their `n_candidates` rankable (unseen) items puts
    one of their `n_targets` targets in its first k: 1 − C(E−t, k) / C(E, k). With several targets and the
    seen items left out this is well above k / n_items."""
    n_candidates, n_targets = np.asarray(n_candidates, np.float64), np.asarray(n_targets, np.float64)
    miss = np.ones_like(n_candidates)
    for i in range(k):
        miss *= np.clip((n_candidates - n_targets - i) / np.maximum(n_candidates - i, 1), 0.0, 1.0)
    return np.where(n_targets > 0, 1.0 - miss, 0.0)


def fingerprint_of_test_set(task: _RankingTask) -> str:
    """sha1 over the test users and each one's targets, in scoring order."""
    digest = hashlib.sha1(np.asarray(task.users, np.int64).tobytes())
    for targets in task.targets:
        digest.update(np.asarray(len(targets), np.int64).tobytes() + np.sort(np.asarray(targets, np.int64)).tobytes())
    return digest.hexdigest()


def check_methods(methods: Sequence[str], model_params: dict[str, dict], dataset: Dataset, train: Interactions,
                  seed: int) -> None:
    """Build every method with every setting it will be fitted with, and run its own `check` where it has
    one: a misspelt or impossible setting stops the run before the first fit, not after hours of them."""
    for method in methods:
        fixed = model_params.get(method)
        for params in [dict(fixed)] if fixed is not None else model_param_grid(method):
            check_settings(method, params)
            try:
                model = _build(method, params, seed)
            except (TypeError, ValueError) as error:
                raise ValueError(f"{method} with {_format_params(params)}: {error}") from None
            check = getattr(model, "check", None)
            if check is not None:
                try:
                    check(dataset, train)
                except ValueError as error:
                    raise ValueError(f"{method}: {error}") from None


def _build(method: str, params: dict[str, Any], seed: int) -> Recommender:
    return make_model(method, **{"seed": seed, **params})


def _ranking_task(known: Interactions, held_out: Interactions, n_users: int) -> _RankingTask:
    histories = histories_of(known, n_users)  # chronological: both come in canonical order
    targets = targets_by_user(held_out)
    users = np.array(sorted(targets), dtype=np.int64)
    return _RankingTask(
        users=users,
        histories=[histories[u] for u in users],
        targets=[targets[u] for u in users],
    )


def _rank_and_measure(model: Recommender, dataset: Dataset, task: _RankingTask, ks: Sequence[int],
                      return_top: bool = False):
    max_k = max(ks)
    top_blocks = []
    for start in range(0, len(task.users), SCORE_BATCH_SIZE):
        stop = start + SCORE_BATCH_SIZE
        users, histories = task.users[start:stop], task.histories[start:stop]
        scores = model.score(users, histories)
        if scores.shape != (len(users), dataset.n_items):
            raise ValueError(
                f"{type(model).__name__}.score returned shape {scores.shape}, expected {(len(users), dataset.n_items)}"
            )
        top_blocks.append(rank_top_k(scores, histories, max_k))
    top = np.vstack(top_blocks)
    metrics = compute_metrics(top, task.targets, n_items=dataset.n_items, ks=ks)
    return (metrics, top) if return_top else metrics


def _format_params(params: dict[str, Any]) -> str:
    return " ".join(f"{key}={value}" for key, value in params.items()) or "(defaults)"


def format_table(records: Sequence[EvaluationRecord]) -> str:
    """Fixed-width table, one row per method, one block per (dataset, protocol, seed)."""
    blocks: dict[tuple[str, str, int], list[EvaluationRecord]] = {}
    for record in records:
        blocks.setdefault((record.dataset, record.protocol, record.seed), []).append(record)

    lines: list[str] = []
    for (dataset, protocol, seed), block in blocks.items():
        ks = sorted({int(key.partition("@")[2]) for record in block for key in record.metrics})
        columns = [f"{name}@{k}" for k in ks for name in TABLE_METRICS]
        if ks:
            columns.append(f"coverage@{ks[0]}")
        method_width = max(len("method"), *(len(record.method) for record in block))
        widths = [max(len(column), 6) for column in columns]

        if lines:
            lines.append("")
        lines.append(f"{dataset} | protocol {protocol} | seed {seed} | {block[0].n_test_users} test users")
        header = ["method".ljust(method_width)] + [c.rjust(w) for c, w in zip(columns, widths)] + ["seconds", "params"]
        lines.append("  ".join(header))
        for record in block:
            cells = [record.method.ljust(method_width)]
            cells += [_format_value(record.metrics.get(column)).rjust(width) for column, width in zip(columns, widths)]
            cells += [f"{record.seconds:7.1f}", _format_params(record.params)]
            lines.append("  ".join(cells))
    return "\n".join(lines)


def _format_value(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def records_to_json(records: Sequence[EvaluationRecord], *, command: str | None = None) -> dict[str, Any]:
    """JSON-ready results; `command` (the invocation that produced them) is stored when given."""
    out: dict[str, Any] = {}
    if command is not None:
        out["command"] = command
    out["records"] = [
        {
            "dataset": record.dataset,
            "protocol": record.protocol,
            "seed": record.seed,
            "method": record.method,
            "params": _plain(record.params),
            "metrics": {key: float(value) for key, value in record.metrics.items()},
            "valid_metrics": {key: float(value) for key, value in record.valid_metrics.items()},
            "n_test_users": int(record.n_test_users),
            "seconds": round(float(record.seconds), 3),
            **({"cold_metrics": {k: float(v) for k, v in record.cold_metrics.items()},
                "n_cold_test_users": int(record.n_cold_test_users)} if record.cold_metrics else {}),
            # 6 decimals: exact enough for an interval, half the JSON of full floats.
            **({"per_user": {key: [round(float(v), 6) for v in values] for key, values in record.per_user.items()},
                "test_set": record.test_set} if record.per_user else {}),
        }
        for record in records
    ]
    return out


def _plain(value: Any) -> Any:
    """numpy scalars and tuples in params -> JSON types."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
