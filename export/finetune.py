"""Fine-tune the sentence encoder as a two-tower model: user profile text → text of the next item.

Entry point: `finetune_encoder(config, dataset, train) -> FinetuneResult`. Both towers share the
MiniLM weights; the loss is softmax cross-entropy over in-batch negatives (every other item in the
batch is a negative for a profile), optionally with popularity-sampled extra negatives. Lower layers
can be frozen so a full ml-100k run fits the 2-core CPU budget. The result is a sentence-transformers
folder that `export_encoder` turns into ONNX through the same Optimum path as the pretrained model.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from lmrec.text import has_item_text, item_text_of, profile_text_of

from .dataset import Dataset, Interactions, histories_of
from .encoder_export import default_model_path


@dataclass(frozen=True, kw_only=True)
class FinetuneConfig:
    base_model: str = field(default_factory=default_model_path)
    steps: int = 300  # ~18 min on ml-100k with 2 cores (1,092 s at max length 256); the quality figures use it
    batch_size: int = 32
    # Also the served truncation length afterwards, as the pretrained encoder's. Chosen on validation
    # (ml-100k temporal-loo, fit on train): 128 cut the oldest items of three in four ten-item profiles
    # (mean 139 tokens) and reached NDCG@10 0.0275; 256 reads them whole and reached 0.0293 (1.8x the time).
    max_length: int = 256
    frozen_layers: int = 4  # lowest transformer layers (and the embeddings) kept fixed; MiniLM-L6 has 6
    learning_rate: float = 1e-4
    temperature: float = 0.05
    extra_negatives: int = 0  # popularity-sampled negatives per batch, on top of the in-batch ones
    max_pairs_per_user: int = 40  # later positions first: the recent past matters most for next-item
    seed: int = 42
    threads: int = 2

    def check(self, dataset: Dataset, train: Interactions) -> None:
        """Refuse configurations that cannot work before any long computation starts."""
        if self.steps < 1 or self.batch_size < 2:
            raise ValueError(f"fine-tuning needs steps >= 1 and batch_size >= 2 (got {self.steps}, {self.batch_size})")
        if self.batch_size > dataset.n_items:
            raise ValueError(f"batch_size {self.batch_size} is larger than the catalogue ({dataset.n_items} items): "
                             "in-batch negatives need distinct items")
        if len(train) == 0:
            raise ValueError("the training split is empty: nothing to fine-tune on")
        if not any(has_item_text(info) for info in dataset.items):
            raise ValueError(f"data set '{dataset.name}' has no item text (titles, descriptions and tags are all "
                             "empty)")


@dataclass(frozen=True, kw_only=True)
class FinetuneResult:
    model_dir: Path
    config: FinetuneConfig
    n_pairs: int
    steps: int
    seconds: float
    first_loss: float
    last_loss: float


def training_pairs(dataset: Dataset, train: Interactions, *, max_per_user: int,
                   rng: np.random.Generator) -> tuple[list[str], np.ndarray]:
    """(profile text before position t, item at t) for the last `max_per_user` positions of each user."""
    histories = histories_of(train, dataset.n_users)
    profiles, targets = [], []
    for user, history in enumerate(histories):
        if len(history) < 2:
            continue
        attributes = dataset.users[user].attributes if user < len(dataset.users) else {}
        for t in range(max(1, len(history) - max_per_user), len(history)):
            past = history[:t][::-1]
            profiles.append(profile_text_of([dataset.items[i] for i in past], attributes=attributes))
            targets.append(int(history[t]))
    order = rng.permutation(len(targets))
    return [profiles[i] for i in order], np.asarray(targets, np.int64)[order]


def _batches(targets: np.ndarray, batch_size: int, steps: int, rng: np.random.Generator):
    """Index batches with distinct target items (a repeated item would be its own false negative).

    Walks a fresh permutation each epoch; a pair skipped for a duplicate item waits for a later batch.
    """
    order = rng.permutation(len(targets))
    position = 0
    pending: list[int] = []
    for _ in range(steps):
        chosen, seen = [], set()
        carry = []
        for index in pending:
            if len(chosen) < batch_size and int(targets[index]) not in seen:
                seen.add(int(targets[index]))
                chosen.append(index)
            else:
                carry.append(index)
        pending = carry
        scanned = 0
        while len(chosen) < batch_size and scanned < len(targets):
            if position >= len(order):
                order, position = rng.permutation(len(targets)), 0
            index = int(order[position])
            position += 1
            scanned += 1
            if int(targets[index]) in seen:
                pending.append(index)
            else:
                seen.add(int(targets[index]))
                chosen.append(index)
        pending = pending[-4 * batch_size:]
        yield np.asarray(chosen)


def _freeze(model, frozen_layers: int) -> None:
    for name, parameter in model.named_parameters():
        layer = None
        if "encoder.layer." in name:
            layer = int(name.split("encoder.layer.")[1].split(".")[0])
        frozen = frozen_layers > 0 and ("embeddings." in name or (layer is not None and layer < frozen_layers))
        parameter.requires_grad = not frozen


def finetune_encoder(config: FinetuneConfig, dataset: Dataset, train: Interactions, output_dir: Path, *,
                     progress=print) -> FinetuneResult:
    import torch
    from sentence_transformers import SentenceTransformer

    config.check(dataset, train)
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    rng = np.random.default_rng(config.seed)
    profiles, targets = training_pairs(dataset, train, max_per_user=config.max_pairs_per_user, rng=rng)
    if len(targets) < config.batch_size:
        raise ValueError(f"only {len(targets)} training pairs (users need at least 2 training interactions); "
                         f"batch_size is {config.batch_size}")
    item_texts = [item_text_of(info) for info in dataset.items]
    popularity = np.bincount(train.item, minlength=dataset.n_items).astype(np.float64) + 1.0
    negative_probability = popularity / popularity.sum()

    model = SentenceTransformer(config.base_model, device="cpu")
    model.max_seq_length = config.max_length
    _freeze(model, config.frozen_layers)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.learning_rate)
    warmup = max(1, config.steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / warmup) * max(0.0, 1 - step / config.steps) + 1e-3)

    def embed(texts: list[str]):
        features = model.preprocess(texts) if hasattr(model, "preprocess") else model.tokenize(texts)
        return model(features)["sentence_embedding"]

    losses = []
    progress(f"fine-tuning on {len(targets)} (profile → next item) pairs: {config.steps} steps of "
             f"{config.batch_size}, {config.frozen_layers} frozen layers, max length {config.max_length}")
    for step, batch in enumerate(_batches(targets, config.batch_size, config.steps, rng)):
        batch_items = targets[batch]
        doc_items = list(batch_items)
        if config.extra_negatives:
            extra = rng.choice(dataset.n_items, size=config.extra_negatives, p=negative_probability)
            doc_items += [int(i) for i in extra if i not in set(batch_items.tolist())]
        queries = embed([profiles[i] for i in batch])
        documents = embed([item_texts[i] for i in doc_items])
        logits = queries @ documents.T / config.temperature
        loss = torch.nn.functional.cross_entropy(logits, torch.arange(len(batch)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
        if step % 50 == 0 or step == config.steps - 1:
            recent = np.mean(losses[-50:])
            progress(f"  step {step + 1}/{config.steps}: loss {recent:.3f} ({time.perf_counter() - started:.0f}s)")
    model.eval()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save(str(output_dir))
    result = FinetuneResult(model_dir=output_dir, config=config, n_pairs=len(targets), steps=config.steps,
                            seconds=time.perf_counter() - started, first_loss=float(np.mean(losses[:20])),
                            last_loss=float(np.mean(losses[-20:])))
    summary = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(result).items() if k != "config"}
    summary["config"] = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()}
    (output_dir / "lmrec_finetune.json").write_text(json.dumps(summary, indent=2))
    return result
