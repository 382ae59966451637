"""The gateway's view of the served models: Triton over gRPC (asyncio), with a short circuit breaker.

When Triton is unreachable every call would wait for a connection error; after one such failure the
client answers `EncoderUnavailable` at once for `retry_after_s`, then lets a call through again to see
whether Triton is back. Deadline misses do not trip it: a slow request says nothing about the next.
The breaker is kept per model version: during a deploy, a new version that fails (its warm-up retries
for up to 30 s) must not turn away the calls of the old, healthy one, nor the other way round.
"""

from __future__ import annotations

import time

import numpy as np

from lmrec.ranker_runtime import RANKER_INPUT, RANKER_OUTPUT

from .text_encoder_backend import MAX_TEXT_BYTES

# Reconnect quickly after Triton restarts (gRPC's default backoff grows to two minutes).
CHANNEL_ARGS = [("grpc.initial_reconnect_backoff_ms", 200), ("grpc.min_reconnect_backoff_ms", 200),
                ("grpc.max_reconnect_backoff_ms", 1000)]


def clip_utf8(text: str, limit: int) -> bytes:
    """`text` as UTF-8, cut to at most `limit` bytes on a character boundary."""
    raw = text.encode("utf-8")
    return raw if len(raw) <= limit else raw[:limit].decode("utf-8", "ignore").encode("utf-8")


class EncoderUnavailable(RuntimeError):
    """Triton could not answer in time (down, overloaded, or the deadline is too short)."""


class TritonTextEncoder:
    def __init__(self, url: str, *, retry_after_s: float = 0.5, max_batch_size: int | None = None) -> None:
        import tritonclient.grpc.aio as grpcclient

        from lmrec.export.triton_config import TextEncoderSpec

        self._client = grpcclient.InferenceServerClient(url, channel_args=CHANNEL_ARGS)
        self._grpc = grpcclient
        self.retry_after_s = retry_after_s
        # Triton refuses a request above the model's max_batch_size (it never splits one), and AddItems,
        # a restart re-adding stored items or a large tag vocabulary ask for more texts than that.
        self.max_batch_size = max_batch_size or TextEncoderSpec().max_batch_size
        self._open_until: dict[tuple[str, int], float] = {}  # (model, version) → when calls go through again

    @property
    def available(self) -> bool:
        """No model version's breaker is open (GetStatus reports this as `degraded`)."""
        now = time.monotonic()
        return all(now >= until for until in self._open_until.values())

    async def _infer(self, what: str, model: str, version: int, inputs, timeout_s: float):
        target = (model, int(version))
        if time.monotonic() < self._open_until.get(target, 0.0):
            raise EncoderUnavailable(f"{what} {model}/{version}: Triton was unreachable moments ago")
        try:
            result = await self._client.infer(model, inputs, model_version=str(version),
                                              client_timeout=max(timeout_s, 0.001))
        except Exception as error:  # tritonclient raises its own InferenceServerException for every failure
            status = str(getattr(error, "status", lambda: "")() or "")
            # A missed deadline, or a request the model refused (INVALID_ARGUMENT: this call's input), says
            # nothing about the next call; anything else (unreachable, model not loaded, crashed) does.
            if "DEADLINE" not in status and "INVALID_ARG" not in status:
                self._open_until[target] = time.monotonic() + self.retry_after_s
            raise EncoderUnavailable(f"{what} {model}/{version} failed: {error}") from error
        return result

    async def encode(self, texts: list[str], *, model: str, version: int, timeout_s: float,
                     max_batch_size: int | None = None) -> np.ndarray:
        """One embedding row per text, in requests of at most `max_batch_size` texts (the served model's, from
        its bundle; this client's default otherwise) within one deadline. Texts are cut to the model's
        MAX_TEXT_BYTES: it refuses longer ones, and reads only their first max_length tokens anyway."""
        deadline = time.monotonic() + timeout_s
        per_request = max_batch_size or self.max_batch_size
        parts = []
        for start in range(0, len(texts), per_request):
            data = np.array([[clip_utf8(t, MAX_TEXT_BYTES)] for t in texts[start:start + per_request]], dtype=object)
            tensor = self._grpc.InferInput("TEXT", list(data.shape), "BYTES")
            tensor.set_data_from_numpy(data)
            result = await self._infer("text encoder", model, version, [tensor], deadline - time.monotonic())
            parts.append(result.as_numpy("EMBEDDING"))
        if not parts:
            raise ValueError("no texts to encode")
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    async def score(self, features: np.ndarray, *, model: str, version: int, timeout_s: float) -> np.ndarray:
        """The served fusion ranker's score for each feature row."""
        tensor = self._grpc.InferInput(RANKER_INPUT, list(features.shape), "FP32")
        tensor.set_data_from_numpy(np.ascontiguousarray(features, np.float32))
        result = await self._infer("ranker", model, version, [tensor], timeout_s)
        return result.as_numpy(RANKER_OUTPUT).reshape(-1)

    async def close(self) -> None:
        await self._client.close()
