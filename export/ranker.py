"""The neural fusion ranker: features of (user, candidate) pairs → one score, trained listwise.

Entry points: `candidate_features(...)` builds the feature tensor from per-signal score matrices;
`train_ranker(...)` fits a small MLP with a softmax (listwise) loss over each user's candidates;
`export_ranker_onnx(...)` writes it as ONNX with the feature standardisation inside the graph;
`lmrec.ranker_runtime.OnnxRanker` scores that graph through ONNX Runtime, offline and in Triton's `ranker` model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

# OnnxRanker is re-exported: the ranker model.py copied into model versions built before it moved to
# lmrec.ranker_runtime imports it from here, and those versions must still load in Triton.
from lmrec.ranker_runtime import RANKER_INPUT, RANKER_OUTPUT, OnnxRanker  # noqa: F401


@dataclass(frozen=True, kw_only=True)
class RankerConfig:
    hidden: tuple[int, ...] = (64, 32)
    epochs: int = 60  # at most; with early stopping, the count that did best on held-out lists
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    batch_users: int = 128
    seed: int = 42
    # Members trained from different seeds and averaged inside the one exported graph: with a few
    # hundred training lists a single MLP's ordering varies with its seed; the average varies less.
    ensemble: int = 5
    # The number of epochs is chosen by k-fold cross-validation over the training lists (their mean
    # NDCG@10 after each epoch); the members are then trained on every list for that many epochs. 0
    # trains for `epochs`. A few hundred lists overfit within tens of epochs, how soon depends on the
    # data set and protocol, and a single 20% check split (~120 lists on ml-latest-small) is noisy.
    early_stopping_folds: int = 5
    # With early_stopping_folds=1: one split, this share of the lists held out (the earlier method).
    early_stopping_share: float = 0.2
    # Start from the best single feature: the model is `scale * that feature + MLP(features)` with the
    # MLP's output layer at zero, so before training it ranks exactly like the strongest signal on the
    # training lists, and cross-validation may keep 0 epochs. The ranker then departs from, say, EASE
    # only where held-out lists show that the other signals improve on it. The fused model sets it per
    # hold-out (`default_ranker_settings`); with more training lists, rankers without it did better.
    prior: bool = True


def rank_keys(scores: np.ndarray, excluded: np.ndarray, items: np.ndarray | None = None) -> np.ndarray:
    """uint64 keys of `items` (default: every item) in each row of `scores` (float32), distinct within a
    row, whose ascending order is a stable argsort of the negated row with the `excluded` items (a bool
    mask over all items) last: best first, equal scores by item index. An item's rank is its key's
    position among the row's sorted keys (`ranks_at`): only the keys are sorted, not the indices of the
    whole row.

    Ties are common (most items have no sequential or graph evidence) and their order must be the same
    whether a user is ranked alone or in a batch: the item index in the low 32 bits breaks them. The high
    32 bits are the negated score's float32 bits made to sort as the floats do (sign flipped for
    positives, all bits for negatives); -0 counts as 0 and NaN after everything, as in an argsort.
    """
    n_items = scores.shape[-1]
    if n_items >= 2 ** 32:
        raise ValueError(f"rank keys hold an item index in 32 bits; {n_items} items do not fit")
    items = np.arange(n_items) if items is None else np.asarray(items, np.int64)
    negated = -scores[..., items].astype(np.float32, copy=False)
    negated[negated == 0] = 0.0  # -0.0 ties with 0.0
    negated[..., excluded[items]] = np.inf
    bits = negated.view(np.uint32)
    ordered_bits = np.where(bits & np.uint32(0x80000000), ~bits, bits | np.uint32(0x80000000))
    ordered_bits[np.isnan(negated)] = np.uint32(0xFFFFFFFF)
    return (ordered_bits.astype(np.uint64) << np.uint64(32)) | items.astype(np.uint64)


def ranks_at(ordered: np.ndarray, scores: np.ndarray, excluded: np.ndarray, items: np.ndarray) -> np.ndarray:
    """The 0-based ranks of `items` in each row of `scores` (signals, items), whose `rank_keys` sorted are
    the rows of `ordered`: where the items' own keys fall among them."""
    keys = rank_keys(scores, excluded, items)
    return np.stack([np.searchsorted(row, row_keys) for row, row_keys in zip(ordered, keys)])


