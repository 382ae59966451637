"""Triton python-backend adapter for the lmrec text encoder (copied into every version folder).

Thin on purpose: `initialize` loads once, `execute` hands all requests to the importable, unit-tested
`lmrec.server.text_encoder_backend.encode_requests` and returns one response per request; a bad
request gets its own TritonError and never fails the others.
"""

import json
from pathlib import Path

import triton_python_backend_utils as pb_utils

from lmrec.encoder import OnnxTextEncoder, execution_providers
from lmrec.server.text_encoder_backend import encode_requests


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        parameters = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        version_dir = Path(args["model_repository"]) / args["model_version"]
        # A KIND_GPU instance runs on its own GPU through ONNX Runtime's CUDA provider (an error, not a CPU
        # fall-back, where onnxruntime lacks it); KIND_CPU instances on the CPU.
        on_gpu = args.get("model_instance_kind") == "GPU"
        self.encoder = OnnxTextEncoder(
            version_dir,
            threads=int(parameters.get("ort_threads", "0")),
            spin=parameters.get("ort_spin", "1") != "0",
            providers=execution_providers("cuda" if on_gpu else "cpu",
                                          device_id=int(args.get("model_instance_device_id", "0"))),
        )

    def execute(self, requests):
        inputs = [pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy() for request in requests]
        responses = []
        for result in encode_requests(self.encoder, inputs):
            if isinstance(result, Exception):
                # INVALID_ARG: the caller's input, not Triton, failed (the gateway's circuit breaker
                # must not turn away everyone else's calls for it).
                error = pb_utils.TritonError(str(result), pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(error=error))
            else:
                tensor = pb_utils.Tensor("EMBEDDING", result)
                responses.append(pb_utils.InferenceResponse(output_tensors=[tensor]))
        return responses
