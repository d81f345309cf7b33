"""The extension guides are complete: a throwaway method, encoder and dataset format, written in a
temporary module exactly as docs/add-a-method.md, docs/add-an-encoder.md and
docs/add-a-dataset-format.md say and registered as their "register it" steps say, are picked up by
the registry contracts, the params check, the loss-history and tables regressions and the parse
stage, with no project file touched; and every file the test had to touch is one its guide names.

The method module is the guide's own code (its ``python`` blocks, in order), so a guide whose
example no longer runs fails here. A registry entry is a ``monkeypatch.setitem`` on the registry
(what adding a line to it does); a contract test module is loaded afresh once the entries are in,
so that its lists of names, taken from the registries at import, hold the new ones, as they would
in a fresh pytest run. Touching anything else goes through :meth:`Extension.touch`, which records
the file and the entry for the guide check."""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from skelctl.data import formats
from skelctl.methods import METHODS, build_method
from skelctl.models import ENCODERS, EncoderKind, load_encoder, save_encoder
from skelctl.skeletons import KINECT20, NTU25
from skelctl.stages import config, parse
from skelctl.stages.common import ParamsError

from conftest import PROJECT

METHOD, ENCODER, FORMAT = "throwaway", "throwaway_mlp", "throwaway-txt"
TESTS = PROJECT / "tests"
GUIDES = {"method": PROJECT / "docs" / "add-a-method.md",
          "encoder": PROJECT / "docs" / "add-an-encoder.md",
          "format": PROJECT / "docs" / "add-a-dataset-format.md"}

# add-an-encoder.md, step 1: the layout, then the options as typed keywords with defaults;
# `out_dim` exposed
ENCODER_MODULE = '''
"""A throwaway encoder: each frame's pose through a two-layer MLP, averaged over frames and
bodies."""

from __future__ import annotations

import torch
from torch import nn

from skelctl.options import PositiveInt
from skelctl.skeletons import Layout


class PoseMLP(nn.Module):
    def __init__(self, layout: Layout, hidden: PositiveInt = 64, out_dim: PositiveInt = 128):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(layout.num_joints * layout.dims, hidden), nn.ReLU(),
                                 nn.Linear(hidden, out_dim))
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, T, V, M) -> (N, out_dim)
        n, c, t, v, m = x.shape
        return self.net(x.permute(0, 4, 2, 3, 1).reshape(n, m, t, v * c)).mean(dim=(1, 2))
'''

# add-a-dataset-format.md, steps 1-4: the class attributes, inventory, read and splits
FORMAT_MODULE = '''
"""A throwaway format: one text file per sample, ``sNN_aNN.txt`` (subject, action 1..3), each
line a frame of 20 joints x 3 coordinates (one body, Kinect v1). Protocol ``xsub``: subject 1
trains, the others test. Samples listed in ``excluded.txt`` are left out."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from skelctl.data.formats.base import (TRAIN, VAL, DatasetError, DatasetFormat, Inventory,
                                       RawSample, SampleError, check_finite, check_raw_dir)
from skelctl.skeletons import KINECT20

NAME = re.compile(r"s(\\d{2})_a(\\d{2})")


class TextFormat(DatasetFormat):
    name = "throwaway-txt"
    layout = KINECT20
    num_classes = 3
    max_bodies = 1
    protocols = ("xsub",)

    def inventory(self, raw_dir: Path) -> Inventory:
        raw_dir = check_raw_dir(raw_dir)
        paths = sorted(p for p in raw_dir.glob("*.txt") if p.name != "excluded.txt")
        if not paths:
            raise DatasetError(f"{raw_dir}: no sNN_aNN.txt files in the raw folder")
        listed = raw_dir / "excluded.txt"
        excluded = set(listed.read_text().split()) if listed.is_file() else set()
        items = [str(p) for p in paths if NAME.fullmatch(p.stem) and p.stem not in excluded]
        rejected = [(str(p), "file name does not match sNN_aNN.txt") for p in paths
                    if not NAME.fullmatch(p.stem)]
        dropped = sum(NAME.fullmatch(p.stem) is not None and p.stem in excluded for p in paths)
        return Inventory(items, rejected, {"listed in excluded.txt": dropped} if dropped else {})

    def read(self, item: str) -> list[RawSample]:
        path = Path(item)
        try:
            coords = np.loadtxt(path, dtype=np.float32, ndmin=2)
        except ValueError as err:
            raise SampleError(path, f"not a table of numbers ({err})") from None
        if coords.shape[0] == 0 or coords.shape[1] != KINECT20.num_joints * 3:
            raise SampleError(path, f"{coords.shape[1]} values a line, expected "
                                    f"{KINECT20.num_joints * 3}")
        coords = coords.reshape(len(coords), KINECT20.num_joints, 3)
        check_finite(path, coords, ("frame", "joint", "coordinate"))
        subject, action = map(int, NAME.fullmatch(path.stem).groups())
        if not 1 <= action <= self.num_classes:
            raise SampleError(path, f"action {action} is not in 1..{self.num_classes}")
        return [RawSample(name=path.stem, bodies=coords[None], label=action - 1,
                          subject=subject, source=str(path))]

    def splits(self, meta: dict[str, np.ndarray], raw_dir: Path) -> dict[str, np.ndarray]:
        return {"xsub": np.where(meta["subject"] == 1, TRAIN, VAL).astype(np.int8)}


THROWAWAY_TXT = TextFormat()
'''


