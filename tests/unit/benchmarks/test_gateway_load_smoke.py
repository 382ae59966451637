"""A small smoke run of the gateway load suite: the real Triton and real gateway processes, both paths.

Triton must be installed: a missing Triton fails this test (it never skips), on CI and elsewhere.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from lmrec.benchmarks.gateway_load import (GatewayLoadConfig, arrival_offsets, bar_checks, run_gateway_load,
                                           scale_bundle, without_dynamic_batching)
from lmrec.export.build import BuildConfig, build_bundle
from lmrec.export.loaders import DataConfig, SyntheticConfig
from lmrec.export.triton_config import TextEncoderSpec, render_config, text_encoder_config

SMOKE = SyntheticConfig(n_users=30, n_items=40, min_interactions=4, max_interactions=8)


@pytest.fixture(scope="module")
def smoke_build(tmp_path_factory):
    build_dir = tmp_path_factory.mktemp("gateway-load") / "build"
    build_bundle(BuildConfig(data=DataConfig(dataset="synthetic", synthetic=SMOKE), output_dir=build_dir),
                 progress=lambda *_: None)
    return build_dir


def test_gateway_load_smoke_run_against_the_real_triton_and_gateway(smoke_build, tmp_path):
    build_dir = smoke_build
    config = GatewayLoadConfig(build_dir=build_dir, concurrency=(1, 2), duration_s=1.5, open_loop_shares=(0.5,),
                               naive=True, out_dir=tmp_path / "results", name="smoke", cached_users=8,
                               warmup_s=0.5, parts_repeats=20)
    payload = run_gateway_load(config, progress=lambda *_: None)

    for suffix in ("json", "md", "png"):
        assert (tmp_path / "results" / f"smoke.{suffix}").is_file()
    assert (tmp_path / "results" / "smoke.png").read_bytes()[:4] == b"\x89PNG"
    saved = json.loads((tmp_path / "results" / "smoke.json").read_text())
    assert saved["records"] == payload["records"] and saved["machine"]["cores"] >= 1

    records = payload["records"]
    cells = {(r["mode"], r["path"], r["population"], r.get("concurrency", r.get("share"))) for r in records}
    assert cells == {(mode, path, population, level)
                     for path in ("lmrec", "naive") for population in ("cached", "uncached", "known-uncached")
                     for mode, levels in (("closed", (1, 2)), ("open", (0.5,))) for level in levels}
    for record in records:
        assert record["n_errors"] == 0 and record["errors"] == {}, record
        assert record["ok"] > 0 and record["throughput_rps"] > 0, record
        assert record["degraded"] == 0, record
        assert record["p50_ms"] <= record["p95_ms"] <= record["p99_ms"], record
        assert record["stages"]["total"]["count"] == record["ok"], record

    # The populations and paths do what they claim: lmrec answers cached users from its cache; the naive
    # path (no cache), every anonymous session and every known user with a new item encode through Triton.
    stages = payload["stages"]
    for key in ("lmrec/uncached", "lmrec/known-uncached", "naive/cached", "naive/uncached", "naive/known-uncached"):
        assert stages[key]["encode"]["mean_ms"] > 0 and stages[key]["total"]["mean_ms"] > 0, key
        assert stages[key]["encode"]["count"] == stages[key]["total"]["count"], key
    assert "encode" not in stages["lmrec/cached"] and stages["lmrec/cached"]["total"]["mean_ms"] > 0
    lmrec_cached = [r for r in records if r["path"] == "lmrec" and r["population"] == "cached"]
    # Each is answered whole from the answer cache (the warm-up asked the same), or from the vector cache.
    assert all(r["answers"]["hit"] + r["cache"]["hit"] == r["ok"] and r["cache"]["miss"] == 0 for r in lmrec_cached)
    assert sum(r["answers"]["hit"] for r in lmrec_cached) > 0
    assert all(not r["cache"].get("hit") and not r["answers"].get("hit") for r in records
               if r["path"] == "naive" or r["population"] != "cached")
    # Triton's own counters: every encoded profile reached the text encoder of that path's Triton.
    for record in records:
        encoded = record["stages"].get("encode", {}).get("count", 0)
        assert record["triton"].get("text_encoder", {}).get("requests", 0) == encoded, record
        assert record["drain_s"] >= 0

    # A known user's profile is their history with the new item: longer than a 3-item session's, and its
    # encode is timed alone on those texts.
    texts = payload["profile_texts"]
    assert set(texts) == {"cached", "uncached", "known-uncached"} and all(v["n"] > 0 for v in texts.values())
    assert texts["known-uncached"]["median_chars"] > texts["uncached"]["median_chars"]
    assert {"encode", "encode_known_user", "index_query", "grpc_health_rtt"} <= set(payload["parts"])
    assert all(part["median_ms"] > 0 for part in payload["parts"].values())
    assert payload["max_throughput"]["lmrec/cached"]["throughput_rps"] > 0
    assert {(r["mode"], r["population"]) for r in payload["ratios"]} == {
        (m, p) for m in ("closed", "open") for p in ("cached", "uncached", "known-uncached")}
    bars = {b["bar"].split(":")[0]: b for b in payload["bars"]}
    assert any(key.startswith("cached users") for key in bars)
    # The tail bar's control: Health.Check calls under the same arrivals, answered, with their own tail.
    no_op = next(r for r in records if r["mode"] == "open" and r["path"] == "lmrec" and r["population"] == "cached")["no_op_rpc"]
    assert no_op["requests"] > 0 and no_op["n_errors"] == 0 and no_op["p50_ms"] <= no_op["p99_ms"]
    assert not any(r.get("no_op_rpc") for r in records if r["path"] == "naive" or r["population"] != "cached")
    assert sum(key.startswith("one request in flight") for key in bars) == 3
    # Bar 4b is judged on Recommend and its parts paired request by request, each population its own parts.
    paired = payload["paired"]
    assert set(paired) == {"cached", "uncached", "known-uncached"} and all(v["n"] == 20 for v in paired.values())
    assert list(paired["cached"]["parts_ms"]) == ["index_query"]
    for population in ("uncached", "known-uncached"):
        assert list(paired[population]["parts_ms"]) == ["encode", "index_query"]
    for population, v in paired.items():
        assert v["recommend_ms"] > 0 and v["sum_parts_ms"] == sum(v["parts_ms"].values()) and v["median_pair_ratio"] > 0
        bar = bars[f"one request in flight ({population})"]
        assert bar["paired"] and bar["value"] == v["recommend_ms"] / v["sum_parts_ms"] and "cell_ratio" in bar
    scale = next(b for b in payload["bars"] if "1M items" in b["bar"])
    assert scale["value"] is None and scale["note"]

    markdown = (tmp_path / "results" / "smoke.md").read_text()
    assert "## Closed loop" in markdown and "## Open loop" in markdown and "## Bars" in markdown
    assert "no-op RPC p50 / p99 ms" in markdown and "a no-op RPC (Health.Check) under the same arrivals" in markdown
    assert "answered whole from the answer cache" in markdown
    assert "## Recommend and its parts, paired" in markdown and "(paired request by request)" in markdown
    assert "lmrec bench gateway --build-dir" in markdown
    assert "known-uncached = a random known user with one new item" in markdown
    assert f"reading {payload['build']['max_length']} tokens" in markdown
    assert "Profile texts the encoder reads" in markdown


def test_a_run_of_one_population_measures_it_alone_and_says_which_bars_it_left_out(smoke_build, tmp_path):
    config = GatewayLoadConfig(build_dir=smoke_build, concurrency=(1,), duration_s=1.0, open_loop_shares=(0.5,),
                               naive=False, out_dir=tmp_path, name="known", cached_users=4, warmup_s=0.2,
                               parts_repeats=10, populations=("known-uncached",))
    payload = run_gateway_load(config, progress=lambda *_: None)

    assert {(r["mode"], r["path"], r["population"]) for r in payload["records"]} == {
        ("closed", "lmrec", "known-uncached"), ("open", "lmrec", "known-uncached")}
    assert all(r["n_errors"] == 0 and r["ok"] > 0 for r in payload["records"])
    assert set(payload["paired"]) == {"known-uncached"} and set(payload["profile_texts"]) == {"known-uncached"}
    assert "encode_known_user" in payload["parts"]
    bars = payload["bars"]
    tail = next(b for b in bars if b["bar"].startswith("cached users"))
    assert tail["value"] is None and "left out the cached population" in tail["note"]
    parts_bar = next(b for b in bars if b["bar"].startswith("one request in flight (known-uncached)"))
    # The N=1 cell against the block of parts uses the known users' own encode.
    parts = payload["parts"]
    cell = next(r for r in payload["records"] if r["mode"] == "closed")
    assert parts_bar["cell_ratio"] == cell["p50_ms"] / (parts["encode_known_user"]["median_ms"]
                                                        + parts["index_query"]["median_ms"])
    assert "--populations known-uncached" in payload["reproduce"]


def test_the_naive_triton_config_has_no_dynamic_batching():
    batched = render_config(text_encoder_config(TextEncoderSpec()))
    assert "dynamic_batching" in batched
    naive = without_dynamic_batching(batched)
    assert "dynamic_batching" not in naive and "max_batch_size: 64" in naive and "ort_threads" in naive


def test_open_loop_schedules_have_the_asked_rate():
    poisson = arrival_offsets(200.0, 10.0, "poisson", seed=1)
    assert 1800 < len(poisson) < 2200 and poisson == sorted(poisson) and poisson[-1] < 10.0
    assert len(arrival_offsets(50.0, 2.0, "fixed", seed=1)) == 100


def test_scale_bundle_pads_a_build_into_a_valid_bundle_and_reuses_it(smoke_build, tmp_path):
    from lmrec.server.bundle import load_bundle

    out = scale_bundle(smoke_build, 250, tmp_path / "scaled", seed=3, progress=lambda *_: None)
    bundle, original = load_bundle(out), load_bundle(smoke_build)  # load_bundle verifies every checksum
    n_real = len(original.dataset.item_ids)
    assert len(bundle.dataset.item_ids) == len(bundle.item_embeddings) == len(bundle.retriever) == 250
    assert bundle.manifest["n_items"] == 250 and bundle.manifest["scaled_from"]["n_real_items"] == n_real
    assert bundle.dataset.item_ids[:n_real] == original.dataset.item_ids
    assert bundle.dataset.items[n_real].title == "Synthetic item 0"
    np.testing.assert_array_equal(bundle.item_embeddings[:n_real], original.item_embeddings)
    np.testing.assert_allclose(np.linalg.norm(bundle.item_embeddings, axis=1), 1.0, atol=1e-5)
    assert not bundle.item_factors[n_real:].any() and not bundle.popularity[n_real:].any()
    np.testing.assert_array_equal(bundle.user_factors, original.user_factors)
    labels, _ = bundle.retriever.search(bundle.item_embeddings[200], 1)
    assert labels[0, 0] == 200
    # The same padding again is reused as it is; a smaller catalogue than the build's is refused.
    assert scale_bundle(smoke_build, 250, tmp_path / "scaled", seed=3, progress=lambda *_: None) == out
    with pytest.raises(ValueError):
        scale_bundle(smoke_build, n_real - 1, tmp_path / "smaller", progress=lambda *_: None)


def test_bar_5_compares_the_largest_catalogue_with_the_smallest():
    def cell(n_items, population, p50):
        return {"mode": "scale", "path": "lmrec", "population": population, "n_items": n_items, "concurrency": 1,
                "p50_ms": p50, "p99_ms": 2 * p50, "n_errors": 0}

    bars = bar_checks({"records": [cell(10_000, "cached", 5.0), cell(1_000_000, "cached", 12.0),
                                   cell(10_000, "uncached", 40.0), cell(1_000_000, "uncached", 60.0)]})
    scale = [b for b in bars if "items" in b["bar"]]
    assert [(round(b["value"], 2), b["met"]) for b in scale] == [(2.4, False), (1.5, True)]
    assert "1,000,000 items" in scale[0]["bar"] and "10,000 items" in scale[0]["bar"]
    unmeasured = next(b for b in bar_checks({"records": []}) if "1M items" in b["bar"])
    assert unmeasured["value"] is None and unmeasured["met"] is None and "--scale-items" in unmeasured["note"]


def test_the_reproduce_line_carries_every_option_that_changes_the_measurement():
    from pathlib import Path

    from lmrec.benchmarks.gateway_config import GatewayLoadConfig, reproduce_command

    plain = reproduce_command(GatewayLoadConfig(build_dir=Path("build/x")))
    assert plain == "lmrec bench gateway --build-dir build/x"
    line = reproduce_command(GatewayLoadConfig(build_dir=Path("build/x"), arrivals="fixed", cached_users=8,
                                               naive=False, candidate_cache_users=0, answer_cache=False,
                                               populations=("known-uncached", "cached")))
    assert "--arrivals fixed" in line and "--cached-users 8" in line and "--no-naive" in line
    assert "--populations known-uncached,cached" in line
    assert "--candidate-cache-users 0" in line and "--no-answer-cache" in line


def test_a_known_user_with_a_new_item_is_asked_for_whole_and_every_population_is_reproducible():
    from lmrec.benchmarks.gateway_loadgen import Population

    items, known = [f"i{n}" for n in range(50)], [f"u{n}" for n in range(20)]

    def stream(name):
        population = Population(name, known[:2], items, seed=7, known_users=known)
        return [population.request(0, n) for n in range(30)]

    asks = stream("known-uncached")
    assert asks == stream("known-uncached")  # the same seed draws the same requests
    assert all(a["user_id"] in known and len(a["recent_item_ids"]) == 1 and a["recent_item_ids"][0] in items
               for a in asks)
    assert len({a["user_id"] for a in asks}) > 2  # any known user, not only the cached ones
    assert [a["user_id"] for a in stream("cached")][:4] == ["u0", "u1", "u0", "u1"]
    assert all(set(a) == {"recent_item_ids"} and len(set(a["recent_item_ids"])) == 3 for a in stream("uncached"))
    with pytest.raises(ValueError, match="population must be one of cached, uncached, known-uncached, got 'warm'"):
        Population("warm", known, items, seed=1)


@pytest.mark.parametrize("bad", ["cached,warm", "", "cached,cached"])
def test_a_population_list_that_names_no_population_or_one_twice_is_refused_naming_it(bad):
    import argparse

    from lmrec.benchmarks.gateway_load import add_arguments

    parser = argparse.ArgumentParser(exit_on_error=False)
    add_arguments(parser)
    with pytest.raises(argparse.ArgumentError, match=f"expected distinct populations .*got '{bad}'"):
        parser.parse_args(["--populations", bad])
    assert parser.parse_args(["--populations", "known-uncached"]).populations == ("known-uncached",)
