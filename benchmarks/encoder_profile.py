"""Where the encoder's time goes: ONNX Runtime's own profiler over the served fp32 and int8 models.

    .venv/bin/python -m lmrec.benchmarks.encoder_profile [--data-dir ../shared/data/ml-100k]

The texts are the encoder suite's (`lmrec bench encoder`: item texts and user profiles, half and half),
encoded in requests of `--batch` texts the way the served model encodes them (`OnnxTextEncoder`: sorted
by length, similar-length runs). Kernel time is summed per operator type over `--passes` passes, after one
warm-up pass, and grouped: the weight products (int8 or fp32), attention's own work (its two activation
products, softmax, head transposes, scaling), and the rest (layer norms, GELU, bias and residual adds).
Writes `<--out>/<--name>.{json,md}` (default `benchmarks/results/encoder-profile`). A profile, not a speed
figure: the profiler itself costs time, so texts/s here is below the encoder suite's.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path

from lmrec.benchmarks.cli_checks import check_results_file, parser_errors
from lmrec.benchmarks.encoder_config import EncoderBenchConfig
from lmrec.benchmarks.machine import machine_facts
from lmrec.benchmarks.report import markdown_table, write_report

INT8_PRODUCTS = {"DynamicQuantizeMatMul", "MatMulIntegerToFloat", "MatMulInteger", "DynamicQuantizeLinear",
                 "QAttention"}
# MatMuls with two activation operands (attention's query x key, probabilities x value) and the work
# around them; in the int8 model they are the only fp32 MatMuls left (`activation_matmuls`).
ATTENTION_OPS = {"Softmax", "Transpose", "Attention", "MultiHeadAttention"}


def group_of(op: str, fp32_matmuls_are_attention: bool) -> str:
    if op in INT8_PRODUCTS:
        return "int8 weight products"
    if op in ("MatMul", "FusedMatMul", "Gemm"):
        return "attention's activation products" if fp32_matmuls_are_attention else "fp32 products (weights and attention)"
    if op in ATTENTION_OPS:
        return "attention: softmax, head transposes"
    return "norms, GELU, adds, scaling, other"


def profile_model(directory: Path, onnx_file: str, texts: list[str], *, batch: int, passes: int,
                  threads: int, prefix: Path) -> dict:
    """Kernel microseconds per operator type for `passes` encodes of `texts` in requests of `batch`."""
    from lmrec.encoder import OnnxTextEncoder

    encoder = OnnxTextEncoder(directory, onnx_file=onnx_file, threads=threads, profile_prefix=str(prefix))

    def one_pass() -> None:
        for start in range(0, len(texts), batch):
            encoder.encode(texts[start:start + batch], batch_size=batch)

    one_pass()  # warm-up: profiled too, then dropped below
    started = time.perf_counter()
    for _ in range(passes):
        one_pass()
    seconds = time.perf_counter() - started
    trace = Path(encoder.session.end_profiling())
    events = json.loads(trace.read_text())
    trace.unlink()
    nodes = [e for e in events if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")]
    # Every pass encodes the same texts in the same runs, so each one runs the same nodes: drop the first.
    per_pass, left_over = divmod(len(nodes), passes + 1)
    if left_over:
        raise RuntimeError(f"{len(nodes)} profiled nodes over {passes + 1} passes: the passes differ")
    per_op: collections.Counter = collections.Counter()
    for event in nodes[per_pass:]:
        per_op[event["args"]["op_name"]] += event["dur"]
    ops = dict(per_op.most_common())
    total = sum(ops.values())
    is_int8 = any(op in INT8_PRODUCTS for op in ops)
    groups: collections.Counter = collections.Counter()
    for op, us in ops.items():
        groups[group_of(op, is_int8)] += us
    return {"onnx_file": onnx_file, "int8": is_int8, "texts_per_s": passes * len(texts) / seconds,
            "kernel_us": ops, "share": {op: us / total for op, us in ops.items()},
            "groups": {g: us / total for g, us in groups.most_common()}, "nodes_per_pass": per_pass}


def run_profile(config: EncoderBenchConfig, *, batch: int = 32, passes: int = 3, threads: int | None = None) -> dict:
    from lmrec.benchmarks.encoder_repository import prepare_export
    from lmrec.benchmarks.encoder_texts import _load_texts

    texts, _, label = _load_texts(config)
    export = prepare_export(config, progress=lambda *_: None)
    threads = threads or os.cpu_count() or 1
    work = Path(config.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    models = [profile_model(export.directory, name, texts, batch=batch, passes=passes, threads=threads,
                            prefix=work / f"ort-profile-{name}") for name in (export.int8_file, export.fp32_file)]
    return {"suite": "encoder-profile", "machine": machine_facts(), "texts": label, "n_texts": len(texts),
            "batch": batch, "passes": passes, "threads": threads, "models": models}


def render_markdown(payload: dict) -> str:
    lines = ["# Where the encoder's time goes (ONNX Runtime profiler)", "",
             f"Command: `{payload.get('command', 'python -m lmrec.benchmarks.encoder_profile')}`  ",
             f"Machine: {payload['machine']['cpu_model']}, {payload['machine']['cores']} cores; "
             f"{payload['n_texts']} texts from {payload['texts']}, requests of {payload['batch']}, "
             f"{payload['passes']} timed passes, {payload['threads']} threads  ",
             "Kernel time only (the profiler's per-node times); texts/s is slowed by the profiler itself.", ""]
    for model in payload["models"]:
        lines += [f"## {model['onnx_file']} ({'int8' if model['int8'] else 'fp32'}, "
                  f"{model['texts_per_s']:.1f} texts/s while profiled)", ""]
        lines += markdown_table(["group", "share of kernel time"],
                                [[g, f"{share:.1%}"] for g, share in model["groups"].items()]) + [""]
        lines += markdown_table(["operator", "share of kernel time"],
                                [[op, f"{share:.1%}"] for op, share in list(model["share"].items())[:12]]) + [""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, help="the ml-100k folder (default: ../shared/data/ml-100k)")
    parser.add_argument("--n-texts", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--work-dir", type=Path, default=Path("benchmarks/results/tmp/encoder"),
                        help="the encoder suite's export cache, reused")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="result folder")
    parser.add_argument("--name", default="encoder-profile", help="result file stem")
    args = parser.parse_args(argv)
    for name in ("n_texts", "batch", "passes"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    config = replace(EncoderBenchConfig(n_texts=args.n_texts, work_dir=args.work_dir),
                     **({"data_dir": args.data_dir} if args.data_dir else {}))
    if not Path(config.data_dir).is_dir():
        parser.error(f"--data-dir {config.data_dir} is not a directory")
    with parser_errors(parser):  # before the export and the profiled passes
        check_results_file(args.out, args.name)
    payload = run_profile(config, batch=args.batch, passes=args.passes)
    payload["command"] = "python -m lmrec.benchmarks.encoder_profile " + shlex.join(sys.argv[1:] if argv is None else argv)
    markdown = render_markdown(payload)
    write_report(payload, args.out, args.name, markdown=markdown + "\n", plot=None)
    print(markdown)


if __name__ == "__main__":
    main()
