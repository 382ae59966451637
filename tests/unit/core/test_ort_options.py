"""lmrec/ort_options.py: the session options, and denormals flushed on the calling thread only inside
`denormals_flushed()` (while the encoder runs), whatever sessions the process opened before."""

from __future__ import annotations

import platform
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from lmrec.ort_options import DENORMAL_AS_ZERO, denormals_flushed, flushes_denormals_here, session_options

# Where lmrec can set the calling thread's flags (and ONNX Runtime its own): x86-64 Linux with glibc.
x86_glibc = pytest.mark.skipif(
    platform.system() != "Linux" or platform.machine().lower() not in ("x86_64", "amd64")
    or platform.libc_ver()[0] != "glibc", reason="denormal flushing is x86-64 glibc only")


def test_the_options_ask_for_flushed_denormals_and_carry_the_settings():
    import onnxruntime as ort

    options = session_options(threads=3, optimize=False, spin=False)
    assert options.get_session_config_entry(DENORMAL_AS_ZERO) == "1"
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.intra_op_num_threads == 3 and options.inter_op_num_threads == 1
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    assert session_options(threads=0).graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL


@x86_glibc
def test_denormals_are_flushed_inside_the_block_only_and_the_environment_comes_back():
    tiny = np.float32(1e-40)  # a float32 denormal
    assert not flushes_denormals_here() and tiny * np.float32(1) > 0
    with denormals_flushed():
        assert flushes_denormals_here() and tiny * np.float32(1) == 0
        with denormals_flushed():  # nested: the inner exit keeps the outer block's setting
            pass
        assert flushes_denormals_here()
    assert not flushes_denormals_here() and tiny * np.float32(1) > 0
    with pytest.raises(RuntimeError), denormals_flushed():
        raise RuntimeError("restored on the way out too")
    assert not flushes_denormals_here()


# In a fresh process, since ONNX Runtime sets its flag on a creating thread once per process: the first
# session is lmrec's, so ONNX Runtime turns flushing on for this thread, and open_session must undo it.
_FIRST_SESSION = textwrap.dedent("""
    from onnx import TensorProto, helper
    from lmrec.ort_options import flushes_denormals_here, open_session, session_options

    io = [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in ("x", "y")]
    graph = helper.make_graph([helper.make_node("Softmax", ["x"], ["y"], axis=-1)], "g", io[:1], io[1:])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    open_session(model.SerializeToString(), session_options(threads=1), ["CPUExecutionProvider"])
    print(flushes_denormals_here())
""")


@x86_glibc
def test_opening_a_session_leaves_the_calling_threads_float_environment_alone():
    done = subprocess.run([sys.executable, "-c", _FIRST_SESSION], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False"]


@x86_glibc
def test_the_encoder_runs_its_session_with_denormals_flushed_and_only_then(exported_encoder_dir):
    from lmrec.encoder import OnnxTextEncoder

    encoder = OnnxTextEncoder(exported_encoder_dir, threads=2)
    assert encoder.session.get_session_options().get_session_config_entry(DENORMAL_AS_ZERO) == "1"
    real, seen = encoder.session, []

    class Recording:
        def run(self, names, feeds):
            seen.append(flushes_denormals_here())
            return real.run(names, feeds)

    encoder.session = Recording()
    encoder.encode(["a short text", "a somewhat longer text about films " * 5], batch_size=1)
    assert seen == [True, True] and not flushes_denormals_here()


def test_every_session_lmrec_opens_goes_through_these_options():
    """A bare onnxruntime session would run without the flag, and would turn ONNX Runtime's own
    once-per-process setting off if it came first."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    bare = [f"{path.relative_to(root)}:{number}"
            for folder in ("lmrec", "export", "server", "client", "benchmarks", "model_repository")
            for path in sorted((root / folder).rglob("*.py")) if "results" not in path.parts
            for number, line in enumerate(path.read_text().splitlines(), 1)
            if ("InferenceSession(" in line or "SessionOptions(" in line) and path.name != "ort_options.py"]
    assert bare == []
