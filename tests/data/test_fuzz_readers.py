"""Property-based fuzzing of every raw reader and of the layout-file loader.

Each test starts from a valid file (written here, or a real recording from ``../shared/data``)
and mutates it: truncation at any byte, bit flips, byte overwrites, deleted and repeated spans,
counts replaced by wrong, negative or huge values, numbers replaced by NaN, inf, 1e308 or text,
wrong JSON/YAML types at any depth, nesting thousands deep, non-UTF-8 bytes, path separators and
``..`` in sample names. The property: reading either returns valid arrays or raises the named
error of its kind, whose message names the file; never another exception, never a hang.

* valid arrays: float32, of the reader's rank and joint shape, at least one frame, and finite.
  The readers refuse NaN and infinite coordinates with a :class:`SampleError` (``check_finite``),
  as do values beyond float32's range (they become inf): the cleaning stage takes an all-zero
  body for "not tracked" and never expects a non-finite value, so none may pass a reader.
* named errors: :class:`SampleError` for one raw file, :class:`DatasetError` for the raw folder
  or ``samples.csv``, :class:`LayoutError` for a layout file; the message holds the file's path.
* no hang: hypothesis's ``deadline`` fails an example that takes over 2 s, and an alarm stops
  one that never returns.
* a generic ``samples.csv`` naming a file outside the raw folder is refused whole, before any
  array is read.

Deterministic (``derandomize``, no example database). Examples per test (``EXAMPLES``): NTU
.skeleton 300, PKU-MMD skeleton + label files 200, PKU-MMD split file 100, NW-UCLA JSON bytes 200
and structure 200, generic ``.npy`` 200 and ``samples.csv`` 200, layout file bytes 200 and
structure 200, and 30 per real recording (NTU, PKU-MMD, NW-UCLA) when ``../shared/data`` is
there: 1,890 in all (1,800 without the real data).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import threading
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from conftest import NTU_SAMPLES, NW_UCLA, PKU_SAMPLE, need
from skelctl.data.formats import get_format
from skelctl.data.formats.base import DatasetError, SampleError
from skelctl.data.formats.generic import leaves_folder
from skelctl.data.formats.ntu import NTU60, read_skeleton_file
from skelctl.data.formats.pku import PKU1, read_split_file
from skelctl.data.formats.ucla import NW_UCLA as UCLA
from skelctl.data.synth import skeleton_text
from skelctl.skeletons import (Layout, LayoutError, builtin_definition, read_layout_file,
                               syntax_error_message)

EXAMPLES = {"ntu": 300, "pku": 200, "pku_split": 100, "ucla_bytes": 200, "ucla_tree": 200,
            "generic_npy": 200, "generic_csv": 200, "layout_bytes": 200, "layout_tree": 200,
            "real": 30}
HANG_SECONDS = 10  # far above any reader's time on these small files


def fuzz(name: str) -> settings:
    return settings(max_examples=EXAMPLES[name], deadline=2000, derandomize=True,
                    database=None, print_blob=False,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@contextlib.contextmanager
def time_limit(seconds: int = HANG_SECONDS) -> Iterator[None]:
    """Fail an example that never returns (the deadline only judges the ones that do)."""
    if not hasattr(signal, "SIGALRM") or threading.current_thread() is not threading.main_thread():
        yield  # no alarms on Windows or outside the main thread: the deadline alone
        return

    def hang(signum: int, frame: Any) -> None:
        raise AssertionError(f"no answer after {seconds} s: the reader hangs on this input")

    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


# --- mutations ------------------------------------------------------------------------------

# what may replace a number, a count or a whole line
TOKENS = [b"nan", b"NaN", b"inf", b"-inf", b"1e308", b"-1e308", b"1e39", b"1e-400", b"-1", b"0",
          b"-0", b"1_0", b"0x10", b"1e", b"99999999999999999999999999999999", b"1000000000",
          b"abc", b"", b" ", b"\t", b"\r", b"\n", b"\x00", b"\xff\xfe", b"\xc3", b"#", b'"', b",",
          b";", b"../x", b"/etc/x", b"..\\x", b"a/b", b"[", b"]", b"{", b"}", b":", b"- ", b"&a",
          b"*a", b"!!python/object:os.system", b"2001-02-30", b"[" * 3000]
NUMBER = re.compile(rb"-?\d+(?:\.\d+)?(?:e-?\d+)?")


def mutate(data: st.DataObject, blob: bytes, line_values: tuple[bytes, ...] = ()) -> bytes:
    """One to three random edits of ``blob``; ``line_values`` are what a whole line may become
    (besides the tokens), e.g. wrong counts."""
    for _ in range(data.draw(st.integers(1, 3), label="edits")):
        kind = data.draw(st.sampled_from(["truncate", "flip", "byte", "delete", "insert",
                                          "number", "line", "repeat"]), label="edit")
        n = len(blob)
        at = data.draw(st.integers(0, n), label="at")
        if kind == "truncate":
            blob = blob[:at]
        elif kind == "flip" and n:
            at = min(at, n - 1)
            bit = data.draw(st.integers(0, 7), label="bit")
            blob = blob[:at] + bytes([blob[at] ^ (1 << bit)]) + blob[at + 1:]
        elif kind == "byte" and n:
            at = min(at, n - 1)
            blob = blob[:at] + bytes([data.draw(st.integers(0, 255), label="value")]) + \
                blob[at + 1:]
        elif kind == "delete":
            length = data.draw(st.integers(1, 200), label="length")
            blob = blob[:at] + blob[at + length:]
        elif kind == "insert":
            blob = blob[:at] + data.draw(st.sampled_from(TOKENS), label="token") + blob[at:]
        elif kind == "number":
            numbers = list(NUMBER.finditer(blob))
            if numbers:
                m = numbers[data.draw(st.integers(0, len(numbers) - 1), label="which")]
                token = data.draw(st.sampled_from(TOKENS + list(line_values)), label="token")
                blob = blob[:m.start()] + token + blob[m.end():]
        elif kind in ("line", "repeat"):
            lines = blob.splitlines(keepends=True)
            if lines:
                i = data.draw(st.integers(0, len(lines) - 1), label="line")
                if kind == "repeat":
                    lines.insert(i, lines[i])
                else:
                    ending = lines[i][len(lines[i].rstrip(b"\r\n")):]
                    lines[i] = data.draw(st.sampled_from(list(line_values) + TOKENS),
                                         label="line value") + ending
                blob = b"".join(lines)
    return blob


SPECIAL_VALUES = [float("nan"), float("inf"), -float("inf"), 1e308, -1e308, 10 ** 30, -1, 0,
                  True, None, "1.5", "", "../x", "/etc/x", "a/b", [], {}, [[[]]]]
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-10 ** 20, 10 ** 20) | st.floats() |
    st.text(max_size=6) | st.sampled_from(SPECIAL_VALUES),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                  max_size=4),
    max_leaves=10)


def mutate_tree(data: st.DataObject, node: Any, depth: int = 0) -> Any:
    """The JSON-like ``node`` with one node somewhere inside replaced, dropped, repeated,
    wrapped in a list or unwrapped (wrong types, wrong counts, wrong depth)."""
    if isinstance(node, (list, dict)) and node and depth < 8 and data.draw(st.booleans(),
                                                                          label="descend"):
        node = list(node) if isinstance(node, list) else dict(node)
        keys = list(range(len(node))) if isinstance(node, list) else list(node)
        key = keys[data.draw(st.integers(0, len(keys) - 1), label="child")]
        node[key] = mutate_tree(data, node[key], depth + 1)
        return node
    op = data.draw(st.sampled_from(["value", "special", "wrap", "unwrap", "drop", "repeat",
                                    "add"]), label="tree edit")
    if op == "value":
        return data.draw(JSON_VALUES, label="value")
    if op == "special":
        return data.draw(st.sampled_from(SPECIAL_VALUES), label="special")
    if op == "wrap":
        return [node]
    if op == "unwrap" and isinstance(node, list) and node:
        return node[0]
    if isinstance(node, list) and node:
        i = data.draw(st.integers(0, len(node) - 1), label="index")
        return node[:i] + node[i + 1:] if op == "drop" else node[:i] + [node[i]] + node[i:]
    if isinstance(node, dict) and node:
        key = data.draw(st.sampled_from(sorted(node)), label="key")
        if op == "drop":
            return {k: v for k, v in node.items() if k != key}
        return {**node, data.draw(st.text(max_size=6), label="new key"):
                data.draw(JSON_VALUES, label="value")}
    return data.draw(JSON_VALUES, label="value")


def check_error(err: Exception, *paths: Path) -> None:
    """A named error must say which file it is about."""
    event(f"refused: {type(err).__name__}")  # the mix shows with --hypothesis-show-statistics
    assert any(str(p) in str(err) for p in paths), f"the message does not name the file: {err}"


def check_bodies(bodies: np.ndarray, rank_shape: tuple[int | None, ...]) -> None:
    """float32, the expected rank and fixed axes (None: any length), a frame at least, finite."""
    assert isinstance(bodies, np.ndarray) and bodies.dtype == np.float32
    assert bodies.ndim == len(rank_shape)
    for size, expected in zip(bodies.shape, rank_shape):
        assert expected is None or size == expected, (bodies.shape, rank_shape)
    assert bodies.shape[1] >= 1
    assert np.isfinite(bodies).all()
    event("read")


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """One folder per test module: each example overwrites the files of the one before."""
    return tmp_path_factory.mktemp("fuzz")


# --- seeds: small valid files -----------------------------------------------------------------

def ntu_seed() -> bytes:
    rng = np.random.default_rng(0)
    tracks = np.zeros((2, 4, 25, 3))
    tracks[0] = rng.normal(size=(4, 25, 3)) + [0, 0, 3]
    tracks[1, 1:3] = rng.normal(size=(2, 25, 3)) + [1, 0, 3]
    return skeleton_text(tracks, rng).encode()


def pku_seed() -> tuple[bytes, bytes]:
    rng = np.random.default_rng(1)
    frames = rng.normal(size=(12, 150))
    frames[::3, 75:] = 0  # the second body absent in some frames
    skeleton = "".join(" ".join(f"{v:.6f}" for v in row) + "\n" for row in frames)
    return skeleton.encode(), b"3,1,4,1\n5,5,12,0.5\n"


def ucla_seed() -> dict:
    rng = np.random.default_rng(2)
    return {"file_name": "a01_s01_e00_v01", "label": 1,
            "skeletons": np.round(rng.normal(size=(3, 20, 3)), 4).tolist()}


def layout_seed() -> dict:
    return yaml.safe_load(builtin_definition("kinect20"))


NTU_NAME = "S001C001P001R001A001.skeleton"
NTU_LINES = (b"-1", b"0", b"3", b"5", b"24", b"26", b"4", b"1000000000", b"9" * 40, b"x",
             b"1 2", b"72057594037927936 0 1 1 1 1 0 0.01 -0.02 2", b"1 " * 12)


# --- NTU .skeleton ----------------------------------------------------------------------------

def read_ntu(path: Path) -> None:
    try:
        with time_limit():
            [sample] = NTU60.read(str(path))
    except SampleError as err:
        check_error(err, path)
        return
    check_bodies(sample.bodies, (None, None, 25, 3))
    assert sample.name == path.stem and sample.label == 0


@fuzz("ntu")
@given(data=st.data())
def test_ntu_skeleton_files(work, data):
    path = work / NTU_NAME
    path.write_bytes(mutate(data, ntu_seed(), NTU_LINES))
    read_ntu(path)


# --- PKU-MMD ----------------------------------------------------------------------------------

def read_pku(skeleton: Path, label: Path) -> None:
    try:
        with time_limit():
            samples = PKU1.read((str(skeleton), str(label)))
    except SampleError as err:
        check_error(err, skeleton, label)
        return
    assert samples
    for sample in samples:
        check_bodies(sample.bodies, (2, None, 25, 3))
        assert 0 <= sample.label < PKU1.num_classes
        assert re.fullmatch(r"0002-L_\d{3}", sample.name)


@fuzz("pku")
@given(data=st.data())
def test_pku_skeleton_and_label_files(work, data):
    (work / "skeleton").mkdir(exist_ok=True)
    (work / "label").mkdir(exist_ok=True)
    skeleton, label = work / "skeleton" / "0002-L.txt", work / "label" / "0002-L.txt"
    skeleton_bytes, label_bytes = pku_seed()
    which = data.draw(st.sampled_from(["skeleton", "label", "both"]), label="which file")
    if which != "label":
        skeleton_bytes = mutate(data, skeleton_bytes, (b"0 " * 149, b"0 " * 151))
    if which != "skeleton":
        label_bytes = mutate(data, label_bytes, (b"1,1,12", b"1,0,3,1", b"1,5,3,1", b"52,1,2,1",
                                                 b"1,1,13,1", b"1,1,2,1,1", b"x,1,2,1"))
    skeleton.write_bytes(skeleton_bytes)
    label.write_bytes(label_bytes)
    read_pku(skeleton, label)


@fuzz("pku_split")
@given(data=st.data())
def test_pku_split_files(work, data):
    path = work / "cross-subject.txt"
    path.write_bytes(mutate(data, b"Training videos: \n0002-L, 0002-M, 0003-R\n"
                                  b"Validataion videos: \n0004-L\n",
                            (b"Training videos:", b"Validation videos:", b"")))
    try:
        with time_limit():
            train, val = read_split_file(path)
    except DatasetError as err:
        check_error(err, path)
        return
    assert all(isinstance(v, str) and v for v in train | val)
    event("read")


# --- NW-UCLA JSON ------------------------------------------------------------------------------

def read_ucla(path: Path) -> None:
    try:
        with time_limit():
            [sample] = UCLA.read(str(path))
    except SampleError as err:
        check_error(err, path)
        return
    check_bodies(sample.bodies, (1, None, 20, 3))
    assert 0 <= sample.label < 10 and sample.name == path.stem


@fuzz("ucla_bytes")
@given(data=st.data())
def test_ucla_json_bytes(work, data):
    path = work / "a01_s01_e00_v01.json"
    path.write_bytes(mutate(data, json.dumps(ucla_seed()).encode()))
    read_ucla(path)


@fuzz("ucla_tree")
@given(data=st.data())
def test_ucla_json_structure(work, data):
    path = work / "a01_s01_e00_v01.json"
    path.write_text(json.dumps(mutate_tree(data, ucla_seed())))  # NaN and Infinity included
    read_ucla(path)


# --- generic: samples.csv + .npy ---------------------------------------------------------------

def write_generic(raw: Path) -> tuple[bytes, dict[str, bytes]]:
    """A valid generic raw folder's table and arrays, as bytes."""
    rng = np.random.default_rng(3)
    arrays = {"a": rng.normal(size=(5, 25, 3)).astype(np.float32),
              "b": rng.normal(size=(2, 4, 25, 3)),
              "sub/c": rng.normal(size=(3, 25, 3)).astype(np.float32)}
    blobs = {}
    for name, array in arrays.items():
        path = raw / f"{name}.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, array)
        blobs[name] = path.read_bytes()
    table = b"name,label,subject,split\na,0,1,train\nb,1,2,val\nsub/c,0,2,\n"
    return table, blobs


