"""Bad input to the benchmark suites: refused while parsing (or before a server starts), naming the bad
option, in one line, and never by overwriting a published results file with an empty or failed run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from lmrec.cli_client import CliError

PUBLISHED = '{"published": true}'


def _config(module_name: str, argv: list[str]):
    import importlib

    module = importlib.import_module(f"lmrec.benchmarks.{module_name}")
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return module.config_from_args(parser.parse_args(argv))


def _published(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(PUBLISHED)
    return path


# --- --out and --name, every `lmrec bench` suite -------------------------------------------------------

SUITES = ("encoder", "triton_perf", "ann", "gateway_load", "quality")


@pytest.mark.parametrize("suite", SUITES)
def test_an_out_folder_that_cannot_be_written_is_refused_while_parsing_by_name(suite, tmp_path):
    """encoder and triton ran the whole measurement before failing with '[Errno 20] Not a directory'."""
    (tmp_path / "file").write_text("")
    with pytest.raises(CliError, match=r"^--out .*file/x/.*\.json: .*file is not a folder"):
        _config(suite, ["--out", str(tmp_path / "file" / "x")])


@pytest.mark.parametrize("suite", SUITES)
@pytest.mark.parametrize("name", ["../evil", "a/b", "", ".hidden"])
def test_a_name_with_a_folder_in_it_is_refused_while_parsing(suite, name, tmp_path):
    """`--name ../evil` wrote the results outside --out."""
    with pytest.raises(CliError, match=r"^--name .*: a file name without folders"):
        _config(suite, ["--out", str(tmp_path), "--name", name])


# --- triton ------------------------------------------------------------------------------------------------


@pytest.fixture
def fake_ranker_build(tmp_path, monkeypatch):
    """A build folder whose repository holds a `ranker` (FP32 input, max_batch_size 64), with perf_analyzer
    stubbed out and Triton replaced by `triton_perf.FakeTriton` (set by the test)."""
    from lmrec.benchmarks import triton_perf

    model = tmp_path / "build" / "model_repository" / "ranker"
    (model / "1").mkdir(parents=True)
    (model / "1" / "model.onnx").write_bytes(b"onnx")
    (model / "config.pbtxt").write_text('name: "ranker"\nmax_batch_size: 64\ninput {\n  name: "FEATURES"\n'
                                        '  data_type: TYPE_FP32\n  dims: 4\n}\noutput {\n  name: "SCORE"\n'
                                        '  data_type: TYPE_FP32\n  dims: 1\n}\n')
    monkeypatch.setattr(triton_perf, "find_perf_analyzer", lambda: (Path("perf_analyzer"), {}))
    monkeypatch.setattr(triton_perf, "perf_analyzer_version", lambda binary, env: "Perf Analyzer (stub)")
    return tmp_path / "build"


def _triton_started(*args, **kwargs):
    raise AssertionError("Triton was started")


def test_a_batch_size_above_a_models_max_batch_size_is_refused_before_triton_starts(fake_ranker_build, tmp_path,
                                                                                     monkeypatch):
    """`--batch-sizes 1000` started Triton, measured nothing and wrote an empty results file."""
    import lmrec.server.triton_launcher as launcher
    from lmrec.benchmarks.triton_perf import TritonPerfConfig, run_triton_perf

    monkeypatch.setattr(launcher, "TritonProcess", _triton_started)
    published = _published(tmp_path / "results", "triton")
    for batches, option in (({"batch_sizes": (1, 1000)}, "--batch-sizes 1,1000"),
                            ({"ranker_batch_sizes": (65,)}, "--ranker-batch-sizes 65")):
        config = TritonPerfConfig(build_dir=fake_ranker_build, models=("ranker",), concurrency=(1,),
                                  out_dir=tmp_path / "results", **batches)
        with pytest.raises(CliError, match=f"^{option}: ranker takes at most 64 rows per request"):
            run_triton_perf(config, progress=lambda *_: None)
    assert published.read_text() == PUBLISHED


def test_a_triton_run_that_measures_nothing_writes_nothing_and_fails_in_one_line(fake_ranker_build, tmp_path,
                                                                                 monkeypatch, capsys):
    """It wrote a results file of 0 records over the published one, then ended in a PerfAnalyzerError traceback."""
    import lmrec.server.triton_launcher as launcher
    from lmrec.benchmarks import triton_perf
    from lmrec.cli import main

    class Triton:
        grpc_url = "127.0.0.1:1"

        def __init__(self, config):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def is_running(self):
            return True

    def fails(*args, **kwargs):
        raise triton_perf.PerfAnalyzerError("perf_analyzer failed (exit 99): perf_analyzer -m ranker\nline 2\nline 3")

    monkeypatch.setattr(launcher, "TritonProcess", Triton)
    monkeypatch.setattr(triton_perf, "_measure_point", fails)
    published = _published(tmp_path / "results", "triton")
    code = main(["bench", "triton", "--build-dir", str(fake_ranker_build), "--models", "ranker", "--batch-sizes", "1",
                 "--concurrency", "1,2", "--out", str(tmp_path / "results")])
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert error[-1].startswith("lmrec bench: error: no point was measured, nothing written: 2 failed")
    assert "perf_analyzer failed (exit 99)" in error[-1] and "line 2" not in "\n".join(error)
    assert published.read_text() == PUBLISHED
    assert not (tmp_path / "results" / "triton.md").exists()


def test_a_relaxed_stability_of_0_means_no_retry():
    """Its help says '(0: no retry)', and 0 was refused."""
    from lmrec.benchmarks.triton_perf import TritonPerfConfig

    config = _config("triton_perf", ["--relaxed-stability-pct", "0"])
    assert isinstance(config, TritonPerfConfig) and config.relaxed_stability_pct == 0.0


# --- encoder -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv, message", [
    (["--paths", ""], r"^--paths '' names no path"),
    (["--paths", ",,"], r"^--paths ',,' names no path"),
    (["--min-seconds", "5", "--max-seconds", "1"], r"^--min-seconds 5 is more than --max-seconds 1"),
])
def test_encoder_options_that_would_measure_nothing_or_be_ignored_are_refused(argv, message, tmp_path):
    with pytest.raises(CliError, match=message):
        _config("encoder", [*argv, "--out", str(tmp_path)])


def test_an_encoder_run_whose_only_path_cannot_run_writes_nothing(tmp_path):
    """`--paths infinity` without infinity-emb printed 'not installed', wrote an empty results file, exited 0."""
    from lmrec.benchmarks.cli_checks import NothingMeasured
    from lmrec.benchmarks.encoder import EncoderBenchConfig, run_encoder_bench

    published = _published(tmp_path / "results", "encoder")
    config = EncoderBenchConfig(paths=("infinity-emb",), infinity_venv=tmp_path / "no-venv", work_dir=tmp_path / "work",
                                out_dir=tmp_path / "results", data_dir=tmp_path / "no-data")
    with pytest.raises(NothingMeasured, match="infinity-emb: not installed"):
        run_encoder_bench(config, progress=lambda *_: None)
    assert published.read_text() == PUBLISHED


def test_an_encoder_run_whose_every_cell_fails_writes_nothing(tmp_path, monkeypatch):
    from lmrec.benchmarks import encoder
    from lmrec.benchmarks.cli_checks import NothingMeasured
    from lmrec.export.loaders import SyntheticConfig

    class Broken:
        served = False

        def run(self, chunks, concurrency, config):
            raise RuntimeError("cannot encode")

        def close(self):
            pass

    monkeypatch.setattr(encoder, "sentence_transformers_path", lambda model, device: Broken())
    published = _published(tmp_path / "results", "encoder")
    config = encoder.EncoderBenchConfig(
        paths=("sentence-transformers",), synthetic=SyntheticConfig(n_users=10, n_items=30, min_interactions=3,
                                                                    max_interactions=5),
        n_texts=8, batch_sizes=(1,), concurrency=(1,), rounds=1, gemm_size=8, gemm_repeats=1,
        work_dir=tmp_path / "work", out_dir=tmp_path / "results")
    with pytest.raises(NothingMeasured, match="sentence-transformers: RuntimeError: cannot encode"):
        encoder.run_encoder_bench(config, progress=lambda *_: None)
    assert published.read_text() == PUBLISHED


# --- ann, ann_lid ------------------------------------------------------------------------------------------


def test_an_empty_embeddings_file_is_named(tmp_path):
    """An empty .npy ended in numpy's 'EOFError: No data left in file' traceback."""
    from lmrec.benchmarks.ann import AnnConfig, load_real_embeddings

    (tmp_path / "empty.npy").write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty.npy: not a .npy array of item embeddings"):
        load_real_embeddings(AnnConfig(embeddings=tmp_path / "empty.npy"))


