"""Gateway load suite: the unavoidable parts of a Recommend, each measured alone (a Triton text_encoder
call, an hnswlib query, a ranker call, and a bare gRPC round trip beside them) for bar 4b."""

from __future__ import annotations

import time

import numpy as np

from lmrec.ranker_runtime import RANKER_INPUT

from .gateway_processes import ServingPath


def _median_ms(fn, repeats: int) -> dict:
    fn()  # first call: connections, page faults
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    ms = np.asarray(times) * 1000
    return {"median_ms": float(np.median(ms)), "p95_ms": float(np.percentile(ms, 95)), "n": repeats}


def measure_parts(path: ServingPath, bundle, texts: dict[str, list[str]], cached_users: list[str],
                  repeats: int) -> dict:
    """Each unavoidable part of a Recommend alone: encode (Triton), index query, ranker call; gRPC RTT."""
    import tritonclient.grpc as grpcclient

    from lmrec.client import RecommenderClient

    triton = grpcclient.InferenceServerClient(path.triton.grpc_url)
    uncached_texts = texts["uncached"] or texts["cached"]
    turn = {"n": 0}

    def encode(text: str) -> np.ndarray:
        data = np.array([[text.encode("utf-8")]], dtype=object)
        tensor = grpcclient.InferInput("TEXT", list(data.shape), "BYTES")
        tensor.set_data_from_numpy(data)
        result = triton.infer(bundle.encoder_model, [tensor], model_version=str(bundle.encoder_version))
        return result.as_numpy("EMBEDDING")[0]

    def encode_next() -> None:
        turn["n"] += 1
        encode(uncached_texts[turn["n"] % len(uncached_texts)])

    parts = {"encode": _median_ms(encode_next, repeats)}
    vectors = [encode(text) for text in (texts["cached"] + uncached_texts)[:32]]
    turn["n"] = 0

    def search() -> None:
        turn["n"] += 1
        bundle.retriever.search(vectors[turn["n"] % len(vectors)], 200)

    parts["index_query"] = _median_ms(search, repeats * 5)
    if bundle.ranker_model is not None:
        features = _ranker_features(bundle, cached_users[0], vectors[0])

        def rank() -> None:
            tensor = grpcclient.InferInput(RANKER_INPUT, list(features.shape), "FP32")
            tensor.set_data_from_numpy(features)
            triton.infer(bundle.ranker_model, [tensor], model_version=str(bundle.ranker_version))

        parts["ranker"] = {**_median_ms(rank, repeats), "rows": int(len(features))}
    with RecommenderClient(path.address, timeout_s=5.0) as client:
        parts["grpc_health_rtt"] = _median_ms(client.health, repeats)
    triton.close()
    return parts


def _ranker_features(bundle, user_id: str, profile: np.ndarray) -> np.ndarray:
    """One user's real candidate feature rows as the gateway builds them (random rows if that fails)."""
    dataset = bundle.dataset
    try:
        user = list(dataset.user_ids).index(user_id)
        mask = dataset.interactions.user == user
        order = np.argsort(dataset.interactions.timestamp[mask], kind="stable")
        history = dataset.interactions.item[mask][order].astype(np.int64)
        _, features, _ = bundle.fused.features(np.array([user]), [history], profile=profile[None, :],
                                               excluded=[history])
        return np.ascontiguousarray(features[0], np.float32)
    except Exception:  # the part is a ranker call; its rows' values do not change its cost
        n_features = int(bundle.manifest["ranker"]["n_features"])
        return np.random.default_rng(0).standard_normal((300, n_features)).astype(np.float32)
