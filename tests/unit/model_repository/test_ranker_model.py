"""The ranker python model: its tensors are the ones its generated config declares, and it scores through the
serve-time runtime in `lmrec.ranker_runtime` (not the offline, torch-training side).

Triton's `triton_python_backend_utils` exists only inside Triton, so a stand-in goes in `sys.modules`; the
integration tests serve the model in the real Triton.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np

import lmrec.ranker_runtime as runtime
from lmrec.export.triton_config import RankerSpec, ranker_config

MODEL_PY = Path(__file__).resolve().parents[3] / "model_repository" / "ranker" / "model.py"


def _stand_in_backend_utils() -> types.ModuleType:
    utils = types.ModuleType("triton_python_backend_utils")

    class Tensor:
        def __init__(self, name, array):
            self.name, self.array = name, array

    class TritonError:
        INVALID_ARG = "INVALID_ARG"

        def __init__(self, message, code=None):
            self.message, self.code = message, code

    class InferenceResponse:
        def __init__(self, output_tensors=(), error=None):
            self.output_tensors, self.error = list(output_tensors), error

    def get_input_tensor_by_name(request, name):
        return types.SimpleNamespace(as_numpy=lambda: request[name])

    utils.Tensor, utils.TritonError, utils.InferenceResponse = Tensor, TritonError, InferenceResponse
    utils.get_input_tensor_by_name = get_input_tensor_by_name
    return utils


def _model_module(monkeypatch):
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", _stand_in_backend_utils())
    spec = importlib.util.spec_from_file_location("lmrec_ranker_model_under_test", MODEL_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _SumRanker:
    def __init__(self, path, *, threads=1):
        self.path, self.threads = path, threads

    def score(self, features):
        return features.sum(axis=1)


def test_the_model_reads_and_writes_the_tensors_its_config_declares(monkeypatch):
    module = _model_module(monkeypatch)
    assert module.OnnxRanker is runtime.OnnxRanker
    monkeypatch.setattr(module, "OnnxRanker", _SumRanker)
    config = ranker_config(RankerSpec(n_features=3, ort_threads=2))
    assert [t.name for t in config.input] == [runtime.RANKER_INPUT]
    assert [t.name for t in config.output] == [runtime.RANKER_OUTPUT]
    model_config = {"input": [{"name": runtime.RANKER_INPUT, "dims": [3]}],
                    "parameters": {"ort_threads": {"string_value": "2"}}}
    model = module.TritonPythonModel()
    model.initialize({"model_config": json.dumps(model_config), "model_repository": "/repo/ranker",
                      "model_version": "4"})
    assert model.ranker.path == Path("/repo/ranker/4/ranker.onnx") and model.ranker.threads == 2
    good = {runtime.RANKER_INPUT: np.ones((2, 3), np.float32)}
    bad = {runtime.RANKER_INPUT: np.ones((2, 5), np.float32)}
    scored, refused = model.execute([good, bad])
    assert [t.name for t in scored.output_tensors] == [runtime.RANKER_OUTPUT]
    np.testing.assert_array_equal(scored.output_tensors[0].array, [[3.0], [3.0]])
    assert refused.error.code == "INVALID_ARG" and f"{runtime.RANKER_INPUT} must be [n, 3]" in refused.error.message


def test_model_versions_built_before_the_move_still_import_the_runtime_from_export():
    from lmrec.export.ranker import OnnxRanker

    assert OnnxRanker is runtime.OnnxRanker
