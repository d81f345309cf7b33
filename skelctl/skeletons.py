"""Joint layouts: the skeleton graph, bones, body parts and mirror permutation of each sensor.

A layout is data: a YAML or JSON file naming the joints in the data's order, the parent of each
joint (or the bone list), the centre, the left/right pairs, the five body parts and the joints the
normalisations use. The built-in ones are such files too (``skelctl/resources/layouts``), so a
user's skeleton works wherever a Kinect one does. Indices are 0-based throughout.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from skelctl.keys import closest, unknown_keys

# the body parts of topology-based masking (trunk, arms, legs) and the normalisation joints
PART_NAMES = ("trunk", "left_arm", "right_arm", "left_leg", "right_leg")
NORMALISATION_JOINTS = ("spine_base", "spine_mid", "spine_shoulder", "left_shoulder",
                        "right_shoulder", "left_hip", "right_hip")
FILE_KEYS = ("name", "dims", "joints", "center", "parents", "edges", "mirror", "parts",
             "normalisation")


@dataclass(frozen=True)
class Layout:
    """A joint layout.

    ``bone_pairs`` has one ``(child, parent)`` pair per joint; the root is paired with itself so its
    bone is zero. ``edges`` are the real bones (the root pair excluded) and form the graph.
    Layouts without a graph (``joints<N>``) have empty ``edges``/``bone_pairs``. ``dims`` is the
    number of coordinates per joint (3, or 2 for image keypoints).
    """

    name: str
    joint_names: tuple[str, ...]
    bone_pairs: tuple[tuple[int, int], ...] = ()
    center: int = 0
    parts: dict[str, tuple[int, ...]] = field(default_factory=dict)
    flip: tuple[int, ...] = ()
    # joints used by the normalisation conventions (None where the layout lacks them)
    spine_base: int | None = None
    spine_mid: int | None = None
    spine_shoulder: int | None = None
    left_shoulder: int | None = None
    right_shoulder: int | None = None
    left_hip: int | None = None
    right_hip: int | None = None
    dims: int = 3

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)

    @property
    def has_graph(self) -> bool:
        return bool(self.bone_pairs)

    @property
    def edges(self) -> tuple[tuple[int, int], ...]:
        return tuple((c, p) for c, p in self.bone_pairs if c != p)

    @property
    def parents(self) -> np.ndarray:
        """Parent index of each joint (the root is its own parent)."""
        if not self.has_graph:
            raise ValueError(f"layout {self.name!r} has no skeleton graph, so no bones")
        parents = np.empty(self.num_joints, dtype=np.int64)
        for child, parent in self.bone_pairs:
            parents[child] = parent
        return parents

    @property
    def mirror_pairs(self) -> tuple[tuple[int, int], ...]:
        """The (left, right) joint pairs the mirror permutation swaps."""
        return tuple((i, j) for i, j in enumerate(self.flip) if i < j)

    def adjacency(self) -> np.ndarray:
        """Symmetric 0/1 adjacency matrix of the bones, without self loops."""
        a = np.zeros((self.num_joints, self.num_joints), dtype=np.float32)
        for i, j in self.edges:
            a[i, j] = a[j, i] = 1.0
        return a

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Layout:
        """The inverse of :meth:`to_dict` (lists back to tuples)."""
        def tuples(value: Any) -> Any:
            return tuple(tuples(v) for v in value) if isinstance(value, list) else value

        return cls(**{k: ({p: tuples(j) for p, j in v.items()} if k == "parts" else tuples(v))
                      for k, v in data.items()})

    def describe(self) -> str:
        """The layout in a few lines: joints in order, bones, centre, mirror pairs, parts."""
        names = self.joint_names
        lines = [f"{self.name}: {self.num_joints} joints, {self.dims}D"
                 + ("" if self.has_graph else ", no skeleton graph"),
                 "  joints: " + ", ".join(f"{i} {n}" for i, n in enumerate(names))]
        if self.has_graph:
            lines.append(f"  centre: {names[self.center]}")
            lines.append("  bones (child-parent): "
                         + ", ".join(f"{names[c]}-{names[p]}" for c, p in self.edges))
        if self.flip:
            lines.append("  left/right: " + ", ".join(f"{names[i]}/{names[j]}"
                                                      for i, j in self.mirror_pairs))
        if self.parts:
            lines.append("  parts: " + "; ".join(f"{p} {', '.join(names[j] for j in joints)}"
                                                 for p, joints in self.parts.items()))
        normalisation = [f"{k} {names[getattr(self, k)]}" for k in NORMALISATION_JOINTS
                         if getattr(self, k) is not None]
        if normalisation:
            lines.append("  normalisation joints: " + ", ".join(normalisation))
        return "\n".join(lines)


class LayoutError(ValueError):
    """A layout file or mapping that does not describe a skeleton; the message names the file
    and the joint."""


def layout_from_spec(spec: Any, where: str, default_name: str = "custom") -> Layout:
    """Build and check a layout from a layout file's mapping (``where`` names it in errors)."""
    def fail(problem: str) -> LayoutError:
        return LayoutError(f"{where}: {problem}")

    if not isinstance(spec, dict):
        raise fail("a layout is a mapping with the keys " + ", ".join(FILE_KEYS))
    problem = unknown_keys(spec, FILE_KEYS)
    if problem:
        raise fail(problem)
    joints = spec.get("joints")
    if not isinstance(joints, list) or not joints or not all(isinstance(j, str) for j in joints):
        raise fail("'joints' must list the joint names, in the order of the data")
    index: dict[str, int] = {}
    for i, joint in enumerate(joints):
        if joint in index:
            raise fail(f"joint {joint!r} is listed twice in 'joints' (positions {index[joint]} "
                       f"and {i})")
        index[joint] = i

    def joint_of(name: Any, what: str) -> int:
        if not isinstance(name, str) or name not in index:  # a list or mapping is no name
            raise fail(f"{what}: unknown joint {name!r} (joints: {', '.join(joints)})")
        return index[name]

    dims = spec.get("dims", 3)
    if type(dims) is not int or dims not in (2, 3):  # not 2.0, nor true
        raise fail(f"'dims' is the coordinates per joint, 2 or 3, not {dims!r}")
    if "center" not in spec:
        raise fail("'center' must name the centre joint (the root of the bone tree)")
    center = joint_of(spec["center"], "center")
    if ("parents" in spec) == ("edges" in spec):
        raise fail("give the bones either as 'parents' (joint: parent) or as 'edges' "
                   "([joint, joint] pairs), not both or neither")
    parents = (_parents_from_mapping(spec["parents"], center, joints, joint_of, fail)
               if "parents" in spec else
               _parents_from_edges(spec["edges"], center, joints, joint_of, fail))
    flip = list(range(len(joints)))
    pairs = spec.get("mirror") or []
    if not isinstance(pairs, list):
        raise fail("'mirror' must list [left, right] joint pairs")
    paired: set[int] = set()
    for pair in pairs:
        if not isinstance(pair, list) or len(pair) != 2:
            raise fail(f"mirror: {pair!r} is not a [left, right] pair")
        left, right = (joint_of(j, "mirror") for j in pair)
        for joint in (left, right):
            if joint in paired or left == right:
                raise fail(f"mirror: joint {joints[joint]!r} is in more than one pair")
            paired.add(joint)
        flip[left], flip[right] = right, left
    parts_spec = spec.get("parts") or {}
    if parts_spec and (not isinstance(parts_spec, dict) or set(parts_spec) != set(PART_NAMES)):
        raise fail(f"'parts' must name the five body parts {', '.join(PART_NAMES)}, each with "
                   f"its joints")
    parts, owner = {}, {}
    for part in PART_NAMES if parts_spec else ():
        members = parts_spec[part]
        if not isinstance(members, list) or not members:
            raise fail(f"parts: {part} must list its joints")
        for name in members:
            joint = joint_of(name, f"parts: {part}")
            if joint in owner:
                raise fail(f"parts: joint {name!r} is in both {owner[joint]} and {part}")
            owner[joint] = part
        parts[part] = tuple(index[name] for name in members)
    normalisation = spec.get("normalisation") or {}
    if not isinstance(normalisation, dict) or set(normalisation) - set(NORMALISATION_JOINTS):
        raise fail(f"'normalisation' maps some of {', '.join(NORMALISATION_JOINTS)} to joints")
    return Layout(
        name=str(spec.get("name") or default_name), joint_names=tuple(joints),
        bone_pairs=tuple((child, parent) for child, parent in enumerate(parents)), center=center,
        parts=parts, flip=tuple(flip) if pairs else (), dims=dims,
        **{k: joint_of(v, f"normalisation: {k}") for k, v in normalisation.items()})