def python_blocks(markdown: str) -> list[str]:
    """The fenced ``python`` blocks of a Markdown text, dedented, in order."""
    blocks = re.findall(r"^( *)```python\n(.*?)^\1```", markdown, re.S | re.M)
    return ["\n".join(line[len(indent):] for line in body.splitlines()) for indent, body in blocks]


def write_raw(out: Path) -> None:
    """Subjects 1-3 x actions 1-3 of the throwaway format, s03_a03 excluded by the dataset's
    list, and one misnamed file rejected up front."""
    out.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for subject in (1, 2, 3):
        for action in (1, 2, 3):
            frames = rng.normal(size=(6 + action, KINECT20.num_joints * 3)).round(4)
            np.savetxt(out / f"s{subject:02d}_a{action:02d}.txt", frames, fmt="%.4f")
    (out / "excluded.txt").write_text("s03_a03\n")


@dataclass
class Extension:
    """The throwaway modules, registered, and fresh copies of the tests that read the
    registries; ``touched``: (guide, file, entry) for everything touched besides the modules."""

    monkeypatch: pytest.MonkeyPatch
    modules: dict[str, types.ModuleType] = field(default_factory=dict)
    tests: dict[str, types.ModuleType] = field(default_factory=dict)
    touched: list[tuple[str, str, str]] = field(default_factory=list)

    def touch(self, guide: str, file: str, mapping: dict, key: str, value: Any) -> None:
        """Add ``key: value`` to a mapping of ``file`` (as its guide says), recorded."""
        name = next(n for n, v in vars(self.load_owner(file)).items() if v is mapping)
        self.monkeypatch.setitem(mapping, key, value)
        self.touched.append((guide, file, name))

    def load_owner(self, file: str) -> types.ModuleType:
        if file.startswith("tests/"):
            return self.tests[Path(file).stem]
        return importlib.import_module(file.removesuffix(".py").removesuffix("/__init__")
                                       .replace("/", "."))

    def load_test(self, path: str) -> types.ModuleType:
        """A fresh copy of a test module: its module-level lists of names (parametrisations,
        TRAINED, ADDED_METHODS) taken from the registries as they are now."""
        alias = f"extension_copy_of_{Path(path).stem}"
        spec = importlib.util.spec_from_file_location(alias, TESTS / path)
        module = importlib.util.module_from_spec(spec)
        self.monkeypatch.setitem(sys.modules, alias, module)
        spec.loader.exec_module(module)
        self.tests[Path(path).stem] = module
        return module


