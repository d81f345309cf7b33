"""Reading and writing the pickles of the reference repositories without running anything in them.

Loading a pickle calls whatever importable callable it names, so ``pickle.load`` on a downloaded
file runs code chosen by whoever wrote it. The label files of the CrosSCLR and ISC lines (a pair
``(sample names, labels)``) and pyskl's annotation files (a dict of lists, strings, numbers and
numpy arrays) need no callable beyond numpy's array and scalar reconstruction; :func:`load_pickle`
resolves exactly those (numpy 1.x spells them ``numpy.core``, numpy 2.x ``numpy._core``) and
refuses a pickle naming any other global, naming the file and the global. Lists, tuples, dicts,
strings and numbers are pickle opcodes, not globals, and need no permission.

:func:`dump_pickle` writes pickles the authors' environments can read: protocol 4 (Python 3.4 and
later), numpy's reconstruction functions under their numpy 1.x names (which numpy 2.x still
loads), and a long list streamed item by item so that writing a whole dataset's annotations holds
one batch of them in memory, not all.
"""

from __future__ import annotations

import codecs
import pickle
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Iterator

import numpy as np

from skelctl.atomic import replacing
from skelctl.data.formats.base import DatasetError

try:  # numpy 2.x; numpy 1.x has these under numpy.core only
    from numpy._core import multiarray as _multiarray, numeric as _numeric
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _multiarray, numeric as _numeric  # type: ignore

PROTOCOL = 4  # readable by every Python 3 the reference repositories run on
STREAM_BATCH = 256  # annotations pickled per APPENDS opcode when a list is streamed


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it: Python 3 writes a ``bytes`` object (a
    numpy array's raw data) as ``_codecs.encode(text, 'latin1')``. Only that use is allowed."""
    if not isinstance(text, str) or codecs.lookup(encoding).name != "iso8859-1":
        raise pickle.UnpicklingError(f"_codecs.encode called with {type(text).__name__}, "
                                     f"{encoding!r}; only (str, 'latin1') spells bytes")
    return text.encode("latin1")


# (module, name) -> the object it resolves to; nothing is imported by name while loading
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    **{(module, "_reconstruct"): _multiarray._reconstruct
       for module in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(module, "scalar"): _multiarray.scalar
       for module in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(module, "_frombuffer"): _numeric._frombuffer  # protocol 5's out-of-band arrays
       for module in ("numpy.core.numeric", "numpy._core.numeric")},
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}

# the numpy 1.x names written for numpy's reconstruction functions (numpy 2.x loads them too)
LEGACY_NAMES: dict[int, tuple[str, str]] = {
    id(_multiarray._reconstruct): ("numpy.core.multiarray", "_reconstruct"),
    id(_multiarray.scalar): ("numpy.core.multiarray", "scalar"),
}

# what a damaged or truncated pickle makes the unpickler raise
PICKLE_ERRORS = (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
                 IndexError, KeyError, OverflowError, UnicodeDecodeError, MemoryError,
                 RecursionError)


class PickleRefused(DatasetError):
    """A pickle names a global other than numpy's array reconstruction; it is not loaded."""

    def __init__(self, path: str | Path, what: str, module: str, name: str):
        self.path, self.module, self.name = str(path), module, name
        super().__init__(f"{path}: refused: the pickle names the global {module}.{name}, which "
                         f"no {what} needs (only lists, tuples, dicts, strings, numbers and numpy "
                         f"arrays are loaded from a pickle; nothing it names is run)")


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: BinaryIO, path: Path, what: str):
        # latin1: numpy arrays pickled by Python 2 hold their bytes as str
        super().__init__(file, encoding="latin1")
        self.path, self.what = path, what

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise PickleRefused(self.path, self.what, module, name) from None


def load_pickle(path: str | Path, what: str) -> Any:
    """The object pickled in ``path``, loaded with only numpy's array reconstruction allowed.
    ``what`` names the kind of file in messages (e.g. ``"label file"``)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such {what}")
    try:
        with path.open("rb") as f:
            return _RestrictedUnpickler(f, path, what).load()
    except PickleRefused:
        raise
    except PICKLE_ERRORS as err:
        raise DatasetError(f"{path}: not a readable {what} ({type(err).__name__}: {err}); a "
                           f"truncated or interrupted download ends this way") from None
    except OSError as err:
        raise DatasetError(f"{path}: cannot be read ({err.strerror or err})") from None


class Streamed:
    """A list to pickle item by item from an iterable (read as a plain list)."""

    def __init__(self, items: Iterable[Any]):
        self.items = items

    def __iter__(self) -> Iterator[Any]:
        return iter(self.items)


class _PortablePickler(pickle._Pickler):  # the Python pickler: its save_global can be overridden
    dispatch: dict[type, Callable[..., None]] = dict(pickle._Pickler.dispatch)

    def save_global(self, obj: Any, name: str | None = None) -> None:
        legacy = LEGACY_NAMES.get(id(obj))
        if legacy is None:
            super().save_global(obj, name)
            return
        module, attribute = legacy
        self.write(pickle.GLOBAL + f"{module}\n{attribute}\n".encode("ascii"))
        self.memoize(obj)

    def save_streamed(self, obj: Streamed) -> None:
        self.write(pickle.EMPTY_LIST)
        batch: list[Any] = []
        for item in obj:
            batch.append(item)
            if len(batch) == STREAM_BATCH:
                self._write_appends(batch)
                batch = []
        if batch:
            self._write_appends(batch)

    def _write_appends(self, batch: list[Any]) -> None:
        self.write(pickle.MARK)
        for item in batch:
            self.save(item)
        self.write(pickle.APPENDS)

    dispatch[Streamed] = save_streamed


def write_pickle(obj: Any, file: BinaryIO) -> None:
    """Pickle ``obj`` into an open file (a :class:`Streamed` list is written as it is produced),
    readable by numpy 1.x and 2.x."""
    pickler = _PortablePickler(file, protocol=PROTOCOL)
    # no memo: a streamed list's items are never referenced twice, and a memo would keep every
    # array written alive until the end
    pickler.fast = True
    pickler.dump(obj)


def dump_pickle(obj: Any, path: str | Path) -> None:
    """:func:`write_pickle` to ``path``, atomically."""
    with replacing(Path(path)) as tmp, tmp.open("wb") as f:
        write_pickle(obj, f)