def check_generic(raw: Path) -> None:
    """Inventory then read every item: valid samples or named errors; nothing outside ``raw``."""
    table = raw / "samples.csv"
    fmt = get_format("generic")
    try:
        with time_limit():
            inventory = fmt.inventory(raw)
    except DatasetError as err:
        check_error(err, raw)
        return
    for where, _ in inventory.rejected:
        assert where.startswith(f"{table}:"), where
    root = os.path.normpath(raw)
    for item in inventory.items:
        path = os.path.normpath(item["path"])
        assert os.path.commonpath([root, path]) == root, f"{item['name']!r} leaves {raw}"
        try:
            with time_limit():
                [sample] = fmt.read(item)
        except SampleError as err:
            check_error(err, Path(item["path"]))
            continue
        check_bodies(sample.bodies, (None, None, fmt.layout.num_joints, fmt.layout.dims))


def with_header(blob: bytes, old: bytes, new: bytes) -> bytes:
    """A version 1.0 ``.npy`` file with ``old`` replaced by ``new`` in its header, the header's
    length field and padding made right again (so the edit, not the framing, is what is read)."""
    length = int.from_bytes(blob[8:10], "little")
    header = blob[10:10 + length].rstrip(b" \n").replace(old, new, 1)
    header += b" " * (-(10 + len(header) + 1) % 64) + b"\n"
    return blob[:8] + len(header).to_bytes(2, "little") + header + blob[10 + length:]


