"""Contract over the built-in layouts (``skelctl.skeletons.LAYOUTS``): each one is a skeleton the
rest of the toolkit can rely on (a bone tree rooted at the centre, indices in range, unique joint
names, five body parts covering the joints, a mirror permutation that maps bones onto bones),
survives its own serialisations, and feeds the graph encoder. A newly added layout file is tested
without a test of its own."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from skelctl.models import build_encoder
from skelctl.skeletons import (BUILTIN_NAMES, LAYOUTS, NORMALISATION_JOINTS, PART_NAMES, Layout,
                               builtin_definition, layout_from_spec)

BUILTINS = [pytest.param(layout, id=name) for name, layout in LAYOUTS.items()]


def test_every_builtin_name_is_a_layout_of_that_name():
    assert list(LAYOUTS) == list(BUILTIN_NAMES)
    assert all(layout.name == name for name, layout in LAYOUTS.items())


@pytest.mark.parametrize("layout", BUILTINS)
def test_layout_structure(layout):
    v = layout.num_joints
    assert len(layout.bone_pairs) == v
    assert len(layout.edges) == v - 1  # a tree: one root pair with itself
    assert layout.parents[layout.center] == layout.center
    # every joint reaches the root by following parents
    for joint in range(v):
        seen = set()
        while layout.parents[joint] != joint:
            assert joint not in seen
            seen.add(joint)
            joint = layout.parents[joint]
        assert joint == layout.center
    # five body parts covering every joint exactly once
    parts = sorted(j for part in layout.parts.values() for j in part)
    assert len(layout.parts) == 5 and parts == list(range(v))
    # the mirror permutation is an involution that swaps left and right parts
    flip = np.array(layout.flip)
    assert sorted(flip) == list(range(v)) and (flip[flip] == np.arange(v)).all()
    assert sorted(flip[list(layout.parts["left_arm"])]) == sorted(layout.parts["right_arm"])
    assert sorted(flip[list(layout.parts["left_leg"])]) == sorted(layout.parts["right_leg"])
    adjacency = layout.adjacency()
    assert (adjacency == adjacency.T).all() and adjacency.sum() == 2 * (v - 1)


@pytest.mark.parametrize("layout", BUILTINS)
def test_layout_indices_and_names(layout):
    v = layout.num_joints
    assert v == len(set(layout.joint_names)) and all(layout.joint_names)
    assert layout.dims in (2, 3) and 0 <= layout.center < v
    # one pair per joint, in joint order, each parent a joint of the layout
    assert [child for child, _ in layout.bone_pairs] == list(range(v))
    assert all(0 <= parent < v for _, parent in layout.bone_pairs)
    assert [c for c, p in layout.bone_pairs if c == p] == [layout.center]
    assert tuple(layout.parts) == PART_NAMES
    for joint in NORMALISATION_JOINTS:
        index = getattr(layout, joint)
        assert index is None or 0 <= index < v, joint


@pytest.mark.parametrize("layout", BUILTINS)
def test_mirror_swaps_left_and_right_and_keeps_the_bones(layout):
    names, flip = layout.joint_names, layout.flip
    assert layout.mirror_pairs, "a built-in layout has left and right joints"
    for left, right in layout.mirror_pairs:
        part = names[left].removeprefix("left_").removeprefix("right_")
        assert {names[left], names[right]} == {f"left_{part}", f"right_{part}"}
    unpaired = [names[j] for j in range(layout.num_joints) if flip[j] == j]
    assert not any(name.startswith(("left_", "right_")) for name in unpaired), unpaired
    assert flip[layout.center] == layout.center
    bones = {frozenset(edge) for edge in layout.edges}
    assert {frozenset((flip[a], flip[b])) for a, b in layout.edges} == bones
    for left, right in (("left_shoulder", "right_shoulder"), ("left_hip", "right_hip")):
        if getattr(layout, left) is not None:
            assert flip[getattr(layout, left)] == getattr(layout, right)


@pytest.mark.parametrize("layout", BUILTINS)
def test_layout_round_trips_through_its_dict_and_its_file(layout):
    assert Layout.from_dict(layout.to_dict()) == layout
    spec = yaml.safe_load(builtin_definition(layout.name))
    assert layout_from_spec(spec, "again") == layout
    description = layout.describe()
    assert all(name in description for name in layout.joint_names)


@pytest.mark.parametrize("layout", BUILTINS)
def test_graph_encoder_runs_on_the_layout(layout):
    torch.manual_seed(0)
    encoder = build_encoder("stgcn", layout, 2, hidden=4, out_dim=8).eval()
    x = torch.randn(2, layout.dims, 8, layout.num_joints, 2,
                    generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        features = encoder(x)
    assert features.shape == (2, 8) and torch.isfinite(features).all()
    assert encoder.adjacency.shape[-2:] == (layout.num_joints, layout.num_joints)
