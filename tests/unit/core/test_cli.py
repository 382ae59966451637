"""`lmrec` CLI: user errors are one line on stderr, exit code 2, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmrec.cli import main
from lmrec.server.triton_launcher import free_port


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    return code, captured.err


def assert_one_line_error(code: int, err: str, verb: str) -> str:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"lmrec {verb}: error: ")
    return lines[0]


def _ml100k_folder(root: Path, *, data_rows: str, with_item: bool = True) -> Path:
    folder = root / "ml-100k-bad"
    folder.mkdir()
    (folder / "u.genre").write_text("unknown|0\nAction|1\nComedy|2\n")
    if with_item:
        (folder / "u.item").write_text("1|Toy Story (1995)|01-Jan-1995||http://x|0|0|1\n"
                                       "2|Heat (1995)|01-Jan-1995||http://y|0|1|0\n")
    (folder / "u.data").write_text(data_rows)
    return folder


def test_dataset_without_data_dir(capsys, tmp_path):
    code, err = run_cli(capsys, "build", "--dataset", "ml-100k", "--build-dir", str(tmp_path / "b"))
    line = assert_one_line_error(code, err, "build")
    assert "--data-dir" in line and "ml-100k" in line
    assert not (tmp_path / "b").exists()


def test_nonexistent_data_dir(capsys):
    code, err = run_cli(capsys, "evaluate", "--dataset", "ml-100k", "--data-dir", "/nonexistent", "--method", "pop")
    line = assert_one_line_error(code, err, "evaluate")
    assert "/nonexistent" in line and "not a directory" in line


def test_unknown_evaluation_method(capsys):
    code, err = run_cli(capsys, "evaluate", "--method", "nosuch")
    line = assert_one_line_error(code, err, "evaluate")
    assert "'nosuch'" in line and "pop" in line  # names the known ones


def test_ml100k_folder_without_u_item(capsys, tmp_path):
    folder = _ml100k_folder(tmp_path, data_rows="1\t1\t5\t881250949\n", with_item=False)
    code, err = run_cli(capsys, "evaluate", "--dataset", "ml-100k", "--data-dir", str(folder), "--method", "pop")
    line = assert_one_line_error(code, err, "evaluate")
    assert "u.item" in line and str(folder) in line


def test_ml100k_empty_u_data(capsys, tmp_path):
    folder = _ml100k_folder(tmp_path, data_rows="\n")
    code, err = run_cli(capsys, "evaluate", "--dataset", "ml-100k", "--data-dir", str(folder), "--method", "pop")
    line = assert_one_line_error(code, err, "evaluate")
    assert str(folder / "u.data") in line and "empty" in line


BAD_FIELD_COUNTS = "1\t1\t5\n2\t2\n"  # u.data rows need 4 tab-separated fields


def test_ml100k_u_data_with_wrong_field_counts_is_refused_naming_the_file(capsys, tmp_path):
    folder = _ml100k_folder(tmp_path, data_rows=BAD_FIELD_COUNTS)
    code, err = run_cli(capsys, "evaluate", "--dataset", "ml-100k", "--data-dir", str(folder), "--method", "pop")
    assert code == 2
    assert err.startswith("lmrec evaluate: error: ")
    assert "u.data" in err and "expected 4 fields" in err


def test_ml100k_u_data_with_wrong_field_counts_is_a_one_line_error(capsys, tmp_path):
    folder = _ml100k_folder(tmp_path, data_rows=BAD_FIELD_COUNTS)
    code, err = run_cli(capsys, "evaluate", "--dataset", "ml-100k", "--data-dir", str(folder), "--method", "pop")
    line = assert_one_line_error(code, err, "evaluate")
    assert "u.data" in line


def test_a_recorded_command_line_can_be_pasted_back_into_a_shell(monkeypatch):
    import shlex

    from lmrec.cli import command_line

    monkeypatch.setattr("lmrec.cli._MAIN_ARGV", None)  # as when started from the shell
    monkeypatch.setattr("sys.argv", ["/venv/bin/lmrec", "bench", "quality", "--csv", "delimiter=;", "--name", "my run"])
    line = command_line()
    assert line == "lmrec bench quality --csv 'delimiter=;' --name 'my run'"
    assert shlex.split(line)[1:] == ["bench", "quality", "--csv", "delimiter=;", "--name", "my run"]


def test_evaluate_trains_the_fused_methods_for_the_protocol_unless_told_otherwise():
    from lmrec.cli import _evaluation_params

    params = _evaluation_params(["fused.candidates=25"], ("ease", "fused", "fused-int8"), "cold-items")
    assert params["fused"] == {"holdout": "random", "cold_share": 0.1, "candidates": 25}
    assert params["fused-int8"] == params["fused"]  # the same fit, served with the int8 encoder (as in bench quality)
    assert "ease" not in params  # baselines keep their tuning grid
    assert _evaluation_params(["fused.holdout=random"], ("fused",), "temporal-loo")["fused"] == {"holdout": "random"}


def test_build_options_reach_the_build_config(tmp_path):
    from lmrec.cli import _build_config, build_parser

    def config(*extra):
        return _build_config(build_parser().parse_args(["build", "--build-dir", str(tmp_path / "out"), *extra]))

    plain = config("--fused")
    assert plain.fused and not plain.for_new_items
    growing = config("--fused", "--for-new-items", "--finetune-steps", "7")
    assert growing.fused and growing.for_new_items and growing.finetune == {"steps": 7}


def test_main_records_the_arguments_it_was_given(monkeypatch):
    from lmrec import cli

    monkeypatch.setattr("sys.argv", ["pytest", "-q"])
    monkeypatch.setattr(cli, "_MAIN_ARGV", None)
    assert cli.invoked_command() is None  # a suite called from Python has no command to record
    assert cli.main(["evaluate", "--method", "no-such-method"]) == 2
    assert cli.command_line() == cli.invoked_command() == "lmrec evaluate --method no-such-method"


def test_a_csv_layout_for_a_data_set_that_is_not_csv_is_refused(capsys, tmp_path):
    code, err = run_cli(capsys, "evaluate", "--dataset", "ml-100k", "--data-dir", str(tmp_path), "--csv", "user=uid",
                        "--method", "pop")
    line = assert_one_line_error(code, err, "evaluate")
    assert "--csv" in line and "--dataset ml-100k has its own files" in line


def test_a_command_run_as_python_dash_m_is_recorded_as_such(monkeypatch):
    from lmrec import cli

    monkeypatch.setattr(cli, "_MAIN_ARGV", None)
    monkeypatch.setattr("sys.argv", ["/somewhere/lmrec/cli.py", "bench", "encoder", "--device", "cuda"])
    assert cli.invoked_command() == "python -m lmrec.cli bench encoder --device cuda"
    monkeypatch.setattr("sys.argv", ["/somewhere/lmrec/cli.py"])
    assert cli.invoked_command() is None


def test_a_gpu_build_of_the_int8_encoder_is_refused_by_name(capsys, tmp_path):
    code, err = run_cli(capsys, "build", "--dataset", "synthetic", "--build-dir", str(tmp_path / "b"),
                        "--device", "cuda", "--precision", "int8")
    line = assert_one_line_error(code, err, "build")
    assert "--device cuda serves the fp32 encoder (--precision fp32)" in line
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("verb, extra", [("gateway", ("--triton-url", "127.0.0.1:1")), ("serve", ())])
def test_a_negative_candidate_cache_size_is_refused_by_name_before_anything_starts(capsys, tmp_path, verb, extra):
    code, err = run_cli(capsys, verb, "--build-dir", str(tmp_path), *extra, "--candidate-cache-users", "-3")
    line = assert_one_line_error(code, err, verb)
    assert "candidate_cache_users" in line and "-3" in line


@pytest.mark.parametrize("flag, value", [("--port", "70000"), ("--metrics-port", "-1"), ("--port", "http")])
def test_a_port_outside_0_to_65535_is_refused_by_name(capsys, tmp_path, flag, value):
    with pytest.raises(SystemExit) as exited:
        main(["gateway", "--build-dir", str(tmp_path), "--triton-url", "127.0.0.1:1", flag, value])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert flag in err and value in err and "port number" in err


@pytest.mark.parametrize("argv, message", [
    (("--data-dir", "."), "--data-dir . needs --dataset"),
    (("--dataset", "csv", "--data-dir", ".", "--csv", "user=none"), "--csv user=none: user is required"),
    (("--dataset", "csv", "--data-dir", ".", "--csv", "delimiter="), "--csv delimiter='': expected one character"),
    (("--dataset", "csv", "--data-dir", ".", "--csv", "encoding=utf9"), "--csv encoding='utf9': not a text encoding"),
    # A file named '' is the data folder itself; an empty separator raised inside str.split. (An empty
    # column name stays allowed: a header cell can be empty, e.g. the index column pandas writes.)
    (("--dataset", "csv", "--data-dir", ".", "--csv", "interactions_file="),
     "--csv interactions_file='': expected a file name"),
    (("--dataset", "csv", "--data-dir", ".", "--csv", "items_file= "), "(items_file=none clears it)"),
    (("--dataset", "csv", "--data-dir", ".", "--csv", "category_separator="),
     "--csv category_separator='': expected the text between categories"),
])
def test_data_options_that_would_be_ignored_or_fail_later_are_refused_by_name(capsys, argv, message):
    code, err = run_cli(capsys, "evaluate", *argv, "--method", "pop")
    assert message in assert_one_line_error(code, err, "evaluate")


def test_the_csv_help_lists_every_key(capsys):
    from dataclasses import fields

    from lmrec.export.loaders import CsvColumns

    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert all(f.name in text for f in fields(CsvColumns))


def test_an_output_path_that_cannot_be_written_is_refused_before_measuring(capsys, tmp_path):
    code, err = run_cli(capsys, "evaluate", "--method", "pop", "--json", str(tmp_path))
    assert "is a directory" in assert_one_line_error(code, err, "evaluate")
    code, err = run_cli(capsys, "bench", "quality", "--smoke-users", "40", "--name", "sub/run", "--out", str(tmp_path))
    assert "--name 'sub/run'" in assert_one_line_error(code, err, "bench")


def test_fused_int8_in_lmrec_evaluate_fits_the_same_settings_as_fused():
    from lmrec.cli import _evaluation_params

    params = _evaluation_params(["fused.candidates=25"], ("fused", "fused-int8"), "random-811")
    assert params["fused"]["candidates"] == 25 and params["fused-int8"] == params["fused"]


@pytest.mark.parametrize("value", ["0", "51", "many"])
def test_profile_tags_outside_1_to_50_are_refused_by_name(capsys, value):
    with pytest.raises(SystemExit) as exited:
        main(["profile", "--user", "u1", "--tags", value])
    assert exited.value.code == 2 and "--tags" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["-1", str(2**32)])
def test_a_seed_numpy_cannot_take_is_refused_by_name(capsys, value):
    """numpy refused it deep inside ALS's fit ("expected non-negative integer", "Seed must be between 0 and
    2**32 - 1"), naming no option."""
    with pytest.raises(SystemExit) as exited:
        main(["evaluate", "--method", "als", "--seed", value])
    assert exited.value.code == 2
    assert f"argument --seed: the seed must be between 0 and 4294967295, got {value}" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["build", "--build-dir", "{file}"], "is a file, not a folder"),
    (["build", "--build-dir", "{file}/sub"], "is a file, not a folder"),
    (["build", "--build-dir", "{dir}/out", "--finetune-steps", "5"], "--finetune-steps needs --fused"),
    (["build", "--build-dir", "{dir}/out", "--for-new-items"], "--for-new-items needs --fused"),
    (["evaluate", "--method", "pop", "--dataset", "csv", "--data-dir", "{dir}", "--csv", "rating_range=5,1"],
     "rating_range='5,1': LOW must be below HIGH"),
])
def test_build_and_data_options_that_cannot_work_are_refused_before_loading(capsys, tmp_path, argv, message):
    """A review found these running a full build (or dropping every row) instead of saying so."""
    afile = tmp_path / "afile"
    afile.write_text("")
    argv = [a.format(file=afile, dir=tmp_path) for a in argv]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_encoder_bench_names_a_bad_batch_size_list():
    import argparse

    from lmrec.benchmarks import encoder
    from lmrec.cli_client import CliError

    parser = argparse.ArgumentParser()
    encoder.add_arguments(parser)
    with pytest.raises(CliError, match=r"--batch-sizes 'a' and --concurrency '.*' need comma-separated"):
        encoder.config_from_args(parser.parse_args(["--batch-sizes", "a"]))


