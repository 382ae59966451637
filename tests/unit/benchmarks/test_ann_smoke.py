"""A small smoke run of the ANN suite on random embeddings: every file it promises, well-formed."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import pytest

from lmrec.benchmarks.ann import (AnnConfig, add_arguments, config_from_args, exact_search, make_catalogue,
                                  recall_at_k, reproduce_command, run_ann)


def test_ann_suite_smoke_run_writes_json_markdown_and_plot(tmp_path):
    rng = np.random.default_rng(0)
    # Clustered random vectors (a few centres), so neighbourhoods are not uniform noise.
    centres = rng.standard_normal((20, 32)).astype(np.float32)
    real = centres[rng.integers(0, 20, 300)] + 0.5 * rng.standard_normal((300, 32)).astype(np.float32)
    np.save(tmp_path / "emb.npy", real)
    config = AnnConfig(sizes=(2000,), efs=(10, 40), n_queries=50, repeats=1, embeddings=tmp_path / "emb.npy",
                       out_dir=tmp_path, name="smoke", latency_budget_s=1.0, min_batch_seconds=0.01)
    payload = run_ann(config, progress=lambda *_: None)

    saved = json.loads((tmp_path / "smoke.json").read_text())
    assert saved["suite"] == "ann" and saved["machine"]["cores"] >= 1
    assert "hnswlib" in saved["machine"]["packages"]
    records = saved["records"]
    hnsw = {(r["ef"], r["mode"]): r for r in records if r["method"] == "hnsw" and r["mode"] != "build"}
    exact = {r["mode"]: r for r in records if r["method"] == "exact"}
    assert set(hnsw) == {(ef, mode) for ef in (10, 40) for mode in ("batched", "batch1")}
    assert set(exact) == {"batched", "batch1"}
    for record in records:
        if record["mode"] == "build":
            assert record["build_seconds"] > 0 and record["index_bytes"] > 2000 * 32 * 4
            assert "rss_growth_bytes" in record
            assert record["lid"] > 0
            continue
        assert 0.0 <= record["recall@10"] <= 1.0 and record["qps"] > 0
        if record["mode"] == "batch1":
            assert 0 < record["p50_ms"] <= record["p99_ms"]
    for mode in ("batched", "batch1"):
        assert hnsw[(40, mode)]["recall@10"] >= hnsw[(10, mode)]["recall@10"] - 0.05
        assert exact[mode]["recall@10"] == 1.0
    assert isinstance(saved["bars"], list) and saved["bars"] == payload["bars"]
    for bar in saved["bars"]:
        assert bar["needed"] == 50 and isinstance(bar["met"], bool)

    markdown = (tmp_path / "smoke.md").read_text()
    assert "## 2,000 items" in markdown and "lmrec bench ann" in markdown and "hnsw ef=40" in markdown
    assert "LID around the queries" in markdown and saved["config"]["real_lid"] > 0
    assert (tmp_path / "smoke.png").read_bytes()[:4] == b"\x89PNG"
    assert not list(tmp_path.glob(".ann-*"))  # the scratch index file is gone


def test_exact_search_and_catalogue_helpers():
    rng = np.random.default_rng(1)
    real = rng.standard_normal((50, 8)).astype(np.float32)
    real /= np.linalg.norm(real, axis=1, keepdims=True)
    small, large = make_catalogue(real, 30, seed=3), make_catalogue(real, 400, seed=3)
    assert small.shape == (30, 8) and large.shape == (400, 8)
    assert np.allclose(np.linalg.norm(large, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(large[:50], real)  # the real vectors come first, then synthetic ones
    top = exact_search(large, large[:5], k=10)
    assert np.array_equal(top[:, 0], np.arange(5))  # each vector is its own nearest neighbour
    brute = np.argsort(-(large[:5] @ large.T), axis=1)[:, :10]
    assert recall_at_k(top, brute) == 1.0


def test_cli_arguments_round_trip(tmp_path, monkeypatch):
    import pytest

    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "x.npy", np.ones((3, 4), dtype=np.float32))
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    config = config_from_args(parser.parse_args(["--sizes", "10000,100_000", "--efs", "10,80", "--queries", "200",
                                                 "--embeddings", "x.npy", "--out", "o", "--name", "n"]))
    assert config.sizes == (10_000, 100_000) and config.efs == (10, 80) and config.n_queries == 200
    assert str(config.embeddings) == "x.npy" and config.name == "n" and config.m == 32
    assert config.dataset == "ml-100k" and config.noise == "principal" and config.noise_rank == 48
    other = config_from_args(parser.parse_args(["--dataset", "ml-latest-small", "--noise-rank", "24"]))
    assert other.dataset == "ml-latest-small" and other.noise_rank == 24
    assert reproduce_command(other).endswith("--noise principal --noise-rank 24 --dataset ml-latest-small")
    with pytest.raises(SystemExit):
        parser.parse_args(["--noise-rank", "0"])


@pytest.mark.parametrize("argv, message", [
    (["--embeddings", "{npy}", "--dataset", "ml-latest-small"], "--embeddings gives the real vectors; --dataset"),
    (["--embeddings", "{npy}", "--data-dir", "."], "pass one or the other"),
    (["--embeddings", "{dir}/missing.npy"], "missing.npy: expected a .npy file or a bundle folder"),
    (["--embeddings", "{dir}"], ": expected a .npy file or a bundle folder with item_embeddings.npy"),
])
def test_embeddings_that_cannot_be_read_or_would_be_ignored_are_refused_by_name(tmp_path, argv, message):
    """--dataset beside --embeddings was silently ignored; a missing path surfaced only after the parse."""
    from lmrec.cli_client import CliError

    np.save(tmp_path / "x.npy", np.ones((3, 4), dtype=np.float32))
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    argv = [a.format(npy=tmp_path / "x.npy", dir=tmp_path) for a in argv]
    with pytest.raises(CliError, match=message):
        config_from_args(parser.parse_args(argv))


def test_embeddings_in_another_format_are_named():
    """A JSON file given as --embeddings ended in numpy's pickle message, naming no file."""
    from lmrec.benchmarks.ann import load_real_embeddings

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.json"
        path.write_text("[[1, 2], [3, 4]]")
        with pytest.raises(ValueError, match=r"x.json: not a .npy array of item embeddings"):
            load_real_embeddings(AnnConfig(embeddings=path))


