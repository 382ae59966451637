"""Deploys between two real bundles (the tiny build and a copy serving encoder version 2), with the
encoder answered in-process and Triton's model control recorded: what the old bundle's traffic sees, and
what a cancelled, failed or raced deploy leaves behind."""

from __future__ import annotations

import asyncio
import json
import shutil

import numpy as np
import pytest

from lmrec.server.bundle import MANIFEST_FILE, load_bundle
from lmrec.server.deploy import Deployer, keep_models_loaded
from lmrec.server.encoder_client import EncoderUnavailable
from lmrec.server.event_store import MemoryEventStore
from lmrec.server.recommend import Recommender
from lmrec.server.requests import RecommendQuery

from .test_recommend import LocalEncoder, local_encoder, run, state_of  # noqa: F401 (a fixture)


class VersionedEncoder:
    """The local encoder, refusing model versions Triton no longer serves (as the real one would)."""

    retry_after_s = 0.01

    def __init__(self, local: LocalEncoder) -> None:
        self.local = local
        self.unloaded: set[tuple[str, int]] = set()
        self.slow: dict[tuple[str, int], float] = {}  # seconds each call to that version takes

    async def encode(self, texts, *, model, version, timeout_s, max_batch_size=None):
        await asyncio.sleep(self.slow.get((model, version), 0.0))
        if (model, version) in self.unloaded:
            raise EncoderUnavailable(f"text encoder {model}/{version}: not loaded")
        return await self.local.encode(texts, model=model, version=version, timeout_s=timeout_s)


class RecordingControl:
    """Triton's explicit model control, as calls on a list; serving changes reach the encoder."""

    def __init__(self, encoder: VersionedEncoder) -> None:
        self.encoder = encoder
        self.calls: list[tuple] = []

    async def serve_versions(self, model, versions, *, timeout_s=300.0):
        self.calls.append(("serve", model, tuple(sorted(versions))))
        self.encoder.unloaded = {(m, v) for m, v in self.encoder.unloaded if m != model}
        self.encoder.unloaded |= {(model, v) for v in (1, 2, 3) if v not in versions}

    async def unload(self, model):
        self.calls.append(("unload", model))

    async def is_live(self):
        return True

    async def is_ready(self, model, version):
        return (model, version) not in self.encoder.unloaded


@pytest.fixture
def two_bundles(tmp_path, tiny_build_dir):
    """A build folder with bundle 1 and bundle 2, the same data served by text_encoder version 2."""
    root = tmp_path / "build"
    shutil.copytree(tiny_build_dir.bundle_dir.parent.parent, root)
    first = root / "bundles" / str(tiny_build_dir.version)
    shutil.copytree(first, root / "bundles" / "2")
    repository = root / "model_repository" / "text_encoder"
    shutil.copytree(repository / str(tiny_build_dir.version), repository / "2")
    manifest = json.loads((root / "bundles" / "2" / MANIFEST_FILE).read_text())
    manifest["encoder"]["triton_version"] = 2
    (root / "bundles" / "2" / MANIFEST_FILE).write_text(json.dumps(manifest))
    return root


@pytest.fixture
def serving(two_bundles, local_encoder):
    """(recommender on bundle 1, deployer, model control, encoder), as `lmrec gateway` wires them."""
    encoder = VersionedEncoder(local_encoder)
    recommender = Recommender(state_of(load_bundle(two_bundles, 1), encoder), MemoryEventStore(), encoder)
    control = RecordingControl(encoder)
    return recommender, Deployer(recommender, two_bundles, control, drain_timeout_s=5.0), control, encoder


def test_a_deploy_succeeds_after_the_bundles_first_user_was_forgotten(serving):
    recommender, deployer, _, _ = serving
    run(recommender.forget_user(recommender.state.bundle.dataset.user_ids[0]))  # an erasure request
    new, old, _ = run(deployer.deploy(2))
    assert (new, old) == ("2", "1") and recommender.state.label == "2"


@pytest.mark.parametrize("call", ["profile", "similar"])
def test_requests_on_the_old_bundle_finish_before_its_versions_are_unloaded(serving, call):
    recommender, deployer, control, encoder = serving
    encoder.slow[("text_encoder", 1)] = 0.3  # the request is inside its encoder call during the swap
    user = recommender.state.bundle.dataset.user_ids[5]

    async def scenario():
        request = asyncio.ensure_future(recommender.profile(user) if call == "profile"
                                        else recommender.similar(text="space adventure", k=3))
        await asyncio.sleep(0.05)  # it holds bundle 1's state now
        deployed = await deployer.deploy(2)
        return deployed, await request

    deployed, answer = run(scenario())
    assert deployed[0] == "2" and answer.bundle_version == "1"
    assert ("serve", "text_encoder", (2,)) in control.calls  # version 1 was unloaded, after the request


async def cancel_and_let_it_finish(deployer: Deployer, deploy: asyncio.Future) -> None:
    """Cancel the Deploy call as a client deadline would, then wait for the deploy itself to end."""
    deploy.cancel()
    with pytest.raises(asyncio.CancelledError):
        await deploy
    async with deployer._lock:  # the deploy, still running, holds its lock until it has finished
        pass


