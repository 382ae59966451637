"""OnnxTextEncoder on the session's exported MiniLM: normalisation, ordering, batching."""

from __future__ import annotations

import numpy as np
import warnings

import pytest

from lmrec.encoder import EncoderSettings

TEXTS = [
    "cooking",
    "A documentary about wildlife in the Serengeti, following lions and elephants through the dry season "
    "as water holes vanish and the herds migrate north across the river in search of grass. " * 3,
    "Heat (1995)",
    "space opera with starships",
    "Amélie (2001). Genres: Comedy, Romance.",
    "",
    "A 24-year-old male technician. Recently liked: GoldenEye (1995) [Action, Adventure, Thriller]; "
    "Four Rooms (1995) [Thriller].",
    "x",
    "a very long text " * 200,  # beyond max_length tokens: truncated
]


@pytest.fixture(scope="module")
def one_by_one(onnx_encoder) -> np.ndarray:
    return np.concatenate([onnx_encoder.encode([text]) for text in TEXTS])


def test_output_is_unit_norm_float32(onnx_encoder):
    vectors = onnx_encoder.encode(TEXTS)
    assert vectors.shape == (len(TEXTS), onnx_encoder.dim) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_length_grouped_batching_keeps_the_input_order(onnx_encoder, one_by_one):
    together = onnx_encoder.encode(TEXTS)
    np.testing.assert_allclose(together, one_by_one, atol=1e-5)
    # Different texts really give different vectors, so the comparison above can see a swap.
    sims = one_by_one @ one_by_one.T
    assert (sims[~np.eye(len(TEXTS), dtype=bool)] < 0.999).all()


@pytest.mark.parametrize("batch_size", [1, 2, len(TEXTS) - 1, len(TEXTS), len(TEXTS) + 1])
def test_batch_size_boundaries(onnx_encoder, one_by_one, batch_size):
    np.testing.assert_allclose(onnx_encoder.encode(TEXTS, batch_size=batch_size), one_by_one, atol=1e-5)


def test_reversed_input_gives_reversed_output(onnx_encoder, one_by_one):
    np.testing.assert_allclose(onnx_encoder.encode(TEXTS[::-1], batch_size=3), one_by_one[::-1], atol=1e-5)


def test_empty_list(onnx_encoder):
    out = onnx_encoder.encode([])
    assert out.shape == (0, onnx_encoder.dim) and out.dtype == np.float32


def test_truncation_at_max_length(onnx_encoder):
    max_length = onnx_encoder.settings.max_length
    long_a = "alpha " * (max_length * 2)
    long_b = "alpha " * (max_length * 2) + "completely different ending about submarines"
    a, b = onnx_encoder.encode([long_a, long_b])
    np.testing.assert_allclose(a, b, atol=1e-5)  # the differing tail lies past the window


def test_settings_round_trip(tmp_path, exported_encoder_dir):
    settings = EncoderSettings.read(exported_encoder_dir)
    assert settings.embedding_dim == 384 and settings.onnx_file == "model.onnx"
    assert "input_ids" in settings.input_names and "attention_mask" in settings.input_names
    (tmp_path / "encoder.json").write_text(settings.to_json())
    assert EncoderSettings.read(tmp_path) == settings



def test_length_buckets_keep_similar_lengths_together():
    from lmrec.encoder import length_buckets

    lengths = np.array([150, 12, 14, 140, 13, 160, 30])
    order = np.argsort(lengths, kind="stable")
    buckets = length_buckets(lengths, order, batch_size=64)
    assert [sorted(lengths[b].tolist()) for b in buckets] == [[12, 13, 14], [30], [140, 150, 160]]
    assert sorted(np.concatenate(buckets).tolist()) == list(range(len(lengths)))
    capped = length_buckets(np.full(10, 20), np.arange(10), batch_size=4)
    assert [len(b) for b in capped] == [4, 4, 2]


def test_an_encoder_that_does_not_spin_says_so_to_onnx_runtime_and_encodes_the_same(exported_encoder_dir,
                                                                                     onnx_encoder):
    from lmrec.encoder import OnnxTextEncoder

    quiet = OnnxTextEncoder(exported_encoder_dir, threads=2, spin=False)
    entry = "session.intra_op.allow_spinning"
    assert quiet.session.get_session_options().get_session_config_entry(entry) == "0"
    np.testing.assert_allclose(quiet.encode(TEXTS), onnx_encoder.encode(TEXTS), atol=1e-5)


def test_execution_providers_pick_the_cpu_or_a_gpu_and_never_fall_back_silently():
    from lmrec.encoder import execution_providers

    assert execution_providers("cpu") == ["CPUExecutionProvider"]
    assert execution_providers("cuda", device_id=3, available=["CUDAExecutionProvider", "CPUExecutionProvider"]) == [
        ("CUDAExecutionProvider", {"device_id": 3, "use_tf32": 0}), "CPUExecutionProvider"]
    with pytest.raises(RuntimeError, match="no CUDAExecutionProvider .*install onnxruntime-gpu"):
        execution_providers("cuda", available=["CPUExecutionProvider"])
    with pytest.raises(ValueError, match="unknown device 'gpu' \\(known: cpu, cuda\\)"):
        execution_providers("gpu")


def test_an_encoder_whose_provider_does_not_start_refuses_instead_of_running_on_the_cpu(exported_encoder_dir):
    import onnxruntime as ort

    from lmrec.encoder import OnnxTextEncoder

    missing = next(p for p in ("CUDAExecutionProvider", "ROCMExecutionProvider", "CoreMLExecutionProvider")
                   if p not in ort.get_available_providers())
    # ONNX Runtime itself only warns and falls back to the CPU here.
    with warnings.catch_warnings(), pytest.raises(RuntimeError,
                                                  match=f"could not start {missing} for .*(it runs CPUExecutionProvider)"):
        warnings.simplefilter("ignore", UserWarning)
        OnnxTextEncoder(exported_encoder_dir, providers=[missing, "CPUExecutionProvider"])
    assert OnnxTextEncoder(exported_encoder_dir, providers=["CPUExecutionProvider"]).encode(["a"]).shape == (1, 384)
