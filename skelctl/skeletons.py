"""Joint layouts: the skeleton graph, bones, body parts and mirror permutation of each sensor.

Indices are 0-based throughout. A layout is plain data; encoders and views take it as a parameter,
so a 20-joint Kinect v1 skeleton works wherever the 25-joint Kinect v2 one does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Layout:
    """A joint layout.

    ``bone_pairs`` has one ``(child, parent)`` pair per joint; the root is paired with itself so its
    bone is zero. ``edges`` are the real bones (the root pair excluded) and form the graph.
    Layouts without a graph (a user's own skeletons) have empty ``edges``/``bone_pairs``.
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

    def adjacency(self) -> np.ndarray:
        """Symmetric 0/1 adjacency matrix of the bones, without self loops."""
        a = np.zeros((self.num_joints, self.num_joints), dtype=np.float32)
        for i, j in self.edges:
            a[i, j] = a[j, i] = 1.0
        return a


def _one_based(pairs: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    return tuple((c - 1, p - 1) for c, p in pairs)


# Kinect v2 (NTU RGB+D, PKU-MMD). The 25 child-parent pairs are those of the CrosSCLR/AimCLR bone
# view (1-based in the notes); (21, 21) is the root, so the spine-shoulder bone is zero.
NTU25 = Layout(
    name="ntu25",
    joint_names=(
        "spine_base", "spine_mid", "neck", "head",
        "left_shoulder", "left_elbow", "left_wrist", "left_hand",
        "right_shoulder", "right_elbow", "right_wrist", "right_hand",
        "left_hip", "left_knee", "left_ankle", "left_foot",
        "right_hip", "right_knee", "right_ankle", "right_foot",
        "spine_shoulder", "left_hand_tip", "left_thumb", "right_hand_tip", "right_thumb",
    ),
    bone_pairs=_one_based([
        (1, 2), (2, 21), (3, 21), (4, 3), (5, 21), (6, 5), (7, 6), (8, 7), (9, 21), (10, 9),
        (11, 10), (12, 11), (13, 1), (14, 13), (15, 14), (16, 15), (17, 1), (18, 17), (19, 18),
        (20, 19), (21, 21), (22, 23), (23, 8), (24, 25), (25, 12),
    ]),
    center=20,
    parts={
        "trunk": (0, 1, 2, 3, 20),
        "left_arm": (4, 5, 6, 7, 21, 22),
        "right_arm": (8, 9, 10, 11, 23, 24),
        "left_leg": (12, 13, 14, 15),
        "right_leg": (16, 17, 18, 19),
    },
    flip=(0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 16, 17, 18, 19, 12, 13, 14, 15, 20, 23, 24, 21, 22),
    spine_base=0, spine_mid=1, spine_shoulder=20, left_shoulder=4, right_shoulder=8,
)

# Kinect v1 (NW-UCLA): 20 joints; the shoulder centre plays the role of NTU's spine shoulder.
KINECT20 = Layout(
    name="kinect20",
    joint_names=(
        "hip_center", "spine", "shoulder_center", "head",
        "left_shoulder", "left_elbow", "left_wrist", "left_hand",
        "right_shoulder", "right_elbow", "right_wrist", "right_hand",
        "left_hip", "left_knee", "left_ankle", "left_foot",
        "right_hip", "right_knee", "right_ankle", "right_foot",
    ),
    bone_pairs=_one_based([
        (1, 2), (2, 3), (3, 3), (4, 3), (5, 3), (6, 5), (7, 6), (8, 7), (9, 3), (10, 9),
        (11, 10), (12, 11), (13, 1), (14, 13), (15, 14), (16, 15), (17, 1), (18, 17), (19, 18),
        (20, 19),
    ]),
    center=2,
    parts={
        "trunk": (0, 1, 2, 3),
        "left_arm": (4, 5, 6, 7),
        "right_arm": (8, 9, 10, 11),
        "left_leg": (12, 13, 14, 15),
        "right_leg": (16, 17, 18, 19),
    },
    flip=(0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 16, 17, 18, 19, 12, 13, 14, 15),
    spine_base=0, spine_mid=1, spine_shoulder=2, left_shoulder=4, right_shoulder=8,
)

LAYOUTS: dict[str, Layout] = {layout.name: layout for layout in (NTU25, KINECT20)}


def graphless(num_joints: int) -> Layout:
    """A layout for a user's skeleton with no known graph (for encoders that need none)."""
    return Layout(name=f"joints{num_joints}", joint_names=tuple(f"j{i}" for i in range(num_joints)))


def get_layout(name: str) -> Layout:
    """Look a layout up by name: ``ntu25``, ``kinect20`` or ``joints<N>`` (no graph)."""
    if name in LAYOUTS:
        return LAYOUTS[name]
    if name.startswith("joints") and name[6:].isdigit() and int(name[6:]) > 0:
        return graphless(int(name[6:]))
    raise ValueError(f"unknown joint layout {name!r}; known: {', '.join(LAYOUTS)} or joints<N>")