def assert_deployed_with_version_1_unloaded(recommender: Recommender, control: RecordingControl) -> None:
    assert recommender.state.label == "2"
    assert control.calls[-1] == ("serve", "text_encoder", (2,))
    assert recommender.metrics.sample("lmrec_gateway_deploys_total", {"result": "ok"}) == 1.0


def test_a_deploy_cancelled_while_draining_still_unloads_the_old_versions(serving):
    recommender, deployer, control, _ = serving

    async def scenario():
        old = recommender.state
        old.inflight += 1  # a request still on bundle 1
        deploy = asyncio.ensure_future(deployer.deploy(2))
        while recommender.state is old:
            await asyncio.sleep(0.01)
        asyncio.get_running_loop().call_later(0.05, lambda: setattr(old, "inflight", old.inflight - 1))
        await cancel_and_let_it_finish(deployer, deploy)  # the caller's deadline, mid-drain

    run(scenario())
    assert_deployed_with_version_1_unloaded(recommender, control)


def test_a_deploy_cancelled_before_the_switch_still_runs_to_its_end(serving):
    """Cancelled while it prepares (the new encoder is slow), the deploy neither stops with Triton serving
    both versions nor leaves half a state: it finishes, and says so in its metric."""
    recommender, deployer, control, encoder = serving
    encoder.slow[("text_encoder", 2)] = 0.05

    async def scenario():
        deploy = asyncio.ensure_future(deployer.deploy(2))
        await asyncio.sleep(0.1)  # preparing bundle 2 by now
        assert recommender.state.label == "1"
        await cancel_and_let_it_finish(deployer, deploy)

    run(scenario())
    assert_deployed_with_version_1_unloaded(recommender, control)


def test_the_model_watcher_does_not_undo_a_deploy_that_finished_during_its_checks(serving):
    recommender, deployer, control, encoder = serving
    deployed = asyncio.Event()

    async def is_ready(model, version):
        if version == 1:  # Triton is slow to answer about version 1 until the deploy is over, then it is gone
            await deployed.wait()
            return False
        return (model, version) not in encoder.unloaded

    control.is_ready = is_ready

    async def scenario():
        watcher = asyncio.ensure_future(keep_models_loaded(deployer, interval_s=0.01))
        await asyncio.sleep(0.05)  # the watcher is waiting on its check of bundle 1's version
        await deployer.deploy(2)
        deployed.set()
        await asyncio.sleep(0.1)  # its stale check returns, and a few more ticks on bundle 2
        watcher.cancel()

    run(scenario())
    assert recommender.state.label == "2"
    after_the_deploy = control.calls[control.calls.index(("serve", "text_encoder", (2,))) + 1:]
    assert ("serve", "text_encoder", (1,)) not in after_the_deploy  # nothing pinned version 1 again


def test_a_deploy_that_starts_while_the_watcher_reloads_waits_for_that_load(serving):
    """The watcher checked for a deploy only before its load: a deploy starting during it sent an overlapping
    load, and if Triton finished the watcher's last, it unloaded the new version (review 29)."""
    recommender, deployer, control, encoder = serving
    encoder.unloaded.add(("text_encoder", 1))  # Triton restarted without bundle 1's version
    reloading, release, deploy_loads = asyncio.Event(), asyncio.Event(), asyncio.Event()
    serve = control.serve_versions

    async def slow_serve(model, versions, *, timeout_s=300.0):
        if versions == {1} and not release.is_set():
            reloading.set()
            await release.wait()
        if 2 in versions:
            deploy_loads.set()
        await serve(model, versions, timeout_s=timeout_s)

    control.serve_versions = slow_serve

    async def scenario():
        watcher = asyncio.ensure_future(keep_models_loaded(deployer, interval_s=0.01))
        await reloading.wait()
        deploy = asyncio.ensure_future(deployer.deploy(2))
        try:  # the watcher's load finishes when the deploy has sent its own, or after 3 s of waiting for it
            await asyncio.wait_for(deploy_loads.wait(), 3.0)
        except asyncio.TimeoutError:
            pass
        release.set()
        await deploy
        watcher.cancel()

    run(scenario())
    assert recommender.state.label == "2" and ("text_encoder", 2) not in encoder.unloaded
    watcher_done = control.calls.index(("serve", "text_encoder", (1,)))
    deploy_calls = [i for i, call in enumerate(control.calls) if call[0] == "serve" and 2 in call[2]]
    assert deploy_calls and min(deploy_calls) > watcher_done  # the deploy's loads came after the watcher's


