"""The interface every recommendation method implements, and the factory that picks one by name.

A factory is any callable `factory(*, seed: int, **params) -> Recommender`; `seed` is always
accepted (deterministic methods ignore it) so the evaluation harness can seed every method alike.
The factory (usually the class itself) carries `param_grid`: the hyper-parameter sets tuned on
validation, `[{}]` when there is nothing to tune.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar, Protocol, Sequence, runtime_checkable

import numpy as np

from lmrec.cli_types import MAX_SEED
from lmrec.export.dataset import Dataset, Interactions
from lmrec.export.models.als import ALSRecommender
from lmrec.export.models.pop import PopularityRecommender


@runtime_checkable
class Recommender(Protocol):
    name: str
    param_grid: ClassVar[list[dict[str, Any]]]

    def fit(self, dataset: Dataset, train: Interactions) -> "Recommender":
        """Learn from `train` only; `dataset` gives sizes and item/user side information."""
        ...

    def score(self, users: np.ndarray, histories: Sequence[np.ndarray]) -> np.ndarray:
        """(len(users), dataset.n_items) float32 scores, higher is better.

        `histories[j]` is what is known about `users[j]` at prediction time, oldest first. Methods
        with learned per-user parameters may ignore it for users seen in training; a user without
        training interactions, or an index outside the fitted users (-1: an anonymous session), is
        scored from the history alone.
        """
        ...


ModelFactory = Callable[..., Recommender]

MODELS: dict[str, ModelFactory] = {}


def register_model(name: str, factory: ModelFactory) -> None:
    """Make `make_model(name)` build `factory(**params)`; re-registering a name replaces it."""
    MODELS[name] = factory


def make_model(name: str, **params: Any) -> Recommender:
    try:
        factory = MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; registered: {', '.join(sorted(MODELS))}") from None
    return factory(**params)


def check_settings(name: str, params: dict[str, Any]) -> None:
    """Refuse a setting `name` does not have, or a value of the wrong kind for it (text for a number, a
    fraction for a count, inf or NaN), with a message naming both; a default of None or of another type
    is not checked. Before any fit: such a value would otherwise fail deep inside one, as a traceback."""
    import inspect
    import math

    factory = MODELS[name]
    defaults = getattr(factory, "setting_defaults", None)
    if defaults is not None:
        defaults = defaults()
    else:
        parameters = inspect.signature(factory).parameters.values()
        if any(p.kind is p.VAR_KEYWORD for p in parameters):
            return
        defaults = {p.name: p.default for p in parameters if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    for key, value in params.items():
        if key not in defaults:
            raise ValueError(f"{name} has no setting {key!r} (its settings: {', '.join(sorted(defaults))})")
        default = defaults[key]
        if isinstance(default, bool):
            wrong = None if isinstance(value, bool) else "true or false"
        elif isinstance(default, int):
            wrong = None if isinstance(value, int) and not isinstance(value, bool) else "a whole number"
        elif isinstance(default, float):
            wrong = None if (isinstance(value, (int, float)) and not isinstance(value, bool)
                             and math.isfinite(value)) else "a finite number"
        elif isinstance(default, str):
            wrong = None if isinstance(value, str) else "text"
        else:
            wrong = None
        if wrong is None and key == "seed" and not 0 <= value <= MAX_SEED:  # numpy's refusal names no setting
            wrong = f"a whole number from 0 to {MAX_SEED}"
        if wrong is not None:
            raise ValueError(f"{name}.{key}={value!r}: needs {wrong}")


def model_param_grid(name: str) -> list[dict[str, Any]]:
    """The hyper-parameter sets to tune for `name` (copies, so callers may edit them)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; registered: {', '.join(sorted(MODELS))}")
    grid = getattr(MODELS[name], "param_grid", None) or [{}]
    return [dict(params) for params in grid]


# The built-ins are plain classes that satisfy the protocol structurally (they don't import this
# module), so listing them here creates no import cycle.
register_model(PopularityRecommender.name, PopularityRecommender)
register_model(ALSRecommender.name, ALSRecommender)