NPY_SHAPES = [b"(5, 25, 3)", b"(1000000000, 25, 3)", b"(4611686018427387904, 4)",
              b"(10000000000, 100000000000)", b"(100000000000000000000, 3)", b"(-1, 25, 3)",
              b"(0, 25, 3)", b"(25, 3)", b"()", b"(5, 25, 3, 1, 1)", b"(5, 24, 3)", b"[5, 25, 3]",
              b"(5.0, 25, 3)", b"'x'"]
NPY_DESCRS = [b"'<f4'", b"'<f8'", b"'>f4'", b"'<f2'", b"'<i8'", b"'|u1'", b"'<c8'", b"'|b1'",
              b"'<U3'", b"'|O'", b"'|V4'", b"'<M8[s]'", b"'x'", b"[('a', '<f4')]", b"1"]


@fuzz("generic_npy")
@given(data=st.data())
def test_generic_npy_files(work, data):
    raw = work / "generic-npy"
    table, blobs = write_generic(raw)
    (raw / "samples.csv").write_bytes(table)
    name = data.draw(st.sampled_from(sorted(blobs)), label="array")
    blob = blobs[name]
    header_end = blob.index(b"\n") + 1
    kind = data.draw(st.sampled_from(["shape", "descr", "order", "bytes", "header bytes"]),
                     label="npy edit")
    if kind == "shape":
        old = re.search(rb"\([\d, ]*\)", blob).group()
        blob = with_header(blob, old, data.draw(st.sampled_from(NPY_SHAPES), label="shape"))
    elif kind == "descr":
        old = re.search(rb"'[<>|][a-zA-Z]\d'", blob).group()
        blob = with_header(blob, old, data.draw(st.sampled_from(NPY_DESCRS), label="descr"))
    elif kind == "order":
        blob = with_header(blob, b"False", data.draw(st.sampled_from([b"True", b"1", b"None"]),
                                                     label="order"))
    elif kind == "header bytes":  # most edits land in the 128-byte header
        blob = mutate(data, blob[:header_end]) + blob[header_end:]
    else:
        blob = mutate(data, blob)
    (raw / f"{name}.npy").write_bytes(blob)
    check_generic(raw)