def test_a_new_version_that_fails_does_not_degrade_the_old_bundle(serving):
    """The breaker is per model version: the new version's failing warm-up leaves version 1's calls alone."""
    from lmrec.server.encoder_client import TritonTextEncoder

    class Failure(Exception):
        def status(self):
            return "StatusCode.INTERNAL"

    class Client:
        async def infer(self, model, inputs, model_version, client_timeout):
            if model_version == "2":
                raise Failure("model text_encoder/2: inference failed")
            return np.ones((1, 4), np.float32)

    triton = TritonTextEncoder.__new__(TritonTextEncoder)
    triton._client, triton.retry_after_s, triton._open_until = Client(), 30.0, {}
    with pytest.raises(EncoderUnavailable, match="inference failed"):
        run(triton._infer("text encoder", "text_encoder", 2, [], 1.0))
    with pytest.raises(EncoderUnavailable, match="unreachable moments ago"):  # version 2's breaker is open
        run(triton._infer("text encoder", "text_encoder", 2, [], 1.0))
    assert run(triton._infer("text encoder", "text_encoder", 1, [], 1.0)).shape == (1, 4)
    assert not triton.available  # GetStatus still reports the open breaker


def test_a_failed_deploy_unloads_a_model_only_the_new_bundle_used(serving):
    _, deployer, control, _ = serving
    run(deployer._restore({"text_encoder": 1}, {"text_encoder": 2, "ranker": 1}))
    assert control.calls == [("serve", "text_encoder", (1,)), ("unload", "ranker")]


class _Context:
    def invocation_metadata(self):
        return ()

    def time_remaining(self):
        return 5.0


def test_get_status_reports_degraded_when_triton_has_lost_the_served_version(serving):
    from lmrec.server.gateway import AdminServicer
    from lmrec.v1 import recommender_pb2 as pb

    recommender, deployer, _, encoder = serving
    encoder.available = True  # no call has failed yet: the breaker alone would say all is well
    admin = AdminServicer(recommender, deployer, encoder)
    assert run(admin.GetStatus(pb.StatusRequest(), _Context())).degraded is False
    encoder.unloaded.add(("text_encoder", 1))  # Triton restarted without it, or is down
    assert run(admin.GetStatus(pb.StatusRequest(), _Context())).degraded is True


def test_the_model_watcher_outlives_an_unexpected_error_and_still_reloads(serving):
    recommender, deployer, control, encoder = serving
    encoder.unloaded.add(("text_encoder", 1))  # Triton restarted without bundle 1's version
    checks = []

    async def is_ready(model, version):
        checks.append(version)
        if len(checks) == 1:
            raise OSError("config.pbtxt could not be read")  # not a ModelControlError
        return (model, version) not in encoder.unloaded

    control.is_ready = is_ready

    async def scenario():
        watcher = asyncio.ensure_future(keep_models_loaded(deployer, interval_s=0.01))
        await asyncio.sleep(0.2)
        alive = not watcher.done()
        watcher.cancel()
        return alive

    assert run(scenario())
    assert ("serve", "text_encoder", (1,)) in control.calls and ("text_encoder", 1) not in encoder.unloaded


def test_add_items_without_a_client_deadline_gets_the_long_default():
    from types import SimpleNamespace

    from lmrec.server.gateway import ADD_ITEMS_TIMEOUT_S, RecommenderServicer
    from lmrec.server.metrics import GatewayMetrics
    from lmrec.v1 import recommender_pb2 as pb

    given = {}

    async def add_items(items, *, timeout_s):
        given["timeout_s"] = timeout_s
        return 1, 0, "1"

    class NoDeadline(_Context):
        def time_remaining(self):
            return None

    recommender = SimpleNamespace(add_items=add_items, metrics=GatewayMetrics())
    servicer = RecommenderServicer(recommender)
    run(servicer.AddItems(pb.AddItemsRequest(items=[pb.NewItem(item_id="n1", title="New")]), NoDeadline()))
    assert given["timeout_s"] == ADD_ITEMS_TIMEOUT_S >= 60


def test_an_answer_kept_for_a_user_is_not_served_after_a_deploy_or_a_rollback(serving):
    recommender, deployer, _, _ = serving
    query = RecommendQuery(user_id=recommender.state.bundle.dataset.user_ids[5], k=5)
    for _ in range(2):
        assert run(recommender.recommend(query)).bundle_version == "1"
    assert len(recommender.answers) == 1
    run(deployer.deploy(2))
    assert len(recommender.answers) == 0
    assert run(recommender.recommend(query)).bundle_version == "2"
    run(deployer.deploy(1))  # a rollback: the same label as the first answer, but another state
    assert [run(recommender.recommend(query)).bundle_version for _ in range(2)] == ["1", "1"]


def test_an_answer_computed_on_the_old_bundle_during_a_deploy_is_not_kept(serving):
    recommender, deployer, _, encoder = serving
    encoder.slow[("text_encoder", 1)] = 0.3  # the request is inside its encoder call during the swap
    query = RecommendQuery(user_id=recommender.state.bundle.dataset.user_ids[6], k=5)

    async def scenario():
        request = asyncio.ensure_future(recommender.recommend(query))
        await asyncio.sleep(0.05)
        await deployer.deploy(2)
        return await request

    assert run(scenario()).bundle_version == "1"
    assert len(recommender.answers) == 0
    assert run(recommender.recommend(query)).bundle_version == "2"
