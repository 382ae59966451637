"""Zero-shot language-model recommender: cosine of the user's profile text to each item's text.

Uses the same exported ONNX encoder and the same text builders as the served path, so offline
figures describe what the gateway's LM signal does.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, ClassVar, Literal, Sequence

import numpy as np

from lmrec.encoder import OnnxTextEncoder
from lmrec.export.dataset import Dataset, Interactions
from lmrec.text import item_text_of, profile_text_of

_ENCODERS: dict[tuple[str, str], OnnxTextEncoder] = {}


def encoder_cache_dir() -> Path:
    return Path(os.environ.get("LMREC_CACHE_DIR", Path.home() / ".cache" / "lmrec")) / "encoders"


def exported_encoder(model: str | None = None, precision: Literal["fp32", "int8"] = "fp32") -> OnnxTextEncoder:
    """An exported encoder for `model`, exported once per machine (cached by model path) and per process."""
    from lmrec.export.encoder_export import (FP32_FILE, INT8_FILE, EncoderExportConfig, default_model_path,
                                             export_encoder)

    model = model or default_model_path()
    key = (model, precision)
    if key not in _ENCODERS:
        directory = encoder_cache_dir() / hashlib.sha256(model.encode()).hexdigest()[:16]
        if not (directory / INT8_FILE).is_file():
            export_encoder(EncoderExportConfig(model=model, output_dir=directory), progress=lambda *_: None)
        _ENCODERS[key] = OnnxTextEncoder(directory, onnx_file=FP32_FILE if precision == "fp32" else INT8_FILE)
    return _ENCODERS[key]


class PretrainedLMRecommender:
    name = "lm-pretrained"
    param_grid: ClassVar[list[dict[str, Any]]] = [{}]

    def __init__(self, *, seed: int = 42, model: str | None = None,
                 precision: Literal["fp32", "int8"] = "fp32") -> None:
        self.seed = seed  # the encoder is deterministic; accepted for the uniform factory signature
        self.model = model
        self.precision = precision
        self.item_embeddings: np.ndarray | None = None

    def fit(self, dataset: Dataset, train: Interactions) -> "PretrainedLMRecommender":
        # Zero-shot: nothing is learned from `train`; the item side depends only on item text.
        self._dataset = dataset
        self._encoder = exported_encoder(self.model, self.precision)
        self.item_embeddings = self._encoder.encode([item_text_of(info) for info in dataset.items])
        return self

    def profile_texts(self, users: np.ndarray, histories: Sequence[np.ndarray]) -> list[str]:
        items, people = self._dataset.items, self._dataset.users
        texts = []
        for user, history in zip(np.asarray(users).tolist(), histories):
            attributes = people[user].attributes if 0 <= user < len(people) else {}
            texts.append(profile_text_of([items[i] for i in np.asarray(history)[::-1]], attributes=attributes))
        return texts

    def score(self, users: np.ndarray, histories: Sequence[np.ndarray]) -> np.ndarray:
        if self.item_embeddings is None:
            raise RuntimeError("fit the model before scoring")
        profiles = self._encoder.encode(self.profile_texts(users, histories))
        return (profiles @ self.item_embeddings.T).astype(np.float32)