CSV_NAMES = ["a", "b", "../a", "../../etc/passwd", "/etc/passwd", "..\\a", "C:a", "sub/../a",
             "sub/../../a", "./a", "sub/c", "a/", "", " ", "a\x00", "a\nb", '"a"', "a,b", "é",
             "." * 3, "sub\\..\\..\\a", "//server/share/a"]


@fuzz("generic_csv")
@given(data=st.data())
def test_generic_samples_csv(work, data):
    raw = work / "generic-csv"
    table, blobs = write_generic(raw)
    kind = data.draw(st.sampled_from(["name", "bytes", "cells"]), label="csv edit")
    if kind == "name":
        rows = [line.split(",") for line in table.decode().splitlines()]
        row = data.draw(st.integers(1, len(rows) - 1), label="row")
        name = data.draw(st.sampled_from(CSV_NAMES) | st.text(max_size=8), label="name")
        quoted = '"' + name.replace('"', '""') + '"'
        rows[row][0] = quoted if data.draw(st.booleans(), label="quote") else name
        text = "\n".join(",".join(r) for r in rows) + "\n"
        (raw / "samples.csv").write_bytes(text.encode("utf-8", errors="surrogateescape"))
        if leaves_folder(name.strip()) and not any(c in name for c in "\n\",\r"):
            # a name leaving the folder stops the import, naming the table, line and name
            with pytest.raises(DatasetError) as info:
                get_format("generic").inventory(raw)
            assert str(info.value).startswith(f"{raw / 'samples.csv'}:{row + 1}: sample name "
                                              f"{name.strip()!r} leaves the raw folder")
    elif kind == "cells":
        table = mutate(data, table, (b"a,0", b"a,0,1,train,x", b"a,x,1,train", b"a,0,1,maybe",
                                     b"a,0,99999999999,train", b'a,"0,1,train', b'"a"x,0,1,',
                                     b"name,label,name", b"name,label,subject,split"))
        (raw / "samples.csv").write_bytes(table)
    else:
        (raw / "samples.csv").write_bytes(mutate(data, table))
    check_generic(raw)