@dataclass(frozen=True)
class RowSummary:
    """A group of signals over one user's whole row of items: what candidate selection and the candidates'
    features read from that row. Each group is summarised once per user, so the signals that need no
    profile vector can be summarised while the encoder computes it (`FusedRecommender.prepare_features`)."""
    names: tuple[str, ...]
    scores: np.ndarray  # (signals, items) float32
    mean: np.ndarray  # (signals, 1)
    std: np.ndarray  # (signals, 1)
    excluded: np.ndarray  # (items,) bool: the items this user's answer may not contain
    ordered: np.ndarray  # (signals, items) uint64: each row's `rank_keys`, sorted
    top: tuple[np.ndarray, ...]  # per signal, its top `per_signal` items that are not excluded (unordered)


def summarise_rows(signal_scores: dict[str, np.ndarray], excluded: list[np.ndarray], per_signal: int) -> list[RowSummary]:
    """One `RowSummary` per user of the signals in `signal_scores` (each a (users, items) score matrix).

    Ranks: `ranks_at`, at the candidates only, from each row's sorted `rank_keys` (a stable argsort of the
    whole row was a third of the history half's time on ml-100k). The top items come from a partial
    sort, as they always have: the fused models' candidates (and so their training lists) are the same as
    before this split. `per_signal` 0: no top items (the features of given candidates only).
    """
    names = tuple(signal_scores)
    summaries = []
    for row, items in enumerate(excluded):
        raw = np.stack([signal_scores[name][row] for name in names])
        user_scores = raw.astype(np.float32, copy=False)  # features are float32
        if per_signal > 0:
            # Candidates are chosen at the signals' own precision (some are float64), as they always were.
            chosen_from = raw.astype(np.float64)
            chosen_from[:, items] = -np.inf
            top = np.argpartition(-chosen_from, min(per_signal, raw.shape[1] - 1), axis=1)[:, :per_signal]
            tops = tuple(top[j][np.isfinite(chosen_from[j, top[j]])] for j in range(len(names)))
        else:
            tops = ()
        excluded_mask = np.zeros(raw.shape[1], bool)
        excluded_mask[items] = True
        summaries.append(RowSummary(names=names, scores=user_scores, mean=user_scores.mean(axis=1, keepdims=True),
                                    std=user_scores.std(axis=1, keepdims=True), excluded=excluded_mask,
                                    ordered=np.sort(rank_keys(user_scores, excluded_mask), axis=1), top=tops))
    return summaries


def candidates_from(summaries: Sequence[RowSummary]) -> np.ndarray:
    """One user's candidates: the union of each signal's top unseen items, sorted by item index."""
    tops = [top for summary in summaries for top in summary.top]
    return np.unique(np.concatenate(tops)).astype(np.int64) if tops else np.zeros(0, np.int64)


@dataclass(frozen=True)
class Similarity:
    """A feature that is each user's vector against the items' embeddings (similarity to the last item, say),
    only ever read at the candidates: `at(row, items)` computes it for those alone, `whole()` for every item.
    On ml-100k a candidate set is about a sixth of the catalogue; at a million items a whole row is
    1.5 GB read per product."""
    vectors: np.ndarray  # (users, dim) float32
    embeddings: np.ndarray  # (items, dim) float32

    def at(self, row: int, items: np.ndarray) -> np.ndarray:
        return self.embeddings[items] @ self.vectors[row]

    def whole(self) -> np.ndarray:
        return self.vectors @ self.embeddings.T


def features_from(summaries: Sequence[RowSummary], signal_order: Sequence[str], extra: dict, row: int,
                  items: np.ndarray) -> np.ndarray:
    """One user's (n_candidates, n_features) float32 matrix: per signal in `signal_order` its z-score and
    reciprocal rank 1 / (1 + rank) (from the summaries), then each `extra` feature (a (users, items)
    matrix, or a `Similarity`) of row `row` at the candidates."""
    ranks = [ranks_at(summary.ordered, summary.scores, summary.excluded, items) for summary in summaries]
    where = {name: (summary, j, group_ranks[j]) for summary, group_ranks in zip(summaries, ranks)
             for j, name in enumerate(summary.names)}
    columns = []
    for name in signal_order:
        summary, j, signal_ranks = where[name]
        std = summary.std[j, 0]
        columns.append((summary.scores[j, items] - summary.mean[j, 0]) / (std if std > 1e-12 else np.float32(1.0)))
        columns.append((1.0 / (1.0 + signal_ranks)).astype(np.float32))
    columns.extend(value.at(row, items) if isinstance(value, Similarity) else value[row, items]
                   for value in extra.values())
    return np.ascontiguousarray(np.stack(columns, axis=1), dtype=np.float32)


