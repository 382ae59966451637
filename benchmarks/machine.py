"""Machine facts stored with every benchmark result (CPU model, cores, flags, package versions)."""

from __future__ import annotations

import os
import platform
import time
from importlib import metadata
from pathlib import Path

from lmrec.ort_options import SLOWER_FUSED_ON_CPU, can_flush_denormals

PACKAGES = ("lmrec", "torch", "onnxruntime", "optimum", "optimum-onnx", "transformers", "sentence-transformers",
            "hnswlib", "implicit", "numpy", "tritonclient", "nvidia-pytriton", "grpcio")


def gpu_facts() -> dict:
    """The GPU a `--device cuda` run measures (torch's view of it), or why there is none."""
    try:
        import torch

        if not torch.cuda.is_available():
            return {"error": "torch sees no CUDA device"}
        props = torch.cuda.get_device_properties(0)
        return {"name": props.name, "count": torch.cuda.device_count(), "memory_gib": round(props.total_memory / 2**30, 1),
                "multiprocessors": props.multi_processor_count, "capability": f"{props.major}.{props.minor}",
                "torch_cuda": torch.version.cuda}
    except Exception as error:  # noqa: BLE001 - facts are best effort
        return {"error": f"{type(error).__name__}: {error}"}


def machine_facts() -> dict:
    cpu_model, flags = "unknown", []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu_model == "unknown":
                cpu_model = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = line.split(":", 1)[1].split()
    except OSError:
        pass
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpu_model": cpu_model,
        "cores": os.cpu_count(),
        "simd_flags": sorted(f for f in flags if f.startswith(("avx", "sse4", "fma", "amx", "vnni"))),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "packages": versions,
        # Whether lmrec's encoder ran with denormals flushed to zero (lmrec/ort_options.py).
        "encoder_flushes_denormals": can_flush_denormals(),
        # ONNX Runtime's graph fusions lmrec's CPU sessions leave out (lmrec/ort_options.py).
        "cpu_sessions_without_fusions": list(SLOWER_FUSED_ON_CPU),
    }