def _parents_from_mapping(mapping: Any, center: int, joints: list[str], joint_of: Any,
                          fail: Any) -> list[int]:
    if not isinstance(mapping, dict):
        raise fail("'parents' maps each joint to its parent")
    parents = [-1] * len(joints)
    parents[center] = center
    for child, parent in mapping.items():
        c, p = joint_of(child, "parents"), joint_of(parent, f"parents: {child}")
        if c == center and p != c:
            raise fail(f"parents: the centre {child!r} is the root of the bone tree and has no "
                       f"parent")
        parents[c] = p
    missing = [joints[j] for j, p in enumerate(parents) if p < 0]
    if missing:
        raise fail(f"parents: no parent for joint(s) {', '.join(missing)}")
    # every chain of parents must end at the centre; joints already known to reach it end a
    # walk early, so a long chain costs linear time, not cubic
    reaches = {center}
    for start in range(len(joints)):
        chain, on_chain, joint = [], set(), start
        while joint not in reaches:
            if joint in on_chain:
                cycle = chain[chain.index(joint):]
                raise fail(f"parents: joints {', '.join(joints[j] for j in cycle)} form a cycle "
                           f"that never reaches the centre {joints[center]!r}")
            chain.append(joint)
            on_chain.add(joint)
            joint = parents[joint]
        reaches.update(chain)
    return parents


