"""ONNX Runtime sessions as lmrec opens them, and denormal floats flushed to zero while the encoder runs.

Entry points: `session_options(threads=...)` and `open_session(model, options, providers)` for every
session lmrec opens; `denormals_flushed()` around the runs where denormals cost (the encoder's).

Why: the padded keys of a batch get a large negative attention mask, and the softmax's exp of it
underflows into denormal floats. Intel CPUs compute on denormals through a microcode assist: on the
2-core Intel Xeon (AMX) machine, ONNX Runtime's softmax over a batch with 11% of its keys masked ran 4x
slower than with denormals flushed, and took 14.9% of the int8 encoder's kernel time against 3.2% on the
AMD EPYC with AVX-512 VNNI (benchmarks/performance-log.md, item 11). Flushing them left the MiniLM
embeddings bit-identical (fp32 and int8): a denormal probability times a value is far below the float32
resolution of the sum it joins.

How: ONNX Runtime's `session.set_denormal_as_zero` (set by `session_options`) covers its worker threads,
per session. The thread that calls `run` does its share of every operator too, and ONNX Runtime sets
the flag on such a thread only once per process: on the thread that creates the process's first
session, with that session's setting (Optimum's export opens a plain session first in every process
that exports). So `denormals_flushed()` sets the flush-to-zero and denormals-are-zero bits of the
calling thread's MXCSR itself, through glibc's `fegetenv`/`fesetenv`, and restores them after the
block; `open_session` undoes what ONNX Runtime's once-per-process call did to the thread that opened
the session. Arithmetic outside those blocks (numpy, torch, Python floats) keeps IEEE denormals.

Where lmrec cannot set the bits itself (anything but x86-64 Linux with glibc), it does not ask ONNX
Runtime either, which would set them for good on the thread that opens the first session: the encoder
then runs with IEEE denormals, as before. `can_flush_denormals()` says which. The bits are per thread; a
thread started inside a `denormals_flushed()` block would inherit them for good (`encode` starts none).

One graph fusion is left out on the CPU: ONNX Runtime fuses a residual `Add` and the `LayerNormalization`
after it into one `SkipLayerNormalization`, whose CPU kernel ran 3-5x slower than the two operators it
replaces (a [32, 40, 384] batch: 1.7-1.9 ms against 0.4-0.7 ms with two threads, 3.6 against 0.7 ms with
one). In the int8 encoder it took 13.9% of the kernel time on the Intel AMX machine and 7.3% on the AMD
VNNI one (benchmarks/performance-log.md, item 12). The fp32 export has no such pair that ONNX Runtime fuses.
ONNX Runtime ignores a fusion name it does not know, so a renamed fusion would be kept silently:
tests/unit/core/test_ort_options.py checks on a real graph that the pair stays apart.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import platform
import struct
import sys
from typing import Iterator

DENORMAL_AS_ZERO = "session.set_denormal_as_zero"
DISABLED_OPTIMIZERS = "optimization.disable_specified_optimizers"  # names joined by ";"
# ONNX Runtime's names of the graph fusions whose fused CPU kernel is slower than what it replaces (above).
SLOWER_FUSED_ON_CPU = ("SkipLayerNormFusion",)
CPU = "CPUExecutionProvider"

# glibc's x86-64 fenv_t: the 28-byte x87 environment, then MXCSR.
_FENV_BYTES = 32
_MXCSR_OFFSET = 28
_FLUSH_TO_ZERO = 0x8000
_DENORMALS_ARE_ZERO = 0x0040
_SMALLEST_DENORMAL = float.fromhex("0x0.0000000000001p-1022")


def session_options(*, threads: int, inter_op_threads: int = 1, optimize: bool = True, spin: bool = True):
    """`onnxruntime.SessionOptions` with `threads` intra-op threads (0: ONNX Runtime's choice, one per
    core) whose worker threads flush denormals. `optimize=False` keeps the graph as written (every tensor
    under its own name); `spin=False` stops idle worker threads spinning between runs."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = inter_op_threads
    if can_flush_denormals():
        options.add_session_config_entry(DENORMAL_AS_ZERO, "1")
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def open_session(model, options, providers: list):
    """`onnxruntime.InferenceSession(model, options, providers=providers)`, leaving the calling thread's
    floating-point environment as it found it. Where the requested providers are the CPU alone, `options`
    (changed in place) leave out the fusions in `SLOWER_FUSED_ON_CPU`; another provider's fused kernels
    may be the fast ones."""
    import onnxruntime as ort

    if provider_names(providers) == [CPU]:
        options.add_session_config_entry(DISABLED_OPTIMIZERS, ";".join(SLOWER_FUSED_ON_CPU))
    with _environment_restored():
        return ort.InferenceSession(model, options, providers=providers)