@pytest.mark.parametrize("argv, message", [
    (["--queries", "0"], "argument --queries: the value must be at least 1, got 0"),
    (["--queries", "-5"], "argument --queries: the value must be at least 1, got -5"),
    (["--out", "{file}/x"], "--out {file}/x/ann-lid.json: {file} is not a folder"),
])
def test_the_lid_grid_refuses_bad_options_before_measuring(argv, message, tmp_path, monkeypatch, capsys):
    """`--queries 0` wrote NaN results over the published ann-lid.json and exited 0."""
    from lmrec.benchmarks import ann_lid

    def measured(**kwargs):
        raise AssertionError("measured")

    monkeypatch.setattr(ann_lid, "measure_lid_grid", measured)
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit) as stopped:
        ann_lid.main([a.format(file=tmp_path / "file") for a in argv])
    assert stopped.value.code == 2
    assert message.format(file=tmp_path / "file") in capsys.readouterr().err


# --- fused_validation --------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv, message", [
    (["{}", '{"nosuch": 1}'], "setting {\"nosuch\": 1}: fused has no setting 'nosuch'"),
    (["notjson"], "setting 'notjson': not JSON"),
    (["[1]"], "setting '[1]': expected a JSON object"),
    (['{"candidates": 0}'], "candidates must be at least 1"),
    (["--steps", "0", "{}"], "argument --steps: the value must be at least 1, got 0"),
    (["--protocol", "nosuch", "{}"], "argument --protocol: invalid choice: 'nosuch'"),
    (["--dataset", "nosuch", "{}"], "argument --dataset: invalid choice: 'nosuch'"),
    (["--baseline", "nosuch", "{}", "{}"], "--baseline nosuch: unknown method 'nosuch'"),
    (["--baseline", "ease", '{"nosuch": 1}', "{}"], "ease has no setting 'nosuch'"),
    (["{}", "--rankers", '{"nosuch": 1}'], "RankerConfig has no setting 'nosuch'"),
    (["{}", "--rankers", "notjson"], "--rankers 'notjson': not JSON"),
])
def test_every_fused_setting_ranker_and_baseline_is_checked_before_the_data_is_read(argv, message, tmp_path,
                                                                                     monkeypatch, capsys):
    """A bad second setting failed with a TypeError traceback after the first one's ~10 minute fit."""
    import lmrec.benchmarks.fused_validation as chooser

    def load_dataset(config):
        raise AssertionError("the data was read")

    monkeypatch.setattr(chooser, "load_dataset", load_dataset)
    with pytest.raises(SystemExit) as stopped:
        chooser.main(["--data-dir", str(tmp_path), *argv])
    assert stopped.value.code == 2
    assert message in capsys.readouterr().err


