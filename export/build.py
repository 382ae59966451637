"""`lmrec build`: data → encoder export → item embeddings → hnswlib index + ALS → version N on disk.

Entry point: `build_bundle(config) -> BuildResult`.
"""

from __future__ import annotations

import pickle
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np

from lmrec.encoder import OnnxTextEncoder
from lmrec.text import item_text_of

from .encoder_export import EncoderExportConfig, default_model_path, export_encoder
from .index_build import IndexConfig, build_index
from .loaders import DataConfig, load_dataset
from .models.lm import text_builder_fingerprint
from .repository import (MANIFEST_FILE, STAGING_DIR, discard_version, existing_versions, next_version, publish_bundle,
                         release_version, reserve_version, stage_bundle, write_encoder_version, write_ranker_version)
from .snapshot import save_snapshot
from .triton_config import TextEncoderSpec

CF_FILE = "cf.npz"
FUSED_FILE = "fused.pkl"


@dataclass(frozen=True, kw_only=True)
class AlsConfig:
    factors: int = 64
    regularization: float = 0.05
    alpha: float = 10.0
    iterations: int = 15
    seed: int = 42


@dataclass(frozen=True, kw_only=True)
class BuildConfig:
    data: DataConfig
    output_dir: Path
    encoder_model: str = field(default_factory=default_model_path)
    precision: Literal["fp32", "int8"] = "fp32"
    version: int | None = None  # next free version when None
    index: IndexConfig = IndexConfig()
    als: AlsConfig = AlsConfig()
    encoder_spec: TextEncoderSpec = TextEncoderSpec()
    # Where Triton runs the text encoder: "cuda" writes KIND_GPU instances (ONNX Runtime's CUDA provider,
    # onnxruntime-gpu on the serving machine). The build itself needs no GPU.
    device: Literal["cpu", "cuda"] = "cpu"
    # Fine-tune the encoder and train the neural fusion ranker (served by Triton as `ranker`).
    fused: bool = False
    finetune: dict = field(default_factory=dict)  # FinetuneConfig overrides, e.g. {"steps": 400}
    # With `fused`: train the ranker for items that will be added later (AddItems) too. A share of the items
    # become new in its hold-out, and the demand their text predicts is a feature (FusedRecommender
    # `cold_share`, as the cold-items protocol trains it); without it, the ranker never saw a new item.
    for_new_items: bool = False


@dataclass(frozen=True, kw_only=True)
class BuildResult:
    version: int
    bundle_dir: Path
    repository_dir: Path
    manifest: dict
    seconds: float


def fit_cf(dataset, config: AlsConfig) -> dict[str, np.ndarray]:
    """ALS factors on every interaction (serving sees the whole history) and item popularity."""
    from .models import make_model

    model = make_model("als", factors=config.factors, regularization=config.regularization,
                       alpha=config.alpha, iterations=config.iterations, seed=config.seed)
    model.fit(dataset, dataset.interactions)
    popularity = np.bincount(dataset.interactions.item, minlength=dataset.n_items).astype(np.float32)
    return {
        "user_factors": np.asarray(model.user_factors, np.float32),
        "item_factors": np.asarray(model.item_factors, np.float32),
        "popularity": popularity,
        "regularization": np.float32(config.regularization),
        "alpha": np.float32(config.alpha),
    }


def check_device(device: str, precision: str) -> None:
    """Refuse a serving device the build cannot honour, before any long step runs."""
    from lmrec.encoder import DEVICES, INT8_ON_CUDA

    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r} (known: {', '.join(DEVICES)})")
    if device == "cuda" and precision == "int8":
        raise ValueError(f"a GPU serves the fp32 encoder: {INT8_ON_CUDA} (use precision fp32)")


def build_bundle(config: BuildConfig, *, progress=print) -> BuildResult:
    check_device(config.device, config.precision)
    if config.for_new_items and not config.fused:
        raise ValueError("for_new_items trains the fusion ranker: it needs fused=True")
    started = time.perf_counter()
    build_dir = Path(config.output_dir)
    if config.version is not None and config.version < 1:
        raise ValueError(f"--version must be a positive number, got {config.version}")
    version = config.version or next_version(build_dir)
    if version in existing_versions(build_dir):  # refused now, not after the export and fine-tuning
        raise FileExistsError(f"version {version} already exists in {build_dir}; versions are immutable "
                              f"(pick another --version, or leave it out for {next_version(build_dir)})")
    created = not build_dir.exists()
    reserve_version(build_dir, version)  # a build started meanwhile takes the next number, or is refused
    try:
        result = _build_version(config, build_dir, version, started, progress)
    except BaseException:  # Ctrl-C too: a half-written version would hold its number and ~150 MB
        discard_version(build_dir, version, remove_build_dir=created)
        raise
    release_version(build_dir, version)
    return result


