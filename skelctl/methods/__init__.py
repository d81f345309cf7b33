"""Self-supervised methods, by the name a run entry gives in ``method``. Each is one file that
declares its options (a dataclass with the paper's defaults) and turns a batch into named losses;
see :mod:`skelctl.methods.base`."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

from skelctl.keys import unknown_keys
from skelctl.methods.aimclr import AimCLR
from skelctl.methods.base import EncoderFactory, Method, OptionsError, make_options
from skelctl.methods.crossclr import CrosSCLR
from skelctl.methods.crosnnclr import CrosNNCLR, CrosNNCLRStar
from skelctl.methods.crrl import CRRL
from skelctl.methods.isc import ISC
from skelctl.methods.mamp import MAMP
from skelctl.methods.pcm3 import PCM3
from skelctl.methods.skeletonclr import SkeletonCLR
from skelctl.methods.stars import STARS
from skelctl.methods.untrained import Untrained
from skelctl.models import build_encoder, encoder_option_types
from skelctl.keys import unknown_name
from skelctl.options import check_mapping
from skelctl.skeletons import Layout

METHODS: dict[str, type[Method]] = {
    "skeletonclr": SkeletonCLR, "crosclr": CrosSCLR, "crrl": CRRL, "aimclr": AimCLR,
    "crosnnclr": CrosNNCLR, "crosnnclr_star": CrosNNCLRStar, "isc": ISC, "pcm3": PCM3,
    "mamp": MAMP, "stars": STARS, "untrained": Untrained,
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


def method_class(name: str, where: str = "") -> type[Method]:
    """The registered class of ``name`` (an alias resolved); an unknown name is an error
    naming ``where`` (a key path) and the closest method."""
    name = method_name(name)
    if name not in METHODS:
        raise OptionsError(unknown_name("method", name, METHODS, where))
    return METHODS[name]


def encoder_kinds(encoder: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """A run's ``encoder`` (one name, or a list of names) as a tuple of names."""
    return (encoder,) if isinstance(encoder, str) else tuple(encoder)


def options_by_kind(encoder: str | list[str] | tuple[str, ...],
                    options: dict[str, Any] | None, where: str) -> dict[str, dict[str, Any]]:
    """Each encoder kind's options: a run with one kind gives them directly, a run with several
    as a mapping kind -> options (a kind left out takes its defaults)."""
    kinds, options = encoder_kinds(encoder), dict(options or {})
    if len(kinds) == 1:
        return {kinds[0]: options}
    problem = unknown_keys(options, kinds, "encoder(s) in encoder_options")
    if problem:
        raise OptionsError(f"{where}: with several encoders, encoder_options maps each encoder "
                           f"to its options; {problem}")
    for kind, values in options.items():
        if not isinstance(values, dict):
            raise OptionsError(f"{where}: encoder_options.{kind} must map options to values")
    return {kind: dict(options.get(kind) or {}) for kind in kinds}


def check_encoder_options(encoder: str | list[str] | tuple[str, ...],
                          options: dict[str, Any] | None, where: str) -> None:
    """An unknown encoder, or an option it lacks, is an error naming ``where`` (the run)."""
    kinds = encoder_kinds(encoder)
    if not kinds or len(set(kinds)) != len(kinds):
        raise OptionsError(f"{where}: encoder must name one encoder or several different ones, "
                           f"not {encoder!r}")
    for kind, values in options_by_kind(encoder, options, where).items():
        try:
            types = encoder_option_types(kind)
        except ValueError as err:
            raise OptionsError(f"{where}.encoder: {err}") from None
        check_mapping(values, types, f"{where}.encoder_options"
                      + ("" if len(kinds) == 1 else f".{kind}"), f"{kind} option(s)")


@dataclass(frozen=True)
class MethodSpec:
    """A method, its streams, encoder kinds and options, checked by :func:`check_method`: what
    :meth:`build` needs, with nothing left to check."""

    name: str  # the registered name (an alias resolved)
    cls: type[Method]
    streams: tuple[str, ...]
    kinds: tuple[str, ...]
    encoder_options: dict[str, dict[str, Any]]  # each kind's options
    options: Any  # the method's Options

    def build(self, layout: Layout, num_persons: int) -> Method:
        """The method with fresh encoders for ``layout`` and ``num_persons`` bodies."""
        factory = EncoderFactory(self.kinds, lambda kind: build_encoder(
            kind, layout, num_persons, **self.encoder_options[kind]))
        return self.cls(self.streams, layout, factory, self.options)


def check_method(name: str, streams: tuple[str, ...] | list[str],
                 encoder: str | list[str] | tuple[str, ...] = "stgcn",
                 encoder_options: dict[str, Any] | None = None,
                 options: dict[str, Any] | None = None, where: str = "method",
                 encoder_where: str | None = None) -> MethodSpec:
    """The one check of a method's settings: the method's name, how many streams it learns, its
    options against its ``Options``, the encoder kinds and each one's options; errors name
    ``where`` (the run; ``encoder_where`` for the encoder options, when they were given
    elsewhere) and the key."""
    name = method_name(name, where)
    cls, streams = method_class(name, f"{where}.method"), tuple(streams)
    if not streams or (cls.multi_view is not None and (len(streams) > 1) != cls.multi_view):
        raise OptionsError(f"{where}.streams: {name} learns "
                           + ("two or more streams" if cls.multi_view else "one stream")
                           + f", not {', '.join(streams) or 'none'}")
    checked = make_options(cls.Options, options, f"{where}.options")
    check_encoder_options(encoder, encoder_options, encoder_where or where)
    kinds = encoder_kinds(encoder)
    if len(kinds) > 1 and not cls.several_encoders:
        raise OptionsError(f"{where}.encoder: {name} trains one encoder per stream, not "
                           f"{', '.join(kinds)}")
    return MethodSpec(name, cls, streams, kinds,
                      options_by_kind(encoder, encoder_options, encoder_where or where),
                      checked)


def build_method(name: str, streams: tuple[str, ...], layout: Layout, num_persons: int,
                 encoder: str | list[str] | tuple[str, ...] = "stgcn",
                 encoder_options: dict[str, Any] | None = None,
                 options: dict[str, Any] | None = None, where: str = "method") -> Method:
    """A method with fresh encoders of the named kind (or kinds) for the given streams, its
    settings checked by :func:`check_method`."""
    return check_method(name, streams, encoder, encoder_options, options, where).build(
        layout, num_persons)
