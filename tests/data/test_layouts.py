"""Layouts as data: the built-ins' joint orders, layout files (YAML and JSON, parents or edges),
their validation messages, and `skelctl layouts`."""

import json

import pytest
import yaml
from click.testing import CliRunner
from conftest import PROJECT

from skelctl.cli import main
from skelctl.skeletons import (KINECT20, LAYOUTS, LayoutError, builtin_definition, get_layout,
                               read_layout_file)

KINECT20_EDGES = [[a, b] for a, b in (
    ("hip_center", "spine"), ("spine", "shoulder_center"), ("head", "shoulder_center"),
    ("left_shoulder", "shoulder_center"), ("left_elbow", "left_shoulder"),
    ("left_wrist", "left_elbow"), ("left_hand", "left_wrist"),
    ("right_shoulder", "shoulder_center"), ("right_elbow", "right_shoulder"),
    ("right_wrist", "right_elbow"), ("right_hand", "right_wrist"), ("left_hip", "hip_center"),
    ("left_knee", "left_hip"), ("left_ankle", "left_knee"), ("left_foot", "left_ankle"),
    ("right_hip", "hip_center"), ("right_knee", "right_hip"), ("right_ankle", "right_knee"),
    ("right_foot", "right_ankle"))]


def kinect20_spec(**changes):
    """KINECT20 as a layout file's mapping, with bones as an undirected edge list."""
    spec = yaml.safe_load(builtin_definition("kinect20"))
    spec.pop("parents")
    spec["edges"] = [list(reversed(e)) if i % 2 else e for i, e in enumerate(KINECT20_EDGES)]
    spec.update(changes)
    return {k: v for k, v in spec.items() if v is not None}


def test_builtin_joint_orders_follow_their_documentation():
    openni = LAYOUTS["openni15"]
    assert openni.joint_names == (
        "head", "neck", "torso", "left_shoulder", "left_elbow", "left_hand", "right_shoulder",
        "right_elbow", "right_hand", "left_hip", "left_knee", "left_foot", "right_hip",
        "right_knee", "right_foot")
    assert openni.joint_names[openni.center] == "torso" and openni.dims == 3
    coco, coco2d = LAYOUTS["coco17"], LAYOUTS["coco17-2d"]
    assert coco.joint_names == (
        "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder",
        "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip",
        "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle")
    assert coco2d.dims == 2 and coco.dims == 3
    assert coco2d.bone_pairs == coco.bone_pairs and coco2d.flip == coco.flip
    # PYSKL's COCO tree: the hip hangs from the shoulder, the shoulder from the nose
    parents = coco.parents
    assert parents[11] == 5 and parents[5] == 0 and parents[3] == 1 and parents[0] == 0
    assert coco.flip[5] == 6 and coco.flip[15] == 16 and coco.flip[0] == 0
    assert (openni.spine_mid, openni.spine_shoulder, openni.spine_base) == (2, 1, None)


def test_a_layout_file_with_edges_equals_the_builtin(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(kinect20_spec(name=None)))
    layout = read_layout_file(path)
    assert layout.name == "mine"  # the file's stem when the file names none
    assert layout.bone_pairs == KINECT20.bone_pairs and layout.flip == KINECT20.flip
    assert layout.parts == KINECT20.parts and layout.center == KINECT20.center
    assert (layout.spine_base, layout.right_shoulder) == (0, 8)
    as_json = tmp_path / "mine.json"
    as_json.write_text(json.dumps(kinect20_spec(name="kinect-json")))
    assert get_layout(as_json).bone_pairs == KINECT20.bone_pairs
    assert get_layout(str(path)) == layout