def _build_version(config: BuildConfig, build_dir: Path, version: int, started: float, progress) -> BuildResult:
    build_dir.mkdir(parents=True, exist_ok=True)
    progress(f"[1/5] loading data set '{config.data.dataset}' ...")
    loaded = load_dataset(config.data)
    dataset = loaded.dataset
    for line in loaded.report.summary():
        progress("      " + line)
    if dataset.n_items == 0 or len(dataset.interactions) == 0:
        raise ValueError(f"data set '{dataset.name}' has no items or no interactions after cleaning")

    fused = None
    encoder_model = config.encoder_model
    if config.fused:
        from .models.fused import NEW_ITEM_SHARE, FusedRecommender

        cold_share = NEW_ITEM_SHARE if config.for_new_items else 0.0
        held_out = "last item" + (f", and every interaction of {cold_share:.0%} of the items" if cold_share else "")
        progress(f"[1b] fine-tuning the encoder and training the fusion ranker (internal hold-out: {held_out}) ...")
        # The encoder to fine-tune is --encoder's, unless the fine-tuning settings name one themselves.
        lm_params = {"base_model": config.encoder_model, **dict(config.finetune)}
        fused = FusedRecommender(holdout="last", lm_params=lm_params, signals=None,
                                 cold_share=cold_share).fit(dataset, dataset.interactions)
        encoder_model = str(fused.lm_model.model_dir)
    progress(f"[2/5] exporting encoder {encoder_model} with Optimum ...")
    item_texts = [item_text_of(info) for info in dataset.items]
    export_dir = build_dir / STAGING_DIR / f"encoder-export-{version}"
    try:
        export = export_encoder(
            EncoderExportConfig(model=encoder_model, output_dir=export_dir, quantize=True,
                                extra_parity_texts=tuple(item_texts[:24]),
                                # the int8 gate only stops a build that will serve int8
                                int8_min_cosine=EncoderExportConfig.int8_min_cosine if config.precision == "int8" else None),
            progress=lambda line: progress("      " + line),
        )
        spec = replace(config.encoder_spec, kind="KIND_GPU") if config.device == "cuda" else config.encoder_spec
        encoder_part = write_encoder_version(build_dir, spec, export, precision=config.precision, version=version)

        progress(f"[3/5] encoding {dataset.n_items} item texts ({config.precision}) ...")
        encoder = OnnxTextEncoder(export_dir, onnx_file=encoder_part["onnx_file"])
        embeddings = encoder.encode(item_texts, batch_size=64)
        encoder_checksum = encoder_part["checksums"][encoder_part["onnx_file"]]

        staged = stage_bundle(build_dir, version)
        progress(f"[4/5] building the hnswlib index over {dataset.n_items} items ...")
        index_meta = build_index(embeddings, list(dataset.item_ids), staged, encoder_checksum=encoder_checksum,
                                 encoder_version=version, config=config.index)

        progress(f"[5/5] fitting ALS ({config.als.factors} factors) on {len(dataset.interactions)} interactions ...")
        np.savez(staged / CF_FILE, **fit_cf(dataset, config.als))
        save_snapshot(dataset, staged)
        np.save(staged / "item_embeddings.npy", embeddings)
        ranker_part = None
        if fused is not None:
            # The ranker's LM features must come from the encoder that serves (fused-int8 measures the same swap).
            fused = fused.with_encoder(encoder, embeddings)
            ranker_part = write_ranker_version(build_dir, fused, version=version)
            with open(staged / FUSED_FILE, "wb") as handle:
                pickle.dump(fused, handle)

        manifest = {
            "dataset": dataset.name,
            "n_users": dataset.n_users,
            "n_items": dataset.n_items,
            "n_interactions": len(dataset.interactions),
            "encoder": encoder_part,
            "index": {k: v for k, v in index_meta.items() if k != "item_ids"},
            "cf": {"method": "als", **config.als.__dict__},
            "text_builder": text_builder_fingerprint(),  # what the encoder and the ranker learnt texts from
        }
        if ranker_part is not None:
            manifest["ranker"] = ranker_part
        bundle_dir = publish_bundle(build_dir, staged, version, manifest)
    finally:  # a failed build leaves no half export behind either (it holds ~150 MB)
        shutil.rmtree(export_dir, ignore_errors=True)
    seconds = time.perf_counter() - started
    progress(f"built version {version} in {seconds:.1f}s: {bundle_dir / MANIFEST_FILE}")
    return BuildResult(version=version, bundle_dir=bundle_dir, repository_dir=build_dir / "model_repository",
                       manifest=manifest, seconds=seconds)