def _parents_from_edges(edges: Any, center: int, joints: list[str], joint_of: Any,
                        fail: Any) -> list[int]:
    if not isinstance(edges, list) or not all(isinstance(e, list) and len(e) == 2 for e in edges):
        raise fail("'edges' must list [joint, joint] pairs")
    neighbours: dict[int, list[int]] = {j: [] for j in range(len(joints))}
    for a, b in edges:
        i, j = joint_of(a, "edges"), joint_of(b, "edges")
        if i == j or j in neighbours[i]:
            raise fail(f"edges: [{a}, {b}] is a self loop or listed twice")
        neighbours[i].append(j)
        neighbours[j].append(i)
    parents = [-1] * len(joints)
    parents[center], frontier = center, [center]
    while frontier:  # breadth first from the centre: each joint's parent is one step nearer it
        joint = frontier.pop(0)
        for other in neighbours[joint]:
            if parents[other] < 0:
                parents[other] = joint
                frontier.append(other)
            elif parents[joint] != other:
                raise fail(f"edges: the bones form a cycle through {joints[joint]!r} and "
                           f"{joints[other]!r}; a skeleton is a tree")
    unreached = [joints[j] for j, p in enumerate(parents) if p < 0]
    if unreached:
        raise fail(f"edges: joint(s) {', '.join(unreached)} not connected to the centre "
                   f"{joints[center]!r}")
    return parents