@pytest.fixture
def extension(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Extension:
    ext = Extension(monkeypatch)
    folder = tmp_path / "extension"
    folder.mkdir()
    # add-a-method.md: the method's file is the guide's python blocks, in order
    sources = {"throwaway_method": "\n\n".join(python_blocks(GUIDES["method"].read_text())),
               "throwaway_encoder": ENCODER_MODULE, "throwaway_format": FORMAT_MODULE}
    for module, text in sources.items():
        (folder / f"{module}.py").write_text(text)
    monkeypatch.syspath_prepend(str(folder))
    for module in sources:  # imported from sys.path, and out of sys.modules afterwards
        assert module not in sys.modules
        spec = importlib.util.find_spec(module)
        assert spec is not None and Path(spec.origin).parent == folder
        ext.modules[module] = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, module, ext.modules[module])
        spec.loader.exec_module(ext.modules[module])
    method, encoder, fmt = (ext.modules[m] for m in sources)

    # "register it": one line in each registry
    ext.touch("method", "skelctl/methods/__init__.py", METHODS, METHOD, method.MyMethod)
    ext.touch("encoder", "skelctl/models/__init__.py", ENCODERS, ENCODER,
              EncoderKind(encoder.PoseMLP, {"hidden": 32},
                          "a throwaway pose MLP, averaged over frames and bodies"))
    ext.touch("format", "skelctl/data/formats/__init__.py", formats.FORMATS, FORMAT,
              fmt.THROWAWAY_TXT)
    # DATASETS is derived from FORMATS when the module is imported: a line added to FORMATS is
    # in it, so it is derived again here, in each module that took it at its import
    datasets = (*formats.FORMATS, "generic")
    for module in (formats, parse):
        monkeypatch.setattr(module, "DATASETS", datasets)

    for path in ("methods/test_method_contract.py", "models/test_encoder_files.py",
                 "data/test_format_contract.py", "methods/test_loss_history.py",
                 "stages/test_tables.py"):
        ext.load_test(path)
    # add-an-encoder.md, step 4: small widths in the contracts' tables
    ext.touch("encoder", "tests/models/test_encoder_files.py",
              ext.tests["test_encoder_files"].SMALL_OPTIONS, ENCODER, {"hidden": 8, "out_dim": 8})
    ext.touch("encoder", "tests/methods/test_method_contract.py",
              ext.tests["test_method_contract"].TINY_ENCODERS, ENCODER,
              {"hidden": 8, "out_dim": 16})
    # add-a-dataset-format.md, step 6: the synthetic raw folder and what parsing it gives
    contract = ext.tests["test_format_contract"]
    ext.touch("format", "tests/data/test_format_contract.py", contract.RAW, FORMAT,
              contract.Raw(write_raw, 8, 1, {1, 2, 3}, {-1}, {"xsub": (3, 5)}))
    return ext


def parametrised(function: Any, argument: str = "name") -> list[Any]:
    """The values a test function is parametrised with for ``argument``."""
    return list(next(m.args[1] for m in function.pytestmark
                     if m.name == "parametrize" and m.args[0] == argument))


def fixture_function(fixture: Any) -> Any:
    return getattr(fixture, "_get_wrapped_function", lambda: fixture.__wrapped__)()


def test_the_method_contract_runs_on_the_new_method_and_encoder(extension, tmp_path):
    contract = extension.tests["test_method_contract"]
    for test in (contract.test_method_refuses_the_wrong_number_of_streams,
                 contract.test_method_takes_a_training_step_with_finite_losses_and_gradients,
                 contract.test_method_encoders_round_trip_through_the_encoder_file):
        assert METHOD in parametrised(test), test.__name__
    contract.test_the_registry_holds_every_method_class_once()
    contract.test_method_refuses_the_wrong_number_of_streams(METHOD)
    contract.test_method_takes_a_training_step_with_finite_losses_and_gradients(METHOD)
    contract.test_method_encoders_round_trip_through_the_encoder_file(METHOD, tmp_path)
    # the new method on every registered encoder it accepts, the new encoder among them
    assert ENCODER in contract.accepted_encoders(METHOD)


def test_the_encoder_contract_runs_on_the_new_encoder_and_its_file_round_trips(extension,
                                                                              tmp_path):
    contract = extension.tests["test_encoder_files"]
    test = contract.test_every_registered_encoder_builds_and_round_trips_its_file
    assert ENCODER in parametrised(test)
    for layout in (NTU25, KINECT20):
        test(ENCODER, layout, tmp_path)
    # the encoder file of a run on it: the registry's defaults written out, rebuilt strictly
    torch.manual_seed(0)
    method = build_method(METHOD, ("joint",), NTU25, 2, ENCODER, {"out_dim": 16},
                          {"queue_size": 8})
    encoder = method.encoders()["joint"].eval()
    save_encoder(tmp_path / "joint.encoder.pt", encoder, "joint", {"run": f"{METHOD}-joint"})
    loaded, info = load_encoder(tmp_path / "joint.encoder.pt")
    assert type(loaded) is extension.modules["throwaway_encoder"].PoseMLP
    assert (info["name"], info["options"]) == (ENCODER, {"hidden": 32, "out_dim": 16})
    x = torch.randn(2, 3, 10, 25, 2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded(x), encoder(x))


