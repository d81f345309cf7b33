"""Chunked parallel map with ordered, streamed results and a terminal-only progress bar."""

from __future__ import annotations

import sys
from typing import Any, Callable, Iterator, Sequence

from joblib import Parallel, delayed
from tqdm import tqdm


def progress(total: int, desc: str, unit: str = "it") -> tqdm:
    """A tqdm bar on a terminal; silent in logs (DVC captures stage output)."""
    return tqdm(total=total, desc=desc, unit=unit, disable=not sys.stderr.isatty(), leave=False)


def chunks(n: int, size: int) -> list[tuple[int, int]]:
    return [(start, min(start + size, n)) for start in range(0, n, size)]


def map_chunks(fn: Callable[..., Any], tasks: Sequence[tuple], jobs: int) -> Iterator[Any]:
    """``fn(*task)`` for every task, in order, as a generator.

    With ``jobs > 1`` the tasks run in loky worker processes and results stream back in order,
    so the caller can write each one out and memory stays bounded by the chunks in flight.
    """
    if jobs <= 1:
        for task in tasks:
            yield fn(*task)
        return
    yield from Parallel(n_jobs=jobs, return_as="generator", pre_dispatch="2*n_jobs")(
        delayed(fn)(*task) for task in tasks)
