"""Shrink the few outlier channels of the encoder's activations before dynamic int8 (SmoothQuant's idea).

Dynamic int8 gives each activation tensor one scale, set by its largest value. In MiniLM the input of
each layer's feed-forward block (a LayerNorm output) and the GELU output inside it carry one or two
channels 10-20x larger than the median channel's range (ml-100k texts: 28 against 1.8), so every other
channel lands on a few of the 256 levels. Those products were 75% of the int8 model's distance to fp32
(benchmarks/int8_parity.py).

Entry point: `smooth_activation_outliers(onnx_path, tokenizer_dir, texts)`. It measures each weight
MatMul input's per-channel range on `texts`, and where the largest is at least `OUTLIER_RATIO` times the
median, divides the channels above `TARGET_RATIO` times the median down to it (one `Mul` per tensor,
before its MatMuls) and multiplies the same rows of each weight by the same factors. The fp32 result is
unchanged up to rounding; the weights are quantised per output channel, so their larger rows cost less
than the activations gain.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from lmrec.ort_options import open_session, session_options

# A tensor is smoothed when its largest channel range is this many times the median channel's; the
# channels above TARGET_RATIO times the median are divided down to it. Chosen on ml-100k texts with the
# pretrained MiniLM (avx512_vnni preset): mean cosine to fp32 0.9922 unsmoothed; 0.9967 with (8, 5),
# 10 tensors smoothed, 2.4% slower (one Mul each); 0.9967 smoothing all 19 tensors (ratio 4), 5% slower;
# 0.9959 with (12, 4), 9 tensors. Dividing down to 2x the median instead was no closer (0.9967): the
# weight rows grow by as much.
OUTLIER_RATIO = 8.0
TARGET_RATIO = 5.0


@dataclass(frozen=True)
class SmoothingReport:
    tensors_smoothed: int
    largest_factor: float

    def to_manifest(self) -> dict:
        return {"tensors_smoothed": self.tensors_smoothed, "largest_factor": round(self.largest_factor, 2),
                "outlier_ratio": OUTLIER_RATIO, "target_ratio": TARGET_RATIO}


def weight_matmul_groups(model, excluded: set[str]) -> dict[str, list]:
    """Weight MatMuls (second operand an initializer) grouped by their activation input: the query, key
    and value products share one, so they share one factor."""
    initializers = {i.name for i in model.graph.initializer}
    groups: dict[str, list] = {}
    for node in model.graph.node:
        if node.op_type == "MatMul" and node.name not in excluded and node.input[1] in initializers:
            groups.setdefault(node.input[0], []).append(node)
    return groups


def channel_ranges(model, tensors: Sequence[str], tokenizer_dir: Path, texts: Sequence[str]) -> dict[str, np.ndarray]:
    """max |x| per channel of each of `tensors` over the real (unpadded) tokens of `texts`."""
    import onnx

    from lmrec.encoder import EncoderSettings, load_tokenizer, padded_feeds

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for name in tensors:
        probe.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    # Unoptimised, so that every probed tensor exists as the graph names it (fusions would absorb some).
    options = session_options(threads=0, optimize=False)
    session = open_session(probe.SerializeToString(), options, ["CPUExecutionProvider"])
    settings = EncoderSettings.read(tokenizer_dir)
    tokenizer = load_tokenizer(tokenizer_dir, settings)
    ranges: dict[str, np.ndarray] = {}
    for start in range(0, len(texts), 32):
        feeds = padded_feeds(tokenizer.encode_batch(list(texts[start:start + 32])), settings.input_names)
        real_tokens = feeds["attention_mask"].astype(bool)
        for name, value in zip(tensors, session.run(list(tensors), feeds)):
            batch = np.abs(value[real_tokens]).max(axis=0)
            ranges[name] = batch if name not in ranges else np.maximum(ranges[name], batch)
    return ranges


def smoothing_factors(ranges: np.ndarray) -> np.ndarray | None:
    """Per-channel divisors for one tensor (>= 1), or None when it has no outlier channel."""
    ranges = np.maximum(ranges, 1e-6)
    median = float(np.median(ranges))
    if ranges.max() < OUTLIER_RATIO * median:
        return None
    return np.maximum(1.0, ranges / (TARGET_RATIO * median)).astype(np.float32)


def smooth_activation_outliers(onnx_path: Path, tokenizer_dir: Path, texts: Sequence[str], *,
                               excluded: Sequence[str] = ()) -> SmoothingReport:
    """Rewrite `onnx_path` in place (see the module doc). `excluded`: MatMuls that stay fp32 anyway."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path))
    groups = weight_matmul_groups(model, set(excluded))
    ranges = channel_ranges(model, list(groups), tokenizer_dir, texts)
    weights = {i.name: i for i in model.graph.initializer}
    uses = Counter(name for node in model.graph.node for name in node.input)
    inserted: dict[str, onnx.NodeProto] = {}
    largest = 1.0
    for tensor, matmuls in groups.items():
        factors = smoothing_factors(ranges[tensor])
        if factors is None:
            continue
        largest = max(largest, float(factors.max()))
        divisor = numpy_helper.from_array(1.0 / factors, name=f"{tensor}/outlier_smoothing")
        model.graph.initializer.append(divisor)
        smoothed = f"{tensor}/smoothed"
        inserted[tensor] = onnx.helper.make_node("Mul", [tensor, divisor.name], [smoothed],
                                                 name=f"{tensor}/outlier_smoothing_mul")
        for matmul in matmuls:
            weight = weights[matmul.input[1]]
            if uses[weight.name] > 1:
                raise ValueError(f"{onnx_path}: weight {weight.name} is shared; scaling its rows would change "
                                 "another product")
            scaled = numpy_helper.to_array(weight) * factors[:, None]
            weight.CopyFrom(numpy_helper.from_array(scaled.astype(np.float32), weight.name))
            matmul.input[0] = smoothed
    # Each Mul right after the node that produces its input (first, for a graph input), so the graph
    # stays topologically sorted.
    graph_inputs = {i.name for i in model.graph.input}
    nodes = [mul for name, mul in inserted.items() if name in graph_inputs]
    for node in model.graph.node:
        nodes.append(node)
        nodes.extend(inserted[name] for name in node.output if name in inserted)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.checker.check_model(model)
    onnx.save(model, str(onnx_path))
    return SmoothingReport(tensors_smoothed=len(inserted), largest_factor=largest)