@pytest.mark.parametrize("changes, message", [
    ({"joints": ["a", "b", "a"], "edges": [], "center": "a", "mirror": None, "parts": None,
      "normalisation": None}, "joint 'a' is listed twice in 'joints' (positions 0 and 2)"),
    ({"center": "pelvis"}, "center: unknown joint 'pelvis'"),
    ({"edges": KINECT20_EDGES[:-1]}, "edges: joint(s) right_foot not connected to the centre "
                                     "'shoulder_center'"),
    ({"edges": KINECT20_EDGES + [["left_hand", "right_hand"]]}, "the bones form a cycle"),
    ({"edges": KINECT20_EDGES[:-1] + [["right_foot", "right_toe"]]},
     "edges: unknown joint 'right_toe'"),
    ({"parents": {"spine": "shoulder_center"}}, "not both or neither"),
    ({"mirror": [["left_hand", "right_hand"], ["left_hand", "right_foot"]]},
     "mirror: joint 'left_hand' is in more than one pair"),
    ({"parts": {"trunk": ["head"]}}, "'parts' must name the five body parts"),
    ({"dims": 4}, "'dims' is the coordinates per joint, 2 or 3, not 4"),
    ({"bones": []}, "unknown key(s) bones; accepted: name, dims, joints"),
    ({"normalisation": {"spine_base": "tailbone"}}, "normalisation: spine_base: unknown joint "
                                                    "'tailbone'"),
])
def test_layout_file_errors_name_the_file_and_the_joint(tmp_path, changes, message):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(kinect20_spec(**changes)))
    with pytest.raises(LayoutError) as error:
        read_layout_file(path)
    assert str(error.value).startswith(f"{path}: ") and message in str(error.value)


def test_parents_errors(tmp_path):
    spec = {"joints": ["hip", "spine", "head", "hand"], "center": "hip",
            "parents": {"spine": "hip", "head": "hand", "hand": "head"}}
    path = tmp_path / "cycle.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(LayoutError, match="joints head, hand form a cycle that never reaches "
                                          "the centre 'hip'"):
        read_layout_file(path)
    spec["parents"] = {"spine": "hip", "head": "spine"}
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(LayoutError, match="no parent for joint\\(s\\) hand"):
        read_layout_file(path)
    path.write_text("joints: [a, b\n")
    with pytest.raises(LayoutError, match="not a readable layout file"):
        read_layout_file(path)
    with pytest.raises(LayoutError, match="missing.yaml: layout file does not exist"):
        get_layout(tmp_path / "missing.yaml")


def test_graphless_2d_layouts():
    layout = get_layout("joints18-2d")
    assert layout.dims == 2 and layout.num_joints == 18 and not layout.has_graph
    with pytest.raises(LayoutError, match="known: ntu25, kinect20, openni15, coco17, coco17-2d"):
        get_layout("openpose")


def test_layouts_command_lists_every_builtin_with_its_joint_order(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["layouts"])
    assert result.exit_code == 0
    for name in LAYOUTS:
        assert f"\n{name}: " in "\n" + result.output
    assert "openni15: 15 joints, 3D" in result.output
    assert "0 nose, 1 left_eye, 2 right_eye" in result.output
    assert "coco17-2d: 17 joints, 2D" in result.output
    definition = runner.invoke(main, ["layouts", "--definition", "openni15"])
    assert yaml.safe_load(definition.output)["joints"][:3] == ["head", "neck", "torso"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(kinect20_spec(center="pelvis")))
    result = runner.invoke(main, ["layouts", str(bad)])
    assert result.exit_code == 1 and f"Error: {bad}: center: unknown joint 'pelvis'" in \
        result.output


def test_the_readme_example_layout_file_describes_the_kinect_v1_skeleton():
    layout = read_layout_file(PROJECT / "examples" / "kinect-v1-layout.yaml")
    assert layout.name == "kinect-v1" and layout.joint_names[4] == "l_shoulder"
    for field in ("bone_pairs", "center", "flip", "parts", "spine_base", "spine_mid",
                  "spine_shoulder", "left_shoulder", "right_shoulder", "left_hip", "right_hip",
                  "dims"):
        assert getattr(layout, field) == getattr(KINECT20, field), field
