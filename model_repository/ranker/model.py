"""Triton python-backend adapter for the lmrec fusion ranker (copied into every version folder).

`execute` scores every request's feature rows in one ONNX Runtime call (dynamic batching) through the
importable, unit-tested `lmrec.server.ranker_backend.score_requests`; a malformed request gets its own
TritonError and never fails the others.
"""

import json
from pathlib import Path

import triton_python_backend_utils as pb_utils

from lmrec.ranker_runtime import RANKER_INPUT, RANKER_OUTPUT, OnnxRanker
from lmrec.server.ranker_backend import score_requests


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.n_features = int(config["input"][0]["dims"][0])
        version_dir = Path(args["model_repository"]) / args["model_version"]
        parameters = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.ranker = OnnxRanker(version_dir / "ranker.onnx", threads=int(parameters.get("ort_threads", "1")))

    def execute(self, requests):
        inputs = [pb_utils.get_input_tensor_by_name(request, RANKER_INPUT).as_numpy() for request in requests]
        responses = []
        for result in score_requests(self.ranker, inputs, self.n_features):
            if isinstance(result, Exception):
                # INVALID_ARG: the caller's input, not Triton, failed (the gateway's circuit breaker
                # must not turn away everyone else's calls for it).
                error = pb_utils.TritonError(str(result), pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(error=error))
            else:
                responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(RANKER_OUTPUT, result)]))
        return responses