# --- cold_random -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("content, message", [
    (None, "cannot be read"),
    ("", "not a JSON results file"),
    (b"\x89PNG\r\n\x1a\n\x00\xff", "not a JSON results file"),
    ("[1, 2]", "not a quality suite results file (no list of records"),
    ('{"suite": "ann", "records": [{"size": 10}]}', "the ann suite's results, not the quality suite's"),
    ('{"records": [{"size": 10}]}', "record 1 is not a quality suite record"),
])
def test_cold_random_names_a_file_it_cannot_use(content, message, tmp_path, capsys):
    from lmrec.benchmarks.cold_random import main

    path = tmp_path / "results.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(SystemExit) as stopped:
        main([str(path)])
    assert stopped.value.code == 2
    assert f"error: {path}: {message}" in capsys.readouterr().err


def _cold_random_refused(tmp_path, capsys, data_root) -> str:
    """Run cold_random on one ml-100k cold-items record against `data_root`; the one-line error it exits with."""
    from lmrec.benchmarks.cold_random import main

    record = {"dataset": "ml-100k", "protocol": "cold-items", "method": "fused", "seed": 42,
              "cold_metrics": {"cold_hit@10": 0.5}}
    (tmp_path / "quality.json").write_text(json.dumps({"records": [record]}))
    with pytest.raises(SystemExit) as stopped:
        main([str(tmp_path / "quality.json"), "--data-root", str(data_root)])
    assert stopped.value.code == 2
    return capsys.readouterr().err


