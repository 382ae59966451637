"""ONNX Runtime session options for every session lmrec creates on the CPU.

Entry point: `cpu_session_options(threads=..., ...)`.

Why one place: the options carry ONNX Runtime's `session.set_denormal_as_zero`. Padded keys in a batch's
attention get a large negative mask, and the softmax's exp of it underflows into denormal floats. Intel
CPUs compute on denormals through a microcode assist: on the 2-core Intel Xeon (AMX) machine, the
encoder's softmax over a masked batch ran 4x slower than over an unmasked one, 14.9% of the int8
encoder's kernel time against 3.2% on the AMD machine (benchmarks/performance-log.md, item 11).
Flushing them to zero left the embeddings bit-identical on the suite's texts (a denormal
probability times a value is far below float32's resolution of the sums it joins).

ONNX Runtime sets the flag on its own worker threads per session, but on the thread that calls `run`
only once per process, from the *first* session created: a first session without the flag turns it off
for the caller thread of every later one. So every session lmrec creates asks for it, and a process that
creates its sessions here gets it whichever comes first. Other float arithmetic on that thread (numpy,
Python floats) then flushes denormals too.
"""

from __future__ import annotations

DENORMAL_AS_ZERO = "session.set_denormal_as_zero"


def cpu_session_options(*, threads: int, inter_op_threads: int = 1, optimize: bool = True, spin: bool = True):
    """`onnxruntime.SessionOptions` with `threads` intra-op threads (0: ONNX Runtime's choice, one per
    core) and denormals flushed to zero. `optimize=False` keeps the graph as written (every tensor under
    its own name); `spin=False` stops idle worker threads spinning between runs."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = inter_op_threads
    options.add_session_config_entry(DENORMAL_AS_ZERO, "1")
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options
