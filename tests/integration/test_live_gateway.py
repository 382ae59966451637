"""The gateway's live API over real gRPC, with the real Triton: events, AddItems, ForgetUser, filters,
explanations, profiles, metrics, and the CLI verbs for them."""

from __future__ import annotations

import asyncio
import json
import subprocess
import urllib.request

import pytest

from lmrec.client import AsyncRecommenderClient, ClientError
from lmrec.export.snapshot import load_snapshot

from .conftest import LMREC

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def dataset(build):
    return load_snapshot(build.bundle_dir)


def ids(response) -> list[str]:
    return [item.item_id for item in response.items]


def in_category(dataset, category: str) -> list[str]:
    return [dataset.item_ids[i] for i, info in enumerate(dataset.items) if category in info.categories]


def test_an_event_changes_the_next_recommendation(client, dataset):
    user_id = dataset.user_ids[10]
    before = client.recommend(user_id, k=10)
    horror = [i for i in in_category(dataset, "Horror") if i not in ids(before)][:5]
    response = client.record_events([{"user_id": user_id, "item_id": i, "event_type": "view"} for i in horror])
    assert response.recorded == len(horror) and response.bundle_version == before.bundle_version
    after = client.recommend(user_id, k=10)
    assert ids(after) != ids(before)
    assert not set(horror) & set(ids(after))
    profile = client.profile(user_id, max_recent_items=5)
    assert {item.item_id for item in profile.recent_items} == set(horror)
    assert profile.recorded_events == len(horror)


def test_an_added_item_is_recommended_to_a_user_whose_history_matches_its_text(client, dataset):
    user_id = dataset.user_ids[20]
    history = dataset.histories()[dataset.user_index()[user_id]]
    favourite = max({c for i in history for c in dataset.items[i].categories},
                    key=lambda c: sum(c in dataset.items[i].categories for i in history))
    last = dataset.items[int(history[-1])]
    response = client.add_items([{"item_id": "live-1", "title": f"{last.title} II", "categories": [favourite],
                                  "description": last.description, "year": last.year}])
    assert (response.added, response.replaced) == (1, 0)
    assert "live-1" in ids(client.similar(text=f"{last.title} II", k=3))
    assert "live-1" in ids(client.similar(dataset.item_ids[int(history[-1])], k=5))
    assert "live-1" in ids(client.recommend(user_id, k=10))
    status = client.status()
    assert status.added_items >= 1 and status.n_items == len(dataset.item_ids) + status.added_items


def test_forget_user_removes_everything(client, dataset):
    user_id = dataset.user_ids[30]
    client.record_event(user_id, dataset.item_ids[0])
    client.recommend(user_id, k=5)
    forgotten = client.forget_user(user_id)
    assert forgotten.was_known and forgotten.events_deleted == 1
    for call in (lambda: client.recommend(user_id, k=5), lambda: client.profile(user_id)):
        with pytest.raises(ClientError) as raised:
            call()
        assert raised.value.code == "NOT_FOUND"
    # As an unknown user: a request with text is served from the text alone.
    response = client.recommend(user_id, text="ghosts in an old house", k=5)
    assert len(response.items) == 5 and response.profile_text == "ghosts in an old house"


@pytest.mark.parametrize("k", [1, 7])
def test_filters_still_return_exactly_k(client, dataset, k):
    user_id = dataset.user_ids[1]
    seen = {dataset.item_ids[i] for i in dataset.histories()[dataset.user_index()[user_id]]}
    comedy = set(in_category(dataset, "Comedy")) - seen
    exclude = sorted(comedy)[:2]
    response = client.recommend(user_id, k=k, require={"genre": "Comedy"}, exclude_item_ids=exclude)
    assert len(response.items) == k
    assert set(ids(response)) <= comedy - set(exclude)
    assert list(response.notes) == []
    misspelt = client.recommend(user_id, k=k, require={"genre": "Comedies"})  # over real gRPC, notes and all
    assert list(misspelt.items) == [] and list(misspelt.notes) == ["no item has genre = 'Comedies'; closest: Comedy"]


def test_every_item_carries_an_explanation_and_the_bundle_version(client, dataset):
    response = client.recommend(dataset.user_ids[2], k=10, request_id="trace-42")
    assert response.bundle_version == "1" and response.request_id == "trace-42"
    history = {dataset.item_ids[i] for i in dataset.histories()[2]}
    for item in response.items:
        assert item.explanation.text
        assert item.explanation.because_item_id in history
    assert any(item.explanation.graph_path for item in response.items)


def test_bad_input_is_refused_with_a_clear_status(client, dataset):
    cases = [
        (lambda: client.record_event("u1", "no-such-item"), "INVALID_ARGUMENT", "events[0].item_id 'no-such-item'"),
        (lambda: client.record_event("u1", dataset.item_ids[0], weight=float("inf")), "INVALID_ARGUMENT", "weight"),
        (lambda: client.add_items([{"item_id": dataset.item_ids[0], "title": "x"}]), "INVALID_ARGUMENT",
         "part of bundle"),
        (lambda: client.recommend("u1", require={"colour": "red"}), "INVALID_ARGUMENT", "'colour'"),
        (lambda: client.recommend("u1", exclude_item_ids=["nope"]), "INVALID_ARGUMENT", "exclude_item_ids[0]"),
        (lambda: client.deploy(99), "FAILED_PRECONDITION", "bundle 99 refused"),
        (lambda: client.profile(""), "INVALID_ARGUMENT", "user_id is empty"),
    ]
    for call, code, fragment in cases:
        with pytest.raises(ClientError) as raised:
            call()
        assert raised.value.code == code and fragment in raised.value.details, raised.value
    assert client.status().bundle_version == "1"


