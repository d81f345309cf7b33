"""One installed package: the top-level stages/ folder is installed as skelctl.stages, so nothing
named ``stages`` lands at the top of site-packages, in an editable install (this checkout's) and
in a regular one (a wheel)."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]


def listed_packages() -> list[str]:
    config = configparser.ConfigParser()
    config.read(PROJECT / "setup.cfg")
    return config["options"]["packages"].split()


def test_setup_cfg_lists_every_package_folder_and_maps_stages():
    folders = sorted("skelctl." + ".".join(p.parent.relative_to(PROJECT / "skelctl").parts)
                     if p.parent != PROJECT / "skelctl" else "skelctl"
                     for p in (PROJECT / "skelctl").rglob("__init__.py"))
    assert sorted(set(listed_packages()) - {"skelctl.stages"}) == folders
    config = configparser.ConfigParser()
    config.read(PROJECT / "setup.cfg")
    assert config["options"]["package_dir"].split() == ["skelctl.stages", "=", "stages"]


def test_the_stages_are_skelctl_stages_and_no_top_level_stages_is_installed(tmp_path):
    """Outside the checkout (so that its folder is not on the path), as a user's process is."""
    code = ("import importlib.util, skelctl.stages.config as c; "
            "print(c.__name__, importlib.util.find_spec('stages'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == ["skelctl.stages.config", "None"]


@pytest.mark.slow
def test_a_wheel_holds_only_the_skelctl_package(tmp_path):
    source = tmp_path / "source"  # a copy: building writes build/ and .egg-info beside the code
    def left_out(folder: str, names: list[str]) -> set[str]:
        top = {".venv", ".git", ".dvc", "data", "build"} if Path(folder) == PROJECT else set()
        return {n for n in names if n in top | {"_build", "__pycache__"}
                or n.endswith(".egg-info")}

    shutil.copytree(PROJECT, source, ignore=left_out)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                    "-q", str(source), "-w", str(tmp_path)], check=True, cwd=tmp_path)
    wheel, = tmp_path.glob("skelctl-*.whl")
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"skelctl"}
    assert "skelctl/stages/pretrain.py" in zipfile.ZipFile(wheel).namelist()