def test_an_npz_archive_given_as_embeddings_is_named():
    """A bundle's cf.npz passed the path check and ended in AttributeError ('NpzFile' has no astype)."""
    from lmrec.benchmarks.ann import load_real_embeddings

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cf.npz"
        np.savez(path, a=np.ones((3, 4)))
        with pytest.raises(ValueError, match=r"cf.npz: an .npz archive, not a .npy array"):
            load_real_embeddings(AnnConfig(embeddings=path))


def test_an_unknown_dataset_is_refused_by_name():
    import pytest

    from lmrec.benchmarks.ann import load_real_embeddings

    with pytest.raises(ValueError, match="dataset must be one of ml-100k, ml-latest-small, got 'ml-1m'"):
        load_real_embeddings(AnnConfig(dataset="ml-1m"))


def test_covariance_noise_keeps_each_dimensions_spread_and_follows_the_real_correlations():
    from lmrec.benchmarks.ann import NOISE_SCALE, noise_sampler

    rng = np.random.default_rng(1)
    # Real vectors living mostly along one direction: dimension 1 copies dimension 0.
    base = rng.standard_normal((4000, 1)).astype(np.float32)
    real = np.hstack([base, base + 0.1 * rng.standard_normal((4000, 1)).astype(np.float32),
                      rng.standard_normal((4000, 2)).astype(np.float32)])
    for kind in ("isotropic", "covariance"):
        noise = noise_sampler(real, kind)(20000, np.random.default_rng(2))
        np.testing.assert_allclose(noise.std(axis=0), NOISE_SCALE * real.std(axis=0), rtol=0.05)
    correlated = noise_sampler(real, "covariance")(20000, np.random.default_rng(2))
    independent = noise_sampler(real, "isotropic")(20000, np.random.default_rng(2))
    assert np.corrcoef(correlated[:, 0], correlated[:, 1])[0, 1] > 0.9
    assert abs(np.corrcoef(independent[:, 0], independent[:, 1])[0, 1]) < 0.05


