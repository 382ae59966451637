"""Redeploys and Triton outages under traffic, with the real Triton and a real gateway process.

Bundles 1 and 2 are built into one folder (different ALS settings, so their answers differ); the gateway
starts on bundle 1. A deploy of 2 and a rollback to 1 run while clients keep sending requests: none may
fail, and every answer must match the bundle it names (a degraded answer, from CF alone, may occur while
Triton loads a version on the 2 cores, and is counted). Then Triton is killed (degraded answers, no
failures) and restarted on the same port (normal answers again, without touching the gateway).
"""

from __future__ import annotations

import asyncio
import shutil
import time
from dataclasses import dataclass, field

import pytest

from lmrec.client import AsyncRecommenderClient, ClientError, RecommenderClient
from lmrec.export.build import AlsConfig, BuildConfig, build_bundle
from lmrec.export.loaders import DataConfig
from lmrec.server.triton_launcher import TritonConfig, TritonProcess, free_port

from .conftest import LMREC, TINY, ManagedProcess, wait_for_health

pytestmark = pytest.mark.integration
USERS = [f"u{n}" for n in range(1, 13)]
K = 10


@pytest.fixture(scope="module")
def two_bundles(tmp_path_factory):
    out = tmp_path_factory.mktemp("deploy-build")
    data = DataConfig(dataset="synthetic", synthetic=TINY)
    quiet = lambda *_: None  # noqa: E731
    build_bundle(BuildConfig(data=data, output_dir=out), progress=quiet)
    build_bundle(BuildConfig(data=data, output_dir=out, als=AlsConfig(factors=8, regularization=1.0, seed=7)),
                 progress=quiet)
    return out


@pytest.fixture(scope="module")
def stack(two_bundles, tmp_path_factory):
    triton_port = free_port()
    triton = TritonProcess(TritonConfig(repository=two_bundles / "model_repository", grpc_port=triton_port)).start()
    port = free_port()
    gateway = ManagedProcess(
        [LMREC, "gateway", "--build-dir", str(two_bundles), "--triton-url", triton.grpc_url, "--port", str(port),
         "--bundle-version", "1", "--state-dir", str(tmp_path_factory.mktemp("state"))],
        tmp_path_factory.mktemp("gateway-log") / "gateway.log")
    state = {"triton": triton}
    try:
        wait_for_health(f"127.0.0.1:{port}", gateway)
        yield f"127.0.0.1:{port}", triton_port, state, gateway
    finally:
        gateway.stop()
        state["triton"].stop()


@dataclass
class Traffic:
    sent: int = 0
    failures: list[str] = field(default_factory=list)
    by_version: dict[str, int] = field(default_factory=dict)
    degraded: int = 0
    mismatches: list[str] = field(default_factory=list)


async def send_traffic(address: str, stop: asyncio.Event, traffic: Traffic, reference: dict | None,
                       workers: int = 4) -> None:
    async def worker(n: int) -> None:
        async with AsyncRecommenderClient(address, timeout_s=10.0) as client:
            turn = n
            while not stop.is_set():
                user = USERS[turn % len(USERS)]
                turn += 1
                traffic.sent += 1
                try:
                    response = await client.recommend(user, k=K)
                except ClientError as error:
                    traffic.failures.append(f"{error.code}: {error.details}")
                    continue
                version = response.bundle_version
                traffic.by_version[version] = traffic.by_version.get(version, 0) + 1
                traffic.degraded += response.degraded
                if len(response.items) != K:
                    traffic.mismatches.append(f"{user}: {len(response.items)} items")
                if reference is not None and not response.degraded:
                    expected = reference[version][user]
                    overlap = len(expected & {item.item_id for item in response.items})
                    if overlap < K - 1:  # dynamic batching may reorder near-ties; another bundle differs far more
                        traffic.mismatches.append(f"{user} on bundle {version}: overlap {overlap}/{K}")

    await asyncio.gather(*(worker(n) for n in range(workers)))


def answers(client: RecommenderClient) -> dict[str, set[str]]:
    return {user: {item.item_id for item in client.recommend(user, k=K).items} for user in USERS}


