"""Chunked parallel map with ordered, streamed results and a terminal-only progress bar."""

from __future__ import annotations

import signal
import sys
from collections import deque
from multiprocessing import resource_tracker
from typing import Any, Callable, Iterator, Sequence

from joblib.externals.loky import get_reusable_executor
from tqdm import tqdm

from skelctl.interrupts import SIGNALS, signals_held


def progress(total: int, desc: str, unit: str = "it") -> tqdm:
    """A tqdm bar on a terminal; silent in logs (DVC captures stage output)."""
    return tqdm(total=total, desc=desc, unit=unit, disable=not sys.stderr.isatty(), leave=False)


def chunks(n: int, size: int) -> list[tuple[int, int]]:
    return [(start, min(start + size, n)) for start in range(0, n, size)]


def leave_signals_to_parent() -> None:
    """In a worker: ignore SIGINT and SIGTERM, which Ctrl-C (and a scheduler signalling the
    process group) sends to the workers too; the parent unwinds and ends them (loky kills its
    workers with SIGKILL), so that an interrupt ends in the parent's one line, not in a worker's
    traceback or a broken pool."""
    for signum in SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


def map_chunks(fn: Callable[..., Any], tasks: Sequence[tuple], jobs: int) -> Iterator[Any]:
    """``fn(*task)`` for every task, in order, as a generator.

    With ``jobs > 1`` the tasks run in (reused) loky worker processes. At most ``2 * jobs`` tasks
    are in flight: a new one is submitted only when the caller takes a result, so a slow consumer
    (the process writing the output) holds back the workers instead of piling results up in
    memory, and memory stays flat whatever the number of tasks.
    """
    if jobs <= 1:
        for task in tasks:
            yield fn(*task)
        return
    # the standard library's resource tracker, started for the first worker, unblocks SIGINT
    # and SIGTERM as it starts (undoing signals_held): start it before
    resource_tracker.ensure_running()
    with signals_held():
        executor = get_reusable_executor(max_workers=jobs, initializer=leave_signals_to_parent)

    def submit(task: tuple) -> Any:
        with signals_held():  # a submit starts workers when there are fewer than ``jobs``
            return executor.submit(fn, *task)

    pending: deque = deque()
    todo = iter(tasks)
    try:
        for task in todo:
            pending.append(submit(task))
            if len(pending) == 2 * jobs:
                break
        while pending:
            result = pending.popleft().result()
            for task in todo:
                pending.append(submit(task))
                break
            yield result
    finally:
        for future in pending:
            future.cancel()
        if pending:  # stopped early (an error, an interrupt): end the workers' tasks now too
            executor.shutdown(wait=False, kill_workers=True)