def syntax_error_message(path: str | Path, err: BaseException, text: str | bytes | None = None,
                         what: str = "") -> str:
    """``"PATH:LINE:COLUMN: WHAT problem"`` (both counted from 1, the column in characters) for an
    error raised while decoding or parsing a YAML or JSON file, or ``"PATH: WHAT problem"`` when
    the error carries no position. ``text`` is the string YAML parsed: it places YAML's reader
    errors, which give only an offset (a decoding error carries its own bytes)."""
    line = column = None
    if isinstance(err, yaml.MarkedYAMLError) and err.problem_mark is not None:
        mark = err.problem_mark
        line, column = mark.line + 1, mark.column + 1
        problem = err.problem or str(err)
        if err.context:
            context_mark = err.context_mark
            started = (f" that starts at line {context_mark.line + 1}, column "
                       f"{context_mark.column + 1}" if context_mark is not None
                       and context_mark.line != mark.line else "")
            problem += f" ({err.context}{started})"
    elif isinstance(err, json.JSONDecodeError):
        line, column, problem = err.lineno, err.colno, err.msg
    elif isinstance(err, (yaml.reader.ReaderError, UnicodeDecodeError)):
        if isinstance(err, UnicodeDecodeError):
            offset, text = err.start, err.object
            problem = f"not UTF-8 text (byte 0x{err.object[err.start]:02x} cannot be decoded)"
        else:
            offset = err.position
            problem = f"unacceptable character #x{err.character:04x}" if isinstance(
                err.character, int) else f"unacceptable character {err.character!r}"
        if text is not None and 0 <= offset <= len(text):
            newline = b"\n" if isinstance(text, bytes) else "\n"
            start = text.rfind(newline, 0, offset) + 1
            before = text[start:offset]
            line = text.count(newline, 0, offset) + 1
            column = len(before.decode("utf-8", "replace") if isinstance(before, bytes)
                         else before) + 1
    elif isinstance(err, RecursionError):
        problem = "nested too deeply"
    else:
        problem = str(err) or type(err).__name__
    where = f"{path}:{line}:{column}" if line is not None else str(path)
    return f"{where}: {what}{problem}"


def read_layout_file(path: str | Path) -> Layout:
    """A layout from a YAML or JSON file (named in every error; a syntax error also by its line
    and column)."""
    path = Path(path)
    if not path.is_file():
        raise LayoutError(f"{path}: layout file does not exist")
    try:
        # a byte-order mark, as some editors write, is no error
        text = path.read_bytes().decode("utf-8-sig")
        spec = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except UnicodeDecodeError as err:
        raise LayoutError(syntax_error_message(path, err, what="not a readable layout file: "))\
            from None
    # YAML's constructors raise ValueError (a 30 February, "!!int abc"); deep nesting exhausts
    # the parsers' recursion
    except (yaml.YAMLError, ValueError, RecursionError) as err:
        raise LayoutError(syntax_error_message(path, err, text, "not a readable layout file: "))\
            from None
    return layout_from_spec(spec, str(path), default_name=path.stem)


def builtin_definition(name: str) -> str:
    """The layout file of a built-in layout, as text."""
    return resources.files("skelctl.resources").joinpath("layouts", f"{name}.yaml").read_text()


def _builtin(name: str) -> Layout:
    return layout_from_spec(yaml.safe_load(builtin_definition(name)), f"built-in layout {name}")


BUILTIN_NAMES = ("ntu25", "kinect20", "openni15", "coco17", "coco17-2d")
LAYOUTS: dict[str, Layout] = {name: _builtin(name) for name in BUILTIN_NAMES}
NTU25, KINECT20 = LAYOUTS["ntu25"], LAYOUTS["kinect20"]


def graphless(num_joints: int, dims: int = 3) -> Layout:
    """A layout for a user's skeleton with no known graph (for encoders that need none)."""
    return Layout(name=f"joints{num_joints}" + ("-2d" if dims == 2 else ""),
                  joint_names=tuple(f"j{i}" for i in range(num_joints)), dims=dims)


def get_layout(name: str | Path) -> Layout:
    """A layout by name (a built-in, or ``joints<N>`` / ``joints<N>-2d`` without a graph) or
    from a layout file (``.yaml``, ``.yml`` or ``.json``)."""
    text = str(name)
    if text in LAYOUTS:
        return LAYOUTS[text]
    graph_free = text.removesuffix("-2d")
    if graph_free.startswith("joints") and graph_free[6:].isdigit() and int(graph_free[6:]) > 0:
        return graphless(int(graph_free[6:]), 2 if text.endswith("-2d") else 3)
    if Path(text).suffix.lower() in (".yaml", ".yml", ".json"):
        return read_layout_file(text)
    raise LayoutError(f"unknown joint layout {text!r}{closest(text, LAYOUTS)} (known: "
                      f"{', '.join(LAYOUTS)}, joints<N>[-2d] (no graph), or a layout file "
                      f"(.yaml/.json))")


def layout_by_shape(num_joints: int, dims: int) -> Layout:
    """The built-in layout of that many joints and coordinates, else a graph-less one."""
    for layout in LAYOUTS.values():
        if (layout.num_joints, layout.dims) == (num_joints, dims):
            return layout
    return graphless(num_joints, dims)
