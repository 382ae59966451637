"""`build_bundle` on a tiny synthetic data set: what lands on disk and how it fits together."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lmrec.encoder import OnnxTextEncoder
from lmrec.export.build import CF_FILE
from lmrec.export.encoder_export import sha256_of
from lmrec.export.index_build import INDEX_FILE, INDEX_META_FILE
from lmrec.export.loaders import load_dataset
from lmrec.export.repository import MANIFEST_FILE, STAGING_DIR
from lmrec.export.snapshot import load_snapshot, save_snapshot
from lmrec.server.retrieval import ExactRetriever, HnswRetriever
from lmrec.text import item_text_of


@pytest.fixture(scope="module")
def tiny_dataset(tiny_data_config):
    return load_dataset(tiny_data_config).dataset


def test_manifest_fields(tiny_build_dir, tiny_dataset):
    manifest = json.loads((tiny_build_dir.bundle_dir / MANIFEST_FILE).read_text())
    assert manifest["version"] == tiny_build_dir.version == 1
    assert manifest["dataset"] == "synthetic"
    assert (manifest["n_users"], manifest["n_items"], manifest["n_interactions"]) == (
        tiny_dataset.n_users, tiny_dataset.n_items, len(tiny_dataset.interactions))
    encoder = manifest["encoder"]
    assert encoder["triton_model"] == "text_encoder" and encoder["triton_version"] == 1
    assert encoder["precision"] == "fp32" and encoder["onnx_file"] == "model.onnx"
    assert encoder["instance_kind"] == "KIND_CPU"
    assert encoder["embedding_dim"] == 384
    assert encoder["parity"]["fp32_min_cosine"] >= 0.999
    assert manifest["index"]["n_items"] == tiny_dataset.n_items and manifest["index"]["dim"] == 384
    assert manifest["cf"]["method"] == "als"
    on_disk = sorted(p.name for p in tiny_build_dir.bundle_dir.iterdir() if p.name != MANIFEST_FILE)
    assert sorted(manifest["files"]) == on_disk
    assert {INDEX_FILE, INDEX_META_FILE, CF_FILE, "catalog.json", "interactions.npz",
            "item_embeddings.npy"} <= set(on_disk)
    for name, checksum in manifest["files"].items():
        assert sha256_of(tiny_build_dir.bundle_dir / name) == checksum
    # The temporary export is cleaned away.
    assert not list((tiny_build_dir.bundle_dir.parent.parent / STAGING_DIR).glob("encoder-export-*"))


def test_index_names_the_encoder_it_was_built_with(tiny_build_dir):
    meta = json.loads((tiny_build_dir.bundle_dir / INDEX_META_FILE).read_text())
    version_dir = tiny_build_dir.repository_dir / "text_encoder" / str(tiny_build_dir.version)
    assert meta["encoder_checksum"] == sha256_of(version_dir / "model.onnx")
    assert meta["encoder_checksum"] == tiny_build_dir.manifest["encoder"]["checksums"]["model.onnx"]
    assert meta["encoder_version"] == tiny_build_dir.version


def test_item_embeddings_come_from_the_served_encoder(tiny_build_dir, tiny_dataset):
    embeddings = np.load(tiny_build_dir.bundle_dir / "item_embeddings.npy")
    meta = json.loads((tiny_build_dir.bundle_dir / INDEX_META_FILE).read_text())
    assert meta["item_ids"] == list(tiny_dataset.item_ids)
    assert embeddings.shape == (tiny_dataset.n_items, 384)
    version_dir = tiny_build_dir.repository_dir / "text_encoder" / str(tiny_build_dir.version)
    sample = [0, tiny_dataset.n_items // 2, tiny_dataset.n_items - 1]
    again = OnnxTextEncoder(version_dir, threads=2).encode([item_text_of(tiny_dataset.items[i]) for i in sample])
    np.testing.assert_allclose(embeddings[sample], again, atol=1e-5)


def test_cf_factors_shapes(tiny_build_dir, tiny_dataset):
    cf = np.load(tiny_build_dir.bundle_dir / CF_FILE)
    factors = tiny_build_dir.manifest["cf"]["factors"]
    assert cf["user_factors"].shape == (tiny_dataset.n_users, factors)
    assert cf["item_factors"].shape == (tiny_dataset.n_items, factors)
    np.testing.assert_array_equal(cf["popularity"],
                                  np.bincount(tiny_dataset.interactions.item, minlength=tiny_dataset.n_items))


def test_snapshot_round_trip(tmp_path, tiny_dataset, tiny_build_dir):
    save_snapshot(tiny_dataset, tmp_path)
    for loaded in (load_snapshot(tmp_path), load_snapshot(tiny_build_dir.bundle_dir)):
        assert loaded.name == tiny_dataset.name
        assert loaded.user_ids == tiny_dataset.user_ids and loaded.item_ids == tiny_dataset.item_ids
        assert loaded.items == tiny_dataset.items
        assert loaded.users == tiny_dataset.users
        for column in ("user", "item", "weight", "timestamp"):
            np.testing.assert_array_equal(getattr(loaded.interactions, column),
                                          getattr(tiny_dataset.interactions, column))
        assert loaded.implicit_threshold is None
    from dataclasses import replace

    save_snapshot(replace(tiny_dataset, implicit_threshold=4.0), tmp_path / "thresholded")
    assert load_snapshot(tmp_path / "thresholded").implicit_threshold == 4.0


def test_hnsw_recall_against_exact(tiny_build_dir):
    embeddings = np.load(tiny_build_dir.bundle_dir / "item_embeddings.npy")
    hnsw = HnswRetriever(tiny_build_dir.bundle_dir / INDEX_FILE, dim=embeddings.shape[1], n_items=len(embeddings))
    exact = ExactRetriever(embeddings)
    k = 10
    rng = np.random.default_rng(0)
    noisy = embeddings + 0.05 * rng.standard_normal(embeddings.shape).astype(np.float32)
    queries = np.concatenate([embeddings, noisy / np.linalg.norm(noisy, axis=1, keepdims=True)])
    approx_labels, _ = hnsw.search(queries, k)
    exact_labels, _ = exact.search(queries, k)
    recall = np.mean([len(set(a) & set(e)) / k for a, e in zip(approx_labels, exact_labels)])
    assert recall >= 0.95


def test_a_build_for_a_gpu_writes_gpu_instances_of_the_fp32_encoder(tmp_path, tiny_data_config):
    from lmrec.export.build import BuildConfig, build_bundle

    result = build_bundle(BuildConfig(data=tiny_data_config, output_dir=tmp_path, device="cuda"),
                          progress=lambda line: None)
    config = (tmp_path / "model_repository" / "text_encoder" / "config.pbtxt").read_text()
    assert "kind: KIND_GPU" in config and "KIND_CPU" not in config
    assert result.manifest["encoder"]["instance_kind"] == "KIND_GPU"
    assert result.manifest["encoder"]["precision"] == "fp32"


@pytest.mark.parametrize("device, precision, message", [
    ("cuda", "int8", "a GPU serves the fp32 encoder"),
    ("tpu", "fp32", "unknown device 'tpu'"),
])
def test_a_device_the_build_cannot_serve_on_stops_it_before_any_work(tmp_path, device, precision, message):
    from lmrec.export.build import BuildConfig, build_bundle
    from lmrec.export.loaders import DataConfig

    # The data folder does not exist: the device check must come first.
    config = BuildConfig(data=DataConfig(dataset="ml-100k", data_dir=tmp_path / "missing"), output_dir=tmp_path / "out",
                         device=device, precision=precision)
    with pytest.raises(ValueError, match=message):
        build_bundle(config, progress=lambda line: None)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("version, error, message", [
    (1, FileExistsError, "version 1 already exists.*leave it out for 2"),
    (0, ValueError, "--version must be a positive number, got 0"),
    (-3, ValueError, "--version must be a positive number, got -3"),
])
def test_a_version_that_cannot_be_published_stops_the_build_before_any_work(tmp_path, version, error, message):
    from lmrec.export.build import BuildConfig, build_bundle
    from lmrec.export.loaders import DataConfig

    (tmp_path / "out" / "bundles" / "1").mkdir(parents=True)  # an earlier build's version 1
    # The data folder does not exist: the version check must come first.
    config = BuildConfig(data=DataConfig(dataset="ml-100k", data_dir=tmp_path / "missing"), output_dir=tmp_path / "out",
                         version=version)
    with pytest.raises(error, match=message):
        build_bundle(config, progress=lambda line: None)


def test_a_fused_build_fine_tunes_the_encoder_it_was_given(tmp_path, tiny_data_config, monkeypatch):
    from lmrec.export.build import BuildConfig

    asked = _fused_settings_of_build(monkeypatch, BuildConfig(data=tiny_data_config, output_dir=tmp_path, fused=True,
                                                              encoder_model="/my/encoder"))
    assert asked["lm_params"]["base_model"] == "/my/encoder"
    assert asked["holdout"] == "last" and asked["cold_share"] == 0.0  # never trained for new items by default
    assert not (tmp_path / STAGING_DIR).exists() or not any((tmp_path / STAGING_DIR).iterdir())


def _fused_settings_of_build(monkeypatch, config) -> dict:
    """The settings the build gives the fused model, captured where its fit starts (the build stops there)."""
    import lmrec.export.models.fused as fused_module
    from lmrec.export.build import build_bundle

    asked = {}

    class Stop(Exception):
        pass

    def capture(self, dataset, train):
        asked.update(self.settings)
        raise Stop

    monkeypatch.setattr(fused_module.FusedRecommender, "fit", capture)
    with pytest.raises(Stop):
        build_bundle(config, progress=lambda line: None)
    return asked


def test_a_fused_build_for_new_items_trains_the_ranker_with_items_made_new(tmp_path, tiny_data_config, monkeypatch):
    from lmrec.export.build import BuildConfig, build_bundle
    from lmrec.export.models.fused import NEW_ITEM_SHARE, FusedRecommender

    asked = _fused_settings_of_build(monkeypatch, BuildConfig(data=tiny_data_config, output_dir=tmp_path, fused=True,
                                                              for_new_items=True))
    assert asked["holdout"] == "last" and asked["cold_share"] == NEW_ITEM_SHARE > 0
    assert FusedRecommender(**{k: v for k, v in asked.items() if k != "lm_params"}).new_item_demand  # on with it
    with pytest.raises(ValueError, match="for_new_items trains the fusion ranker: it needs fused=True"):
        build_bundle(BuildConfig(data=tiny_data_config, output_dir=tmp_path / "plain", for_new_items=True),
                     progress=lambda line: None)
    assert not (tmp_path / "plain").exists()  # refused before anything was written


def test_a_build_that_fails_late_leaves_no_version_behind(tmp_path, tiny_data_config, monkeypatch):
    import lmrec.export.build as build_module
    from lmrec.export.build import BuildConfig, build_bundle
    from lmrec.export.repository import existing_versions

    class Stop(Exception):
        pass

    def fail(*args, **kwargs):  # after the encoder version was published and the bundle staged
        raise Stop

    monkeypatch.setattr(build_module, "fit_cf", fail)
    build_dir = tmp_path / "fresh"
    with pytest.raises(Stop):
        build_bundle(BuildConfig(data=tiny_data_config, output_dir=build_dir), progress=lambda line: None)
    assert not build_dir.exists()  # it created the folder, so nothing of it is left

    (build_dir / "bundles").mkdir(parents=True)
    with pytest.raises(Stop):
        build_bundle(BuildConfig(data=tiny_data_config, output_dir=build_dir), progress=lambda line: None)
    assert existing_versions(build_dir) == [] and sorted(p.name for p in build_dir.iterdir()) == ["bundles"]


def test_a_build_refused_for_a_version_another_build_holds_removes_nothing(tmp_path, tiny_data_config):
    from lmrec.export.build import BuildConfig, build_bundle
    from lmrec.export.repository import reserve_version

    reserve_version(tmp_path, 2)
    (tmp_path / STAGING_DIR / "bundle-2").mkdir()  # the other build's work in progress
    with pytest.raises(FileExistsError, match="version 2 is being built by another build"):
        build_bundle(BuildConfig(data=tiny_data_config, output_dir=tmp_path, version=2), progress=lambda line: None)
    assert (tmp_path / STAGING_DIR / "bundle-2").is_dir() and (tmp_path / STAGING_DIR / "version-2").is_dir()
