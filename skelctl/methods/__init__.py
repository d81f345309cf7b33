"""Self-supervised methods, by the name a run entry gives in ``method``. Each is one file that
declares its options (a dataclass with the paper's defaults) and turns a batch into named losses;
see :mod:`skelctl.methods.base`."""

from __future__ import annotations

import warnings
from typing import Any

from skelctl.keys import unknown_keys
from skelctl.methods.aimclr import AimCLR
from skelctl.methods.base import Method, OptionsError, make_options
from skelctl.methods.crossclr import CrosSCLR
from skelctl.methods.crosnnclr import CrosNNCLR, CrosNNCLRStar
from skelctl.methods.crrl import CRRL
from skelctl.methods.skeletonclr import SkeletonCLR
from skelctl.methods.untrained import Untrained
from skelctl.models import build_encoder, encoder_option_names
from skelctl.skeletons import Layout

METHODS: dict[str, type[Method]] = {
    "skeletonclr": SkeletonCLR, "crosclr": CrosSCLR, "crrl": CRRL, "aimclr": AimCLR,
    "crosnnclr": CrosNNCLR, "crosnnclr_star": CrosNNCLRStar, "untrained": Untrained,
}
# another name a run entry may give -> the registered name: the spelling of CrosSCLR's module,
# and (warned about) a method's name before it was renamed
ALIASES = {"crossclr": "crosclr", "random": "untrained"}
DEPRECATED_NAMES = frozenset({"random"})


def method_name(name: str, where: str = "") -> str:
    """The registered name for ``name``, an alias resolved; a deprecated name is warned about
    (naming ``where``, the run)."""
    if name in DEPRECATED_NAMES:
        warnings.warn(f"{where + ': ' if where else ''}method {name!r} is deprecated; use "
                      f"{ALIASES[name]!r}", FutureWarning, stacklevel=2)
    return ALIASES.get(name, name)


def method_class(name: str) -> type[Method]:
    name = method_name(name)
    if name not in METHODS:
        raise OptionsError(f"unknown method {name!r}; known: {', '.join(METHODS)}")
    return METHODS[name]


def check_encoder_options(encoder: str, options: dict[str, Any], where: str) -> None:
    """An unknown encoder, or an option it lacks, is an error naming ``where`` (the run)."""
    try:
        accepted = encoder_option_names(encoder)
    except ValueError as err:
        raise OptionsError(f"{where}: {err}") from None
    problem = unknown_keys(options, accepted, "option(s)")
    if problem:
        raise OptionsError(f"{where}: encoder {encoder!r}: {problem}")


def build_method(name: str, streams: tuple[str, ...], layout: Layout, num_persons: int,
                 encoder: str = "stgcn", encoder_options: dict[str, Any] | None = None,
                 options: dict[str, Any] | None = None, where: str = "method") -> Method:
    """A method with fresh encoders of the named kind for the given streams; ``options`` are
    checked against the method's own ``Options`` (errors name ``where``)."""
    cls = method_class(name)
    checked = make_options(cls.Options, options, where)
    check_encoder_options(encoder, encoder_options or {}, where)
    return cls(tuple(streams), layout,
               lambda: build_encoder(encoder, layout, num_persons, **(encoder_options or {})),
               checked)
