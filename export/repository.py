"""Write served versions: a Triton model version `N` and the bundle `N` that binds its parts.

Layout under a build directory:

    model_repository/text_encoder/config.pbtxt      generated from TextEncoderSpec
    model_repository/text_encoder/N/                model.py, ONNX file, tokenizer.json, encoder.json
    bundles/N/                                      index, CF factors, catalogue, manifest.json

Everything is written into a staging folder and renamed into place, and each bundle's manifest is
written last: a folder without a manifest, or whose checksums do not match it, is never served.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import replace
from importlib import resources
from pathlib import Path

from lmrec.encoder import ENCODER_SETTINGS_FILE, TOKENIZER_FILE, EncoderSettings

from .encoder_export import EncoderExport, sha256_of
from .triton_config import RankerSpec, TextEncoderSpec, ranker_config, render_config, text_encoder_config

REPOSITORY_DIR = "model_repository"
BUNDLES_DIR = "bundles"
STAGING_DIR = ".staging"
MANIFEST_FILE = "manifest.json"
ADAPTER_FILE = "model.py"


def adapter_source(model_name: str) -> str:
    """The thin python-backend adapter shipped in `model_repository/<model>/model.py`."""
    return (resources.files("lmrec.model_repository") / model_name / ADAPTER_FILE).read_text()


def existing_versions(build_dir: Path) -> list[int]:
    found = set()
    for folder in (build_dir / BUNDLES_DIR, build_dir / REPOSITORY_DIR / "text_encoder"):
        if folder.is_dir():
            found.update(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit())
    return sorted(found)


def next_version(build_dir: Path) -> int:
    versions = existing_versions(build_dir)
    return (versions[-1] + 1) if versions else 1


def _publish(staged: Path, final: Path) -> None:
    if final.exists():
        raise FileExistsError(f"{final} already exists; versions are immutable (pick another --version)")
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staged, final)


def _stage_model_version(build_dir: Path, model_name: str, version: int) -> tuple[Path, Path]:
    """A fresh staging folder for `<model_name>/<version>` (refused when that version exists), and the
    model folder it will be published into."""
    model_dir = build_dir / REPOSITORY_DIR / model_name
    if (model_dir / str(version)).exists():
        raise FileExistsError(f"{model_dir / str(version)} already exists; versions are immutable (pick another --version)")
    staged = build_dir / STAGING_DIR / f"{model_name}-{version}"
    shutil.rmtree(staged, ignore_errors=True)
    staged.mkdir(parents=True)
    (staged / ADAPTER_FILE).write_text(adapter_source(model_name))
    return staged, model_dir


def _publish_model_version(staged: Path, model_dir: Path, version: int, config_text: str) -> None:
    """Move the version into place; only then rewrite the config every version of the model shares."""
    _publish(staged, model_dir / str(version))
    config_tmp = model_dir / "config.pbtxt.tmp"
    config_tmp.write_text(config_text)
    os.replace(config_tmp, model_dir / "config.pbtxt")


def write_encoder_version(build_dir: Path, spec: TextEncoderSpec, export: EncoderExport, *,
                          precision: str, version: int) -> dict:
    """Copy one exported encoder into `model_repository/<spec.name>/<version>/`; returns its manifest part."""
    onnx_file = export.fp32_file if precision == "fp32" else export.int8_file
    if onnx_file is None:
        raise ValueError("precision int8 needs an export with quantize=True")
    staged, model_dir = _stage_model_version(build_dir, spec.name, version)
    shutil.copy(export.directory / onnx_file, staged / onnx_file)
    shutil.copy(export.directory / TOKENIZER_FILE, staged / TOKENIZER_FILE)
    settings: EncoderSettings = replace(export.settings, onnx_file=onnx_file)
    (staged / ENCODER_SETTINGS_FILE).write_text(settings.to_json())
    checksums = {name: sha256_of(staged / name) for name in (onnx_file, TOKENIZER_FILE, ENCODER_SETTINGS_FILE)}
    _publish_model_version(staged, model_dir, version, render_config(text_encoder_config(spec)))
    return {
        "triton_model": spec.name,
        "triton_version": version,
        "model": export.model,
        "precision": precision,
        "instance_kind": spec.kind,
        "onnx_file": onnx_file,
        "quantization_preset": export.quantization_preset,
        "outlier_smoothing": export.outlier_smoothing if precision == "int8" else None,
        "max_length": settings.max_length,
        "embedding_dim": settings.embedding_dim,
        "parity": export.parity,
        "checksums": checksums,
        "export_seconds": round(export.seconds, 2),
    }


def write_ranker_version(build_dir: Path, fused, *, version: int, spec: RankerSpec | None = None) -> dict:
    """The fused model's ranker ONNX as `model_repository/ranker/<version>/`; returns its manifest part."""
    spec = spec or RankerSpec(n_features=fused.n_features)
    staged, model_dir = _stage_model_version(build_dir, spec.name, version)
    shutil.copy(fused.onnx_path, staged / "ranker.onnx")
    checksum = sha256_of(staged / "ranker.onnx")
    _publish_model_version(staged, model_dir, version, render_config(ranker_config(spec)))
    part = {"triton_model": spec.name, "triton_version": version, "n_features": spec.n_features,
            "feature_names": list(fused.feature_names if fused.trained is None else fused.trained.feature_names),
            "checksums": {"ranker.onnx": checksum}}
    if fused.trained is not None:  # how it was trained: what it starts from, and what cross-validation saw
        part["training"] = {"prior": fused.trained.prior, "epochs": fused.trained.epochs,
                            "ensemble_members": fused.ranker_config.ensemble if fused.trained.epochs else 1,
                            "validation_ndcg_at_10_by_epoch": [round(v, 4) for v in fused.trained.validation_curve]}
    return part


def stage_bundle(build_dir: Path, version: int) -> Path:
    staged = build_dir / STAGING_DIR / f"bundle-{version}"
    shutil.rmtree(staged, ignore_errors=True)
    staged.mkdir(parents=True)
    return staged


def publish_bundle(build_dir: Path, staged: Path, version: int, manifest: dict) -> Path:
    """Checksum every staged file into the manifest, write the manifest last, move into place."""
    manifest = dict(manifest)
    manifest["version"] = version
    manifest["created"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    manifest["files"] = {p.name: sha256_of(p) for p in sorted(staged.iterdir()) if p.name != MANIFEST_FILE}
    (staged / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
    final = build_dir / BUNDLES_DIR / str(version)
    _publish(staged, final)
    return final
