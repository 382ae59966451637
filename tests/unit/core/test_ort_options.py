"""lmrec/ort_options.py: the session options, and denormals flushed on the calling thread only inside
`denormals_flushed()` (while the encoder runs), whatever sessions the process opened before."""

from __future__ import annotations

import platform
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from lmrec.ort_options import (DENORMAL_AS_ZERO, DISABLED_OPTIMIZERS, can_flush_denormals, denormals_flushed,
                               flushes_denormals_here, open_session, provider_names, session_options)

# Where lmrec sets the calling thread's bits (and asks ONNX Runtime to set its workers'): x86-64 Linux, glibc.
x86_glibc = pytest.mark.skipif(
    platform.system() != "Linux" or platform.machine().lower() not in ("x86_64", "amd64")
    or platform.libc_ver()[0] != "glibc", reason="denormal flushing is x86-64 glibc only")
ALREADY_FLUSHING = "this thread flushed denormals before the test: something set FTZ/DAZ for good"


def _softmax_model() -> bytes:
    from onnx import TensorProto, helper

    io = [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in ("x", "y")]
    graph = helper.make_graph([helper.make_node("Softmax", ["x"], ["y"], axis=-1)], "g", io[:1], io[1:])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model.SerializeToString()


def _residual_layer_norm_model() -> bytes:
    """x + skip, then LayerNormalization: the pair ONNX Runtime fuses into SkipLayerNormalization."""
    from onnx import TensorProto, helper

    shape = [2, 5, 16]
    inputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape) for name in ("x", "skip")]
    output = helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)
    gamma = helper.make_tensor("gamma", TensorProto.FLOAT, [16], np.linspace(0.5, 1.5, 16, dtype=np.float32))
    beta = helper.make_tensor("beta", TensorProto.FLOAT, [16], np.linspace(-0.1, 0.1, 16, dtype=np.float32))
    nodes = [helper.make_node("Add", ["x", "skip"], ["sum"]),
             helper.make_node("LayerNormalization", ["sum", "gamma", "beta"], ["y"], axis=-1, epsilon=1e-12)]
    graph = helper.make_graph(nodes, "g", inputs, [output], initializer=[gamma, beta])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def _optimized_ops_and_output(tmp_path, name, opener) -> tuple[set, np.ndarray, object]:
    import onnx

    options = session_options(threads=1)
    options.optimized_model_filepath = str(tmp_path / f"{name}.onnx")
    session = opener(options)
    rng = np.random.default_rng(0)
    feeds = {"x": rng.normal(size=(2, 5, 16)).astype(np.float32), "skip": rng.normal(size=(2, 5, 16)).astype(np.float32)}
    output = session.run(["y"], feeds)[0]
    return {node.op_type for node in onnx.load(options.optimized_model_filepath).graph.node}, output, session


def test_a_cpu_session_keeps_the_residual_add_and_layer_norm_apart_with_the_same_output(tmp_path):
    """Also the guard against a renamed fusion: ONNX Runtime ignores a name it does not know."""
    import lmrec.ort_options

    model = _residual_layer_norm_model()
    with pytest.MonkeyPatch.context() as every_fusion:  # the positive control: ONNX Runtime's default fuses them
        every_fusion.setattr(lmrec.ort_options, "SLOWER_FUSED_ON_CPU", ())
        fused_ops, fused, _ = _optimized_ops_and_output(
            tmp_path, "fused", lambda options: open_session(model, options, ["CPUExecutionProvider"]))
    assert "SkipLayerNormalization" in fused_ops
    ops, output, session = _optimized_ops_and_output(
        tmp_path, "lmrec", lambda options: open_session(model, options, [("CPUExecutionProvider", {})]))
    assert "SkipLayerNormalization" not in ops and {"Add", "LayerNormalization"} <= ops
    np.testing.assert_allclose(output, fused, rtol=1e-5, atol=1e-5)
    assert session.get_session_options().get_session_config_entry(DISABLED_OPTIMIZERS) == "SkipLayerNormFusion"


