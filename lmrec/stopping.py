"""A command stopped by SIGTERM (`timeout`, a CI job's cancel) must still undo what it started: a suite
stops its servers, a build removes its half-written version."""

from __future__ import annotations

import contextlib
import signal
import threading


@contextlib.contextmanager
def sigterm_as_exit():
    """SIGTERM raises SystemExit while the block runs, so the suites' `finally`s stop Triton, the gateways
    and the peer servers (they run in sessions of their own and would outlive a plainly killed benchmark),
    and a build's clean-up runs.
    Outside the main thread, where Python cannot install a handler, it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
