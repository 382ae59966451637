"""Command-line checks the suites share: the results file refused while parsing, before any measurement or
server start, and one-line errors for the suites run as `python -m lmrec.benchmarks.X`.

A suite writes `<--out>/<--name>.{json,md,png}`. A --name with a folder in it would write outside --out (or
over another suite's results), and an --out that cannot be written would only fail after the whole run.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lmrec.cli_client import CliError


class NothingMeasured(CliError):
    """A run that measured nothing: no results file is written (a published one stays as it was)."""


def result_name(name: str, option: str = "--name", out_option: str = "--out") -> str:
    """`name` when it is a plain file stem: no folder in it, not hidden, not '..'."""
    separators = [sep for sep in (os.sep, os.altsep, "/") if sep]
    if not name or any(sep in name for sep in separators) or name.startswith("."):
        raise CliError(f"{option} {name!r}: a file name without folders (the files go to {out_option})")
    return name


def check_results_file(out_dir, name: str, *, out_option: str = "--out", name_option: str = "--name") -> Path:
    """`<out_dir>/<name>.json`, refused now (naming the option) when the name has a folder in it or the file
    cannot be written there."""
    from lmrec.cli import writable_file

    path = Path(out_dir) / f"{result_name(name, name_option, out_option)}.json"
    writable_file(out_option, path)
    return path


@contextmanager
def parser_errors(parser: argparse.ArgumentParser, *errors: type[BaseException]) -> Iterator[None]:
    """A CliError (or one of `errors`) raised inside becomes `parser.error`: the usage and one line naming
    the bad value, exit status 2, instead of a traceback."""
    try:
        yield
    except (CliError, *errors) as error:
        parser.error(str(error))
