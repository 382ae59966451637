"""Encoder suite: the paths as runners, each measuring one cell within the per-cell budget. In-process
(sentence-transformers, ONNX) with one caller; served (Triton over gRPC, infinity-emb over HTTP) as a
closed loop with N requests in flight."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass

import numpy as np

from .encoder_config import BASELINE_PATH, INFINITY_PATH, ONNX_PATHS, EncoderBenchConfig
from .encoder_texts import Chunk


@dataclass
class CellResult:
    latencies_s: list[float]
    chunk_index: list[int]
    wall_s: float


def _budget_done(start: float, done: int, config: EncoderBenchConfig) -> bool:
    elapsed = time.perf_counter() - start
    return elapsed >= config.max_seconds or (elapsed >= config.min_seconds and done >= config.min_requests)


class InProcessPath:
    """A library called in this process, one caller at a time (concurrency 1)."""

    served = False

    def __init__(self, name: str, encode) -> None:
        self.name, self._encode = name, encode

    def run(self, chunks: list[Chunk], concurrency: int, config: EncoderBenchConfig) -> CellResult:
        self._encode(chunks[0].texts)  # warm-up
        latencies, which = [], []
        start = time.perf_counter()
        k = 0
        while not _budget_done(start, len(latencies), config):
            index = k % len(chunks)
            t0 = time.perf_counter()
            vectors = self._encode(chunks[index].texts)
            latencies.append(time.perf_counter() - t0)
            which.append(index)
            k += 1
        if len(vectors) != len(chunks[which[-1]].texts):
            raise RuntimeError(f"{self.name} returned {len(vectors)} vectors for {len(chunks[which[-1]].texts)} texts")
        return CellResult(latencies, which, time.perf_counter() - start)

    def close(self) -> None:
        pass


async def closed_loop(send, n_chunks: int, concurrency: int, config: EncoderBenchConfig) -> CellResult:
    """`concurrency` workers, each sending its next request as soon as the last one returned."""
    latencies: list[float] = []
    which: list[int] = []
    counter = 0
    start = time.perf_counter()

    async def worker() -> None:
        nonlocal counter
        while not _budget_done(start, len(latencies), config):
            index = counter % n_chunks
            counter += 1
            t0 = time.perf_counter()
            await send(index)
            latencies.append(time.perf_counter() - t0)
            which.append(index)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return CellResult(latencies, which, time.perf_counter() - start)


class TritonPath:
    """The lmrec text_encoder in Triton over gRPC (`tritonclient.grpc.aio`), N requests in flight."""

    served = True

    def __init__(self, name: str, url: str, model: str) -> None:
        self.name, self.url, self.model = name, url, model

    async def _run(self, chunks: list[Chunk], concurrency: int, config: EncoderBenchConfig) -> CellResult:
        import tritonclient.grpc.aio as grpcclient

        client = grpcclient.InferenceServerClient(self.url)
        inputs = []
        for chunk in chunks:
            data = np.array([[t.encode("utf-8")] for t in chunk.texts], dtype=object)
            tensor = grpcclient.InferInput("TEXT", list(data.shape), "BYTES")
            tensor.set_data_from_numpy(data)
            inputs.append(tensor)

        async def send(index: int) -> None:
            result = await client.infer(self.model, [inputs[index]], client_timeout=120.0)
            vectors = result.as_numpy("EMBEDDING")
            if vectors is None or len(vectors) != len(chunks[index].texts):
                raise RuntimeError(f"{self.name}: wrong answer shape {None if vectors is None else vectors.shape}")

        try:
            await send(0)  # warm-up: the channel and the model
            return await closed_loop(send, len(chunks), concurrency, config)
        finally:
            await client.close()

    def run(self, chunks: list[Chunk], concurrency: int, config: EncoderBenchConfig) -> CellResult:
        return asyncio.run(self._run(chunks, concurrency, config))

    def close(self) -> None:
        pass


class InfinityPath:
    """infinity-emb over HTTP (OpenAI-style POST /embeddings, aiohttp), N requests in flight."""

    served = True

    def __init__(self, server) -> None:
        self.name, self.server = INFINITY_PATH, server

    async def _run(self, chunks: list[Chunk], concurrency: int, config: EncoderBenchConfig) -> CellResult:
        import aiohttp

        bodies = [self.server.request_body(chunk.texts) for chunk in chunks]
        connector = aiohttp.TCPConnector(limit=max(concurrency, 1) * 2)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as session:
            async def send(index: int) -> None:
                raw = await self.server.post(session, bodies[index])
                self.server.parse_response(raw, len(chunks[index].texts))

            await send(0)  # warm-up: the connection and the model
            return await closed_loop(send, len(chunks), concurrency, config)

    def run(self, chunks: list[Chunk], concurrency: int, config: EncoderBenchConfig) -> CellResult:
        return asyncio.run(self._run(chunks, concurrency, config))

    def close(self) -> None:
        self.server.stop()


def sentence_transformers_path(model: str, device: str = "cpu") -> InProcessPath:
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(os.cpu_count() or 1)
    st = SentenceTransformer(model, device=device)

    def encode(texts: list[str]):
        with torch.inference_mode():
            return st.encode(texts, batch_size=len(texts), convert_to_numpy=True, show_progress_bar=False)

    return InProcessPath(BASELINE_PATH, encode)


def onnx_path(name: str, export, device: str = "cpu") -> InProcessPath:
    from lmrec.encoder import OnnxTextEncoder, execution_providers

    onnx_file = export.fp32_file if ONNX_PATHS[name] == "fp32" else export.int8_file
    encoder = OnnxTextEncoder(export.directory, onnx_file=onnx_file, threads=os.cpu_count() or 1,
                              providers=execution_providers(device))
    return InProcessPath(name, lambda texts: encoder.encode(texts, batch_size=max(1, len(texts))))
