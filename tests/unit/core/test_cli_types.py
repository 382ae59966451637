"""Numbers and addresses are refused while parsing, with a message naming the option and the value, before
a benchmark starts servers or loads data (a review found `bench ann --m 0` crashing hnswlib, `bench
triton --percentile 150` failing after Triton was up, and `--address 127.0.0.1` silently meaning port 443)."""

from __future__ import annotations

import argparse

import pytest

from lmrec.cli_types import float_in_range, gateway_address, int_in_range, positive_float, positive_int


@pytest.mark.parametrize("parse, text", [
    (positive_int, "0"), (positive_int, "-1"), (positive_int, "2.5"), (positive_int, "abc"),
    (positive_float, "0"), (positive_float, "nan"), (positive_float, "inf"), (positive_float, "-1"),
    (int_in_range(1, 99, "--percentile"), "150"),
    (float_in_range(0.0, None, "--max-gb", low_inclusive=True), "-0.5"),
])
def test_bad_numbers_are_refused_naming_the_value(parse, text):
    with pytest.raises(argparse.ArgumentTypeError, match=repr(text) if not text.lstrip("-").isdigit() else text):
        parse(text)


def test_good_numbers_pass():
    assert positive_int("3") == 3 and positive_float("0.5") == 0.5
    assert float_in_range(0.0, None, "x", low_inclusive=True)("0") == 0.0


@pytest.mark.parametrize("address", ["127.0.0.1", ":50051", "127.0.0.1:99999", "127.0.0.1:0", "host:port",
                                     "127.0.0.1:\u00b2", "127.0.0.1:\u0661\u0662"])
def test_gateway_addresses_need_a_host_and_a_real_port(address):
    with pytest.raises(argparse.ArgumentTypeError, match="HOST:PORT"):
        gateway_address(address)


def test_gateway_addresses_that_work():
    assert gateway_address("localhost:50051") == "localhost:50051"
    assert gateway_address("[::1]:50051") == "[::1]:50051"


@pytest.mark.parametrize("module, argv", [
    ("ann", ["--m", "0"]), ("ann", ["--queries", "0"]), ("ann", ["--repeats", "0"]),
    ("encoder", ["--n-texts", "0"]), ("encoder", ["--max-seconds", "0"]), ("encoder", ["--gemm-size", "0"]),
    ("triton_perf", ["--percentile", "150"]), ("triton_perf", ["--measurement-ms", "0"]),
    ("triton_perf", ["--stability-pct", "-1"]), ("triton_perf", ["--max-trials", "0"]),
    ("gateway_load", ["--duration", "0"]), ("gateway_load", ["-k", "0"]),
    ("gateway_load", ["--candidate-cache-users", "-1"]), ("gateway_load", ["--cached-users", "-1"]),
])
def test_benchmark_options_refuse_values_that_cannot_run(module, argv, capsys):
    import importlib

    parser = argparse.ArgumentParser()
    importlib.import_module(f"lmrec.benchmarks.{module}").add_arguments(parser)
    with pytest.raises(SystemExit) as stopped:
        parser.parse_args(argv)
    assert stopped.value.code == 2 and f"argument {argv[0]}" in capsys.readouterr().err


def test_no_gateway_at_the_address_says_how_to_start_one(capsys):
    from lmrec.cli import main

    assert main(["recommend", "--user", "1", "--address", "127.0.0.1:9", "--timeout", "2"]) == 2
    error = capsys.readouterr().err
    assert "no gateway answers at 127.0.0.1:9" in error and "lmrec serve" in error
