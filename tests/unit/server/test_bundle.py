"""Loading a bundle verifies it; a missing, tampered or mismatched part is refused with a named file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from lmrec.export.index_build import INDEX_FILE
from lmrec.export.repository import BUNDLES_DIR, MANIFEST_FILE, REPOSITORY_DIR
from lmrec.server.bundle import BundleError, complete_versions, load_bundle
from lmrec.server.retrieval import ExactRetriever, HnswRetriever


@pytest.fixture
def build_copy(tmp_path, tiny_build_root) -> Path:
    copy = tmp_path / "build"
    shutil.copytree(tiny_build_root, copy)
    return copy


def _bundle_dir(build: Path) -> Path:
    return build / BUNDLES_DIR / "1"


def test_load_bundle_ok(tiny_build_root, tiny_build_dir):
    bundle = load_bundle(tiny_build_root)
    n_items = tiny_build_dir.manifest["n_items"]
    assert bundle.version == tiny_build_dir.version and bundle.label == str(tiny_build_dir.version)
    assert bundle.encoder_model == "text_encoder" and bundle.encoder_version == tiny_build_dir.version
    assert bundle.encoder_max_batch_size == 64
    assert bundle.dataset.n_items == n_items == len(bundle.item_index) == len(bundle.item_embeddings)
    assert bundle.item_index[bundle.dataset.item_ids[5]] == 5
    assert isinstance(bundle.retriever, HnswRetriever) and len(bundle.retriever) == n_items
    assert bundle.item_factors.shape[0] == n_items and bundle.user_factors.shape[0] == bundle.dataset.n_users
    assert bundle.als_alpha == tiny_build_dir.manifest["cf"]["alpha"]
    assert bundle.als_regularization == pytest.approx(tiny_build_dir.manifest["cf"]["regularization"])
    assert isinstance(load_bundle(tiny_build_root, 1, retriever="exact").retriever, ExactRetriever)
    assert complete_versions(tiny_build_root) == [1]


def test_no_bundle_at_all(tmp_path):
    with pytest.raises(BundleError, match="no complete bundle"):
        load_bundle(tmp_path)


def test_a_bundle_that_was_never_built_is_named_as_such_with_the_ones_there_are(tiny_build_root):
    with pytest.raises(BundleError, match=r"bundle 7 does not exist in .*bundles \(complete bundles: 1\)"):
        load_bundle(tiny_build_root, 7)


def test_missing_manifest(build_copy):
    (_bundle_dir(build_copy) / MANIFEST_FILE).unlink()
    assert complete_versions(build_copy) == []
    with pytest.raises(BundleError, match="no complete bundle"):
        load_bundle(build_copy)
    with pytest.raises(BundleError, match=f"{MANIFEST_FILE} is missing"):
        load_bundle(build_copy, 1)


def test_corrupt_manifest(build_copy):
    (_bundle_dir(build_copy) / MANIFEST_FILE).write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(build_copy, 1)


@pytest.mark.parametrize("manifest", [["half", "written"], {"files": {}, "encoder": "text_encoder"}, {"files": []}])
def test_a_manifest_of_the_wrong_shape_is_refused_as_a_bundle_error(build_copy, manifest):
    (_bundle_dir(build_copy) / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="is not a bundle manifest"):
        load_bundle(build_copy)


def test_flipped_byte_in_the_index(build_copy):
    path = _bundle_dir(build_copy) / INDEX_FILE
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=INDEX_FILE.replace(".", r"\.")) as raised:
        load_bundle(build_copy)
    assert str(path) in str(raised.value)


def test_missing_bundle_file(build_copy):
    (_bundle_dir(build_copy) / "item_embeddings.npy").unlink()
    with pytest.raises(BundleError, match="item_embeddings.npy"):
        load_bundle(build_copy)


def test_changed_encoder_onnx_file(build_copy):
    onnx_path = build_copy / REPOSITORY_DIR / "text_encoder" / "1" / "model.onnx"
    with open(onnx_path, "ab") as handle:
        handle.write(b"\x00")
    with pytest.raises(BundleError, match="encoder file .*model.onnx"):
        load_bundle(build_copy)


def test_index_built_with_another_encoder(build_copy):
    manifest_path = _bundle_dir(build_copy) / MANIFEST_FILE
    manifest = json.loads(manifest_path.read_text())
    manifest["index"]["encoder_checksum"] = "0" * 64
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="another encoder"):
        load_bundle(build_copy)


def test_fold_in_of_a_training_history_recovers_the_trained_user(tiny_bundle):
    histories = tiny_bundle.dataset.histories()
    n_users = tiny_bundle.dataset.n_users
    k = 10
    overlaps, other_overlaps = [], []

    def top(vector, n):
        return set(np.argsort(-(tiny_bundle.item_factors @ vector), kind="stable")[:n].tolist())

    for user in range(n_users):
        folded = tiny_bundle.fold_in_user(histories[user])
        trained = tiny_bundle.user_factors[user]
        cosine = folded @ trained / (np.linalg.norm(folded) * np.linalg.norm(trained))
        assert cosine >= 0.99, user
        overlaps.append(len(top(folded, k) & top(trained, k)) / k)
        # Near-ties at the top may swap places, but never with items far down the trained ranking.
        assert top(folded, k) <= top(trained, 2 * k), user
        other_overlaps.append(len(top(tiny_bundle.user_factors[(user + 1) % n_users], k) & top(trained, k)) / k)
    assert np.mean(overlaps) >= 0.7
    # Control: another user's factors overlap far less, so the overlap above is about this user.
    assert np.mean(other_overlaps) < 0.5 * np.mean(overlaps)


def test_fold_in_ignores_repeated_items(tiny_bundle):
    history = tiny_bundle.dataset.histories()[0]
    np.testing.assert_allclose(tiny_bundle.fold_in_user(np.concatenate([history, history[:3]])),
                               tiny_bundle.fold_in_user(history), rtol=1e-5, atol=1e-6)


def test_fold_in_of_nothing_is_zero(tiny_bundle):
    vector = tiny_bundle.fold_in_user(np.zeros(0, np.int64))
    assert vector.shape == (tiny_bundle.item_factors.shape[1],) and not vector.any()


def test_triton_starts_with_the_models_of_the_bundle_it_will_serve(tmp_path):
    from lmrec.server.bundle import bundle_model_names
    from lmrec.server.serve import ServeConfig, _triton_config

    for name in ("text_encoder", "text_encoder_0123abcd", "ranker"):
        (tmp_path / REPOSITORY_DIR / name).mkdir(parents=True)
        (tmp_path / REPOSITORY_DIR / name / "config.pbtxt").write_text(f'name: "{name}"')
    manifests = {1: {"encoder": {"triton_model": "text_encoder"}, "ranker": {"triton_model": "ranker"}},
                 2: {"encoder": {"triton_model": "text_encoder_0123abcd"}}}
    for version, manifest in manifests.items():
        (tmp_path / BUNDLES_DIR / str(version)).mkdir(parents=True)
        (tmp_path / BUNDLES_DIR / str(version) / MANIFEST_FILE).write_text(json.dumps(manifest))
    assert bundle_model_names(tmp_path) == ("text_encoder_0123abcd",)  # the latest complete bundle
    assert bundle_model_names(tmp_path, 1) == ("text_encoder", "ranker")
    assert _triton_config(ServeConfig(build_dir=tmp_path, bundle_version=1)).models == ("text_encoder", "ranker")
    assert _triton_config(ServeConfig(build_dir=tmp_path)).models == ("text_encoder_0123abcd",)
    # No such bundle, or an unreadable manifest: every model, and the gateway reports the problem.
    assert bundle_model_names(tmp_path, 7) == ()
    (tmp_path / BUNDLES_DIR / "2" / MANIFEST_FILE).write_text("{")
    assert set(_triton_config(ServeConfig(build_dir=tmp_path)).models) == {"text_encoder", "text_encoder_0123abcd",
                                                                            "ranker"}


def test_a_manifest_from_before_the_batch_limit_was_recorded_leaves_it_to_the_client(tiny_build_root):
    from dataclasses import replace

    bundle = load_bundle(tiny_build_root)
    manifest = {**bundle.manifest, "encoder": {k: v for k, v in bundle.manifest["encoder"].items()
                                               if k != "max_batch_size"}}
    assert replace(bundle, manifest=manifest).encoder_max_batch_size is None


def test_a_bundle_built_with_other_text_builders_still_loads_and_says_so(build_copy, caplog):
    """Its encoder and ranker learnt from other profile texts (e.g. a bundle from before every genre was named)."""
    manifest_path = _bundle_dir(build_copy) / MANIFEST_FILE
    with caplog.at_level("WARNING", logger="lmrec.server.bundle"):
        load_bundle(build_copy)
    assert "text builders" not in caplog.text  # built by this code: nothing to say
    for recorded, said in (("0123456789abcdef", "built with other text builders"),
                           (None, "built before bundles recorded their text builders")):
        manifest = json.loads(manifest_path.read_text())
        manifest.pop("text_builder")
        if recorded:
            manifest["text_builder"] = recorded
        manifest_path.write_text(json.dumps(manifest))
        caplog.clear()
        with caplog.at_level("WARNING", logger="lmrec.server.bundle"):
            assert load_bundle(build_copy).version == 1
        assert said in caplog.text and "rebuild it (`lmrec build`)" in caplog.text
