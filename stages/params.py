"""Reading a params file: YAML, the sections' names and the data stages' sections by type and
range (:mod:`skelctl.stages.sections`), and, for every command but the data stages, every other
section and every run entry (:func:`skelctl.stages.config.check_document`), which needs the
methods and so torch: ``skelctl parse`` starts without it."""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import yaml

from skelctl.options import OptionsError
from skelctl.skeletons import syntax_error_message
from skelctl.stages.common import ParamsError
from skelctl.stages.sections import DATA_SECTIONS, check_sections


def read_params(params: Path | None, runs: bool = True) -> dict[str, Any]:
    """The params file as a mapping of sections (a fresh copy: callers may change it), checked:
    the data sections always, every section and run too unless ``runs`` is false (a data
    stage's command)."""
    if params is None:
        return {}
    params = Path(params)
    if not params.is_file():
        raise ParamsError(f"{params}: params file does not exist (--params names another)")
    raw = params.read_bytes()
    document = parse_params(str(params), raw)
    if runs:
        from skelctl.stages.config import check_runs  # the methods' options: torch

        check_runs(str(params), raw)
    return copy.deepcopy(document)


@functools.lru_cache(maxsize=16)
def parse_params(name: str, raw: bytes) -> dict[str, Any]:
    """``raw`` parsed and its data sections checked, once per content: the tables stage reads a
    run's entry for every row, and PyYAML takes a fifth of a second for the project's params."""
    try:
        text = raw.decode("utf-8-sig")
        document = yaml.safe_load(text) or {}
    except UnicodeDecodeError as err:
        raise ParamsError(syntax_error_message(name, err, raw, "not a readable params file: "))\
            from None
    except (yaml.YAMLError, ValueError, RecursionError) as err:  # ValueError: "!!int abc"
        raise ParamsError(syntax_error_message(name, err, text, "not a readable params file: "))\
            from None
    if not isinstance(document, dict):
        raise ParamsError(f"{name}: not a mapping of sections")
    try:
        check_sections(document, name, only=DATA_SECTIONS)
    except OptionsError as err:
        raise ParamsError(str(err)) from None
    return document
