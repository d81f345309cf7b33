"""Every value of every shipped params profile is checked by type (and range) before any work
starts: a wrong-typed value put into any key gives one line naming the file and the key path,
and the command exits with status 2, without a traceback."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skelctl.cli import main
from skelctl.stages.common import ParamsError
from skelctl.stages.config import check_document

PROJECT = Path(__file__).resolve().parents[2]
PROFILES = sorted(PROJECT.glob("params*.yaml"))
Path_ = tuple[Any, ...]


def leaves(node: Any, path: Path_ = ()) -> Iterator[tuple[Path_, Any]]:
    """Every value that is not a non-empty mapping or list, with its key path."""
    if isinstance(node, dict) and node:
        for key, value in node.items():
            yield from leaves(value, (*path, key))
    elif isinstance(node, list) and node:
        for index, value in enumerate(node):
            yield from leaves(value, (*path, index))
    else:
        yield path, node


def dotted(path: Path_) -> str:
    """``("runs", "a", "train", "lr_steps", 0)`` -> ``runs.a.train.lr_steps[0]``."""
    text = ""
    for key in path:
        text += f"[{key}]" if isinstance(key, int) else (f".{key}" if text else str(key))
    return text


def wrong_value(path: Path_, value: Any) -> Any:
    """A value of another kind than ``value``'s, as a user mistypes one: text for a number or a
    flag, a list for text or an empty value, a mapping for an empty list, a list for an empty
    mapping. A generic protocol rule's values may be numbers or text: a mapping there."""
    if "protocols" in path:
        return {"wrong": 1}
    if isinstance(value, bool):
        return "no way"
    if isinstance(value, (int, float)):
        return "0.o4"
    if isinstance(value, str) or value is None:
        return [1, 2]
    if isinstance(value, list):
        return {"wrong": 1}
    return [1]


def replaced(document: Any, path: Path_, value: Any) -> Any:
    if not path:
        return value
    head, *rest = path
    copy = list(document) if isinstance(document, list) else dict(document)
    copy[head] = replaced(document[head], tuple(rest), value)
    return copy


def read(profile: Path) -> dict[str, Any]:
    return yaml.load(profile.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


CASES = [(profile, path) for profile in PROFILES for path, _ in leaves(read(profile))]


def test_the_shipped_profiles_pass_the_check():
    assert len(PROFILES) >= 4
    for profile in PROFILES:
        check_document(read(profile), profile.name)


def around(document: dict[str, Any], path: Path_) -> dict[str, Any]:
    """The document with the runs that ``path`` does not touch left out (each check then costs
    one run's resolution, not a hundred's): the run it is in, or the first run for a key outside
    the runs (the defaults are checked as each run is resolved); every other section whole."""
    runs, continued = document.get("runs") or {}, document.get("continued") or []
    if len(path) < 2 or not isinstance(runs, dict) or not isinstance(continued, list):
        return document  # the mistake is in the runs' or the list's own type
    if path[0] == "continued":
        keep = {str(entry.get("start")) for entry in continued if isinstance(entry, dict)}
    else:
        keep = {path[1]} if path[0] == "runs" else set(list(runs)[:1])
        continued = []
    return {**document, "runs": {k: v for k, v in runs.items() if k in keep},
            "continued": continued}


@pytest.mark.parametrize("profile", PROFILES, ids=[p.name for p in PROFILES])
def test_a_wrong_type_in_any_key_is_one_line_naming_the_file_and_the_key_path(profile):
    document = read(profile)
    found = list(leaves(document))
    assert len(found) > 50
    for path, value in found:
        with pytest.raises(ParamsError) as info:
            check_document(around(replaced(document, path, wrong_value(path, value)), path),
                           profile.name)
        message = str(info.value)
        assert "\n" not in message, message
        assert message.startswith(f"{profile.name}: "), message
        reported = message[len(profile.name) + 2:].split(": ")[0]
        # the key path, or (for a value of a union or a list checked whole) the one holding it
        assert dotted(path).startswith(reported) and reported, (dotted(path), message)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=st.sampled_from(CASES))
def test_every_command_refuses_a_wrong_type_with_one_line_and_status_2(case, tmp_path):
    profile, path = case
    document = read(profile)
    value = dict(leaves(document))[path]
    params = tmp_path / profile.name
    params.write_text(yaml.safe_dump(replaced(document, path, wrong_value(path, value))))
    run = next(iter(document["runs"]))
    split = document["splits"][0]
    data = ["--data-dir", str(tmp_path / "absent")]
    for command in (["pretrain", run, "--split", split, *data],
                    ["linear", run, "--split", split, *data], ["tables"]):
        result = CliRunner().invoke(main, [*command, "--params", str(params)])
        assert result.exit_code == 2, (command, result.output, result.exception)
        assert result.stdout == "" and "Traceback" not in result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"Error: {params}: "), result.stderr


def test_the_issue_s_mistakes_read_as_one_line_each(tmp_path):
    document = read(PROJECT / "params.small-data.yaml")
    mistakes = {
        ("defaults", "train", "lr"): ("0.o4", "defaults.train.lr: expected a number above 0, "
                                              "found '0.o4' (text)"),
        ("knn", "k"): ("one", "knn.k: expected an integer at least 1, found 'one' (text)"),
        ("linear", "epochs"): ("85x", "linear.epochs: expected an integer at least 1, found "
                                      "'85x' (text)"),
        ("defaults", "train", "lr_steps"): (20, "defaults.train.lr_steps: expected a list of "
                                                "integers at least 1, found 20 (an integer)"),
        ("defaults", "train", "weight_decay"): ("1e-4", "defaults.train.weight_decay: expected a "
                                                        "number at least 0, found '1e-4' (text: "
                                                        "YAML reads a number without a dot before "
                                                        "the exponent as text; write 0.0001)"),
        ("runs", "ser-joint", "options", "student"): ("sr", "runs.ser-joint.options.student: "
                                                            "expected one of cml, ser, found 'sr' "
                                                            "(text); did you mean 'ser'?"),
    }
    for path, (value, expected) in mistakes.items():
        with pytest.raises(ParamsError) as info:
            check_document(replaced(document, path, value), "params.small-data.yaml")
        assert str(info.value) == f"params.small-data.yaml: {expected}"
    with pytest.raises(ParamsError, match=r"^p.yaml: unknown section\(s\) linaer \(did you mean "
                                          r"'linear'\?\); accepted: synth, raw"):
        check_document({"linaer": {}}, "p.yaml")
