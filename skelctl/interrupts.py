"""SIGINT (Ctrl-C) and SIGTERM end a skelctl process the same way at any moment: the work unwinds
(``finally`` blocks remove partial files and release locks), then one line and exit status 128 +
the signal's number. Standard library only: ``skelctl/__main__.py`` installs the handler before
it imports anything else.

- The handler raises :class:`Interrupted`, a ``BaseException`` but not a ``KeyboardInterrupt``:
  click turns a ``KeyboardInterrupt`` into ``Aborted!`` and exit 1, and under ``python -m``
  CPython kills the process with SIGINT at exit when a bare ``KeyboardInterrupt`` once ended a
  string ``exec`` (a dataclass's generated ``__init__``), even if it was caught.
- While the main thread is in code that an exception must not cut short, the signal waits
  until it is over (it is delivered again every 20 ms): an import (an exception in torch's import
  aborts the process: ``terminate called after throwing an instance of
  'pybind11::error_already_set' ... KeyboardInterrupt``), and the worker pool's own code (a
  half-started worker leaves loky's manager thread waiting for it, and the process hangs at
  exit).
- It is raised once; a second signal while the work unwinds is ignored, so that cleanup
  completes. An ``Interrupted`` swallowed where exceptions are ignored (a ``__del__``, a weakref
  callback) is raised again.
- The handler replaces an inherited "ignore SIGINT": a background command of a non-interactive
  shell (``skelctl ... &`` in a script) starts with SIGINT ignored, and Python keeps it so.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from types import FrameType
from typing import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)
RETRY_S = 0.02  # how often a signal that has to wait looks again
# where the signal waits: importlib's frames, and loky's (joblib's process pool)
UNINTERRUPTIBLE = ("<frozen importlib._bootstrap", f"{os.sep}loky{os.sep}")

_raised = False


class Interrupted(BaseException):
    """SIGINT or SIGTERM, raised in the main thread; ``signum`` says which."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back in this thread for the block; one that arrives meanwhile is
    delivered when it ends. Around work an exception must not split: taking a lock (its file
    created but not yet held), starting worker processes (a worker inherits the block, so that
    a signal to the process group during its start-up waits and is then dropped, see
    :func:`skelctl.parallel.leave_signals_to_parent`)."""
    held = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def install() -> None:
    """Handle SIGINT and SIGTERM from now on (call it in the main thread)."""
    global _raised
    _raised = False
    for signum in SIGNALS:
        signal.signal(signum, _handle)
    sys.unraisablehook = _unraisable


def ignore() -> None:
    """Ignore both signals from now on: the process is ending with its own status."""
    for signum in SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


def _handle(signum: int, frame: FrameType | None) -> None:
    global _raised
    if _raised:
        return
    if _uninterruptible(frame):
        _again(signum)
        return
    _raised = True
    raise Interrupted(signum)


def _again(signum: int) -> None:
    """Deliver ``signum`` again shortly, from a thread (the handler then runs in the main
    thread at its next Python instruction)."""
    timer = threading.Timer(RETRY_S, os.kill, (os.getpid(), signum))
    timer.daemon = True
    timer.start()


def _uninterruptible(frame: FrameType | None) -> bool:
    while frame is not None:
        if any(marker in frame.f_code.co_filename for marker in UNINTERRUPTIBLE):
            return True
        frame = frame.f_back
    return False


def _unraisable(unraisable: object) -> None:
    global _raised
    value = getattr(unraisable, "exc_value", None)
    if isinstance(value, Interrupted):
        _raised = False
        _again(value.signum)
    else:
        sys.__unraisablehook__(unraisable)  # type: ignore[arg-type]