# --- layout files --------------------------------------------------------------------------------

def read_layout(path: Path) -> None:
    try:
        with time_limit():
            layout = read_layout_file(path)
    except LayoutError as err:
        assert str(err).startswith(f"{path}:"), str(err)
        event("refused: LayoutError")
        return
    assert isinstance(layout, Layout) and layout.num_joints >= 1 and layout.dims in (2, 3)
    n = layout.num_joints
    assert 0 <= layout.center < n
    assert all(0 <= c < n and 0 <= p < n for c, p in layout.bone_pairs)
    assert not layout.flip or sorted(layout.flip) == list(range(n))
    assert all(0 <= j < n for joints in layout.parts.values() for j in joints)
    layout.parents, layout.adjacency(), layout.describe()  # usable
    event("read")


@fuzz("layout_bytes")
@given(data=st.data())
def test_layout_file_bytes(work, data):
    suffix = data.draw(st.sampled_from([".yaml", ".json"]), label="suffix")
    seed = (builtin_definition("kinect20") if suffix == ".yaml" else
            json.dumps(layout_seed(), indent=1)).encode()
    path = work / f"layout{suffix}"
    path.write_bytes(mutate(data, seed, (b"joints: 5", b"center: [a]", b"dims: 2.0",
                                         b"parents: {a: b}", b"edges: [[a, a]]", b"mirror: x",
                                         b"  - [a, b]", b'"center": 1,')))
    read_layout(path)


