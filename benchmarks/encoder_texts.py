"""Encoder suite: the workload. The benchmark texts (item texts and user profiles, half and half), their
token counts, the FLOPs of one sequence, and the requests (chunks) of each batch size."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .encoder_config import EncoderBenchConfig


def benchmark_texts(dataset, n_texts: int, seed: int) -> tuple[list[str], list[str]]:
    """(texts, kinds): n_texts sampled half from item texts, half from user profile texts, shuffled."""
    from lmrec.export.interest_tags import profile_texts
    from lmrec.text import item_text_of

    rng = np.random.default_rng(seed)
    items = [item_text_of(info) for info in dataset.items]
    # The profile texts of the interest tags and the other suites (the gateway's builder, `profile_text_of`,
    # on each history newest first); users without history are left out.
    histories = dataset.histories()
    users = [user for user, history in enumerate(histories) if len(history)]
    profiles = profile_texts(dataset, np.asarray(users, np.int64), [histories[u] for u in users])

    def sample(pool: list[str], k: int) -> list[str]:
        if not pool or k <= 0:
            return []
        index = rng.choice(len(pool), size=k, replace=k > len(pool))
        return [pool[i] for i in index]

    n_profiles = n_texts // 2 if profiles else 0
    chosen = [(t, "item") for t in sample(items, n_texts - n_profiles)] + [(t, "profile") for t in sample(profiles, n_profiles)]
    order = rng.permutation(len(chosen))
    return [chosen[i][0] for i in order], [chosen[i][1] for i in order]


@dataclass(frozen=True, kw_only=True)
class EncoderShape:
    hidden: int = 384
    intermediate: int = 1536
    layers: int = 6

    @staticmethod
    def of_model(model_dir: str | Path) -> "EncoderShape":
        path = Path(model_dir) / "config.json"
        if not path.is_file():
            return EncoderShape()
        raw = json.loads(path.read_text())
        return EncoderShape(hidden=int(raw.get("hidden_size", 384)), intermediate=int(raw.get("intermediate_size", 1536)),
                            layers=int(raw.get("num_hidden_layers", 6)))


def flops_per_sequence(n: int | np.ndarray, shape: EncoderShape = EncoderShape()):
    """Multiply-add FLOPs (2 per MAC) of the encoder's matrix products for one sequence of n tokens.

    Per BERT layer with hidden size h, intermediate size i and n tokens:

        Q, K, V and output projections   4 · (2·n·h·h)     = 2·n·4h²
        feed-forward up and down         2 · (2·n·h·i)     = 2·n·2hi
        attention scores Q·Kᵀ and P·V    2 · (2·n·n·h)     = 2·2·n²·h   (all heads together: h = heads · d)

        FLOPs ≈ L · [ 2·n·(4h² + 2·h·i) + 2·2·n²·h ]

    Embedding look-ups, layer norms, softmax, GELU and pooling are left out (a few % at these sizes).
    all-MiniLM-L6-v2: h=384, i=1536, L=6 → ≈ 21.2 MFLOP per token plus the n² attention term.
    """
    h, i, layers = shape.hidden, shape.intermediate, shape.layers
    n = np.asarray(n, dtype=np.float64)
    result = layers * (2.0 * n * (4 * h * h + 2 * h * i) + 2.0 * 2.0 * n * n * h)
    return float(result) if result.ndim == 0 else result


def model_max_length(model: str | Path) -> int:
    """The sentence-transformers folder's truncation length (`max_seq_length`), which an export copies."""
    import json

    config = Path(model) / "sentence_bert_config.json"
    if not config.is_file():
        raise FileNotFoundError(f"{config} missing: --model must be a sentence-transformers folder")
    return int(json.loads(config.read_text())["max_seq_length"])


def token_lengths(tokenizer_file: Path, max_length: int, texts: list[str]) -> np.ndarray:
    """Token counts as the encoders execute them: special tokens included, truncated at max_length."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length)
    return np.fromiter((len(e.ids) for e in tokenizer.encode_batch(texts)), np.int64, len(texts))


@dataclass(frozen=True)
class Chunk:
    """One request: `texts` and the FLOPs it costs padded to its longest text (as one batch executes it)."""

    texts: list[str]
    padded_tokens: int
    real_tokens: int
    flops_padded: float
    flops_real: float


def make_chunks(texts: list[str], lengths: np.ndarray, batch: int, shape: EncoderShape) -> list[Chunk]:
    """Requests of `batch` texts walking through the pool (wrapping), covering every text at least once."""
    n = len(texts)
    chunks = []
    for k in range(max(1, math.ceil(n / batch))):
        index = [(k * batch + j) % n for j in range(batch)]
        lens = lengths[index]
        width = int(lens.max())
        chunks.append(Chunk([texts[i] for i in index], padded_tokens=width * batch, real_tokens=int(lens.sum()),
                            flops_padded=batch * flops_per_sequence(width, shape),
                            flops_real=float(flops_per_sequence(lens, shape).sum())))
    return chunks


def _load_texts(config: EncoderBenchConfig) -> tuple[list[str], list[str], str]:
    from lmrec.export.loaders import DataConfig, load_dataset

    if config.synthetic is not None:
        data = DataConfig(dataset="synthetic", synthetic=config.synthetic)
    else:
        folder = Path(config.data_dir)
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder} not found: the encoder suite reads {config.dataset} from ../shared/data "
                                    "unless --data-dir says where it is")
        data = DataConfig(dataset=config.dataset, data_dir=folder, csv=config.csv)
    dataset = load_dataset(data).dataset
    texts, kinds = benchmark_texts(dataset, config.n_texts, config.seed)
    return texts, kinds, "synthetic" if config.synthetic is not None else dataset.name
