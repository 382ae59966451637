"""`lmrec bench` and `lmrec build` turn SIGTERM into SystemExit, so a suite's `finally` stops the servers it
started (a review found infinity-emb peers left running after `timeout` stopped the encoder suite), and a
build removes its half-written version."""

from __future__ import annotations

import os
import signal
import time

import pytest

from lmrec.stopping import sigterm_as_exit


def test_sigterm_runs_the_finally_blocks_and_restores_the_handler():
    before = signal.getsignal(signal.SIGTERM)
    cleaned = []
    with pytest.raises(SystemExit) as stopped:
        with sigterm_as_exit():
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)  # the handler raises here at once
            finally:
                cleaned.append(True)
    assert stopped.value.code == 128 + signal.SIGTERM and cleaned == [True]
    assert signal.getsignal(signal.SIGTERM) == before


def test_every_bench_suite_runs_inside_it(monkeypatch):
    """cmd_bench wraps the runner: a SIGTERM during any suite becomes SystemExit."""
    import lmrec.cli as cli

    seen = []

    class Suite:
        @staticmethod
        def add_arguments(parser):
            pass

        @staticmethod
        def config_from_args(args):
            return type("Config", (), {"out_dir": "/tmp", "name": "x"})()

        @staticmethod
        def run(config, progress):
            seen.append(signal.getsignal(signal.SIGTERM))
            return {}

    monkeypatch.setitem(cli.BENCH_SUITES, "fake", ("fake_suite_module", "run"))
    import sys

    monkeypatch.setitem(sys.modules, "fake_suite_module", Suite)
    cli.cmd_bench(type("Args", (), {"suite": "fake", "suite_args": []})())
    assert seen and seen[0] not in (signal.SIG_DFL, signal.SIG_IGN, signal.default_int_handler)


def test_lmrec_build_turns_sigterm_into_an_exit_so_its_clean_up_runs(monkeypatch):
    """Without it a stopped build (timeout, a CI cancel) left its half-written version behind."""
    import os
    import signal

    import lmrec.export.build as build_module
    from lmrec.cli import main

    cleaned = []

    def stopped_build(config, *, progress=print):
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises before this ends
        finally:
            cleaned.append(True)

    monkeypatch.setattr(build_module, "build_bundle", stopped_build)
    with pytest.raises(SystemExit) as exited:
        main(["build", "--build-dir", "unused-build-dir"])
    assert exited.value.code == 128 + signal.SIGTERM and cleaned == [True]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored afterwards
