"""Write served versions: a Triton model version `N` and the bundle `N` that binds its parts.

Layout under a build directory:

    model_repository/text_encoder/config.pbtxt      generated from TextEncoderSpec
    model_repository/text_encoder/N/                model.py, ONNX file, tokenizer.json, encoder.json
    model_repository/ranker/config.pbtxt            with --fused: generated from RankerSpec
    model_repository/ranker/N/                      with --fused: model.py, ranker.onnx
    bundles/N/                                      index, CF factors, catalogue, manifest.json
                                                    (with --fused also fused.pkl, and the manifest's `ranker` part)

Triton reads one config.pbtxt for every version of a model. A version that needs another config (a
`--device cuda` build after CPU ones, a ranker with another feature count) is therefore written to a
sibling model, `text_encoder_<digest of its config>` (or `ranker_…`), and its bundle names that model: the
earlier versions keep the config they were built for, so a rollback still serves them as built.

Everything is written into a staging folder and renamed into place, and each bundle's manifest is
written last: a folder without a manifest, or whose checksums do not match it, is never served.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
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
    """Every version number a bundle or any model of the repository uses."""
    folders = [build_dir / BUNDLES_DIR]
    repository = build_dir / REPOSITORY_DIR
    if repository.is_dir():
        folders += [model for model in repository.iterdir() if model.is_dir()]
    found = set()
    for folder in folders:
        if folder.is_dir():
            found.update(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit())
    return sorted(found)


def model_family(model: str) -> str:
    """The model a config sibling `<name>_<8 hex digits>` belongs to ('ranker' for `ranker_0500378c`); a
    model that is no sibling is its own family."""
    return re.sub(r"_[0-9a-f]{8}$", "", model)


def _family(build_dir: Path, name: str) -> list[Path]:
    """The model folder `name` and its config siblings."""
    repository = build_dir / REPOSITORY_DIR
    if not repository.is_dir():
        return []
    return [folder for folder in repository.iterdir() if folder.is_dir() and model_family(folder.name) == name]


def model_name_for(build_dir: Path, name: str, config_text: str) -> str:
    """`name` when its config is `config_text` (or it does not exist yet); otherwise the sibling model
    `<name>_<digest>` for that config, so that no version is ever served with a config it was not built for."""
    existing = build_dir / REPOSITORY_DIR / name / "config.pbtxt"
    if not existing.is_file() or existing.read_text() == config_text:
        return name
    return f"{name}_{hashlib.sha256(config_text.encode()).hexdigest()[:8]}"


def next_version(build_dir: Path) -> int:
    """The number after every version in use, published or reserved by a build still running."""
    versions = existing_versions(build_dir) + reserved_versions(build_dir)
    return max(versions) + 1 if versions else 1


RESERVATION_PREFIX = "version-"


def reserved_versions(build_dir: Path) -> list[int]:
    staging = build_dir / STAGING_DIR
    if not staging.is_dir():
        return []
    return [int(p.name[len(RESERVATION_PREFIX):]) for p in staging.iterdir()
            if p.name.startswith(RESERVATION_PREFIX) and p.name[len(RESERVATION_PREFIX):].isdigit()]


def reserve_version(build_dir: Path, version: int) -> Path:
    """Claim `version` for one build (an exclusive mkdir), so that a second build started meanwhile takes
    another number, and a failed build's clean-up (`discard_version`) can only remove its own files."""
    reservation = build_dir / STAGING_DIR / f"{RESERVATION_PREFIX}{version}"
    reservation.parent.mkdir(parents=True, exist_ok=True)
    try:
        reservation.mkdir()
    except FileExistsError:
        raise FileExistsError(f"version {version} is being built by another build in {build_dir} (if none is "
                              f"running, a stopped one left {reservation}: remove it)") from None
    return reservation


def release_version(build_dir: Path, version: int) -> None:
    """A published version's reservation, and the staging folder when nothing else is in it."""
    staging = build_dir / STAGING_DIR
    (staging / f"{RESERVATION_PREFIX}{version}").rmdir()
    if not any(staging.iterdir()):
        staging.rmdir()


