"""Feature rows → scores with the exported fusion ranker: the one code path offline and inside Triton.

The ranker's counterpart of encoder.py. Training (torch) stays in lmrec.export.ranker; what scores at
serve time lives here, so the Triton `ranker` model, its generated config and the ONNX export all read
the tensor names from one place and the served model imports nothing from the offline side.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lmrec.ort_options import open_session, session_options

# The exported graph's input and output, which are also the Triton `ranker` model's tensors.
RANKER_INPUT = "FEATURES"
RANKER_OUTPUT = "SCORE"


class OnnxRanker:
    """The exported ranker through ONNX Runtime: what Triton's `ranker` model runs."""

    def __init__(self, path: Path, *, threads: int = 1) -> None:
        options = session_options(threads=threads)  # RankerSpec.ort_threads when served
        self.session = open_session(str(path), options, ["CPUExecutionProvider"])

    def score(self, features: np.ndarray) -> np.ndarray:
        if len(features) == 0:
            return np.zeros(0, np.float32)
        return self.session.run([RANKER_OUTPUT], {RANKER_INPUT: features.astype(np.float32)})[0]
