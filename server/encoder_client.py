"""The gateway's view of the served text encoder: Triton over gRPC (asyncio)."""

from __future__ import annotations

import numpy as np


class EncoderUnavailable(RuntimeError):
    """Triton could not encode in time (down, overloaded, or the deadline is too short)."""


class TritonTextEncoder:
    def __init__(self, url: str) -> None:
        import tritonclient.grpc.aio as grpcclient

        self._client = grpcclient.InferenceServerClient(url)
        self._grpc = grpcclient

    async def encode(self, texts: list[str], *, model: str, version: int, timeout_s: float) -> np.ndarray:
        data = np.array([[t.encode("utf-8")] for t in texts], dtype=object)
        tensor = self._grpc.InferInput("TEXT", list(data.shape), "BYTES")
        tensor.set_data_from_numpy(data)
        try:
            result = await self._client.infer(model, [tensor], model_version=str(version),
                                              client_timeout=max(timeout_s, 0.001))
        except Exception as error:  # tritonclient raises its own InferenceServerException for every failure
            raise EncoderUnavailable(f"text encoder {model}/{version} failed: {error}") from error
        return result.as_numpy("EMBEDDING")

    async def score(self, features: np.ndarray, *, model: str, version: int, timeout_s: float) -> np.ndarray:
        """The served fusion ranker's score for each feature row."""
        tensor = self._grpc.InferInput("FEATURES", list(features.shape), "FP32")
        tensor.set_data_from_numpy(np.ascontiguousarray(features, np.float32))
        try:
            result = await self._client.infer(model, [tensor], model_version=str(version),
                                              client_timeout=max(timeout_s, 0.001))
        except Exception as error:
            raise EncoderUnavailable(f"ranker {model}/{version} failed: {error}") from error
        return result.as_numpy("SCORE").reshape(-1)

    async def close(self) -> None:
        await self._client.close()