# -- `lmrec serve` / `lmrec gateway`: bad values refused by name before Triton (or the bundle load) starts --

@pytest.fixture
def root_logging_kept(monkeypatch):
    """`lmrec gateway` replaces the root logger's handlers (pytest's among them): put them back."""
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    monkeypatch.setattr("lmrec.server.metrics.configure_logging", lambda *a, **k: None)
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


@pytest.fixture
def no_triton(monkeypatch, root_logging_kept):
    """`lmrec serve` fails the test if it gets as far as starting Triton (and leaves the root logger as it was:
    `lmrec serve` sets up its JSON lines before it starts anything)."""
    started = []

    def refuse(*args, **kwargs):
        started.append(args)
        raise AssertionError("Triton was started before the bad value was refused")

    monkeypatch.setattr("lmrec.server.serve.TritonProcess", refuse)
    return started


def _build_with_bundle(root: Path, version: int = 1) -> Path:
    """What complete_versions() reads: bundles/<N>/manifest.json."""
    (root / "bundles" / str(version)).mkdir(parents=True)
    (root / "bundles" / str(version) / "manifest.json").write_text("{}")
    return root


def test_a_triton_url_without_a_port_is_refused_by_name(capsys, tmp_path):
    # gRPC reads '127.0.0.1' as 127.0.0.1:443 and the gateway then fails to reach it.
    with pytest.raises(SystemExit) as exited:
        main(["gateway", "--build-dir", str(tmp_path), "--triton-url", "127.0.0.1", "--port", "0"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "--triton-url" in err and "HOST:PORT" in err and "'127.0.0.1'" in err


def test_a_triton_url_where_no_triton_answers_is_one_line(capsys, tmp_path, monkeypatch, root_logging_kept):
    monkeypatch.setattr("lmrec.server.gateway.load_bundle", lambda *a, **k: object())  # no bundle to build here
    code, err = run_cli(capsys, "gateway", "--build-dir", str(tmp_path), "--triton-url", "127.0.0.1:1",
                        "--port", "0", "--state-dir", str(tmp_path / "state"))
    line = assert_one_line_error(code, err, "gateway")
    assert "--triton-url 127.0.0.1:1: no Triton answers at 127.0.0.1:1" in line
    assert not (tmp_path / "state").exists()  # nothing was opened for a gateway that could not start


def test_model_control_and_event_store_errors_are_the_users_to_fix():
    from lmrec.errors import user_facing_errors
    from lmrec.server.event_store import EventStoreError
    from lmrec.server.model_control import ModelControlError

    assert issubclass(ModelControlError, user_facing_errors()) and issubclass(EventStoreError, user_facing_errors())


@pytest.mark.parametrize("verb", ["serve", "gateway"])
@pytest.mark.parametrize("below", [False, True])
def test_a_state_dir_that_is_a_file_is_refused_by_name_before_anything_starts(capsys, tmp_path, no_triton, verb,
                                                                              below, root_logging_kept):
    build = _build_with_bundle(tmp_path / "build")
    (tmp_path / "file").write_text("not a folder")
    state_dir = tmp_path / "file" / "sub" if below else tmp_path / "file"
    extra = ("--triton-url", "127.0.0.1:1") if verb == "gateway" else ()
    code, err = run_cli(capsys, verb, "--build-dir", str(build), *extra, "--port", "0", "--state-dir", str(state_dir))
    line = assert_one_line_error(code, err, verb)
    assert f"--state-dir {state_dir}" in line and "must be a folder, or not exist yet" in line
    assert not no_triton


def test_serve_refuses_a_bundle_version_that_does_not_exist_before_triton_starts(capsys, tmp_path, no_triton):
    build = _build_with_bundle(tmp_path)
    code, err = run_cli(capsys, "serve", "--build-dir", str(build), "--port", "0", "--bundle-version", "7")
    line = assert_one_line_error(code, err, "serve")
    assert "--bundle-version 7" in line and "complete bundles: 1" in line
    assert not no_triton


def test_serve_refuses_a_build_without_a_bundle_before_triton_starts(capsys, tmp_path, no_triton):
    code, err = run_cli(capsys, "serve", "--build-dir", str(tmp_path), "--port", "0")
    assert f"--build-dir {tmp_path}" in assert_one_line_error(code, err, "serve")
    assert not no_triton


def test_serve_refuses_an_events_file_that_is_not_an_event_store_before_triton_starts(capsys, tmp_path, no_triton):
    build = _build_with_bundle(tmp_path / "build")
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "events.sqlite3").write_text("not a database, but a page of text " * 200)
    code, err = run_cli(capsys, "serve", "--build-dir", str(build), "--port", "0", "--state-dir", str(tmp_path / "state"))
    assert "is not a usable SQLite event store" in assert_one_line_error(code, err, "serve")
    assert not no_triton


@pytest.mark.parametrize("verb", ["serve", "gateway"])
@pytest.mark.parametrize("flag", ["--port", "--metrics-port"])
def test_a_port_in_use_is_refused_by_name_before_anything_starts(capsys, tmp_path, no_triton, verb, flag,
                                                                 monkeypatch, root_logging_kept, busy_port):
    def no_bundle_load(*args, **kwargs):
        raise AssertionError("the bundle was loaded before the busy port was refused")

    monkeypatch.setattr("lmrec.server.gateway.load_bundle", no_bundle_load)
    build = _build_with_bundle(tmp_path)
    busy = str(busy_port)
    ports = ("--port", busy) if flag == "--port" else ("--port", "0", "--metrics-port", busy)
    extra = ("--triton-url", "127.0.0.1:1") if verb == "gateway" else ()
    code, err = run_cli(capsys, verb, "--build-dir", str(build), *extra, *ports,
                        "--state-dir", str(tmp_path / "state"))
    line = assert_one_line_error(code, err, verb)
    assert f"{flag} {busy}" in line and "in use" in line
    assert not no_triton


def test_the_same_port_for_grpc_and_metrics_is_refused_by_name(capsys, tmp_path, no_triton):
    build = _build_with_bundle(tmp_path)
    port = str(free_port())
    code, err = run_cli(capsys, "serve", "--build-dir", str(build), "--port", port, "--metrics-port", port)
    assert f"--metrics-port {port} is the gateway's --port too" in assert_one_line_error(code, err, "serve")
    assert not no_triton


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN"])
def test_an_implicit_threshold_that_is_not_a_finite_number_is_refused_by_name(capsys, value):
    # float('nan') compares False with every rating: the filter was silently off.
    with pytest.raises(SystemExit) as exited:
        main(["evaluate", "--method", "pop", f"--implicit-threshold={value}"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "--implicit-threshold" in err and "finite number" in err and repr(value) in err


def test_a_negative_implicit_threshold_stays_allowed():
    from lmrec.cli import build_parser

    # A generic CSV's ratings may be negative (rating_range=-10,10).
    args = build_parser().parse_args(["evaluate", "--method", "pop", "--implicit-threshold", "-2.5"])
    assert args.implicit_threshold == -2.5


@pytest.mark.parametrize("extra, answers, prepare", [((), True, True), (("--no-answer-cache",), False, True),
                                                     (("--no-prepare-during-encode",), True, False)])
def test_the_serving_options_become_the_serving_config(extra, answers, prepare):
    import argparse

    from lmrec.cli import _add_serving_arguments, _serving_config

    parser = argparse.ArgumentParser()
    _add_serving_arguments(parser)
    config = _serving_config(parser.parse_args(["--candidate-cache-users", "7", *extra]))
    assert config.cache_answers is answers and config.candidate_cache_users == 7 and config.cache_user_vectors
    assert config.prepare_during_encode is prepare


_PRINTS_A_LOT = """
import argparse, sys
import lmrec.cli as cli

def run(args):
    if args.mode == "elsewhere":
        raise BrokenPipeError(32, "Broken pipe")  # e.g. a subprocess's pipe, with stdout still read
    if args.mode == "short":  # what `lmrec status` prints: it stays in the buffer until the end
        sys.stdin.readline()  # the reader has gone by now
        print("bundle 1\\ncatalogue 1,682 items")
        return 0
    for n in range(200_000):
        print("line", n)
    return 0

argparse.ArgumentParser.parse_args = lambda self, argv=None, namespace=None: argparse.Namespace(
    verbose=False, verb="status", run=run, mode=sys.argv[1] if len(sys.argv) > 1 else "long")
sys.exit(cli.main([]))
"""


def test_output_piped_into_a_reader_that_stops_early_ends_quietly():
    """`lmrec status | head -3` printed 'error: [Errno 32] Broken pipe' and exited 2 (newcomer walkthrough)."""
    import subprocess
    import sys

    import os

    buffered = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # as in a plain shell
    process = subprocess.Popen([sys.executable, "-c", _PRINTS_A_LOT], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env=buffered)
    assert process.stdout.readline() == b"line 0\n"
    process.stdout.close()  # what head does once it has its lines
    assert process.wait(timeout=60) == 141  # 128 + SIGPIPE, as a shell reports `yes | head -1`
    assert process.stderr.read() == b""
    short = subprocess.Popen([sys.executable, "-c", _PRINTS_A_LOT, "short"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=buffered)
    short.stdout.close()  # the reader is gone before the command prints (review 30: it failed at exit)
    short.stdin.write(b"go\n")
    short.stdin.close()
    assert short.wait(timeout=60) == 141 and short.stderr.read() == b""
    elsewhere = subprocess.run([sys.executable, "-c", _PRINTS_A_LOT, "elsewhere"], capture_output=True, timeout=60,
                               env=buffered)
    assert elsewhere.returncode == 2 and b"lmrec status: error: [Errno 32] Broken pipe" in elsewhere.stderr
