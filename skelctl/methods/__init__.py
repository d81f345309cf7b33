"""Self-supervised methods, by the name a run entry gives in ``method``. Each is one file that
declares its options (a dataclass with the paper's defaults) and turns a batch into named losses;
see :mod:`skelctl.methods.base`."""

from __future__ import annotations

from typing import Any

from skelctl.keys import unknown_keys
from skelctl.methods.aimclr import AimCLR
from skelctl.methods.base import Method, OptionsError, make_options
from skelctl.methods.crosclr import CrosSCLR
from skelctl.methods.crosnnclr import CrosNNCLR, CrosNNCLRStar
from skelctl.methods.crrl import CRRL
from skelctl.methods.random_init import RandomInit
from skelctl.methods.skeletonclr import SkeletonCLR
from skelctl.models import build_encoder, encoder_option_names
from skelctl.skeletons import Layout

METHODS: dict[str, type[Method]] = {
    "skeletonclr": SkeletonCLR, "crosclr": CrosSCLR, "crrl": CRRL, "aimclr": AimCLR,
    "crosnnclr": CrosNNCLR, "crosnnclr_star": CrosNNCLRStar, "random": RandomInit,
}


def method_class(name: str) -> type[Method]:
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
