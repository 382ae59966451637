"""Encoder fine-tuning: pairs come from training only, bad set-ups fail at once, runs are reproducible."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from lmrec.export.dataset import Dataset, Interactions, ItemInfo, UserInfo
from lmrec.export.finetune import FinetuneConfig, _batches, finetune_encoder, training_pairs
from lmrec.export.models.lm import training_fingerprint


def small_dataset(titles=None) -> tuple[Dataset, Interactions]:
    titles = titles or [f"Space adventure {i}" if i % 2 else f"Cooking show {i}" for i in range(12)]
    items = tuple(ItemInfo(title=t, categories=("Space" if "Space" in t else "Cooking",)) for t in titles)
    users, item_ids = [], []
    for user in range(6):
        for step in range(5):
            users.append(user)
            item_ids.append((user % 2) + 2 * ((user + step) % 6))
    train = Interactions.from_lists(users, item_ids, timestamp=np.arange(len(users))).sorted()
    dataset = Dataset(name="tiny", user_ids=tuple(f"u{u}" for u in range(6)),
                      item_ids=tuple(f"i{i}" for i in range(len(titles))), items=items,
                      users=tuple(UserInfo() for _ in range(6)), interactions=train)
    return dataset, train


def test_training_pairs_use_only_what_came_before_each_target():
    dataset, train = small_dataset()
    from lmrec.text import profile_text_of

    profiles, targets = training_pairs(dataset, train, max_per_user=10, rng=np.random.default_rng(0))
    expected = set()
    for user, history in enumerate(dataset.histories()):
        for t in range(1, len(history)):
            expected.add((profile_text_of([dataset.items[i] for i in history[:t][::-1]]), int(history[t])))
    assert len(profiles) == 6 * 4  # every position after the first
    assert set(zip(profiles, targets.tolist())) == expected


def test_batches_never_repeat_an_item_within_a_batch():
    targets = np.array([0, 0, 1, 1, 2, 2, 3, 3, 4, 5])
    for batch in _batches(targets, 4, 20, np.random.default_rng(1)):
        assert len(batch) == 4
        assert len(set(targets[batch].tolist())) == 4


@pytest.mark.parametrize(
    "change, words",
    [
        ({"batch_size": 64}, "larger than the catalogue"),
        ({"steps": 0}, "steps >= 1"),
    ],
)
def test_unworkable_configs_fail_before_training(tmp_path, change, words):
    dataset, train = small_dataset()
    with pytest.raises(ValueError, match=words):
        finetune_encoder(FinetuneConfig(**change), dataset, train, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_empty_training_split_and_missing_item_text_are_refused(tmp_path):
    dataset, train = small_dataset()
    with pytest.raises(ValueError, match="training split is empty"):
        FinetuneConfig(batch_size=4).check(dataset, train.select(np.zeros(len(train), bool)))
    textless, train = small_dataset(titles=[""] * 12)  # genres only: every item of a genre reads the same
    with pytest.raises(ValueError, match="no item text"):
        FinetuneConfig(batch_size=4).check(textless, train)


def test_a_catalogue_described_without_titles_can_be_fine_tuned(tmp_path):
    """Descriptions (or tags) are item text too: a catalogue without titles is not refused."""
    dataset, train = small_dataset()
    described = replace(dataset, items=tuple(replace(info, title="", description=f"{info.title}: a story.")
                                             for info in dataset.items))
    FinetuneConfig(batch_size=4).check(described, train)
    tagged = replace(dataset, items=tuple(replace(info, title="", tags=(info.title,)) for info in dataset.items))
    FinetuneConfig(batch_size=4).check(tagged, train)


def test_tiny_finetune_is_reproducible_and_saves_a_sentence_transformer(tmp_path):
    dataset, train = small_dataset()
    config = FinetuneConfig(steps=3, batch_size=4, max_pairs_per_user=3, seed=5)
    first = finetune_encoder(config, dataset, train, tmp_path / "a", progress=lambda *_: None)
    second = finetune_encoder(config, dataset, train, tmp_path / "b", progress=lambda *_: None)
    assert first.first_loss == pytest.approx(second.first_loss) and first.last_loss == pytest.approx(second.last_loss)
    assert (tmp_path / "a" / "lmrec_finetune.json").is_file()
    from sentence_transformers import SentenceTransformer

    model_a = SentenceTransformer(str(tmp_path / "a"), device="cpu")
    model_b = SentenceTransformer(str(tmp_path / "b"), device="cpu")
    assert model_a.max_seq_length == config.max_length
    text = ["Space adventure 3"]
    np.testing.assert_allclose(model_a.encode(text), model_b.encode(text), atol=1e-5)


def test_fingerprint_changes_with_the_training_data_and_the_config():
    dataset, train = small_dataset()
    base = training_fingerprint(dataset, train, FinetuneConfig())
    assert base == training_fingerprint(dataset, train, FinetuneConfig())
    assert base != training_fingerprint(dataset, train.select(np.arange(len(train) - 1)), FinetuneConfig())
    assert base != training_fingerprint(dataset, train, FinetuneConfig(steps=7))
    # The texts the model learns from: an item's description or a user's attributes edited.
    from dataclasses import replace

    edited_item = replace(dataset, items=(replace(dataset.items[0], description="edited"),) + dataset.items[1:])
    assert base != training_fingerprint(edited_item, train, FinetuneConfig())
    edited_user = replace(dataset, users=(replace(dataset.users[0], attributes={"age": "99"}),) + dataset.users[1:])
    assert base != training_fingerprint(edited_user, train, FinetuneConfig())


def test_the_code_fingerprint_ignores_comments_and_docstrings_but_not_code(tmp_path, monkeypatch):
    import importlib

    from lmrec.export.models.lm import code_fingerprint

    def fingerprint_of(source: str) -> str:
        (tmp_path / "probe_text.py").write_text(source)
        monkeypatch.syspath_prepend(str(tmp_path))
        import sys

        sys.modules.pop("probe_text", None)
        return code_fingerprint(importlib.import_module("probe_text"))

    base = fingerprint_of('"""Texts."""\n\ndef build(x):\n    return f"{x} film"\n')
    assert base == fingerprint_of('"""Other words."""\n\n# why\ndef build(x):\n    """Doc."""\n    return f"{x} film"  # note\n')
    assert base != fingerprint_of('"""Texts."""\n\ndef build(x):\n    return f"{x} movie"\n')
    # A function whose body is only a docstring still parses to something.
    assert fingerprint_of('def build(x):\n    """Only a doc."""\n') == fingerprint_of("def build(x):\n    pass\n")
