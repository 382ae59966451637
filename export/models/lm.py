"""Language-model recommenders: cosine of the user's profile text to each item's text.

`lm-pretrained` uses the packaged MiniLM zero-shot; `lm-finetuned` first fine-tunes it as a two-tower
model on the training interactions (export/finetune.py). Both score through the same exported ONNX
encoder and the same text builders as the served path, so offline figures describe what the
gateway's LM signal does.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, ClassVar, Literal, Sequence

import numpy as np

from lmrec.encoder import OnnxTextEncoder
from lmrec.export.cache import cache_dir, mark_used
from lmrec.export.dataset import Dataset, Interactions
from lmrec.text import item_text_of, profile_text_of

_ENCODERS: dict[tuple[str, str], OnnxTextEncoder] = {}
_WEIGHT_DIGESTS: dict[tuple[str, int, int], str] = {}


def model_identity(model: str) -> str:
    """What a cache key says about a model: for a folder, the digest of its weights, not its path. The
    packaged MiniLM lives inside the virtual environment, so a path-keyed cache missed in every new venv
    (or fresh clone) and kept the old entries: a new fine-tune and two new exports (~0.4 GB) each time."""
    weights = Path(model) / "model.safetensors"
    if not weights.is_file():
        return model  # a hub name, or a folder without safetensors weights: the name is all we have
    stat = weights.stat()
    seen = (str(weights.resolve()), stat.st_size, stat.st_mtime_ns)
    if seen not in _WEIGHT_DIGESTS:
        digest = hashlib.sha256()
        with weights.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _WEIGHT_DIGESTS[seen] = "sha256:" + digest.hexdigest()
    return _WEIGHT_DIGESTS[seen]


def exported_encoder(model: str | None = None, precision: Literal["fp32", "int8"] = "fp32") -> OnnxTextEncoder:
    """An exported encoder for `model`, exported once per machine (cached by model path) and per process."""
    from lmrec.export.encoder_export import (FP32_FILE, INT8_FILE, EncoderExportConfig, default_model_path,
                                             export_encoder, export_recipe)

    model = model or default_model_path()
    key = (model, precision)
    if key not in _ENCODERS:
        # The recipe (opset, quantisation) is part of the key: a changed recipe must not reuse old files.
        # Offline scoring records the int8 drift without gating it: the int8 rows measure it.
        export_config = EncoderExportConfig(model=model, output_dir=Path(), int8_min_cosine=None)
        fingerprint = model_identity(model) + "|" + export_recipe(export_config)
        directory = cache_dir() / "encoders" / hashlib.sha256(fingerprint.encode()).hexdigest()[:16]
        if not (directory / INT8_FILE).is_file():
            # Exported beside the cache entry and moved in whole: a failed export leaves no entry behind.
            directory.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=directory.name + "-", dir=directory.parent))
            try:
                export_encoder(replace(export_config, output_dir=staging), progress=lambda *_: None)
                shutil.rmtree(directory, ignore_errors=True)  # an incomplete entry from an older version
                staging.rename(directory)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        _ENCODERS[key] = OnnxTextEncoder(directory, onnx_file=FP32_FILE if precision == "fp32" else INT8_FILE)
        mark_used(directory)
    return _ENCODERS[key]


class _TextEncoderRecommender:
    name = ""
    param_grid: ClassVar[list[dict[str, Any]]] = [{}]

    def __init__(self, *, seed: int = 42, precision: Literal["fp32", "int8"] = "fp32") -> None:
        self.seed = seed
        self.precision = precision
        self.item_embeddings: np.ndarray | None = None

    def _encoder_for(self, dataset: Dataset, train: Interactions) -> OnnxTextEncoder:
        raise NotImplementedError

    def fit(self, dataset: Dataset, train: Interactions):
        self._dataset = dataset
        self.encoder = self._encoder_for(dataset, train)
        self.item_embeddings = self.encoder.encode([item_text_of(info) for info in dataset.items])
        return self

    def profile_texts(self, users: np.ndarray, histories: Sequence[np.ndarray]) -> list[str]:
        items, people = self._dataset.items, self._dataset.users
        texts = []
        for user, history in zip(np.asarray(users).tolist(), histories):
            attributes = people[user].attributes if 0 <= user < len(people) else {}
            texts.append(profile_text_of([items[i] for i in np.asarray(history)[::-1]], attributes=attributes))
        return texts

    def user_embeddings(self, users: np.ndarray, histories: Sequence[np.ndarray]) -> np.ndarray:
        if self.item_embeddings is None:
            raise RuntimeError("fit the model before scoring")
        return self.encoder.encode(self.profile_texts(users, histories))

    def score(self, users: np.ndarray, histories: Sequence[np.ndarray]) -> np.ndarray:
        return (self.user_embeddings(users, histories) @ self.item_embeddings.T).astype(np.float32)


class PretrainedLMRecommender(_TextEncoderRecommender):
    """Zero-shot: nothing is learned from the interactions; the item side depends only on item text."""

    name = "lm-pretrained"

    def __init__(self, *, seed: int = 42, model: str | None = None,
                 precision: Literal["fp32", "int8"] = "fp32") -> None:
        super().__init__(seed=seed, precision=precision)
        self.model = model

    def _encoder_for(self, dataset: Dataset, train: Interactions) -> OnnxTextEncoder:
        return exported_encoder(self.model, self.precision)


# A title alone takes 10-20 tokens; below this the profile → item pairs are mostly truncated away.
MIN_MAX_LENGTH = 16


def check_finetuning(config, dataset: Dataset, train: Interactions) -> None:
    """`FinetuneConfig.check`, and settings it lets through that fail late or train nothing: a zero
    temperature (the int8 export fails after training), a max length that truncates every text to a few
    tokens. (Kept out of export/finetune.py on purpose: its source keys the cache of fine-tuned models,
    and a check that trains nothing differently should not invalidate them.)"""
    config.check(dataset, train)
    if not config.temperature > 0:
        raise ValueError(f"fine-tuning needs temperature > 0 (got {config.temperature})")
    if config.max_length < MIN_MAX_LENGTH:
        raise ValueError(f"fine-tuning needs max_length >= {MIN_MAX_LENGTH} tokens (got {config.max_length}): "
                         "shorter texts cannot tell items apart")
    for name, value, lowest in (("learning_rate", config.learning_rate, None), ("frozen_layers", config.frozen_layers, 0),
                                ("extra_negatives", config.extra_negatives, 0),
                                ("max_pairs_per_user", config.max_pairs_per_user, 1), ("threads", config.threads, 1)):
        if not (value > 0 if lowest is None else value >= lowest):
            raise ValueError(f"fine-tuning needs {name} {'> 0' if lowest is None else f'>= {lowest}'} (got {value})")


def training_fingerprint(dataset: Dataset, train: Interactions, config) -> str:
    digest = hashlib.sha256()
    digest.update(dataset.name.encode())
    digest.update(str(dataset.n_items).encode())
    for column in (train.user, train.item, train.timestamp):
        digest.update(np.ascontiguousarray(column).tobytes())
    # What the texts are built from: an edited items file or CSV layout must not reuse the old model.
    digest.update(repr(dataset.items).encode())
    digest.update(repr(dataset.users).encode())
    settings = asdict(config)  # a fine-tune's config, or the fused model's ranker config (no base model)
    if "base_model" in settings:
        settings["base_model"] = model_identity(settings["base_model"])
    digest.update(json.dumps({k: str(v) for k, v in settings.items()}, sort_keys=True).encode())
    # A change to the text builders or the training loop must not reuse a model trained with the old ones.
    import lmrec.export.finetune
    import lmrec.text

    for module in (lmrec.text, lmrec.export.finetune):
        digest.update(code_fingerprint(module).encode())
    return digest.hexdigest()[:20]


def text_builder_fingerprint() -> str:
    """What the text builders (`lmrec.text`) do, comments and docstrings aside. A bundle records it; a gateway
    that builds texts differently says so when it loads the bundle (`server/bundle.py`)."""
    import lmrec.text

    return hashlib.sha256(code_fingerprint(lmrec.text).encode()).hexdigest()[:16]


def code_fingerprint(module) -> str:
    """What a module's code does, without its comments and docstrings: editing those must not cost a new
    fine-tune (minutes) and leave the old one in the cache unreachable."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(module))
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(body, list) and body and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return ast.unparse(tree)  # code as text: steadier across Python versions than ast.dump