@fuzz("layout_tree")
@given(data=st.data())
def test_layout_file_structure(work, data):
    suffix = data.draw(st.sampled_from([".yaml", ".json"]), label="suffix")
    spec = mutate_tree(data, layout_seed())
    if isinstance(spec, dict) and data.draw(st.booleans(), label="edges"):  # the other way
        spec.pop("parents", None)
        spec["edges"] = [[c, p] for c, p in layout_seed()["parents"].items()]
        spec = mutate_tree(data, spec)
    path = work / f"layout{suffix}"
    path.write_text(yaml.safe_dump(spec) if suffix == ".yaml" else json.dumps(spec))
    read_layout(path)


# --- real recordings, mutated ----------------------------------------------------------------

@pytest.mark.parametrize("reader", ["ntu", "pku", "ucla"])
def test_real_recordings_mutated(work, reader):
    if reader == "ntu":
        seed_path = need(NTU_SAMPLES) / NTU_NAME
    elif reader == "pku":
        seed_path = need(PKU_SAMPLE) / "A10N08-L.txt"
    else:
        seed_path = need(NW_UCLA) / "a01_s01_e00_v01.json"
    seed = seed_path.read_bytes()
    folder = work / f"real-{reader}"
    folder.mkdir(exist_ok=True)

    @fuzz("real")
    @given(data=st.data())
    def run(data):
        blob = mutate(data, seed, NTU_LINES if reader == "ntu" else ())
        if reader == "ntu":
            path = folder / NTU_NAME
            path.write_bytes(blob)
            read_ntu(path)
        elif reader == "pku":
            (folder / "skeleton").mkdir(exist_ok=True)
            (folder / "label").mkdir(exist_ok=True)
            skeleton, label = folder / "skeleton" / "0002-L.txt", folder / "label" / "0002-L.txt"
            skeleton.write_bytes(blob)
            label.write_bytes(b"10,1,40,1\n10,500,1040,1\n")
            read_pku(skeleton, label)
        else:
            path = folder / seed_path.name
            path.write_bytes(blob)
            read_ucla(path)

    run()


# --- the bugs the fuzzing found, and the refusals asked for, one by one ----------------------

def test_ntu_huge_counts_and_ids(tmp_path):
    path = tmp_path / NTU_NAME
    lines = ntu_seed().decode().splitlines()
    path.write_text("\n".join(["1000000000", *lines[1:]]) + "\n")
    with time_limit(5), pytest.raises(SampleError, match="truncated"):
        read_skeleton_file(path)  # refused at the end of the file, nothing allocated
    body = lines[2].split()
    body[0] = "9" * 30  # a tracking ID beyond int64 was an OverflowError
    path.write_text("\n".join([*lines[:2], " ".join(body), *lines[3:]]) + "\n")
    assert read_skeleton_file(path).shape == (3, 4, 25, 3)


def test_ntu_values_numpy_refuses_but_python_reads(tmp_path):
    path = tmp_path / NTU_NAME
    lines = ntu_seed().decode().splitlines()
    fields = lines[4].split()
    fields[0] = "1_0"  # float() takes it, numpy's reader did not: a ValueError escaped
    path.write_text("\n".join([*lines[:4], " ".join(fields), *lines[5:]]) + "\n")
    assert read_skeleton_file(path)[0, 0, 0, 0] == 10
    fields[0] = "1"
    path.write_bytes(("\n".join([*lines[:4], " ".join(fields[:6]) + "\r" + " ".join(fields[6:]),
                                 *lines[5:]]) + "\n").encode())
    assert read_skeleton_file(path)[0, 0, 0, 0] == 1  # a carriage return inside a line


def test_ntu_fast_path_counts_values_per_line(tmp_path):
    path = tmp_path / NTU_NAME
    lines = ntu_seed().decode().splitlines()
    lines[4] += " 7"  # 13 values here, 11 on the next line: the total number of spaces is right
    lines[5] = lines[5].rsplit(" ", 1)[0]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(SampleError, match="line 5: joint line has 13 values, expected 12"):
        read_skeleton_file(path)