def provider_names(providers: list | None) -> list[str]:
    """The names in an ONNX Runtime providers list, whose entries are names or (name, options) pairs."""
    return [provider[0] if isinstance(provider, tuple) else provider for provider in providers or []]


@contextlib.contextmanager
def denormals_flushed() -> Iterator[None]:
    """Within the block, the calling thread flushes denormal results to zero and reads denormal inputs
    as zero; after it, the thread's previous floating-point environment is back."""
    with _environment_restored() as saved:
        libm = _libm()
        if libm is not None:
            libm.fesetenv(_with_flush_bits(saved))
        yield


def flushes_denormals_here() -> bool:
    """Whether the calling thread flushes denormals right now."""
    return _SMALLEST_DENORMAL * 1.0 == 0.0


def can_flush_denormals() -> bool:
    """Whether the encoder runs with denormals flushed on this platform (benchmark reports record it)."""
    return _libm() is not None


@contextlib.contextmanager
def _environment_restored() -> Iterator[ctypes.Array]:
    saved = ctypes.create_string_buffer(_FENV_BYTES)
    libm = _libm()
    if libm is None:
        yield saved
        return
    libm.fegetenv(saved)
    try:
        yield saved
    finally:
        libm.fesetenv(saved)


@functools.cache
def _libm():
    """glibc's libm where MXCSR can be set through it (x86-64 Linux), checked once; else None."""
    if platform.system() != "Linux" or platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    if sys.maxsize <= 2 ** 32 or platform.libc_ver()[0] != "glibc":  # a 32-bit Python has another fenv_t
        return None
    try:
        libm = ctypes.CDLL("libm.so.6")
    except OSError:
        return None
    libm.fegetenv.argtypes = libm.fesetenv.argtypes = [ctypes.c_void_p]
    # Check the fenv_t layout assumed above once, from known states (the calling thread may already
    # flush): bits cleared, a denormal survives; bits set, it vanishes.
    saved = ctypes.create_string_buffer(_FENV_BYTES)
    libm.fegetenv(saved)
    try:
        libm.fesetenv(_with_flush_bits(saved, on=False))
        keeps = not flushes_denormals_here()
        libm.fesetenv(_with_flush_bits(saved, on=True))
        flushes = flushes_denormals_here()
    finally:
        libm.fesetenv(saved)
    return libm if keeps and flushes else None


def _with_flush_bits(environment: ctypes.Array, *, on: bool = True) -> ctypes.Array:
    """A copy of a saved fenv_t with MXCSR's flush-to-zero and denormals-are-zero bits set (or cleared)."""
    changed = ctypes.create_string_buffer(environment.raw, _FENV_BYTES)
    (mxcsr,) = struct.unpack_from("<I", environment.raw, _MXCSR_OFFSET)
    bits = _FLUSH_TO_ZERO | _DENORMALS_ARE_ZERO
    struct.pack_into("<I", changed, _MXCSR_OFFSET, mxcsr | bits if on else mxcsr & ~bits)
    return changed
