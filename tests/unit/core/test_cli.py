"""`lmrec` CLI: user errors are one line on stderr, exit code 2, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmrec.cli import main


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
