"""The fused model's training-set construction: hold-outs and pseudo-cold items."""

from __future__ import annotations

import numpy as np

from lmrec.export.dataset import Interactions


def test_fused_pseudo_cold_items_leave_the_inner_set_entirely():
    from lmrec.export.models.fused import move_items_to_held_out, split_holdout

    rng = np.random.default_rng(3)
    users = np.repeat(np.arange(20), 10)
    items = rng.integers(0, 30, size=len(users))
    train = Interactions.from_lists(users, items, timestamp=np.arange(len(users))).sorted()
    inner, held = split_holdout(train, 20, "random", rng)
    inner2, held2 = move_items_to_held_out(inner, held, 0.2, rng)
    cold = np.setdiff1d(np.unique(inner.item), np.unique(inner2.item))
    assert len(cold) == round(0.2 * len(np.unique(inner.item)))
    assert not np.isin(inner2.item, cold).any()  # no training evidence left for a pseudo-cold item
    assert len(inner2) + len(held2) == len(train)  # nothing lost, nothing duplicated
    assert np.isin(cold, held2.item).all()
