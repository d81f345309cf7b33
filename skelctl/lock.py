"""One writer per output: an exclusive lock beside a store or a run folder while it is written.

The lock is ``.<name>.lock`` next to the output (outside it, so that DVC's hash of the output
never sees it), held with ``flock``: the kernel releases it when its process ends, however it
ends. The file records the holder (pid, host, start time) for the message a second writer gets;
a file left by a process that died without removing it holds no lock and is taken over with a
warning. (``flock`` on a network file system may not lock across hosts.)
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from skelctl.interrupts import signals_held


class LockError(RuntimeError):
    """Another process is writing the same output; the message names it."""


def print_warning(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def lock_path(output: Path) -> Path:
    output = Path(output)
    return output.with_name(f".{output.name}.lock")


def describe(holder: dict[str, Any]) -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
    return f"pid {holder.get('pid', '?')} on {holder.get('host', '?')} (started {started})"


def read_holder(fd: int) -> dict[str, Any]:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 4096).decode(errors="replace")
    try:
        holder = json.loads(text)
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}


@contextlib.contextmanager
def exclusive(output: Path, warn: Callable[[str], None] = print_warning) -> Iterator[None]:
    """Hold the lock of ``output`` (a file or folder path) for the block; raise
    :class:`LockError` naming the holder when another process holds it."""
    path = lock_path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = None
    try:
        # SIGINT and SIGTERM wait while the lock is taken: an interrupt between creating the
        # file and holding it would leave a lock file behind; one that arrives meanwhile is
        # raised at the end of this block, where the finally below releases the lock
        with signals_held():
            fd = acquire(path, output, warn)
        yield
    finally:
        if fd is not None:
            path.unlink(missing_ok=True)  # before the unlock: a waiter then finds a new file
            os.close(fd)


def acquire(path: Path, output: Path, warn: Callable[[str], None]) -> int:
    """Open and lock ``path`` (the lock file of ``output``), recording this process as its
    holder; the open descriptor."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = read_holder(fd)
            os.close(fd)
            raise LockError(f"{output}: being written by another skelctl process, "
                            f"{describe(holder)}; wait for it to finish or stop it "
                            f"(lock file {path})") from None
        try:  # the holder we waited for may have removed the file: lock the current one
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    stale = read_holder(fd)
    if stale:
        warn(f"{output}: taking over the lock of {describe(stale)}, which ended without "
             f"releasing it")
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                             "started": time.time()}).encode())
    return fd
