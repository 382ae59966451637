"""Threads for work that overlaps a Triton call, at the lowest CPU priority.

While Triton encodes an uncached profile, the gateway computes the ranker features that need no profile
vector (`Recommender._prepare_ranker_features`). Triton's encoder already uses both cores of the 2-core
machine, so a thread of equal priority takes most of what it saves from the encode: in one process,
requests of the variants interleaved (performance log, fused item 8), the encode stage grew by 2.1-2.5
ms and a request gained 0.4-1.0 ms; at the lowest priority, the encode grew by 0.5-1.5 ms and a request
gained 1.3-2.0 ms. The scheduler gives the encoder the cores whenever it wants them, and the thread runs
on what it leaves idle. The price: while such a thread holds the interpreter lock and Triton has the
cores, the event loop waits for the lock (about 1 ms of an uncached request's samples, fused item 8).
Where other processes keep the cores busy, a started thread gets little CPU and its request waits for it
(3.2 ms per request beside a quality run, fused item 10): `--no-prepare-during-encode` turns it off.
"""

from __future__ import annotations

import logging
import os
import sys
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger("lmrec.overlap")
LOWEST_PRIORITY = 19  # Linux nice value; a thread's own (setpriority on the calling thread's id)


def _lower_this_threads_priority(niceness: int) -> None:
    if not sys.platform.startswith("linux"):  # elsewhere setpriority(0) renices the whole process
        return
    try:
        os.setpriority(os.PRIO_PROCESS, 0, niceness)  # on Linux: the calling thread's niceness alone
    except OSError as error:  # not permitted (a negative niceness, unprivileged)
        log.warning("overlap threads keep the process's priority (niceness %s refused: %s)", niceness, error)


def low_priority_executor(workers: int = 2, niceness: int = LOWEST_PRIORITY) -> ThreadPoolExecutor:
    """A thread pool whose threads run at `niceness` (the process's other threads keep theirs; on Linux only).

    Work waiting in its queue when the caller needs the result is cancelled and done by the caller
    (`_prepared_half` in recommend.py): under load a low-priority thread may get little CPU, and at most
    `workers` such pieces of work are ever waited for. Work a thread has begun is waited for."""
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lmrec-overlap",
                              initializer=_lower_this_threads_priority, initargs=(niceness,))
