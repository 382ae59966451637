"""Expensive artefacts shared by the unit tests: one encoder export and one tiny build per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmrec.export.loaders import DataConfig, SyntheticConfig

# Small enough to build in seconds, large enough for retrieval and ALS to mean something.
TINY_SYNTHETIC = SyntheticConfig(seed=11, n_users=60, n_items=80, min_interactions=8, max_interactions=20)


@pytest.fixture(scope="session")
def encoder_export(tmp_path_factory):
    """The packaged all-MiniLM-L6-v2 exported once (fp32 + int8, parity-checked): the EncoderExport."""
    from lmrec.export.encoder_export import EncoderExportConfig, export_encoder

    out = tmp_path_factory.mktemp("encoder") / "export"
    return export_encoder(EncoderExportConfig(output_dir=out), progress=lambda line: None)


@pytest.fixture(scope="session")
def exported_encoder_dir(encoder_export) -> Path:
    """Folder holding model.onnx, model_int8.onnx, tokenizer.json and encoder.json."""
    return encoder_export.directory


@pytest.fixture(scope="session")
def onnx_encoder(exported_encoder_dir):
    """An fp32 OnnxTextEncoder on the session export."""
    from lmrec.encoder import OnnxTextEncoder

    return OnnxTextEncoder(exported_encoder_dir, threads=2)


@pytest.fixture(scope="session")
def tiny_data_config() -> DataConfig:
    return DataConfig(dataset="synthetic", synthetic=TINY_SYNTHETIC)


@pytest.fixture(scope="session")
def tiny_build_dir(tmp_path_factory, tiny_data_config):
    """A complete build (Triton model version + bundle 1) of a tiny synthetic data set: the BuildResult."""
    from lmrec.export.build import BuildConfig, build_bundle

    out = tmp_path_factory.mktemp("tiny-build")
    return build_bundle(BuildConfig(data=tiny_data_config, output_dir=out), progress=lambda line: None)


@pytest.fixture(scope="session")
def tiny_build_root(tiny_build_dir) -> Path:
    """The build folder itself (what `load_bundle` takes)."""
    return tiny_build_dir.bundle_dir.parent.parent


@pytest.fixture(scope="session")
def tiny_bundle(tiny_build_root):
    from lmrec.server.bundle import load_bundle

    return load_bundle(tiny_build_root)


@pytest.fixture(autouse=True)
def _no_command_left_over_from_another_test(monkeypatch):
    """`lmrec.cli.main(argv)` keeps its argv for the suites to record, as a process runs one command. Tests
    call `main` many times in one process: without this, a suite called from Python in a later test would
    record an earlier test's command."""
    from lmrec import cli

    monkeypatch.setattr(cli, "_MAIN_ARGV", None)