def test_async_client_covers_the_rpcs(gateway, dataset):
    async def main():
        async with AsyncRecommenderClient(gateway) as client:
            user_id = dataset.user_ids[40]
            await client.record_event(user_id, dataset.item_ids[3])
            profile = await client.profile(user_id)
            status = await client.status()
            forgotten = await client.forget_user(user_id)
            return profile, status, forgotten

    profile, status, forgotten = asyncio.run(main())
    assert profile.recorded_events == 1 and profile.tags
    assert status.recorded_events >= 1 and forgotten.events_deleted == 1


def test_prometheus_metrics_are_served(client, dataset, gateway_metrics_port):
    client.recommend(dataset.user_ids[3], k=5)
    client.recommend(dataset.user_ids[3], k=5)
    with urllib.request.urlopen(f"http://127.0.0.1:{gateway_metrics_port}/metrics", timeout=5) as response:
        text = response.read().decode()
    assert 'lmrec_gateway_requests_total{code="OK",method="Recommend"}' in text
    assert 'lmrec_gateway_stage_seconds_bucket{le="0.001",method="Recommend",stage="encode"}' in text
    assert 'lmrec_gateway_user_vector_cache_total{result="hit"}' in text
    assert "lmrec_gateway_bundle_version 1.0" in text
    assert client.status().cache_hit_ratio > 0


def test_cli_verbs_for_events_items_profile_forget(gateway, dataset, tmp_path):
    def lmrec(*args):
        return subprocess.run([LMREC, *args, "--address", gateway], capture_output=True, text=True, timeout=60)

    done = lmrec("event", "--user", "cli-user", "--item", dataset.item_ids[5], "--type", "click")
    assert done.returncode == 0 and "recorded 1 event" in done.stdout, done.stderr
    items = tmp_path / "items.jsonl"
    items.write_text(json.dumps({"item_id": "cli-item", "title": "A quiet lighthouse", "categories": ["Drama"]}) + "\n"
                     + json.dumps({"item_id": "cli-described", "description": "A gentle film about robots"}) + "\n")
    done = lmrec("add-items", str(items))  # a description alone is enough: this one ended in a TypeError
    assert done.returncode == 0 and "added 2" in done.stdout, done.stderr
    done = lmrec("profile", "--user", "cli-user")
    assert done.returncode == 0 and dataset.item_ids[5] in done.stdout, done.stderr
    done = lmrec("recommend", "--user", "cli-user", "-k", "3", "--require", "genre=Drama")
    assert done.returncode == 0 and "why:" in done.stdout, done.stderr
    done = lmrec("forget", "--user", "cli-user")
    assert done.returncode == 0 and "1 recorded event(s) deleted" in done.stdout, done.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"item_id": "x"}\n')
    done = lmrec("add-items", str(bad))
    assert done.returncode == 2 and "line 1 has no text" in done.stderr
    done = lmrec("deploy", "--version", "77")
    assert done.returncode != 0 and "bundle 77 refused" in done.stderr and "does not exist" in done.stderr


def test_more_items_than_one_triton_request_holds_are_added_in_one_call(client):
    """The text_encoder takes at most 64 texts per request; an AddItems of 100 must still land whole."""
    before = client.status().added_items
    words = ("lighthouse", "glacier", "orchard", "volcano", "harbour")
    items = [{"item_id": f"bulk-{n}", "title": f"The {words[n % 5]} chronicle, part {n}", "categories": ["Bulk"]}
             for n in range(100)]
    response = client.add_items(items)
    assert (response.added, response.replaced) == (100, 0)
    assert client.status().added_items == before + 100
    found = ids(client.recommend(text="the volcano chronicle", k=5, require={"genre": "Bulk"}))
    assert len(found) == 5 and all(item.startswith("bulk-") for item in found)


def test_an_item_whose_text_exceeds_the_models_byte_limit_is_added_and_trips_nothing(client):
    """Titles and descriptions are capped, tags are not: the item's text may pass the gateway's checks and
    still be over the text_encoder's 16 KB. The gateway cuts it (only the first 256 tokens count), so the
    call lands and no one else's requests are turned away."""
    tags = [f"tag number {n} " + "☃" * 60 for n in range(120)]  # about 25 KB of item text
    response = client.add_items([{"item_id": "tagged-heavily", "title": "The snowman archive", "tags": tags,
                                  "categories": ["Archive"]}])
    assert response.added == 1
    answer = client.recommend(text="a snowman archive", k=3)
    assert not answer.degraded and "tagged-heavily" in ids(client.recommend(text="the snowman archive", k=3,
                                                                                  require={"genre": "Archive"}))
    assert not client.status().degraded
