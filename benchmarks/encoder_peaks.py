"""Encoder suite: the machine's GEMM peaks (fp32 numpy / torch, int8 ONNX Runtime MatMulInteger; with
`--device cuda`, torch products on the GPU), measured in the same run, so the encoders' achieved FLOP/s read
as a share of what the hardware can do."""

from __future__ import annotations

import os
import time

import numpy as np

from lmrec.ort_options import open_session, session_options


def _best_seconds(fn, repeats: int) -> float:
    fn()  # warm-up: thread pools, packing buffers
    best = float("inf")
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def fp32_gemm_peaks(size: int, repeats: int) -> dict[str, float]:
    """GFLOP/s of an fp32 size³ matrix product: numpy (its BLAS) and torch, best of `repeats` each."""
    flops = 2.0 * size ** 3
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    out = {"numpy_matmul": flops / _best_seconds(lambda: a @ b, repeats) / 1e9}
    try:
        import torch

        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        with torch.inference_mode():
            out["torch_matmul"] = flops / _best_seconds(lambda: torch.mm(ta, tb), repeats) / 1e9
    except Exception as error:  # noqa: BLE001 - a peak we cannot measure is reported, not fatal
        out["torch_error"] = str(error)
    return out


def _matmul_integer_model(size: int):
    """ONNX graph Y = MatMulInteger(A uint8 [M,K], B int8 [K,N] constant, zero points): what dynamic-int8
    quantisation turns the encoder's weight products into."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    weights = rng.integers(-127, 128, (size, size), dtype=np.int8)
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["A", "B", "a_zero", "b_zero"], ["Y"])],
        "int8_gemm",
        [helper.make_tensor_value_info("A", TensorProto.UINT8, [size, size])],
        [helper.make_tensor_value_info("Y", TensorProto.INT32, [size, size])],
        initializer=[numpy_helper.from_array(weights, "B"),
                     numpy_helper.from_array(np.array(128, np.uint8), "a_zero"),
                     numpy_helper.from_array(np.array(0, np.int8), "b_zero")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = min(model.ir_version, 8)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def int8_gemm_peaks(size: int, repeats: int) -> dict[str, float]:
    """GOP/s (2 per int8 multiply-add) of a size³ ONNX Runtime MatMulInteger (u8·s8→s32): the kernel the
    dynamic-int8 export runs its weight products with; best of `repeats`.

    torch `_int_mm` is not used: on the CPU it runs a reference loop (≈0.5 GOP/s on the 2-core machine).
    """
    flops = 2.0 * size ** 3
    options = session_options(threads=os.cpu_count() or 1)
    session = open_session(_matmul_integer_model(size), options, ["CPUExecutionProvider"])
    a = np.random.default_rng(2).integers(0, 256, (size, size), dtype=np.uint8)
    return {"ort_matmulinteger": flops / _best_seconds(lambda: session.run(["Y"], {"A": a}), repeats) / 1e9}


# A GPU finishes a 2048³ product in well under a millisecond, where timer and launch costs weigh; the
# peaks on CUDA use at least this size.
CUDA_GEMM_MIN_SIZE = 8192


def cuda_gemm_peaks(size: int, repeats: int) -> dict[str, dict[str, float]]:
    """GFLOP/s (GOP/s for int8) of size³ torch products on the GPU: fp32 as the fp32 encoders run it (TF32
    off, PyTorch's default for matmul), fp16 on the tensor cores, int8 (`torch._int_mm`, s8·s8→s32)."""
    import torch

    flops = 2.0 * size ** 3
    generator = torch.Generator(device="cuda").manual_seed(0)

    def timed(fn):
        def run():
            fn()
            torch.cuda.synchronize()
        return flops / _best_seconds(run, repeats) / 1e9

    out: dict[str, dict[str, float]] = {"fp32": {}, "int8": {}, "fp16": {}}
    previous_tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.inference_mode():
            a = torch.randn(size, size, device="cuda", generator=generator)
            b = torch.randn(size, size, device="cuda", generator=generator)
            out["fp32"]["torch_cuda_matmul"] = timed(lambda: torch.mm(a, b))
            ah, bh = a.half(), b.half()
            out["fp16"]["torch_cuda_matmul"] = timed(lambda: torch.mm(ah, bh))
            del a, b, ah, bh
            ai = torch.randint(-127, 128, (size, size), device="cuda", dtype=torch.int8, generator=generator)
            bi = torch.randint(-127, 128, (size, size), device="cuda", dtype=torch.int8, generator=generator)
            try:
                out["int8"]["torch_cuda_int_mm"] = timed(lambda: torch._int_mm(ai, bi))
            except Exception as error:  # noqa: BLE001 - a peak we cannot measure is reported, not fatal
                out["int8"]["torch_error"] = str(error)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous_tf32
        torch.cuda.empty_cache()
    return out


def measure_peaks(size: int, repeats: int, device: str = "cpu") -> dict:
    numbers = lambda d: [v for v in d.values() if isinstance(v, float)]  # noqa: E731
    if device == "cuda":
        size = max(size, CUDA_GEMM_MIN_SIZE)
        gpu = cuda_gemm_peaks(size, repeats)
        return {"size": size, "device": "cuda", **gpu, "fp32_gflops": max(numbers(gpu["fp32"])),
                "fp16_gflops": max(numbers(gpu["fp16"])), "int8_gops": max(numbers(gpu["int8"]), default=0.0)}
    fp32, int8 = fp32_gemm_peaks(size, repeats), int8_gemm_peaks(size, repeats)
    return {"size": size, "device": "cpu", "fp32": fp32, "int8": int8, "fp32_gflops": max(numbers(fp32)),
            "int8_gops": max(numbers(int8))}


def merge_peaks(runs: list[dict]) -> dict:
    """Best of the peak measurements taken during the run (start and end)."""
    best = dict(runs[0])
    for run in runs[1:]:
        for key in ("fp32", "int8", "fp16"):
            if key not in run:
                continue
            merged = dict(best.get(key, {}))
            for name, value in run[key].items():
                if isinstance(value, float):
                    merged[name] = max(value, merged.get(name, 0.0) if isinstance(merged.get(name), float) else 0.0)
            best[key] = merged
        best["fp32_gflops"] = max(best["fp32_gflops"], run["fp32_gflops"])
        best["int8_gops"] = max(best["int8_gops"], run["int8_gops"])
        if "fp16_gflops" in run:
            best["fp16_gflops"] = max(best.get("fp16_gflops", 0.0), run["fp16_gflops"])
    best["measurements"] = len(runs)
    return best
