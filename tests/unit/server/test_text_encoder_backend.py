"""What the Triton python model does with a batch of requests, tested without Triton."""

from __future__ import annotations

import numpy as np
import pytest

from lmrec.server.text_encoder_backend import MAX_TEXT_BYTES, BadTextInput, decode_texts, encode_requests


def tensor(*texts) -> np.ndarray:
    """A TYPE_STRING input as Triton hands it over: object array of bytes, shape [batch, 1]."""
    return np.array([[t if isinstance(t, bytes) else t.encode("utf-8")] for t in texts], dtype=object)


class CountingEncoder:
    """Wraps the real encoder and records how often and with what it was called."""

    def __init__(self, encoder) -> None:
        self._encoder = encoder
        self.dim = encoder.dim
        self.calls: list[list[str]] = []

    def encode(self, texts):
        self.calls.append(list(texts))
        return self._encoder.encode(texts)


@pytest.fixture
def encoder(onnx_encoder):
    return CountingEncoder(onnx_encoder)


def test_decode_texts():
    assert decode_texts(tensor("a", "Amélie", "")) == ["a", "Amélie", ""]
    assert decode_texts(np.array(["plain str"], dtype=object)) == ["plain str"]
    assert decode_texts(np.array([[np.bytes_(b"numpy bytes")]], dtype=object)) == ["numpy bytes"]
    with pytest.raises(BadTextInput, match=r"TEXT\[1\] is not valid UTF-8"):
        decode_texts(tensor("ok", b"\xff\xfe bad"))
    with pytest.raises(BadTextInput, match=rf"TEXT\[0\] is {MAX_TEXT_BYTES + 1} bytes; the limit is {MAX_TEXT_BYTES}"):
        decode_texts(tensor("x" * (MAX_TEXT_BYTES + 1)))
    assert decode_texts(tensor("é" * (MAX_TEXT_BYTES // 2))) == ["é" * (MAX_TEXT_BYTES // 2)]


def test_one_bad_request_fails_alone_and_the_others_keep_their_order(encoder, onnx_encoder):
    requests = [
        tensor("space opera", "cooking show"),
        tensor(b"\xc3\x28 invalid"),
        tensor("haunted house"),
        tensor("y" * (MAX_TEXT_BYTES + 10)),
        tensor("romance in paris", "a documentary", "detective"),
    ]
    results = encode_requests(encoder, requests)
    assert len(results) == len(requests)
    assert isinstance(results[1], BadTextInput) and "UTF-8" in str(results[1])
    assert isinstance(results[3], BadTextInput) and str(MAX_TEXT_BYTES) in str(results[3])
    # One batched encoder call for every valid text.
    assert encoder.calls == [["space opera", "cooking show", "haunted house", "romance in paris", "a documentary",
                              "detective"]]
    for index, texts in ((0, ["space opera", "cooking show"]), (2, ["haunted house"]),
                         (4, ["romance in paris", "a documentary", "detective"])):
        assert results[index].shape == (len(texts), onnx_encoder.dim) and results[index].dtype == np.float32
        np.testing.assert_allclose(results[index], onnx_encoder.encode(texts), atol=1e-5)


def test_all_requests_bad_never_calls_the_encoder(encoder):
    results = encode_requests(encoder, [tensor(b"\xff"), tensor(b"\xfe")])
    assert all(isinstance(r, BadTextInput) for r in results)
    assert encoder.calls == []


def test_no_requests(encoder):
    assert encode_requests(encoder, []) == []
