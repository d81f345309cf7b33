"""The command line, and the synthetic corpus it writes."""

import subprocess
from pathlib import Path
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from skelctl.cli import main
from skelctl.data.formats import get_format
from skelctl.data.formats.ntu import missing_skeletons
from skelctl.data.synth import bone_scales, pose_sequence, perform


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_help_does_not_import_torch():
    code = ("import sys; from skelctl.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules and 'h5py' not in sys.modules")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "prepare" in result.stdout and "synth" in result.stdout


def test_the_data_commands_and_info_do_not_import_torch(tmp_path):
    """parse (with a params file: its sections are checked, its runs are not read), clean,
    views and info run without torch, as the command line runs them."""
    project = Path(__file__).resolve().parents[2]
    data, raw = tmp_path / "data", tmp_path / "raw"
    assert run("synth", "ntu60", "--out", raw, "--subjects", 1, "--replications", 1).exit_code == 0
    store = data / "processed" / "ntu60" / "50-shoulder.h5"
    for args in (["parse", "ntu60", "--raw", raw, "--params", project / "params.demo.yaml"],
                 ["clean", "ntu60"], ["views", "ntu60"], ["info", store]):
        code = ("import runpy, sys\n"
                f"sys.argv = ['skelctl', *{[str(a) for a in args]!r}, "
                + ("'--data-dir', " + repr(str(data)) if args[0] != "info" else "") + "]\n"
                "try:\n    runpy.run_module('skelctl', run_name='__main__')\n"
                "except SystemExit as end:\n    assert not end.code, end.code\n"
                "assert 'torch' not in sys.modules, 'torch imported'")
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                cwd=tmp_path)
        assert result.returncode == 0, (args, result.stderr)
    assert store.is_file()


def test_python_dash_m():
    result = subprocess.run([sys.executable, "-m", "skelctl", "prepare", "--help"],
                            capture_output=True, text=True)
    assert result.returncode == 0 and "--on-error [skip|fail]" in result.stdout


def test_prepare_prints_a_summary(synth_ntu60, tmp_path):
    result = run("prepare", "ntu60", "--raw", synth_ntu60, "--data-dir", tmp_path, "-j", "2")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "ntu60: 117 samples written to" in out
    assert "xsub: train 78, val 39" in out and "xview: train 78, val 39" in out
    assert "excluded, on the official missing-skeleton list: 3" in out
    assert "rejected files: 0" in out and "bodies dropped: short track" in out
    assert "invalid frames dropped:" in out


def test_stage_commands_in_a_row(synth_ntu60, tmp_path):
    assert run("parse", "ntu60", "--raw", synth_ntu60, "--data-dir", tmp_path).exit_code == 0
    result = run("clean", "ntu60", "--data-dir", tmp_path, "--denoise", "false")
    assert result.exit_code == 0 and "short track': 0" in result.stdout
    result = run("views", "ntu60", "--data-dir", tmp_path, "--variant", "32-none",
                 "--views", "joint,velocity")
    assert result.exit_code == 0 and "32-none.h5" in result.stdout


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "absent", "raw folder does not exist"),
    (lambda p: (p / "empty").mkdir() or p / "empty", "raw folder is empty"),
])
def test_bad_raw_folder_is_a_clear_error(tmp_path, make, message):
    raw = make(tmp_path)
    result = run("prepare", "ntu60", "--raw", raw, "--data-dir", tmp_path / "data")
    assert result.exit_code == 1
    assert f"Error: {raw}: {message}" in result.stderr


def test_bad_options(tmp_path):
    result = run("prepare", "kinetics", "--raw", tmp_path)
    assert result.exit_code == 2 and "unknown dataset 'kinetics': not a format (ntu60," in \
        result.stderr
    result = run("views", "ntu60", "--views", "joint,speed")
    assert result.exit_code == 2 and "comma-separated list" in result.stderr
    result = run("prepare", "ntu60", "--raw", tmp_path, "--variant", "fifty")
    assert result.exit_code == 2 and "variant 'fifty'" in result.stderr


def test_on_error_fail(synth_ntu60, tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    for f in sorted(synth_ntu60.iterdir())[:3]:
        (raw / f.name).write_bytes(f.read_bytes())
    bad = raw / "S001C001P001R001A001.skeleton"
    bad.write_text("")
    result = run("prepare", "ntu60", "--raw", raw, "--data-dir", tmp_path / "d", "--on-error",
                 "fail")
    assert result.exit_code == 1 and f"Error: {bad}: empty file" in result.stderr
    result = run("prepare", "ntu60", "--raw", raw, "--data-dir", tmp_path / "d")
    assert result.exit_code == 0 and f"{bad}: empty file" in result.stdout


# --- the synthetic corpus ---------------------------------------------------------------------

def test_synth_is_deterministic(tmp_path):
    for out in ("a", "b"):
        assert run("synth", "ntu60", "--out", tmp_path / out, "--subjects", 1,
                   "--replications", 1).exit_code == 0
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "b").iterdir())
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
               for f in files)
    other = tmp_path / "c"
    run("synth", "ntu60", "--out", other, "--subjects", 1, "--replications", 1, "--seed", 1)
    assert (other / files[0]).read_bytes() != (tmp_path / "a" / files[0]).read_bytes()


def test_synth_ntu_corpus_properties(synth_ntu60):
    fmt = get_format("ntu60")
    inventory = fmt.inventory(synth_ntu60)
    assert inventory.excluded["on the official missing-skeleton list"] == 3
    assert sum(p.stem in missing_skeletons("ntu60") for p in synth_ntu60.iterdir()) == 3
    samples = [fmt.read(item)[0] for item in inventory.items]
    assert len({s.label for s in samples}) == 13
    assert {s.view for s in samples} == {1, 2, 3}
    lengths = {s.bodies.shape[1] for s in samples}
    assert len(lengths) > 20 and min(lengths) >= 40
    tracks = np.array([s.bodies.shape[0] for s in samples])
    two_person = np.array([s.label >= 49 for s in samples])
    assert (tracks[two_person] >= 2).all() and (tracks[~two_person] >= 1).all()
    assert (tracks > 2).any() or (tracks[~two_person] > 1).any()  # spurious extra bodies
    invalid = [(~s.bodies.any(axis=(0, 2, 3))).sum() for s in samples]
    assert sum(v > 0 for v in invalid) > 5  # runs of frames where nobody is tracked


def test_synth_subjects_have_their_own_bone_lengths():
    still = perform("walk", 2, np.random.default_rng(0))
    forearm = [np.linalg.norm(np.diff(pose_sequence(still, bone_scales(s, 0))[0, [5, 6]], axis=0))
               for s in (1, 2, 3)]
    assert len({round(f, 4) for f in forearm}) == 3


def test_synth_pku_writes_the_official_layout(tmp_path):
    result = run("synth", "pku2", "--out", tmp_path, "--subjects", 2, "--replications", 1)
    assert result.exit_code == 0
    assert sorted(p.name for p in (tmp_path / "skeleton").iterdir())[:3] == [
        "A01N01-L.txt", "A01N01-M.txt", "A01N01-R.txt"]
    split = (tmp_path / "split" / "cross-subject.txt").read_text().splitlines()
    assert split[0].startswith("Training videos:") and split[2].startswith("Validataion videos:")
    frames = np.loadtxt(tmp_path / "skeleton" / "A01N01-L.txt")
    assert frames.shape[1] == 150