def select_candidates(signal_scores: dict[str, np.ndarray], excluded: list[np.ndarray], per_signal: int) -> list[np.ndarray]:
    """Union of each signal's top `per_signal` unseen items, per user, sorted by item index."""
    return [candidates_from([summary]) for summary in summarise_rows(signal_scores, excluded, per_signal)]


def candidate_features(signal_scores: dict[str, np.ndarray], extra: dict[str, np.ndarray],
                       excluded: list[np.ndarray], candidates: list[np.ndarray]) -> tuple[list[np.ndarray], list[str]]:
    """Per user, a (n_candidates, n_features) float32 matrix, and the feature names.

    For every signal (float32 scores): its per-user z-score and its reciprocal rank 1 / (1 + rank),
    ranks taken after the excluded items are removed; `extra` holds per-(user, item) features used as
    they are (e.g. log popularity, or a `Similarity` such as the similarity to the last item). The z-score's mean and spread and the
    ranks come from the user's whole row; only the candidates' values are kept.
    """
    names = feature_names(signal_scores, extra)
    summaries = summarise_rows(signal_scores, excluded, per_signal=0)
    return [features_from([summary], list(signal_scores), extra, row, items)
            for row, (summary, items) in enumerate(zip(summaries, candidates))], names


def feature_names(signal_order, extra) -> list[str]:
    return [f"{name}_{kind}" for name in signal_order for kind in ("z", "rr")] + list(extra)


