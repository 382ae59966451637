"""Gateway load suite: the unavoidable parts of a Recommend, each measured alone (a Triton text_encoder
call, an hnswlib query, a ranker call, and a bare gRPC round trip beside them) for bar 4b: in a block of
their own (`measure_parts`), and paired request by request with Recommends at one in flight
(`measure_paired`, what the bar is judged on). Both take the calls from one `PartCalls` (its set-up
encodes 32 texts and builds a user's ranker features)."""

from __future__ import annotations

import time

import numpy as np

from lmrec.ranker_runtime import RANKER_INPUT

from .gateway_config import KNOWN_USER_ENCODE, parts_of
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


class PartCalls:
    """Each unavoidable part as a call of its own: `encode(text)` (one Triton text_encoder call),
    `index_query()` (hnswlib, the gateway's candidate count) and `ranker()` (one Triton ranker call on a
    real user's candidate rows; absent without a fused bundle). A context manager: it closes its Triton
    connection."""

    def __init__(self, path: ServingPath, bundle, texts: dict[str, list[str]], cached_users: list[str]) -> None:
        import tritonclient.grpc as grpcclient

        self._grpc, self._bundle = grpcclient, bundle
        self._triton = grpcclient.InferenceServerClient(path.triton.grpc_url)
        self.vectors = [self.encode(text) for text in (texts["cached"] + texts["uncached"])[:32]]
        self._turn = 0
        self.calls = {"index_query": self.index_query}
        if bundle.ranker_model is not None:
            self._features = _ranker_features(bundle, cached_users[0], self.vectors[0])
            self.calls["ranker"] = self.ranker

    def encode(self, text: str) -> np.ndarray:
        data = np.array([[text.encode("utf-8")]], dtype=object)
        tensor = self._grpc.InferInput("TEXT", list(data.shape), "BYTES")
        tensor.set_data_from_numpy(data)
        result = self._triton.infer(self._bundle.encoder_model, [tensor],
                                    model_version=str(self._bundle.encoder_version))
        return result.as_numpy("EMBEDDING")[0]

    def index_query(self) -> None:
        self._turn += 1
        self._bundle.retriever.search(self.vectors[self._turn % len(self.vectors)], 200)

    def ranker(self) -> None:
        tensor = self._grpc.InferInput(RANKER_INPUT, list(self._features.shape), "FP32")
        tensor.set_data_from_numpy(self._features)
        self._triton.infer(self._bundle.ranker_model, [tensor], model_version=str(self._bundle.ranker_version))

    @property
    def ranker_rows(self) -> int:
        return int(len(self._features))

    def close(self) -> None:
        self._triton.close()

    def __enter__(self) -> "PartCalls":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def measure_parts(path: ServingPath, calls: PartCalls, texts: dict[str, list[str]], repeats: int) -> dict:
    """Each unavoidable part of a Recommend alone: encode (Triton; per population's texts), index query,
    ranker call; gRPC RTT."""
    from lmrec.client import RecommenderClient

    def encode_each_of(pool: list[str]):
        turn = {"n": 0}

        def encode_next() -> None:
            turn["n"] += 1
            calls.encode(pool[turn["n"] % len(pool)])
        return encode_next

    # `encode` on anonymous sessions' texts (cached users' profiles when no session ran); a known user's
    # profile, about three times as long, under a name of its own.
    parts = {"encode": _median_ms(encode_each_of(texts["uncached"] or texts["cached"]), repeats)}
    if texts.get("known-uncached"):
        parts[KNOWN_USER_ENCODE] = _median_ms(encode_each_of(texts["known-uncached"]), repeats)
    parts["index_query"] = _median_ms(calls.index_query, repeats * 5)
    if "ranker" in calls.calls:
        parts["ranker"] = {**_median_ms(calls.ranker, repeats), "rows": calls.ranker_rows}
    with RecommenderClient(path.address, timeout_s=5.0) as client:
        parts["grpc_health_rtt"] = _median_ms(client.health, repeats)
    return parts


def measure_paired(path: ServingPath, calls: PartCalls, texts: dict[str, list[str]], populations: dict,
                   repeats: int, *, k: int) -> dict:
    """Bar 4b with the machine's drift taken out: each Recommend at one in flight is paired with its parts
    alone, measured right before or right after it (alternating, so neither side always follows the
    other), `repeats` times per population after one unmeasured pair. An uncached request's encode part
    encodes a real profile text of the same population: that request's own when the parts come after
    it, the one before's otherwise. Per population: the medians, the Recommend median over the sum of
    the parts' medians (the bar), and the median of the per-pair ratios.

    The parts measured in a block of their own (`measure_parts`) can be minutes away from the cell they are
    compared with, on a machine whose speed moves within minutes: the same code gave ratios from 1.2 to 2.5
    in one hour (performance log, fused item 8)."""
    from lmrec.client import RecommenderClient

    out = {}
    with RecommenderClient(path.address, timeout_s=5.0) as client:
        for name, population in populations.items():
            parts = parts_of(name, "ranker" in calls.calls)
            text = (texts[name] or texts["cached"])[0]

            def time_parts(profile_text: str) -> dict:
                elapsed = {}
                for part in parts:
                    t0 = time.perf_counter()
                    calls.encode(profile_text) if part == "encode" else calls.calls[part]()
                    elapsed[part] = 1000 * (time.perf_counter() - t0)
                return elapsed

            recommend_ms, parts_ms, pair_ratios = [], {part: [] for part in parts}, []
            for n in range(repeats + 1):
                before = time_parts(text) if n % 2 else None
                t0 = time.perf_counter()
                response = client.recommend(**population.request(-2, n), k=k)  # worker -2: a stream of its own
                recommend = 1000 * (time.perf_counter() - t0)
                text = response.profile_text
                elapsed = before or time_parts(text)
                if n:
                    recommend_ms.append(recommend)
                    for part in parts:
                        parts_ms[part].append(elapsed[part])
                    pair_ratios.append(recommend / sum(elapsed.values()))
            medians = {part: float(np.median(values)) for part, values in parts_ms.items()}
            median = float(np.median(recommend_ms))
            out[name] = {"recommend_ms": median, "parts_ms": medians, "sum_parts_ms": sum(medians.values()),
                         "ratio": median / sum(medians.values()), "median_pair_ratio": float(np.median(pair_ratios)),
                         "n": repeats}
    return out


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
