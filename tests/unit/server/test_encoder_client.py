"""The gateway's Triton client without Triton: how it splits requests and when its breaker opens."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import numpy as np
import pytest

from lmrec.server.encoder_client import EncoderUnavailable, TritonTextEncoder


class _Tensor:
    def __init__(self, name, shape, dtype) -> None:
        self.shape = shape

    def set_data_from_numpy(self, data) -> None:
        self.data = data


class _Triton:
    """Refuses requests above 64 rows, as Triton does for the text_encoder's max_batch_size."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    async def infer(self, model, inputs, model_version, client_timeout):
        rows = inputs[0].shape[0]
        if rows > 64:
            raise RuntimeError(f"inference request batch-size must be <= 64 for '{model}'")
        self.batches.append(rows)
        texts = [row[0].decode() for row in inputs[0].data]
        return SimpleNamespace(as_numpy=lambda name: np.array([[float(t)] for t in texts], np.float32))


def _client(max_batch_size=None) -> TritonTextEncoder:
    client = TritonTextEncoder.__new__(TritonTextEncoder)
    client._client, client._grpc = _Triton(), SimpleNamespace(InferInput=_Tensor)
    client.retry_after_s, client._open_until = 0.5, {}
    client.max_batch_size = max_batch_size or 64
    return client


def test_more_texts_than_the_models_batch_limit_go_in_several_requests_in_order():
    client = _client()
    texts = [str(n) for n in range(150)]
    vectors = asyncio.run(client.encode(texts, model="text_encoder", version=1, timeout_s=5.0))
    assert client._client.batches == [64, 64, 22]
    np.testing.assert_array_equal(vectors[:, 0], np.arange(150, dtype=np.float32))


def test_a_failed_chunk_fails_the_whole_call():
    client = _client(max_batch_size=100)  # a limit above Triton's: the second request is refused
    with pytest.raises(EncoderUnavailable, match="batch-size must be <= 64"):
        asyncio.run(client.encode([str(n) for n in range(150)], model="text_encoder", version=1, timeout_s=5.0))


def test_the_bundles_own_batch_limit_splits_the_call():
    client = _client()
    texts = [str(n) for n in range(70)]
    vectors = asyncio.run(client.encode(texts, model="text_encoder_0123abcd", version=2, timeout_s=5.0,
                                        max_batch_size=32))
    assert client._client.batches == [32, 32, 6]
    np.testing.assert_array_equal(vectors[:, 0], np.arange(70, dtype=np.float32))


class _Refusing:
    """Answers like the adapters: INVALID_ARG for one request's bad input, UNAVAILABLE when Triton is gone."""

    def __init__(self, status: str) -> None:
        self.status, self.calls = status, 0

    async def infer(self, model, inputs, model_version, client_timeout):
        self.calls += 1
        status = self.status
        raise type("InferenceServerException", (Exception,), {"status": lambda self: status})("refused")


@pytest.mark.parametrize("status, opens", [("StatusCode.INVALID_ARGUMENT", False), ("StatusCode.DEADLINE_EXCEEDED", False),
                                           ("StatusCode.UNAVAILABLE", True), ("StatusCode.INTERNAL", True)])
def test_only_failures_of_triton_itself_open_the_breaker(status, opens):
    client = _client()
    client._client = _Refusing(status)
    for _ in range(2):
        with pytest.raises(EncoderUnavailable):
            asyncio.run(client.encode(["a"], model="text_encoder", version=1, timeout_s=5.0))
    assert client._client.calls == (1 if opens else 2)  # an open breaker answers the second call itself
    assert client.available is (not opens)


def test_texts_are_cut_to_what_the_model_accepts_on_a_character_boundary():
    from lmrec.server.encoder_client import clip_utf8
    from lmrec.server.text_encoder_backend import MAX_TEXT_BYTES, decode_texts

    long_text = "é" * MAX_TEXT_BYTES  # two bytes each: twice the limit
    clipped = clip_utf8(long_text, MAX_TEXT_BYTES)
    assert len(clipped) == MAX_TEXT_BYTES and clipped.decode("utf-8") == "é" * (MAX_TEXT_BYTES // 2)
    assert len(clip_utf8("ab" + "☃" * 6000, MAX_TEXT_BYTES)) == MAX_TEXT_BYTES - 2  # never a split character
    assert clip_utf8("short", MAX_TEXT_BYTES) == b"short"
    decode_texts(np.array([[clipped]], dtype=object))  # the backend takes it