class _Ranker:
    """Standardise → MLP → score; standardisation constants live in the module so ONNX carries them."""

    @staticmethod
    def build(n_features: int, hidden: tuple[int, ...], mean: np.ndarray, std: np.ndarray):
        import torch

        class Ranker(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
                self.register_buffer("std", torch.tensor(std, dtype=torch.float32))
                layers, width = [], n_features
                for size in hidden:
                    layers += [torch.nn.Linear(width, size), torch.nn.ReLU()]
                    width = size
                layers.append(torch.nn.Linear(width, 1))
                self.mlp = torch.nn.Sequential(*layers)

            def forward(self, features):
                return self.mlp((features - self.mean) / self.std).squeeze(-1)

        return Ranker()


class _WithPrior:
    """`scale * standardised(feature[prior]) + mlp(features)`, the MLP's output layer starting at zero."""

    @staticmethod
    def build(mlp, prior_index: int):
        import torch

        class WithPrior(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.mlp = mlp
                self.prior_index = prior_index
                torch.nn.init.zeros_(mlp.mlp[-1].weight)
                torch.nn.init.zeros_(mlp.mlp[-1].bias)
                self.scale = torch.nn.Parameter(torch.tensor(1.0))

            def forward(self, features):
                prior = (features[..., self.prior_index] - self.mlp.mean[self.prior_index]) / self.mlp.std[self.prior_index]
                return self.scale * prior + self.mlp(features)

        return WithPrior()


@dataclass(frozen=True, kw_only=True)
class TrainedRanker:
    module: object  # torch.nn.Module
    feature_names: list[str]
    n_lists: int  # training lists with a target among their candidates (a user has one per hold-out fold)
    candidate_recall: float  # share of training lists whose target was among the candidates
    first_loss: float  # nan when no epoch was trained (the prior alone did best)
    last_loss: float
    epochs: int = 0  # what each member was trained for
    prior: str | None = None  # the feature the model starts from (see RankerConfig.prior)
    # Mean held-out NDCG@10 after 0, 1, ... epochs over the cross-validation folds (empty without them).
    validation_curve: tuple[float, ...] = ()


def train_ranker(features: list[np.ndarray], target_positions: list[np.ndarray], feature_names: list[str],
                 config: RankerConfig = RankerConfig(), groups: list[int] | None = None) -> TrainedRanker:
    """Listwise training: softmax over each user's candidates, cross-entropy on the target(s).

    `target_positions[u]` are the indices (into features[u]) of that user's held-out items; users with
    none among their candidates carry no signal and are left out. `groups[u]` (e.g. the user, when one
    user has a list per hold-out fold) keeps lists of a group in the same cross-validation fold, so a
    held-out fold never holds a user the ranker trained on.
    """
    import torch

    usable = [u for u, positions in enumerate(target_positions) if len(positions)]
    if groups is not None and len(groups) != len(features):
        raise ValueError(f"groups has {len(groups)} entries for {len(features)} lists")
    usable_groups = None if groups is None else np.asarray([groups[u] for u in usable])
    if not usable:
        raise ValueError("no training user has a target among its candidates; raise candidates_per_signal")
    if config.ensemble < 1:
        raise ValueError(f"ensemble must be at least 1, got {config.ensemble}")
    stacked = np.concatenate([features[u] for u in usable])
    mean, std = stacked.mean(axis=0), stacked.std(axis=0)
    std = np.where(std > 1e-6, std, 1.0)
    width = max(len(features[u]) for u in usable)
    x = np.zeros((len(usable), width, stacked.shape[1]), np.float32)
    mask = np.zeros((len(usable), width), bool)
    y = np.zeros((len(usable), width), np.float32)
    for row, u in enumerate(usable):
        n = len(features[u])
        x[row, :n] = features[u]
        mask[row, :n] = True
        y[row, target_positions[u]] = 1.0 / len(target_positions[u])
    if config.early_stopping_folds < 0:
        raise ValueError(f"early_stopping_folds must be 0 or more, got {config.early_stopping_folds}")
    if not 0.0 < config.early_stopping_share < 1.0:
        raise ValueError(f"early_stopping_share must be in (0, 1), got {config.early_stopping_share}")
    data = torch.from_numpy(x), torch.from_numpy(mask), torch.from_numpy(y)
    prior = best_single_feature(x, mask, y > 0, feature_names) if config.prior else None
    prior_index = None if prior is None else feature_names.index(prior)
    epochs, curve = config.epochs, ()
    units = len(usable) if usable_groups is None else len(np.unique(usable_groups))  # what folds are cut from
    folds = min(config.early_stopping_folds, units)
    if folds >= 2 or (folds == 1 and 1 <= round(config.early_stopping_share * units) < units):
        epochs, curve = _cross_validated_epochs(data, mean, std, config, folds, prior_index, usable_groups)
    members, losses = [], []
    for member in range(config.ensemble if epochs else 1):  # untrained members would all be the prior
        module, member_losses = _train_member(data, mean, std, config, seed=config.seed + member, epochs=epochs,
                                              prior_index=prior_index)
        members.append(module)
        losses.append(member_losses or [float("nan")])
    module = members[0] if len(members) == 1 else _Average.build(members)
    module.eval()
    return TrainedRanker(module=module, feature_names=feature_names, n_lists=len(usable),
                         candidate_recall=len(usable) / len(target_positions),
                         first_loss=float(np.mean([l[0] for l in losses])),
                         last_loss=float(np.mean([l[-1] for l in losses])), epochs=epochs, prior=prior,
                         validation_curve=curve)


def best_single_feature(x: np.ndarray, mask: np.ndarray, relevant: np.ndarray, names: list[str]) -> str:
    """The feature whose own ordering of the lists scores the best NDCG@10 (the first of equal bests)."""
    import torch

    scores = []
    for j in range(x.shape[2]):
        scores.append(_ndcg_at_10(lambda features, j=j: features[..., j], torch.from_numpy(x), torch.from_numpy(mask),
                                  torch.from_numpy(relevant)))
    return names[int(np.argmax(scores))]


def _cross_validated_epochs(data, mean, std, config: RankerConfig, folds: int, prior_index: int | None,
                            groups: np.ndarray | None = None) -> tuple[int, tuple[float, ...]]:
    """The epoch count with the best mean NDCG@10 on held-out lists over `folds` folds (fewer on ties);
    one fold holds out `early_stopping_share` of the lists once. Lists of one group share a fold.

    With a prior, 0 epochs (the prior alone) is a candidate too; an untrained MLP without one is not.
    """
    import torch

    x_t, mask_t, y_t = data
    order, parts = cross_validation_parts(len(x_t), folds, config.early_stopping_share, config.seed + 10_000, groups)
    totals = np.zeros(config.epochs + 1)
    for held_out in parts:
        rest = order[~torch.isin(order, held_out)]
        held = x_t[held_out], mask_t[held_out], y_t[held_out] > 0
        scores: list[float] = []
        _train_member((x_t[rest], mask_t[rest], y_t[rest]), mean, std, config, seed=config.seed, epochs=config.epochs,
                      prior_index=prior_index, after_epoch=lambda module: scores.append(_ndcg_at_10(module, *held)))
        totals += np.asarray(scores) * len(held_out)
    curve = tuple(float(v) for v in totals / sum(len(part) for part in parts))
    first = 0 if prior_index is not None else 1  # an untrained MLP without a prior is noise, not a candidate
    return first + int(np.argmax(curve[first:])), curve


def cross_validation_parts(n_lists: int, folds: int, share: float, seed: int, groups: np.ndarray | None = None):
    """(the lists in a shuffled order, the held-out lists of each fold): `folds` disjoint parts covering
    every list, or for one fold a single part of `share` of them. With `groups`, whole groups are drawn,
    never split. Training lists keep the shuffled order (training runs depend on it)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    if groups is None:
        order = torch.randperm(n_lists, generator=generator)
        if folds == 1:
            return order, [order[: int(round(share * n_lists))]]
        return order, [order[fold::folds] for fold in range(folds)]
    names, group_of = np.unique(np.asarray(groups), return_inverse=True)
    group_order = torch.randperm(len(names), generator=generator).numpy()
    if folds == 1:
        chosen = [group_order[: int(round(share * len(names)))]]
    else:
        chosen = [group_order[fold::folds] for fold in range(folds)]
    order = torch.randperm(n_lists, generator=generator)
    return order, [torch.from_numpy(np.flatnonzero(np.isin(group_of, part))) for part in chosen]


def _ndcg_at_10(module, x, mask, relevant) -> float:
    """NDCG@10 of the module's ordering of each list, by the evaluation's own metric code."""
    import torch

    from lmrec.export.metrics import compute_metrics, rank_top_k

    with torch.no_grad():
        logits = module(x).masked_fill(~mask, float("-inf")).numpy()  # padding is never ranked
    top = rank_top_k(logits, None, 10)
    targets = [np.flatnonzero(row) for row in relevant.numpy()]
    return compute_metrics(top, targets, n_items=logits.shape[1], ks=(10,))["ndcg@10"]


def _train_member(data, mean: np.ndarray, std: np.ndarray, config: RankerConfig, *, seed: int, epochs: int,
                  prior_index: int | None = None, after_epoch=None):
    """One member trained for `epochs`; `after_epoch(module)` also runs once before the first epoch."""
    import torch

    x_t, mask_t, y_t = data
    torch.manual_seed(seed)
    module = _Ranker.build(x_t.shape[2], config.hidden, mean, std)
    if prior_index is not None:
        module = _WithPrior.build(module, prior_index)
    if after_epoch is not None:
        module.eval()
        after_epoch(module)
    optimizer = torch.optim.AdamW(module.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(epochs):
        module.train()
        order = torch.randperm(len(x_t), generator=generator)
        epoch_loss = 0.0
        for start in range(0, len(x_t), config.batch_users):
            batch = order[start : start + config.batch_users]
            logits = module(x_t[batch]).masked_fill(~mask_t[batch], -1e9)
            loss = -(y_t[batch] * torch.log_softmax(logits, dim=1)).sum(dim=1).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            epoch_loss += float(loss.detach()) * len(batch)
        losses.append(epoch_loss / len(x_t))
        if after_epoch is not None:
            module.eval()
            after_epoch(module)
    module.eval()
    return module, losses


class _Average:
    """The mean score of several trained rankers, one module so that one ONNX graph carries them all."""

    @staticmethod
    def build(members: list):
        import torch

        class Average(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.members = torch.nn.ModuleList(members)

            def forward(self, features):
                return torch.stack([member(features) for member in self.members]).mean(dim=0)

        return Average()


def export_ranker_onnx(ranker: TrainedRanker, path: Path) -> Path:
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros((4, len(ranker.feature_names)), dtype=torch.float32)
    # The TorchScript exporter is the one that handles this plain MLP without extra dependencies;
    # its deprecation notice is not actionable here.
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        _export(torch, ranker, example, path)
    return path


def _export(torch, ranker: TrainedRanker, example, path: Path) -> None:
    torch.onnx.export(ranker.module, (example,), str(path), input_names=[RANKER_INPUT],
                      output_names=[RANKER_OUTPUT], dynamic_axes={RANKER_INPUT: {0: "n"}, RANKER_OUTPUT: {0: "n"}},
                      opset_version=18, dynamo=False)