def test_a_session_with_another_provider_keeps_every_fusion(monkeypatch):
    import onnxruntime as ort

    monkeypatch.setattr(ort, "InferenceSession", lambda model, options, **kwargs: options)
    options = open_session(b"", session_options(threads=1),
                           [("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"])
    with pytest.raises(RuntimeError, match=DISABLED_OPTIMIZERS):  # the entry is absent
        options.get_session_config_entry(DISABLED_OPTIMIZERS)
    assert provider_names([("CUDAExecutionProvider", {}), "CPUExecutionProvider"]) == [
        "CUDAExecutionProvider", "CPUExecutionProvider"] and provider_names(None) == []


def test_the_options_carry_the_settings():
    import onnxruntime as ort

    options = session_options(threads=3, optimize=False, spin=False)
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.intra_op_num_threads == 3 and options.inter_op_num_threads == 1
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    assert session_options(threads=0).graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL


@x86_glibc
def test_where_lmrec_can_flush_it_asks_onnx_runtimes_workers_to_flush_too():
    assert can_flush_denormals()
    assert session_options(threads=2).get_session_config_entry(DENORMAL_AS_ZERO) == "1"


@x86_glibc
def test_denormals_are_flushed_inside_the_block_only_and_the_environment_comes_back():
    tiny = np.float32(1e-40)  # a float32 denormal
    assert not flushes_denormals_here() and tiny * np.float32(1) > 0, ALREADY_FLUSHING
    with denormals_flushed():
        assert flushes_denormals_here() and tiny * np.float32(1) == 0
        with denormals_flushed():  # nested: the inner exit keeps the outer block's setting
            pass
        assert flushes_denormals_here()
    assert not flushes_denormals_here() and tiny * np.float32(1) > 0
    with pytest.raises(RuntimeError), denormals_flushed():
        raise RuntimeError("restored on the way out too")
    assert not flushes_denormals_here()


@x86_glibc
def test_onnx_runtime_on_the_calling_thread_flushes_inside_the_block():
    # exp(-95) / (1 + exp(-95)) is a float32 denormal (about 5.5e-42); one thread: all on the caller.
    session = open_session(_softmax_model(), session_options(threads=1), ["CPUExecutionProvider"])
    scores = {"x": np.array([[0.0, -95.0]], np.float32)}
    assert 0 < session.run(None, scores)[0][0, 1] < 1e-38, ALREADY_FLUSHING
    with denormals_flushed():
        assert session.run(None, scores)[0][0, 1] == 0
    assert 0 < session.run(None, scores)[0][0, 1] < 1e-38


# In a fresh process, since ONNX Runtime sets its flag on a creating thread once per process (from the
# first session): opened bare, the first flagged session leaves that thread flushing for good (the
# control); opened by open_session, it does not.
_FIRST_SESSION = textwrap.dedent("""
    import sys
    import onnxruntime as ort
    from onnx import TensorProto, helper
    from lmrec import ort_options
    from lmrec.ort_options import can_flush_denormals, flushes_denormals_here, open_session, session_options

    io = [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in ("x", "y")]
    graph = helper.make_graph([helper.make_node("Softmax", ["x"], ["y"], axis=-1)], "g", io[:1], io[1:])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    opener = open_session if sys.argv[1] == "lmrec" else (
        lambda model, options, providers: ort.InferenceSession(model, options, providers=providers))
    opener(model.SerializeToString(), session_options(threads=1), ["CPUExecutionProvider"])
    # can_flush_denormals checks itself from known states: a thread already flushing does not fool it.
    ort_options._libm.cache_clear()
    print(flushes_denormals_here(), can_flush_denormals())
""")


@x86_glibc
@pytest.mark.parametrize(("opener", "flushing_after"), [("bare", "True"), ("lmrec", "False")])
def test_opening_a_session_leaves_the_calling_threads_float_environment_alone(opener, flushing_after):
    done = subprocess.run([sys.executable, "-c", _FIRST_SESSION, opener], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [flushing_after, "True"]


@x86_glibc
def test_the_encoder_runs_its_session_with_denormals_flushed_and_only_then(onnx_encoder, monkeypatch):
    assert onnx_encoder.session.get_session_options().get_session_config_entry(DENORMAL_AS_ZERO) == "1"
    real, seen = onnx_encoder.session, []

    class Recording:
        def run(self, names, feeds):
            seen.append(flushes_denormals_here())
            return real.run(names, feeds)

    monkeypatch.setattr(onnx_encoder, "session", Recording())
    onnx_encoder.encode(["a short text", "a somewhat longer text about films " * 5], batch_size=1)
    assert seen == [True, True] and not flushes_denormals_here()


def test_every_session_lmrec_opens_goes_through_open_session():
    """A bare onnxruntime session would leave its worker threads unflushed, and with the flag it would
    leave its creating thread flushing for good."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    bare = [f"{path.relative_to(root)}:{number}"
            for folder in ("lmrec", "export", "server", "client", "benchmarks", "model_repository")
            for path in sorted((root / folder).rglob("*.py")) if "results" not in path.parts
            for number, line in enumerate(path.read_text().splitlines(), 1)
            if ("InferenceSession(" in line or "SessionOptions(" in line) and path.name != "ort_options.py"]
    assert bare == []