def test_an_unknown_noise_is_refused_by_name():
    import pytest

    from lmrec.benchmarks.ann import noise_sampler

    with pytest.raises(ValueError, match="noise must be one of isotropic, covariance, principal, got 'pink'"):
        noise_sampler(np.ones((3, 2), np.float32), "pink")


def test_principal_noise_moves_only_along_the_top_directions_with_their_spread():
    import pytest

    from lmrec.benchmarks.ann import NOISE_SCALE, noise_sampler

    rng = np.random.default_rng(4)
    # Real vectors spread 3, 2 and 1 along three directions, barely at all along the other five; the axes are
    # turned by a random rotation so that the sampler has to find them (and centre the data) itself.
    axes = rng.standard_normal((5000, 8)) * np.array([3, 2, 1] + [0.01] * 5) + 5.0
    rotation, _ = np.linalg.qr(rng.standard_normal((8, 8)))
    real = (axes @ rotation.T).astype(np.float32)
    noise = noise_sampler(real, "principal", rank=2)(20000, np.random.default_rng(5))
    along_axes = noise @ rotation  # back in the unrotated coordinates
    np.testing.assert_allclose(along_axes[:, :2].std(axis=0), NOISE_SCALE * np.array([3, 2]), rtol=0.05)
    assert along_axes[:, 2:].std(axis=0).max() < 0.01  # nothing along the directions it was not given
    capped = noise_sampler(real, "principal", rank=100)(10, np.random.default_rng(5))  # capped at 8 directions
    assert capped.shape == (10, 8)
    with pytest.raises(ValueError, match="noise rank must be at least 1, got 0"):
        noise_sampler(real, "principal", rank=0)


def test_local_intrinsic_dimension_recovers_the_dimension_of_flat_data():
    from lmrec.benchmarks.ann import local_intrinsic_dimension, real_intrinsic_dimension

    rng = np.random.default_rng(6)
    estimates = {}
    for dim in (2, 8):
        # Small offsets around one point in a `dim`-dimensional subspace of 32 dimensions, then unit-normalised:
        # locally the data is `dim`-dimensional.
        flat = np.zeros((6000, 32), np.float32)
        flat[:, 0] = 1.0
        flat[:, 1 : dim + 1] = 0.05 * rng.standard_normal((6000, dim))
        flat /= np.linalg.norm(flat, axis=1, keepdims=True)
        items, queries = flat[:5000], flat[5000:]
        nearest = exact_search(items, queries, k=20)
        estimates[dim] = local_intrinsic_dimension(items, queries, nearest)
        assert abs(real_intrinsic_dimension(flat, seed=0) - estimates[dim]) < 0.3 * dim
    assert 1.5 < estimates[2] < 2.8 and 6.0 < estimates[8] < 10.0


def test_lid_grid_report_has_one_row_per_recipe_and_a_column_per_size():
    from lmrec.benchmarks.ann_lid import RECIPES, SIZES, render_markdown

    records = [{"noise": kind, "scale": scale, "rank": rank, "size": size, "lid": 1.0 + i}
               for i, (kind, scale, rank) in enumerate(RECIPES) for size in SIZES[:2]]
    markdown = render_markdown({"command": "python -m lmrec.benchmarks.ann_lid", "embeddings_source": "test",
                                "n_queries": 5, "real_lid": 24.0, "records": records})
    rows = [line for line in markdown.splitlines() if line.startswith("| ") and "noise" not in line]
    assert len(rows) == len(RECIPES)
    assert rows[-1].startswith("| principal | 0.5× | 48 |") and rows[-1].endswith("| 6.0 | 6.0 | – |")
    assert "**24.0**" in markdown