def test_the_format_contract_and_the_parse_stage_take_the_new_format(extension,
                                                                     tmp_path_factory):
    contract = extension.tests["test_format_contract"]
    assert FORMAT in parametrised(contract.test_format_reads_samples_of_its_layout)
    contract.test_every_registered_format_has_a_synthetic_raw_folder_here()
    parsed = fixture_function(contract.parsed)(tmp_path_factory)
    contract.test_format_reads_samples_of_its_layout(FORMAT, parsed)
    contract.test_format_assigns_every_sample_to_its_protocols(FORMAT, parsed)
    # `skelctl prepare <name>` and the parse stage take it
    assert parse.import_settings(FORMAT, None)[:2] == (FORMAT, FORMAT)
    raw = tmp_path_factory.mktemp("raw") / FORMAT
    write_raw(raw)
    (raw / "s1_a1.txt").write_text("1 2 3\n")
    report = parse.run(FORMAT, raw, tmp_path_factory.mktemp("data"))
    assert (report["samples"], report["classes"], report["layout"]) == (8, 3, "kinect20")
    assert report["excluded"] == {"listed in excluded.txt": 1}
    assert report["rejected"] == [(str(raw / "s1_a1.txt"), "file name does not match sNN_aNN.txt")]


def test_the_params_check_takes_a_run_of_the_new_method_and_encoder(extension, tmp_path):
    entry = {"method": METHOD, "streams": ["joint"], "encoder": ENCODER,
             "encoder_options": {"hidden": 16},
             "options": {"weight": 0.5, "target": "motion", "queue_size": 64}}
    document = {"splits": [f"{FORMAT}-xsub"], "runs": {f"{METHOD}-joint": entry}}
    config.check_document(document, "params.yaml")
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(document))
    run = config.load_run(params, f"{METHOD}-joint")
    assert (run.method, run.encoder, run.encoder_options) == (METHOD, ENCODER, {"hidden": 16})
    assert run.options["target"] == "motion"
    assert type(run.build(KINECT20, 1)).__name__ == "MyMethod"
    for key, wrong in (("options", {"weight": "heavy"}), ("options", {"weight": -1}),
                       ("options", {"target": "bone"}), ("encoder_options", {"hidden": "wide"}),
                       ("encoder_options", {"hidden": 0})):
        bad = {**document, "runs": {f"{METHOD}-joint": {**entry, key: wrong}}}
        with pytest.raises(ParamsError) as caught:
            config.check_document(bad, "params.yaml")
        message = str(caught.value)
        assert "\n" not in message, message
        assert f"params.yaml: runs.{METHOD}-joint.{key}.{next(iter(wrong))}" in message, message


def test_the_regressions_report_the_new_method_as_not_yet_recorded_and_added(
        extension, tmp_path, monkeypatch):
    history = extension.tests["test_loss_history"]
    assert METHOD in history.TRAINED and METHOD in parametrised(
        history.test_loss_history_is_unchanged)
    history.test_the_recorded_histories_are_of_registered_methods()
    with pytest.raises(pytest.skip.Exception, match=f"tests/methods/test_loss_history.py "
                                                    f"{METHOD}"):
        history.test_loss_history_is_unchanged(METHOD)
    # its losses over the regression's two steps (the settings it would be recorded with)
    assert all(np.isfinite(list(step.values())).all() for step in history.loss_history(METHOD))

    tables = extension.tests["test_tables"]
    assert METHOD in tables.ADDED_METHODS
    # a profile with a run of it (add-a-method.md, step 7): left out as added, the tables
    # rendered before render the same rows
    profile = tmp_path / "profile" / "params.demo.yaml"
    profile.parent.mkdir()
    document = yaml.safe_load((PROJECT / "params.demo.yaml").read_text())
    document["runs"][f"{METHOD}-joint"] = {"method": METHOD, "streams": ["joint"],
                                           "options": {"queue_size": 256}}
    profile.write_text(yaml.safe_dump(document, sort_keys=False))
    recorded = tables.as_recorded(profile, tmp_path, monkeypatch)
    assert f"{METHOD}-joint" not in yaml.safe_load(recorded.read_text())["runs"]
    monkeypatch.setattr(tables, "PROJECT", profile.parent)  # the profile the test reads
    (tmp_path / "rendered").mkdir()
    tables.test_every_table_rendered_before_renders_the_same_rows(
        profile.name, monkeypatch, tmp_path / "rendered")


def test_the_guides_name_every_file_the_extension_touched(extension):
    """Each file and entry touched besides the new modules is named in its guide, and no
    project file holds the new names."""
    assert extension.touched
    for guide, file, entry in extension.touched:
        text = " ".join(GUIDES[guide].read_text().split())
        assert f"`{file}`" in text, f"{GUIDES[guide].name} does not name {file}"
        assert entry in text, f"{GUIDES[guide].name} does not name {entry} ({file})"
    for _, file, _ in extension.touched:
        assert not re.search(rf"\b{METHOD}\b|{ENCODER}|{FORMAT}",
                             (PROJECT / file).read_text()), file
    for module in extension.modules.values():
        assert not Path(module.__file__).is_relative_to(PROJECT)
