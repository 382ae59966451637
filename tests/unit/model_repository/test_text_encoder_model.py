"""The text_encoder python model's `initialize`: which ONNX Runtime provider each Triton instance kind gets.

Triton's `triton_python_backend_utils` exists only inside Triton, so this unit test puts a stand-in for
it in `sys.modules` and records what `OnnxTextEncoder` is asked for; the integration tests serve the
model in the real Triton (KIND_CPU).
"""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path

import pytest

from lmrec.encoder import execution_providers

MODEL_PY = Path(__file__).resolve().parents[3] / "model_repository" / "text_encoder" / "model.py"


def _model_module(monkeypatch):
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", types.ModuleType("triton_python_backend_utils"))
    spec = importlib.util.spec_from_file_location("lmrec_text_encoder_model_under_test", MODEL_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _args(kind: str, device_id: str) -> dict:
    config = {"parameters": {"ort_threads": {"string_value": "2"}, "ort_spin": {"string_value": "0"}}}
    return {"model_config": json.dumps(config), "model_repository": "/repo/text_encoder", "model_version": "1",
            "model_instance_kind": kind, "model_instance_device_id": device_id}


@pytest.mark.parametrize("kind, device_id, expected", [
    ("CPU", "0", ["CPUExecutionProvider"]),
    ("GPU", "1", [("CUDAExecutionProvider", {"device_id": 1, "use_tf32": 0}), "CPUExecutionProvider"]),
])
def test_each_instance_kind_gets_its_provider(monkeypatch, kind, device_id, expected):
    module = _model_module(monkeypatch)
    asked = {}
    monkeypatch.setattr(module, "OnnxTextEncoder", lambda directory, **kwargs: asked.update(kwargs, directory=directory))
    with_cuda = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(module, "execution_providers",
                        lambda device, device_id=0: execution_providers(device, device_id=device_id, available=with_cuda))
    module.TritonPythonModel().initialize(_args(kind, device_id))
    assert asked["providers"] == expected
    assert asked["threads"] == 2 and asked["spin"] is False and asked["directory"] == Path("/repo/text_encoder/1")


def test_a_gpu_instance_without_the_cuda_provider_fails_to_load_instead_of_serving_from_the_cpu(monkeypatch):
    import onnxruntime as ort

    module = _model_module(monkeypatch)
    monkeypatch.setattr(module, "OnnxTextEncoder", lambda directory, **kwargs: pytest.fail("must not load"))
    if "CUDAExecutionProvider" in ort.get_available_providers():  # onnxruntime-gpu here: the GPU is allowed
        monkeypatch.setattr(module, "execution_providers",
                            lambda device, device_id=0: execution_providers(device, available=["CPUExecutionProvider"]))
    with pytest.raises(RuntimeError, match="no CUDAExecutionProvider .*onnxruntime-gpu"):
        module.TritonPythonModel().initialize(_args("GPU", "0"))
