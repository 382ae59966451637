"""argparse types that refuse a bad number at once, with a message naming what was wrong.

A benchmark or build that starts servers or loads data before it notices `--duration 0` or
`--queries 0` wastes minutes and then fails with a traceback; these types stop it while parsing.
"""

from __future__ import annotations

import argparse
import math


def int_in_range(low: int, high: int | None, what: str):
    """A whole number from `low` to `high` (no upper limit when None)."""
    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be an integer, got {value!r}") from None
        if number < low or (high is not None and number > high):
            bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"{what} must be {bounds}, got {number}")
        return number
    return parse


def float_in_range(low: float, high: float | None, what: str, *, low_inclusive: bool = False):
    """A finite number above `low` (or at least it, with `low_inclusive`), up to `high`."""
    def parse(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be a number, got {value!r}") from None
        too_low = number < low if low_inclusive else number <= low
        if not math.isfinite(number) or too_low or (high is not None and number > high):
            bounds = (f"{'at least' if low_inclusive else 'above'} {low:g}"
                      + (f" and at most {high:g}" if high is not None else ""))
            raise argparse.ArgumentTypeError(f"{what} must be a finite number {bounds}, got {value!r}")
        return number
    return parse


def finite_number(what: str):
    """Any finite number, negative included (a CSV's ratings may run from -10 to 10): float() also takes
    'nan', which compares False with every number, and 'inf'."""
    def parse(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be a number, got {value!r}") from None
        if not math.isfinite(number):
            raise argparse.ArgumentTypeError(f"{what} must be a finite number, got {value!r}")
        return number
    return parse


positive_int = int_in_range(1, None, "the value")
non_negative_int = int_in_range(0, None, "the value")
positive_float = float_in_range(0.0, None, "the value")
non_negative_float = float_in_range(0.0, None, "the value", low_inclusive=True)
# numpy's legacy generator (which implicit's ALS and BPR seed) takes 32 bits, and refuses more naming no option.
MAX_SEED = 2**32 - 1
seed_value = int_in_range(0, MAX_SEED, "the seed")


def gateway_address(value: str) -> str:
    """host:port with a port from 1 to 65535 (gRPC would silently read '127.0.0.1' as port 443, and
    wrap a port above 65535 around)."""
    host, colon, port = value.rpartition(":")
    if not colon or not host or not (port.isascii() and port.isdigit()) or not 1 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT with a port from 1 to 65535, got {value!r}")
    return value


def utf8_text(value: str) -> str:
    """Command-line text that can be sent: bytes that are not UTF-8 reach Python as surrogate escapes,
    which protobuf refuses later with a message naming no option."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise argparse.ArgumentTypeError(f"not UTF-8 text: {value.encode('utf-8', 'surrogateescape')!r}") from None
    return value