def test_pku_comment_character_and_bad_labels(tmp_path):
    (tmp_path / "skeleton").mkdir()
    (tmp_path / "label").mkdir()
    skeleton, label = tmp_path / "skeleton" / "0002-L.txt", tmp_path / "label" / "0002-L.txt"
    frames, labels = pku_seed()
    lines = frames.decode().splitlines()
    skeleton.write_text("\n".join([lines[0], "# a note", *lines[1:]]) + "\n")
    label.write_bytes(labels)
    with pytest.raises(SampleError, match="line 2: non-numeric value '#'"):
        PKU1.read((str(skeleton), str(label)))  # was a reshape ValueError
    skeleton.write_text(lines[0] + " # note\n" + "\n".join(lines[1:]) + "\n")
    with pytest.raises(SampleError, match="line 1: non-numeric value '#'"):
        PKU1.read((str(skeleton), str(label)))  # was read as a frame, the note dropped
    skeleton.write_bytes(frames)
    label.write_bytes(b"3,1,4,1\n\xff,5,12,0.5\n")
    with pytest.raises(SampleError, match="line 2: non-numeric label"):
        PKU1.read((str(skeleton), str(label)))  # was a UnicodeDecodeError
    label.write_text("52,1,4,1\n")
    with pytest.raises(SampleError, match="action id 52 is not in 1..51"):
        PKU1.read((str(skeleton), str(label)))


def test_ucla_wrong_types_and_deep_nesting(tmp_path):
    path = tmp_path / "a01_s01_e00_v01.json"
    record = ucla_seed()
    path.write_text(json.dumps({**record, "skeletons": [[[str(v) for v in joint] for joint in
                                                         frame] for frame in
                                                        record["skeletons"]]}))
    with pytest.raises(SampleError, match="not a \\[T\\]\\[20\\]\\[3\\] array of numbers"):
        UCLA.read(str(path))  # numbers as strings were converted silently
    path.write_text(json.dumps({**record, "label": True}))
    with pytest.raises(SampleError, match="label True is not an integer"):
        UCLA.read(str(path))  # true was class 0
    path.write_text('{"label": 1, "skeletons": ' + "[" * 100000 + "]" * 100000 + "}")
    with pytest.raises(SampleError, match="nested too deeply"):
        UCLA.read(str(path))  # a RecursionError


def test_generic_names_leaving_the_raw_folder_are_refused(tmp_path):
    raw = tmp_path / "raw"
    table_bytes, _ = write_generic(raw)
    np.save(tmp_path / "x.npy", np.ones((5, 25, 3), np.float32))  # what '../x' would read
    for name in ("../x", "sub/../../x", "..\\x", str(tmp_path / "x"), "C:x"):
        (raw / "samples.csv").write_bytes(table_bytes + f"{name},0,1,train\n".encode())
        with pytest.raises(DatasetError) as info:
            get_format("generic").inventory(raw)
        assert str(info.value).startswith(f"{raw / 'samples.csv'}:5: sample name {name!r} "
                                          f"leaves the raw folder")
    # inside the folder, however spelt, is fine
    (raw / "samples.csv").write_bytes(table_bytes + b"sub/../a2,0,1,train\n")
    np.save(raw / "a2.npy", np.ones((5, 25, 3), np.float32))
    inventory = get_format("generic").inventory(raw)
    assert [item["name"] for item in inventory.items] == ["a", "b", "sub/c", "sub/../a2"]


def test_generic_csv_syntax_errors_name_the_file_and_line(tmp_path):
    raw = tmp_path / "raw"
    table_bytes, _ = write_generic(raw)
    table = raw / "samples.csv"
    table.write_bytes(table_bytes + b'd,0,1,"train\n')
    with pytest.raises(DatasetError, match=re.escape(f"{table}:5: not a CSV row (unexpected "
                                                     f"end of data)")):
        get_format("generic").inventory(raw)
    table.write_bytes(table_bytes.replace(b"b,1,2,val", b'"b"x,1,2,val'))
    with pytest.raises(DatasetError, match=re.escape(f"{table}:3: not a CSV row")):
        get_format("generic").inventory(raw)
    table.write_bytes(table_bytes.replace(b"b,1,2,val", b"b,1,2,val,extra").replace(
        b"sub/c,0,2,", b"sub/c,x,2,"))
    inventory = get_format("generic").inventory(raw)
    problems = dict(inventory.rejected)
    assert problems[f"{table}:3"] == "bad row: 5 cells, but the header has 4 (a cell holding " \
                                     "a comma is quoted)"
    assert "label must be an integer" in problems[f"{table}:4"]
    table.write_bytes(table_bytes.replace(b"b,1", b"b\xff,1"))
    with pytest.raises(DatasetError, match=re.escape(f"{table}:3:2: not UTF-8 text (byte 0xff")):
        get_format("generic").inventory(raw)
    table.write_bytes(b"name,label,name\na,0,b\n")
    with pytest.raises(DatasetError, match="column\\(s\\) name appear more than once"):
        get_format("generic").inventory(raw)


