import pytest

from skelctl.skeletons import KINECT20, NTU25, get_layout


def test_ntu25_bone_pairs_match_the_reference_one_based_list():
    one_based = [(1, 2), (2, 21), (3, 21), (4, 3), (5, 21), (6, 5), (7, 6), (8, 7), (9, 21),
                 (10, 9), (11, 10), (12, 11), (13, 1), (14, 13), (15, 14), (16, 15), (17, 1),
                 (18, 17), (19, 18), (20, 19), (21, 21), (22, 23), (23, 8), (24, 25), (25, 12)]
    assert NTU25.bone_pairs == tuple((c - 1, p - 1) for c, p in one_based)
    assert NTU25.center == 20
    assert NTU25.flip == (0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 16, 17, 18, 19, 12, 13, 14, 15,
                          20, 23, 24, 21, 22)


def test_get_layout():
    assert get_layout("ntu25") is NTU25
    assert get_layout("kinect20") is KINECT20
    custom = get_layout("joints17")
    assert custom.num_joints == 17 and not custom.has_graph
    with pytest.raises(ValueError, match="no skeleton graph"):
        custom.parents
    with pytest.raises(ValueError, match="unknown joint layout 'openpose'"):
        get_layout("openpose")