def test_deploy_and_rollback_under_traffic_lose_nothing(stack, two_bundles):
    address, _, _, gateway = stack
    with RecommenderClient(address, timeout_s=300) as client:
        reference = {"1": answers(client)}
        client.deploy(2)
        reference["2"] = answers(client)
        client.deploy(1)
        assert answers(client) == reference["1"]
    # The check below can fail: the two bundles answer differently for most users.
    assert sum(len(reference["1"][u] & reference["2"][u]) < K - 1 for u in USERS) >= len(USERS) // 2

    async def scenario() -> Traffic:
        traffic, stop = Traffic(), asyncio.Event()
        load = asyncio.create_task(send_traffic(address, stop, traffic, reference))
        async with AsyncRecommenderClient(address, timeout_s=300) as admin:
            await asyncio.sleep(0.5)
            deployed = await admin.deploy(2)
            assert (deployed.bundle_version, deployed.previous_version) == ("2", "1")
            await asyncio.sleep(0.5)
            rolled_back = await admin.deploy(1)
            assert (rolled_back.bundle_version, rolled_back.previous_version) == ("1", "2")
            await asyncio.sleep(0.5)
        stop.set()
        await load
        return traffic

    traffic = asyncio.run(scenario())
    print(f"\ndeploy under traffic: {traffic.sent} requests, {len(traffic.failures)} failures, "
          f"by bundle {traffic.by_version}, {traffic.degraded} degraded")
    assert not traffic.failures, traffic.failures[:5]
    assert not traffic.mismatches, traffic.mismatches[:5]
    assert traffic.by_version.get("1", 0) > 0 and traffic.by_version.get("2", 0) > 0
    # Triton reloads the serving version too when the version set changes; on 2 cores a few encoder calls can
    # then miss their 2 s budget and are answered from CF (degraded, still bundle-consistent), never failed.
    assert traffic.degraded <= 0.05 * traffic.sent, gateway.log()
    assert gateway.alive()


def test_a_corrupt_or_half_written_bundle_is_refused_and_the_old_one_keeps_serving(stack, two_bundles):
    address = stack[0]
    bundles = two_bundles / "bundles"
    shutil.copytree(bundles / "2", bundles / "3")
    (bundles / "3" / "item_embeddings.npy").write_bytes(b"truncated")
    (bundles / "4").mkdir()  # a build that died before writing its manifest
    with RecommenderClient(address, timeout_s=60) as client:
        for version, fragment in ((3, "does not match its manifest checksum"), (4, "manifest.json is missing")):
            with pytest.raises(ClientError) as raised:
                client.deploy(version)
            assert raised.value.code == "FAILED_PRECONDITION" and fragment in raised.value.details
            assert "bundle 1 keeps serving" in raised.value.details
        response = client.recommend(USERS[0], k=K)
        assert response.bundle_version == "1" and len(response.items) == K and not response.degraded


def test_killing_triton_degrades_and_its_return_restores(stack, two_bundles):
    address, triton_port, state, gateway = stack
    state["triton"].stop()
    with RecommenderClient(address, timeout_s=5) as client:
        # Users served before have their profile vector cached: they need no Triton and get full answers.
        cached = client.recommend(USERS[0], k=K)
        assert not cached.degraded and len(cached.items) == K
        # A session's profile must be encoded: answered from CF and popularity, flagged, never failed.
        items = client.recommend(USERS[0], k=K, include_seen=True).items
        sessions = [[items[n].item_id, items[n + 1].item_id] for n in range(0, 8, 2)]
        degraded = [client.recommend(recent_item_ids=session, k=K) for session in sessions]
        assert all(r.degraded and len(r.items) == K for r in degraded)
        assert all("lm" not in {s.signal for s in item.signals} for r in degraded for item in r.items)
        with pytest.raises(ClientError) as raised:  # text search has no fallback: a clear status
            client.similar(text="ghosts")
        assert raised.value.code == "UNAVAILABLE"

        state["triton"] = TritonProcess(TritonConfig(repository=two_bundles / "model_repository",
                                                     grpc_port=triton_port)).start()
        deadline, recovered = time.monotonic() + 60, None
        while time.monotonic() < deadline:
            response = client.recommend(recent_item_ids=sessions[0], k=K)
            if not response.degraded:
                recovered = response
                break
            time.sleep(0.5)
        assert recovered is not None, gateway.log()
        assert recovered.bundle_version == "1" and client.status().degraded is False
    print(f"\nTriton outage: {len(degraded)} degraded answers, 0 failures; recovered without a gateway restart")
