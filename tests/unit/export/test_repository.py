"""Served versions on disk: Triton model version folders and bundles are immutable, manifests come last."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import lmrec.export.repository as repository
from lmrec.encoder import EncoderSettings
from lmrec.export.encoder_export import sha256_of
from lmrec.export.repository import (BUNDLES_DIR, MANIFEST_FILE, REPOSITORY_DIR, STAGING_DIR, adapter_source,
                                     existing_versions, next_version, publish_bundle, stage_bundle,
                                     write_encoder_version)
from lmrec.export.triton_config import TextEncoderSpec, render_config, text_encoder_config

REPO_ROOT = Path(__file__).resolve().parents[3]
COMMITTED_ADAPTER = REPO_ROOT / "model_repository" / "text_encoder" / "model.py"


def _tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): sha256_of(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def test_write_encoder_version_fp32(tmp_path, encoder_export):
    part = write_encoder_version(tmp_path, TextEncoderSpec(), encoder_export, precision="fp32", version=1)
    version_dir = tmp_path / REPOSITORY_DIR / "text_encoder" / "1"
    assert sorted(p.name for p in version_dir.iterdir()) == ["encoder.json", "model.onnx", "model.py",
                                                             "tokenizer.json"]
    assert (version_dir / "model.py").read_bytes() == COMMITTED_ADAPTER.read_bytes()
    settings = EncoderSettings.read(version_dir)
    assert settings.onnx_file == "model.onnx" and settings.embedding_dim == encoder_export.settings.embedding_dim
    assert (tmp_path / REPOSITORY_DIR / "text_encoder" / "config.pbtxt").read_text() == \
        render_config(text_encoder_config(TextEncoderSpec()))
    assert part["triton_model"] == "text_encoder" and part["triton_version"] == 1
    assert part["max_batch_size"] == TextEncoderSpec().max_batch_size  # the gateway splits its calls by it
    assert part["precision"] == "fp32" and part["onnx_file"] == "model.onnx"
    assert set(part["checksums"]) == {"model.onnx", "tokenizer.json", "encoder.json"}
    for name, checksum in part["checksums"].items():
        assert sha256_of(version_dir / name) == checksum
    assert part["checksums"]["model.onnx"] == encoder_export.checksums["model.onnx"]
    assert part["parity"] == encoder_export.parity
    assert not any((tmp_path / STAGING_DIR).iterdir())  # the staged folder was moved, not copied


def test_write_encoder_version_int8(tmp_path, encoder_export):
    part = write_encoder_version(tmp_path, TextEncoderSpec(), encoder_export, precision="int8", version=3)
    version_dir = tmp_path / REPOSITORY_DIR / "text_encoder" / "3"
    assert part["onnx_file"] == "model_int8.onnx"
    assert EncoderSettings.read(version_dir).onnx_file == "model_int8.onnx"
    assert (version_dir / "model_int8.onnx").is_file() and not (version_dir / "model.onnx").exists()
    assert sha256_of(version_dir / "model_int8.onnx") == encoder_export.checksums["model_int8.onnx"]


def test_int8_needs_a_quantised_export(tmp_path, encoder_export):
    from dataclasses import replace

    with pytest.raises(ValueError, match="quantize=True"):
        write_encoder_version(tmp_path, TextEncoderSpec(), replace(encoder_export, int8_file=None),
                              precision="int8", version=1)
    assert existing_versions(tmp_path) == []


def test_encoder_version_folders_are_immutable(tmp_path, encoder_export):
    write_encoder_version(tmp_path, TextEncoderSpec(), encoder_export, precision="fp32", version=1)
    version_dir = tmp_path / REPOSITORY_DIR / "text_encoder" / "1"
    before = _tree(version_dir)
    with pytest.raises(FileExistsError, match="immutable"):
        write_encoder_version(tmp_path, TextEncoderSpec(), encoder_export, precision="int8", version=1)
    assert _tree(version_dir) == before


def test_a_refused_encoder_version_leaves_the_config_alone(tmp_path, encoder_export):
    write_encoder_version(tmp_path, TextEncoderSpec(), encoder_export, precision="fp32", version=1)
    config = tmp_path / REPOSITORY_DIR / "text_encoder" / "config.pbtxt"
    before = config.read_text()
    with pytest.raises(FileExistsError):
        write_encoder_version(tmp_path, TextEncoderSpec(max_batch_size=8), encoder_export, precision="fp32",
                              version=1)
    assert config.read_text() == before


def test_adapter_source_is_the_committed_model_py():
    assert adapter_source("text_encoder") == COMMITTED_ADAPTER.read_text()


def test_next_version(tmp_path):
    assert existing_versions(tmp_path) == [] and next_version(tmp_path) == 1
    (tmp_path / REPOSITORY_DIR / "text_encoder" / "2").mkdir(parents=True)
    assert next_version(tmp_path) == 3
    (tmp_path / BUNDLES_DIR / "5").mkdir(parents=True)
    (tmp_path / BUNDLES_DIR / "notes").mkdir()
    (tmp_path / BUNDLES_DIR / "9").write_text("a file, not a version folder")
    assert existing_versions(tmp_path) == [2, 5]
    assert next_version(tmp_path) == 6


def _stage(tmp_path: Path, version: int) -> Path:
    staged = stage_bundle(tmp_path, version)
    (staged / "a.bin").write_bytes(b"\x00\x01\x02")
    (staged / "b.json").write_text('{"x": 1}')
    return staged


def test_publish_bundle_writes_the_manifest_last_with_checksums(tmp_path, monkeypatch):
    staged = _stage(tmp_path, 1)
    checksummed = []

    def spying_sha(path):
        # While files are checksummed, no manifest may exist yet.
        assert not (Path(path).parent / MANIFEST_FILE).exists()
        checksummed.append(Path(path).name)
        return sha256_of(path)

    monkeypatch.setattr(repository, "sha256_of", spying_sha)
    final = publish_bundle(tmp_path, staged, 1, {"dataset": "tiny"})
    assert final == tmp_path / BUNDLES_DIR / "1"
    assert not staged.exists()
    assert sorted(checksummed) == ["a.bin", "b.json"]
    manifest = json.loads((final / MANIFEST_FILE).read_text())
    assert manifest["dataset"] == "tiny" and manifest["version"] == 1 and manifest["created"].endswith("Z")
    assert manifest["files"] == {"a.bin": sha256_of(final / "a.bin"), "b.json": sha256_of(final / "b.json")}


def test_published_bundles_are_immutable(tmp_path):
    final = publish_bundle(tmp_path, _stage(tmp_path, 1), 1, {"dataset": "first"})
    before = _tree(final)
    again = _stage(tmp_path, 1)
    (again / "a.bin").write_bytes(b"different")
    with pytest.raises(FileExistsError, match="immutable"):
        publish_bundle(tmp_path, again, 1, {"dataset": "second"})
    assert _tree(final) == before
    assert next_version(tmp_path) == 2


def test_a_version_needing_another_config_goes_to_a_sibling_model_and_earlier_versions_keep_theirs(tmp_path,
                                                                                                  encoder_export):
    """Triton reads one config.pbtxt for all of a model's versions: a GPU build after a CPU one must not turn
    the CPU versions a rollback would serve into GPU ones."""
    cpu, gpu = TextEncoderSpec(), TextEncoderSpec(kind="KIND_GPU")
    base_config = tmp_path / REPOSITORY_DIR / "text_encoder" / "config.pbtxt"
    assert write_encoder_version(tmp_path, cpu, encoder_export, precision="fp32", version=1)["triton_model"] == \
        "text_encoder"
    before = base_config.read_text()
    part = write_encoder_version(tmp_path, gpu, encoder_export, precision="fp32", version=2)
    sibling = part["triton_model"]
    assert sibling.startswith("text_encoder_") and len(sibling) == len("text_encoder_") + 8
    assert base_config.read_text() == before and "KIND_CPU" in before
    sibling_config = (tmp_path / REPOSITORY_DIR / sibling / "config.pbtxt").read_text()
    assert sibling_config == render_config(text_encoder_config(TextEncoderSpec(name=sibling, kind="KIND_GPU")))
    assert (tmp_path / REPOSITORY_DIR / sibling / "2" / "model.onnx").is_file()
    # The same configs again: the same two models; a version number is still used once across them.
    assert write_encoder_version(tmp_path, gpu, encoder_export, precision="fp32", version=3)["triton_model"] == sibling
    assert write_encoder_version(tmp_path, cpu, encoder_export, precision="fp32", version=4)["triton_model"] == \
        "text_encoder"
    with pytest.raises(FileExistsError, match="immutable"):
        write_encoder_version(tmp_path, cpu, encoder_export, precision="fp32", version=2)
    assert existing_versions(tmp_path) == [1, 2, 3, 4] and next_version(tmp_path) == 5


def _version_folders(build_dir: Path) -> list[str]:
    return sorted(str(p.relative_to(build_dir)) for p in build_dir.rglob("*") if p.is_dir() and p.name.isdigit())


def test_discard_version_removes_what_a_failed_build_left_and_nothing_else(tmp_path):
    from lmrec.export.repository import discard_version

    # An earlier build's version 1 (model and bundle), then version 2 failed after publishing its
    # encoder into the existing model and into a new sibling model, with its bundle still staged.
    for folder in ("model_repository/text_encoder/1", "model_repository/text_encoder/2",
                   "model_repository/text_encoder_0a1b2c3d/2", "bundles/1", ".staging/bundle-2",
                   ".staging/encoder-export-2", ".staging/bundle-12"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "model_repository/text_encoder_0a1b2c3d/config.pbtxt").write_text("sibling")
    (tmp_path / "bundles/1" / MANIFEST_FILE).write_text("{}")
    discard_version(tmp_path, 2)
    assert _version_folders(tmp_path) == ["bundles/1", "model_repository/text_encoder/1"]
    assert not (tmp_path / "model_repository/text_encoder_0a1b2c3d").exists()  # only version 2 was in it
    assert sorted(p.name for p in (tmp_path / STAGING_DIR).iterdir()) == ["bundle-12"]  # another build's
    assert next_version(tmp_path) == 2  # the number is free again


def test_discard_version_leaves_a_published_version_and_empties_what_the_build_created(tmp_path):
    from lmrec.export.repository import discard_version

    build_dir = tmp_path / "new"
    (build_dir / "bundles/3").mkdir(parents=True)
    (build_dir / "bundles/3" / MANIFEST_FILE).write_text("{}")
    (build_dir / "model_repository/text_encoder/3").mkdir(parents=True)
    discard_version(build_dir, 3, remove_build_dir=True)  # published: a failure after that changes nothing
    assert _version_folders(build_dir) == ["bundles/3", "model_repository/text_encoder/3"]

    (build_dir / "bundles/3" / MANIFEST_FILE).unlink()
    (build_dir / "bundles/3").rmdir()
    (build_dir / "bundles").rmdir()
    (build_dir / ".staging/ranker-3").mkdir(parents=True)
    discard_version(build_dir, 3, remove_build_dir=True)
    assert not build_dir.exists()

    kept = tmp_path / "kept"
    (kept / ".staging/bundle-1").mkdir(parents=True)
    discard_version(kept, 1)  # the folder was there before the build: it stays, empty
    assert kept.is_dir() and not any(kept.iterdir())


def test_a_reserved_version_is_skipped_by_the_next_build_and_cannot_be_reserved_twice(tmp_path):
    """Two builds started close together both picked the same number, and the loser's clean-up then
    deleted the winner's published encoder version (a review of discard_version)."""
    from lmrec.export.repository import release_version, reserve_version

    (tmp_path / "bundles/1").mkdir(parents=True)
    assert next_version(tmp_path) == 2
    reserve_version(tmp_path, 2)  # a build is running
    assert next_version(tmp_path) == 3  # a second build takes the next number
    with pytest.raises(FileExistsError, match="version 2 is being built by another build"):
        reserve_version(tmp_path, 2)  # or, asked for the same one, is refused before any work
    release_version(tmp_path, 2)
    assert not (tmp_path / STAGING_DIR).exists() and next_version(tmp_path) == 2


def test_discard_version_of_a_published_version_only_releases_its_reservation(tmp_path):
    from lmrec.export.repository import discard_version, reserve_version

    reserve_version(tmp_path, 1)
    (tmp_path / "bundles/1").mkdir(parents=True)
    (tmp_path / "bundles/1" / MANIFEST_FILE).write_text("{}")
    discard_version(tmp_path, 1)  # e.g. Ctrl-C right after the manifest was written
    assert (tmp_path / "bundles/1" / MANIFEST_FILE).is_file() and next_version(tmp_path) == 2
    assert not any((tmp_path / STAGING_DIR).iterdir())