class FinetunedLMRecommender(_TextEncoderRecommender):
    """Two-tower fine-tuned MiniLM (profile → next item). Fine-tuned models are cached per training set."""

    name = "lm-finetuned"

    @staticmethod
    def setting_defaults() -> dict[str, Any]:
        """Its settings, for `check_settings`: seed, precision and the fine-tuning ones (`FinetuneConfig`)."""
        from dataclasses import fields

        from lmrec.export.finetune import FinetuneConfig

        return {"seed": 42, "precision": "fp32", **{f.name: getattr(FinetuneConfig(), f.name) for f in fields(FinetuneConfig)}}

    def __init__(self, *, seed: int = 42, precision: Literal["fp32", "int8"] = "fp32", **finetune: Any) -> None:
        from lmrec.export.finetune import FinetuneConfig

        super().__init__(seed=seed, precision=precision)
        self.config = replace(FinetuneConfig(), seed=seed, **finetune)

    def check(self, dataset: Dataset, train: Interactions) -> None:
        """Refuse a fine-tuning set-up that cannot work, before anything long runs."""
        check_finetuning(self.config, dataset, train)

    def _encoder_for(self, dataset: Dataset, train: Interactions) -> OnnxTextEncoder:
        from lmrec.export.finetune import finetune_encoder

        directory = cache_dir() / "finetuned" / training_fingerprint(dataset, train, self.config)
        self.model_dir = directory
        if not (directory / "lmrec_finetune.json").is_file():
            finetune_encoder(self.config, dataset, train, directory,
                             progress=lambda line: print("    " + line, flush=True))
        mark_used(directory)
        return exported_encoder(str(directory), self.precision)
