"""The logic behind the Triton `text_encoder` python model, importable and unit-tested without Triton.

`model_repository/text_encoder/model.py` only adapts Triton's request objects to `encode_requests`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MAX_TEXT_BYTES = 16_384


class BadTextInput(ValueError):
    """One request's input cannot be encoded; only that request fails."""


def decode_texts(array: np.ndarray) -> list[str]:
    """A TYPE_STRING tensor of shape [batch, 1] (bytes objects) → Python strings."""
    texts = []
    for index, value in enumerate(np.asarray(array, dtype=object).reshape(-1)):
        raw = value if isinstance(value, bytes) else str(value).encode()
        if len(raw) > MAX_TEXT_BYTES:
            raise BadTextInput(f"TEXT[{index}] is {len(raw)} bytes; the limit is {MAX_TEXT_BYTES}")
        try:
            texts.append(raw.decode("utf-8"))
        except UnicodeDecodeError as error:
            raise BadTextInput(f"TEXT[{index}] is not valid UTF-8: {error}") from None
    return texts


def encode_requests(encoder, requests_texts: Sequence[np.ndarray]) -> list[np.ndarray | BadTextInput]:
    """Encode every valid request's texts in one batch (dynamic batching pays off) and split back.

    Returns, per request, an (n, dim) float32 array or the error that request alone gets.
    """
    decoded: list[list[str] | BadTextInput] = []
    for array in requests_texts:
        try:
            decoded.append(decode_texts(array))
        except BadTextInput as error:
            decoded.append(error)
    flat = [text for item in decoded if not isinstance(item, BadTextInput) for text in item]
    embeddings = encoder.encode(flat) if flat else np.zeros((0, encoder.dim), np.float32)
    results: list[np.ndarray | BadTextInput] = []
    offset = 0
    for item in decoded:
        if isinstance(item, BadTextInput):
            results.append(item)
            continue
        results.append(embeddings[offset : offset + len(item)])
        offset += len(item)
    return results
