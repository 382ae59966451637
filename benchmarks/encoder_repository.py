"""Encoder suite: the models the paths run. The fp32 + int8 export (given, or exported once and reused) and
the Triton model repository with one text_encoder model per Triton path."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from .encoder_config import EXPORT_MARKER, TRITON_PATHS, EncoderBenchConfig


def prepare_export(config: EncoderBenchConfig, *, progress=print):
    """The fp32 + int8 export every ONNX and Triton path uses: `config.export_dir`, or exported once into
    `work_dir/export` and reused by later runs of the same model."""
    from lmrec.encoder import EncoderSettings
    from lmrec.export.encoder_export import (FP32_FILE, INT8_FILE, EncoderExport, EncoderExportConfig, export_encoder,
                                             export_recipe)

    def load(directory: Path, info: dict) -> EncoderExport:
        return EncoderExport(directory=directory, settings=EncoderSettings.read(directory), fp32_file=FP32_FILE,
                             int8_file=INT8_FILE, quantization_preset=info.get("quantization_preset"),
                             parity=info.get("parity", {}), checksums=info.get("checksums", {}),
                             model=info.get("model", config.model), seconds=float(info.get("seconds", 0.0)),
                             quantization_per_channel=info.get("quantization_per_channel"),
                             outlier_smoothing=info.get("outlier_smoothing"))

    if config.export_dir is not None:
        directory = Path(config.export_dir)
        for name in (FP32_FILE, INT8_FILE, "encoder.json", "tokenizer.json"):
            if not (directory / name).is_file():
                raise FileNotFoundError(f"{directory / name} missing: export_dir needs an fp32 + int8 export")
        marker = directory / EXPORT_MARKER
        return load(directory, json.loads(marker.read_text()) if marker.is_file() else {})
    directory = Path(config.work_dir) / "export"
    marker = directory / EXPORT_MARKER
    export_config = EncoderExportConfig(model=config.model, output_dir=directory)
    recipe = export_recipe(export_config)
    if marker.is_file():
        info = json.loads(marker.read_text())
        if (info.get("model") == config.model and info.get("recipe") == recipe
                and all((directory / n).is_file() for n in (FP32_FILE, INT8_FILE))):
            progress(f"reusing the export in {directory}")
            return load(directory, info)
    export = export_encoder(export_config, progress=progress)
    marker.write_text(json.dumps({**export.to_manifest(), "recipe": recipe}, indent=2))
    return export


def triton_model_name(path: str) -> str:
    precision, batching = TRITON_PATHS[path]
    return f"text_encoder_{precision}" + ("" if batching else "_nobatch")


def write_triton_repository(root: Path, export, paths: list[str], kind: str = "KIND_CPU") -> dict[str, str]:
    """`root/model_repository` with one model per Triton path; returns each path's config.pbtxt.

    Each model's version 1 is the lmrec `text_encoder` version exactly as a build writes it
    (`write_encoder_version`: adapter, ONNX file, tokenizer, encoder.json), renamed to a model of its own
    so one Triton serves every variant. Dynamic batching on: the config generated from `TextEncoderSpec`
    (only the name and, for `kind="KIND_GPU"`, the instance kind changed). Off: the same config with its
    `dynamic_batching` block removed, so Triton executes each request on its own.
    """
    from lmrec.export.repository import REPOSITORY_DIR, write_encoder_version
    from lmrec.export.triton_config import TextEncoderSpec, render_config, text_encoder_config

    root = Path(root)
    shutil.rmtree(root, ignore_errors=True)
    repository = root / REPOSITORY_DIR
    repository.mkdir(parents=True)
    configs = {}
    for path in paths:
        precision, batching = TRITON_PATHS[path]
        staging = root / "staging" / path
        base = TextEncoderSpec()
        write_encoder_version(staging, base, export, precision=precision, version=1)
        name = triton_model_name(path)
        os.replace(staging / REPOSITORY_DIR / base.name, repository / name)
        model_config = text_encoder_config(TextEncoderSpec(name=name, kind=kind))
        if not batching:
            model_config.ClearField("dynamic_batching")
        configs[path] = render_config(model_config)
        (repository / name / "config.pbtxt").write_text(configs[path])
    shutil.rmtree(root / "staging", ignore_errors=True)
    return configs
