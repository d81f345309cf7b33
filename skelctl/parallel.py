"""Chunked parallel map with ordered, streamed results and a terminal-only progress bar."""

from __future__ import annotations

import sys
from collections import deque
from typing import Any, Callable, Iterator, Sequence

from joblib.externals.loky import get_reusable_executor
from tqdm import tqdm


def progress(total: int, desc: str, unit: str = "it") -> tqdm:
    """A tqdm bar on a terminal; silent in logs (DVC captures stage output)."""
    return tqdm(total=total, desc=desc, unit=unit, disable=not sys.stderr.isatty(), leave=False)


def chunks(n: int, size: int) -> list[tuple[int, int]]:
    return [(start, min(start + size, n)) for start in range(0, n, size)]


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
    executor = get_reusable_executor(max_workers=jobs)
    pending: deque = deque()
    todo = iter(tasks)
    for task in todo:
        pending.append(executor.submit(fn, *task))
        if len(pending) == 2 * jobs:
            break
    try:
        while pending:
            result = pending.popleft().result()
            for task in todo:
                pending.append(executor.submit(fn, *task))
                break
            yield result
    finally:
        for future in pending:
            future.cancel()