def _publish(staged: Path, final: Path) -> None:
    if final.exists():
        raise FileExistsError(f"{final} already exists; versions are immutable (pick another --version)")
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staged, final)


def _stage_model_version(build_dir: Path, model_name: str, version: int, family: str) -> tuple[Path, Path]:
    """A fresh staging folder for `<model_name>/<version>` (refused when that version exists in the model
    or in any sibling of its `family`, see `model_name_for`), and the model folder it will be published into."""
    model_dir = build_dir / REPOSITORY_DIR / model_name
    for sibling in _family(build_dir, family):
        if (sibling / str(version)).exists():
            raise FileExistsError(f"{sibling / str(version)} already exists; versions are immutable (pick another --version)")
    staged = build_dir / STAGING_DIR / f"{model_name}-{version}"
    shutil.rmtree(staged, ignore_errors=True)
    staged.mkdir(parents=True)
    (staged / ADAPTER_FILE).write_text(adapter_source(family))
    return staged, model_dir


def _publish_model_version(staged: Path, model_dir: Path, version: int, config_text: str) -> None:
    """Move the version into place; only then write the config every version of the model shares (the same
    text as before, when the model existed: `model_name_for` picked the model by its config)."""
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
    family = spec.name
    spec = replace(spec, name=model_name_for(build_dir, family, render_config(text_encoder_config(spec))))
    staged, model_dir = _stage_model_version(build_dir, spec.name, version, family)
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
        "max_batch_size": spec.max_batch_size,
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
    family = spec.name
    spec = replace(spec, name=model_name_for(build_dir, family, render_config(ranker_config(spec))))
    staged, model_dir = _stage_model_version(build_dir, spec.name, version, family)
    shutil.copy(fused.onnx_path, staged / "ranker.onnx")
    checksum = sha256_of(staged / "ranker.onnx")
    _publish_model_version(staged, model_dir, version, render_config(ranker_config(spec)))
    part = {"triton_model": spec.name, "triton_version": version, "n_features": spec.n_features,
            "feature_names": list(fused.feature_names if fused.trained is None else fused.trained.feature_names),
            "checksums": {"ranker.onnx": checksum}}
    if fused.trained is not None:  # how it was trained: what it starts from, and what cross-validation saw
        part["training"] = {"prior": fused.trained.prior, "epochs": fused.trained.epochs,
                            # trained for items added later: the share made new in its hold-out (0: never)
                            "new_item_share": fused.cold_share,
                            "ensemble_members": fused.ranker_config.ensemble if fused.trained.epochs else 1,
                            "validation_ndcg_at_10_by_epoch": [round(v, 4) for v in fused.trained.validation_curve]}
    return part


def discard_version(build_dir: Path, version: int, *, remove_build_dir: bool = False) -> None:
    """Remove what a failed build of `version` left behind: its staging folders and reservation, and every
    model version it had already published. No bundle names those, so nothing serves them, and a later
    build would skip their number. Only for the build holding the reservation (`reserve_version`): no
    other build can have written anything numbered `version`. A model folder left without versions goes
    too (the build created it), and so does an empty `.staging` or `model_repository`; the build folder
    itself only with `remove_build_dir` (the build created it) and when nothing else is in it."""
    staging = build_dir / STAGING_DIR
    if (build_dir / BUNDLES_DIR / str(version) / MANIFEST_FILE).is_file():  # published: stopped after that
        shutil.rmtree(staging / f"{RESERVATION_PREFIX}{version}", ignore_errors=True)
        return
    for staged in staging.glob(f"*-{version}") if staging.is_dir() else ():
        shutil.rmtree(staged, ignore_errors=True)
    repository = build_dir / REPOSITORY_DIR
    for model in sorted(repository.iterdir()) if repository.is_dir() else ():
        if (model / str(version)).is_dir():
            shutil.rmtree(model / str(version))
            if not any(p.is_dir() and p.name.isdigit() for p in model.iterdir()):
                shutil.rmtree(model)
    for folder in (staging, repository, *([build_dir] if remove_build_dir else [])):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


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