def test_cold_random_names_a_data_root_without_the_data_set(tmp_path, capsys):
    err = _cold_random_refused(tmp_path, capsys, tmp_path / "nowhere")
    assert f"error: --data-root {tmp_path / 'nowhere'}: ml-100k: data directory" in err
    assert "--data-dir" not in err and "pass --data-root pointing at the folder that holds ml-100k/" in err


def test_cold_random_gives_no_folder_hint_for_a_bad_file_in_the_right_folder(tmp_path, capsys, ml100k_dir):
    folder = tmp_path / "root" / "ml-100k"
    folder.mkdir(parents=True)
    for name in ("u.genre", "u.item", "u.user", "u.occupation"):
        (folder / name).symlink_to(ml100k_dir / name)  # read in place, never copied
    (folder / "u.data").write_text("")
    err = _cold_random_refused(tmp_path, capsys, tmp_path / "root")
    assert "u.data" in err and "pass --data-root" not in err and "--data-dir" not in err


# --- quality -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv, message", [
    (["--method", "pop", "--param", "fused.nosuch=1"], "--param fused.nosuch: no method of this run reads fused"),
    (["--method", "pop,ease", "--param", "lm-finetuned.steps=3"], "no method of this run reads lm-finetuned"),
    (["--method", "fused-int8", "--param", "fused.nosuch=1"], "fused has no setting 'nosuch'"),
    (["--method", "lm-finetuned", "--param", "lm-finetuned.steps=x"], "lm-finetuned.steps='x': needs"),
])
def test_a_quality_param_no_method_of_the_run_reads_or_the_method_lacks_is_refused(argv, message, tmp_path):
    """`--method pop --param fused.nosuch=1` ran and exited 0; `lmrec evaluate` refuses it."""
    with pytest.raises(CliError, match=message):
        _config("quality", [*argv, "--out", str(tmp_path)])
    config = _config("quality", ["--method", "pop,fused", "--param", "lm-finetuned.steps=3", "--out", str(tmp_path)])
    assert config.finetune == {"steps": 3}  # fused fine-tunes its encoder with them


# --- int8_parity -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv, message", [
    (["--data-dir", "{tmp}/nowhere"], "error: ml-100k: data directory {tmp}/nowhere does not exist"),
    (["--data-dir", "{tmp}", "--name", "../x"], "error: --name '../x': a file name without folders (the files "
                                                "go to --out)"),
])
def test_int8_parity_refuses_bad_options_in_one_line(argv, message, tmp_path, monkeypatch, capsys):
    from lmrec.benchmarks import int8_parity

    monkeypatch.setattr(int8_parity, "measure_recipes", lambda *a, **k: pytest.fail("measured"))
    with pytest.raises(SystemExit) as stopped:
        int8_parity.main([a.format(tmp=tmp_path) for a in argv])
    assert stopped.value.code == 2
    assert message.format(tmp=tmp_path) in capsys.readouterr().err


def test_results_file_check_reads_the_name_and_folder_only():
    from lmrec.benchmarks.cli_checks import result_name

    assert result_name("quality-ml-100k") == "quality-ml-100k"
    assert result_name("a..b") == "a..b"  # dots inside a name are fine
