"""The whole online path with real parts: Triton (python backend + ONNX Runtime), the gateway, gRPC."""

from __future__ import annotations

import asyncio
import subprocess

import numpy as np
import pytest
import tritonclient.grpc as triton_grpc

from lmrec.client import AsyncRecommenderClient, ClientError, RecommenderClient
from lmrec.encoder import OnnxTextEncoder
from lmrec.export.snapshot import load_snapshot
from lmrec.server.gateway import SERVICE_NAME

from .conftest import LMREC

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def dataset(build):
    return load_snapshot(build.bundle_dir)


def history_ids(dataset, user_id: str) -> set[str]:
    user = dataset.user_index()[user_id]
    return {dataset.item_ids[i] for i in dataset.histories()[user]}


def test_health_is_serving(client):
    assert client.health() == "SERVING"
    assert client.health(SERVICE_NAME) == "SERVING"


def test_triton_encoder_matches_local_onnx(triton, build):
    version_dir = build.repository_dir / "text_encoder" / str(build.version)
    texts = ["a haunted house on a hill", "Toy Story (1995). Genres: Animation.", "ü ñ 漢字"]
    client = triton_grpc.InferenceServerClient(triton.grpc_url)
    tensor = triton_grpc.InferInput("TEXT", [len(texts), 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[t.encode()] for t in texts], dtype=object))
    served = client.infer("text_encoder", [tensor]).as_numpy("EMBEDDING")
    local = OnnxTextEncoder(version_dir).encode(texts)
    assert served.shape == (3, 384)
    np.testing.assert_allclose(served, local, atol=1e-5)


def test_triton_rejects_invalid_utf8_per_request(triton):
    client = triton_grpc.InferenceServerClient(triton.grpc_url)
    tensor = triton_grpc.InferInput("TEXT", [1, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[b"\xff\xfe"]], dtype=object))
    with pytest.raises(Exception, match="UTF-8") as refused:
        client.infer("text_encoder", [tensor])
    assert "INVALID_ARG" in str(refused.value.status())  # the caller's input, not Triton: the breaker stays shut
    good = triton_grpc.InferInput("TEXT", [1, 1], "BYTES")
    good.set_data_from_numpy(np.array([[b"still fine"]], dtype=object))
    assert client.infer("text_encoder", [good]).as_numpy("EMBEDDING").shape == (1, 384)


def test_recommend_known_user_returns_k_distinct_unseen_valid_items(client, dataset, build):
    catalogue = set(dataset.item_ids)
    for user_id in dataset.user_ids[:5]:
        response = client.recommend(user_id, k=10)
        ids = [item.item_id for item in response.items]
        assert len(ids) == 10 and len(set(ids)) == 10
        assert set(ids) <= catalogue
        assert not set(ids) & history_ids(dataset, user_id)
        assert response.bundle_version == str(build.version)
        assert not response.degraded
        scores = [item.score for item in response.items]
        assert scores == sorted(scores, reverse=True)
        for item in response.items:
            assert item.found_by in {"lm", "als", "popular"}
            assert {s.signal for s in item.signals} == {"lm", "als", "popular"}
            assert abs(sum(s.score for s in item.signals) - item.score) < 1e-4


def test_include_seen_can_return_history(client, dataset):
    user_id = dataset.user_ids[0]
    response = client.recommend(user_id, k=len(dataset.item_ids), include_seen=True)
    assert len(response.items) == len(dataset.item_ids)
    assert history_ids(dataset, user_id) <= {item.item_id for item in response.items}


def test_exactly_k_when_k_is_the_whole_unseen_catalogue(client, dataset):
    user_id = dataset.user_ids[1]
    unseen = len(dataset.item_ids) - len(history_ids(dataset, user_id))
    response = client.recommend(user_id, k=unseen)
    assert len({item.item_id for item in response.items}) == unseen


def test_anonymous_session_by_recent_items_and_text(client, dataset):
    recent = list(dataset.item_ids[:3])
    response = client.recommend(recent_item_ids=recent, k=5)
    assert len(response.items) == 5
    assert not {item.item_id for item in response.items} & set(recent)
    assert dataset.items[0].title in response.profile_text
    by_text = client.recommend(text=dataset.items[5].title, k=5)
    assert len(by_text.items) == 5
    assert by_text.items[0].found_by == "lm"


def test_similar_items_by_id_and_by_text(client, dataset):
    item_id = dataset.item_ids[7]
    response = client.similar(item_id, k=5)
    ids = [item.item_id for item in response.items]
    assert len(ids) == 5 and item_id not in ids
    # The item's own title as a query finds the item itself first: the text path goes through Triton.
    by_text = client.similar(text=dataset.items[7].title + ". " + ", ".join(dataset.items[7].categories), k=3)
    assert len(by_text.items) == 3


def test_async_client(gateway, dataset):
    async def run():
        async with AsyncRecommenderClient(gateway) as client:
            assert await client.health() == "SERVING"
            responses = await asyncio.gather(*(client.recommend(u, k=3) for u in dataset.user_ids[:8]))
            return responses

    responses = asyncio.run(run())
    assert all(len(r.items) == 3 for r in responses)


@pytest.mark.parametrize(
    "call, code, words",
    [
        (lambda c: c.recommend("no-such-user", k=5), "NOT_FOUND", "user_id"),
        (lambda c: c.recommend("u1", k=0), "INVALID_ARGUMENT", "k must be between 1 and 1000"),
        (lambda c: c.recommend("u1", k=1001), "INVALID_ARGUMENT", "k must be between 1 and 1000"),
        (lambda c: c.recommend(k=5), "INVALID_ARGUMENT", "empty request"),
        (lambda c: c.recommend(text="x" * 5000, k=5), "INVALID_ARGUMENT", "text is 5000 characters"),
        (lambda c: c.recommend(recent_item_ids=["nope"], k=5), "INVALID_ARGUMENT", "recent_item_ids[0] 'nope'"),
        (lambda c: c.similar("nope", k=5), "NOT_FOUND", "item_id 'nope'"),
        (lambda c: c.similar(k=5), "INVALID_ARGUMENT", "empty request"),
        (lambda c: c.similar("i1", k=0), "INVALID_ARGUMENT", "k must be between 1 and 1000"),
    ],
)
def test_bad_requests_get_actionable_status_codes(client, call, code, words):
    with pytest.raises(ClientError) as error:
        call(client)
    assert error.value.code == code
    assert words in error.value.details


def test_server_keeps_serving_after_bad_requests(client, dataset):
    for _ in range(3):
        with pytest.raises(ClientError):
            client.recommend(k=0)
    assert len(client.recommend(dataset.user_ids[0], k=3).items) == 3


def test_cli_recommend_and_similar(gateway, dataset):
    user_id = dataset.user_ids[2]
    out = subprocess.run([LMREC, "recommend", "--address", gateway, "--user", user_id, "-k", "3"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "found by" in out.stdout and len([l for l in out.stdout.splitlines() if l.strip()[:2] in {"1 ", "2 ", "3 "}]) == 3
    out = subprocess.run([LMREC, "similar", "--address", gateway, "--item", dataset.item_ids[0], "-k", "2"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    bad = subprocess.run([LMREC, "recommend", "--address", gateway, "--user", "ghost"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2
    assert "NOT_FOUND" in bad.stderr and "Traceback" not in bad.stderr
