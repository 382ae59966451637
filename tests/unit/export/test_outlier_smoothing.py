"""Outlier smoothing: an fp32 rewrite that changes nothing in fp32 and shrinks what int8 must cover."""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest

from lmrec.encoder import OnnxTextEncoder
from lmrec.export.encoder_export import FP32_FILE, PARITY_TEXTS, activation_matmuls, row_cosines
from lmrec.export.outlier_smoothing import (OUTLIER_RATIO, TARGET_RATIO, channel_ranges, smooth_activation_outliers,
                                            smoothing_factors, weight_matmul_groups)

TEXTS = ["Heat (1995). Genres: Action, Crime, Thriller.", "A 31-year-old female writer. Recently liked: Fargo (1996).",
         "quiet films about families", "Casablanca (1942). Genres: Drama, Romance, War."]


def test_a_tensor_without_outlier_channels_is_left_alone():
    assert smoothing_factors(np.array([1.0, 2.0, 1.5, OUTLIER_RATIO * 1.5 - 0.01])) is None


def test_only_channels_above_the_target_are_divided_and_down_to_it():
    ranges = np.array([1.0, 1.0, 1.0, 1.0, 30.0])
    factors = smoothing_factors(ranges)
    assert factors is not None and factors.dtype == np.float32
    np.testing.assert_allclose(factors[:4], 1.0)
    np.testing.assert_allclose(ranges[4] / factors[4], TARGET_RATIO * np.median(ranges), rtol=1e-6)


@pytest.fixture(scope="module")
def smoothed(exported_encoder_dir, tmp_path_factory):
    directory = tmp_path_factory.mktemp("smoothed") / "export"
    shutil.copytree(exported_encoder_dir, directory)
    report = smooth_activation_outliers(directory / FP32_FILE, directory, PARITY_TEXTS,
                                        excluded=activation_matmuls(directory / FP32_FILE))
    return directory, report


def test_the_smoothed_graph_computes_the_same_embeddings(smoothed, exported_encoder_dir):
    directory, report = smoothed
    before = OnnxTextEncoder(exported_encoder_dir, onnx_file=FP32_FILE).encode(TEXTS)
    after = OnnxTextEncoder(directory, onnx_file=FP32_FILE).encode(TEXTS)
    assert row_cosines(before, after).min() > 0.99999
    # MiniLM's feed-forward inputs carry outlier channels in every layer that smoothing must find.
    assert report.tensors_smoothed >= 6 and report.largest_factor > 1.0
    nodes = onnx.load(str(directory / FP32_FILE)).graph.node
    assert sum(n.name.endswith("outlier_smoothing_mul") for n in nodes) == report.tensors_smoothed


def test_smoothed_inputs_have_no_channel_beyond_the_target(smoothed):
    directory, _ = smoothed
    model = onnx.load(str(directory / FP32_FILE))
    groups = weight_matmul_groups(model, set(activation_matmuls(directory / FP32_FILE)))
    smoothed_inputs = [name for name in groups if name.endswith("/smoothed")]
    ranges = channel_ranges(model, smoothed_inputs, directory, PARITY_TEXTS)
    for name in smoothed_inputs:
        # Divided on the same texts, so the largest channel is the target up to the median's own shift.
        assert ranges[name].max() <= TARGET_RATIO * np.median(ranges[name]) * 1.05, name