def test_generic_split_of_a_duplicate_name_is_the_first_rows(tmp_path):
    raw = tmp_path / "raw"
    write_generic(raw)
    (raw / "samples.csv").write_text("name,label,split\na,0,train\nb,1,val\na,1,val\n")
    fmt = get_format("generic")
    inventory = fmt.inventory(raw)
    names = np.array([item["name"] for item in inventory.items])
    # the sample read is the first row's; its split was the last row's
    assert list(fmt.splits({"name": names}, raw)["default"]) == [0, 1]


def test_generic_npy_headers_claiming_huge_arrays(tmp_path):
    raw = tmp_path / "raw"
    table_bytes, blobs = write_generic(raw)
    (raw / "samples.csv").write_bytes(table_bytes)
    fmt = get_format("generic")
    item = fmt.inventory(raw).items[0]
    for shape, problem in [(b"(1000000000000, 25, 3)", "truncated"),  # was a MemoryError
                           (b"(100000000000000000000, 25, 3)", "truncated"),  # OverflowError
                           (b"(-1, 25, 3)", "negative shape")]:
        (raw / "a.npy").write_bytes(with_header(blobs["a"], b"(5, 25, 3)", shape))
        with time_limit(5), pytest.raises(SampleError, match=problem):
            fmt.read(item)
    (raw / "a.npy").write_bytes(b"")  # was an EOFError
    with pytest.raises(SampleError, match="not a readable .npy array"):
        fmt.read(item)
    np.savez(raw / "a.npy", np.zeros((5, 25, 3)))  # an archive: was an AttributeError
    (raw / "a.npy").write_bytes((raw / "a.npy.npz").read_bytes())
    with pytest.raises(SampleError, match="not a readable .npy array"):
        fmt.read(item)
    np.save(raw / "a.npy", np.zeros((5, 25, 3), np.complex64))  # imaginary part was dropped
    with pytest.raises(SampleError, match="complex64 is not numeric"):
        fmt.read(item)


def test_layout_syntax_errors_name_file_line_and_column(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\njoints: [a, b\ncenter: a\n")
    with pytest.raises(LayoutError) as info:
        read_layout_file(path)
    assert str(info.value).startswith(f"{path}:3:7: not a readable layout file: expected ',' or "
                                      f"']', but got ':' (while parsing a flow sequence that "
                                      f"starts at line 2, column 9)")
    path.write_text("name: x\n  joints: [a]\n")
    with pytest.raises(LayoutError, match=re.escape(f"{path}:2:9: not a readable layout file: "
                                                    f"mapping values are not allowed here")):
        read_layout_file(path)
    path.write_text("name: x\nmade: 2001-02-30\n")  # a ValueError from YAML's date reader
    with pytest.raises(LayoutError, match=re.escape(f"{path}: not a readable layout file: ")):
        read_layout_file(path)
    path.write_bytes(b"name: x\njoints: [\xff]\n")
    with pytest.raises(LayoutError, match=re.escape(f"{path}:2:10: not a readable layout file: "
                                                    f"not UTF-8 text (byte 0xff")):
        read_layout_file(path)
    path.write_text("joints: " + "[" * 5000)  # a RecursionError
    with pytest.raises(LayoutError, match="nested too deeply"):
        read_layout_file(path)
    path = tmp_path / "bad.json"
    path.write_text('{"name": "x",\n "joints": [1,]}\n')
    with pytest.raises(LayoutError, match=re.escape(f"{path}:2:15: not a readable layout file: "
                                                    f"Expecting value")):
        read_layout_file(path)


def test_layout_values_of_the_wrong_type(tmp_path):
    path = tmp_path / "bad.yaml"
    for changes, message in [({"center": ["head"]}, "center: unknown joint ['head']"),
                             ({"dims": 2.0}, "'dims' is the coordinates per joint, 2 or 3, "
                                             "not 2.0"),
                             ({"mirror": [[["a"], "head"]]}, "mirror: unknown joint ['a']")]:
        path.write_text(yaml.safe_dump({**layout_seed(), **changes}))
        with pytest.raises(LayoutError, match=re.escape(message)):  # was a TypeError
            read_layout_file(path)
    chain = [f"j{i}" for i in range(3000)]  # a long chain of parents: was cubic time
    path.write_text(yaml.safe_dump({"joints": chain, "center": "j0",
                                    "parents": {c: p for p, c in zip(chain, chain[1:])}}))
    with time_limit(5):
        assert read_layout_file(path).num_joints == 3000


def test_syntax_error_message_without_position():
    assert syntax_error_message("p.yaml", ValueError("bad"), what="w: ") == "p.yaml: w: bad"
