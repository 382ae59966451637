"""The fused bundle served for real: fine-tuned encoder + neural ranker in Triton, used by the gateway."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as triton_grpc

from lmrec.client import RecommenderClient
from lmrec.export.build import BuildConfig, build_bundle
from lmrec.export.loaders import DataConfig
from lmrec.ranker_runtime import OnnxRanker
from lmrec.server.bundle import load_bundle
from lmrec.server.triton_launcher import TritonConfig, TritonProcess, free_port, models_in_repository

from .conftest import LMREC, TINY, ManagedProcess, wait_for_health

pytestmark = pytest.mark.integration


TINY_FINETUNE = {"steps": 3, "batch_size": 8, "max_pairs_per_user": 4}


@pytest.fixture(scope="module")
def fused_build(tmp_path_factory):
    out = tmp_path_factory.mktemp("fused-build")
    return build_bundle(BuildConfig(data=DataConfig(dataset="synthetic", synthetic=TINY), output_dir=out, fused=True,
                                    finetune=TINY_FINETUNE),
                        progress=lambda *_: None)


@pytest.fixture(scope="module")
def fused_stack(fused_build, tmp_path_factory):
    repository = fused_build.repository_dir
    assert models_in_repository(repository) == ("text_encoder", "ranker")
    with TritonProcess(TritonConfig(repository=repository, models=models_in_repository(repository))) as triton:
        port = free_port()
        process = ManagedProcess([LMREC, "gateway", "--build-dir", str(repository.parent), "--triton-url",
                                  triton.grpc_url, "--port", str(port)],
                                 tmp_path_factory.mktemp("fused-gateway") / "gateway.log")
        try:
            wait_for_health(f"127.0.0.1:{port}", process)
            yield triton, f"127.0.0.1:{port}"
        finally:
            process.stop()


def test_the_manifest_says_how_the_ranker_was_trained(fused_build):
    import json

    training = fused_build.manifest["ranker"]["training"]
    # A build holds out each user's last item: the ranker learns freely (no prior), epochs from one split.
    assert training["prior"] is None
    curve = training["validation_ndcg_at_10_by_epoch"]
    assert curve and all(0.0 <= v <= 1.0 for v in curve)
    assert 1 <= training["epochs"] < len(curve)  # curve[k]: after k epochs; 0 is no candidate without a prior
    assert training["ensemble_members"] == 5
    assert training["new_item_share"] == 0.0 and "new_demand_rr" not in fused_build.manifest["ranker"]["feature_names"]
    on_disk = json.loads((fused_build.bundle_dir / "manifest.json").read_text())
    assert on_disk["ranker"]["training"] == training


def test_served_ranker_matches_the_offline_onnx_ranker(fused_build, fused_stack):
    triton, _ = fused_stack
    bundle = load_bundle(fused_build.repository_dir.parent)
    n = bundle.fused.n_features
    features = np.random.default_rng(0).normal(size=(7, n)).astype(np.float32)
    client = triton_grpc.InferenceServerClient(triton.grpc_url)
    tensor = triton_grpc.InferInput("FEATURES", [7, n], "FP32")
    tensor.set_data_from_numpy(features)
    served = client.infer("ranker", [tensor]).as_numpy("SCORE").reshape(-1)
    local = OnnxRanker(fused_build.repository_dir / "ranker" / str(fused_build.version) / "ranker.onnx").score(features)
    np.testing.assert_allclose(served, local, rtol=1e-5, atol=1e-5)
    bad = triton_grpc.InferInput("FEATURES", [2, n], "FP32")
    bad.set_data_from_numpy(np.full((2, n), np.nan, np.float32))
    with pytest.raises(Exception, match="NaN"):
        client.infer("ranker", [bad])


def test_recommend_goes_through_the_ranker(fused_build, fused_stack):
    _, address = fused_stack
    bundle = load_bundle(fused_build.repository_dir.parent)
    dataset = bundle.dataset
    cf_signals = {"als", "ease", "itemknn", "sequential", "lm", "kg"}
    with RecommenderClient(address) as client:
        for user in range(4):
            user_id = dataset.user_ids[user]
            response = client.recommend(user_id, k=8)
            ids = [item.item_id for item in response.items]
            seen = {dataset.item_ids[i] for i in dataset.histories()[user]}
            assert len(ids) == 8 and len(set(ids)) == 8 and not set(ids) & seen
            assert not response.degraded
            # Ranker mode: every item names the signals the ranker saw (reciprocal ranks), not the blend's 3.
            assert {s.signal for s in response.items[0].signals} == cf_signals
            assert response.items[0].found_by in cf_signals
            scores = [item.score for item in response.items]
            assert scores == sorted(scores, reverse=True)
            again = client.recommend(user_id, k=8)  # from the candidate cache: the same answer
            assert [(i.item_id, i.score) for i in again.items] == [(i.item_id, i.score) for i in response.items]
        anonymous = client.recommend(recent_item_ids=[dataset.item_ids[0], dataset.item_ids[1]], k=5)
        assert len(anonymous.items) == 5


def test_ranker_path_serves_added_items_events_and_filters(fused_build, fused_stack):
    """Added items enter the ranker like cold items (text, graph and tag features; CF scores 0)."""
    _, address = fused_stack
    dataset = load_bundle(fused_build.repository_dir.parent).dataset
    user = 5
    user_id = dataset.user_ids[user]
    history = dataset.histories()[user]
    last = dataset.items[int(history[-1])]
    with RecommenderClient(address) as client:
        client.recommend(user_id, k=len(dataset.item_ids))  # cached: the added item must still reach this user
        added = client.add_items([{"item_id": "fused-new", "title": f"{last.title} Forever",
                                   "categories": list(last.categories), "description": last.description,
                                   "year": last.year}])
        assert added.added == 1
        response = client.recommend(user_id, k=len(dataset.item_ids))
        ids = [item.item_id for item in response.items]
        assert "fused-new" in ids and not response.degraded
        new_item = response.items[ids.index("fused-new")]  # ranked as a candidate, not topped up by popularity
        assert new_item.found_by != "popular" and len(new_item.signals) > 1
        assert all(item.explanation.text for item in response.items)
        client.record_event(user_id, "fused-new")
        eligible = {dataset.item_ids[i] for i, info in enumerate(dataset.items)
                    if last.categories[0] in info.categories} - {dataset.item_ids[i] for i in history}
        assert len(eligible) >= 2
        for k in (len(eligible) - 1, len(eligible), len(eligible) + 3):  # exactly k, or every eligible item
            after = client.recommend(user_id, k=k, require={"genre": last.categories[0]})
            assert len(after.items) == min(k, len(eligible))
            assert {item.item_id for item in after.items} <= eligible  # the new item is seen now
        assert client.profile(user_id).recent_items[0].item_id == "fused-new"


def test_a_version_built_for_new_items_deploys_live_and_gives_added_items_a_demand_rank(fused_build, fused_stack):
    """The operator's path: another version built with `--for-new-items` into the served folder, deployed
    while the gateway runs (a ranker with one more feature). Items added before and after the deploy
    carry a `new_demand` rank (how it orders items by their text is a unit test's); items with
    interactions carry 0. Last in this module: it leaves the new version deployed."""
    from lmrec.export.models.fused import NEW_ITEM_SHARE

    _, address = fused_stack
    build_dir = fused_build.repository_dir.parent
    rebuilt = build_bundle(BuildConfig(data=DataConfig(dataset="synthetic", synthetic=TINY), output_dir=build_dir,
                                       fused=True, for_new_items=True, finetune=TINY_FINETUNE),
                           progress=lambda *_: None)
    assert rebuilt.version == fused_build.version + 1
    assert rebuilt.manifest["ranker"]["training"]["new_item_share"] == NEW_ITEM_SHARE
    assert "new_demand_rr" in rebuilt.manifest["ranker"]["feature_names"]
    dataset = load_bundle(build_dir).dataset
    with_interactions = {dataset.item_ids[i] for i in np.unique(dataset.interactions.item)}
    user_id = dataset.user_ids[7]
    last = dataset.items[int(dataset.histories()[7][-1])]
    with RecommenderClient(address, timeout_s=300) as client:
        assert client.deploy(rebuilt.version).bundle_version == str(rebuilt.version)
        assert client.add_items([{"item_id": "fused-newer", "title": f"{last.title} Again",
                                  "categories": list(last.categories), "description": last.description}]).added == 1
        response = client.recommend(user_id, k=len(dataset.item_ids) + 1)
    assert response.bundle_version == str(rebuilt.version) and not response.degraded
    demand = {item.item_id: {s.signal: s.score for s in item.signals}.get("new_demand") for item in response.items
              if item.found_by != "popular"}
    assert demand["fused-newer"] > 0  # ranked by its predicted demand
    assert demand["fused-new"] > 0  # added to the version before, carried over by the deploy
    assert all(demand[item] == 0.0 for item in demand if item in with_interactions)
