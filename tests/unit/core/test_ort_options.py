"""cpu_session_options: denormals flushed on ONNX Runtime's threads and on the caller's, whatever the
session; each check of the caller's thread runs in a fresh process, since ONNX Runtime sets it once per
process."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from lmrec.ort_options import DENORMAL_AS_ZERO, cpu_session_options

# A softmax whose middle probability, exp(-95), is a denormal float32 (about 5.5e-42); with denormals
# flushed it is 0. The last line checks the calling thread's own float arithmetic the same way.
_PROBE = textwrap.dedent("""
    import sys
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper
    from lmrec.ort_options import cpu_session_options

    io = [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in ("x", "y")]
    graph = helper.make_graph([helper.make_node("Softmax", ["x"], ["y"], axis=-1)], "g", io[:1], io[1:])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    sessions = []
    for first in sys.argv[1].split(","):
        options = cpu_session_options(threads=1) if first == "lmrec" else ort.SessionOptions()
        sessions.append(ort.InferenceSession(model.SerializeToString(), options,
                                             providers=["CPUExecutionProvider"]))
    probability = sessions[-1].run(None, {"x": np.array([[0.0, -95.0]], np.float32)})[0][0, 1]
    print(float(probability), float.fromhex("0x0.0000000000001p-1022") * 1.0)
""")


def _probe(sessions: str) -> tuple[float, float]:
    done = subprocess.run([sys.executable, "-c", _PROBE, sessions], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    probability, python_float = done.stdout.split()
    return float(probability), float(python_float)


def test_the_options_ask_for_flushed_denormals_and_carry_the_settings():
    import onnxruntime as ort

    options = cpu_session_options(threads=3, optimize=False, spin=False)
    assert options.get_session_config_entry(DENORMAL_AS_ZERO) == "1"
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.intra_op_num_threads == 3 and options.inter_op_num_threads == 1
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    assert cpu_session_options(threads=0).graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL


def test_a_process_whose_sessions_come_from_here_flushes_denormals_on_the_calling_thread():
    assert _probe("lmrec") == (0.0, 0.0)
    assert _probe("lmrec,plain") == (0.0, 0.0)  # a later session without the flag does not undo it


def test_without_the_flag_in_the_first_session_the_calling_thread_keeps_denormals():
    # Why every session lmrec creates carries the flag: ONNX Runtime reads it from the first one only.
    probability, python_float = _probe("plain,lmrec")
    assert 0.0 < probability < 1e-38 and 0.0 < python_float


def test_the_encoder_and_ranker_sessions_flush_denormals(onnx_encoder, tmp_path):
    import torch

    from lmrec.ranker_runtime import RANKER_INPUT, RANKER_OUTPUT, OnnxRanker

    assert onnx_encoder.session.get_session_options().get_session_config_entry(DENORMAL_AS_ZERO) == "1"
    path = tmp_path / "ranker.onnx"
    torch.onnx.export(torch.nn.Linear(4, 1), (torch.zeros(2, 4),), str(path), input_names=[RANKER_INPUT],
                      output_names=[RANKER_OUTPUT], dynamic_axes={RANKER_INPUT: {0: "n"}}, dynamo=False)
    ranker = OnnxRanker(path)
    assert ranker.session.get_session_options().get_session_config_entry(DENORMAL_AS_ZERO) == "1"
