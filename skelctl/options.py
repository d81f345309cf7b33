"""The one check of settings against their declared types: a dataclass's fields (a method's
options, the training settings, a params section) or a function's keywords (an encoder's
options) say what each value must be, and :func:`make_options` checks a mapping of values against
them, naming the key path, what was expected and what was found, in one line.

Types understood: ``int``, ``float`` (an int is taken as a float; text that YAML 1.1 leaves as
text, such as ``1e-4``, is refused with a hint), ``bool``, ``str``, ``Any``, ``X | None``, ``Literal[...]``,
``list[X]``, ``tuple[X, ...]``, ``dict[str, X]`` and nested dataclasses (given as mappings);
``Annotated[X, Range(...)]`` adds bounds (:data:`PositiveInt`, :data:`Fraction`, ...) and
``Annotated[X, Check(function)]`` a check of its own.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import re
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Callable, Literal, Union

from skelctl.keys import closest, unknown_keys, unknown_name


class OptionsError(ValueError):
    """A setting that is unknown, of the wrong type or out of range; the message names where."""


@dataclass(frozen=True)
class Range:
    """Bounds of a number: ``low <= value`` (``low < value`` when ``low_open``), and likewise
    ``value <= high`` (``value < high`` when ``high_open``); None: unbounded."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def allows(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)


@dataclass(frozen=True)
class Check:
    """A further check of a value once its type is right: ``function(value, path)`` raises
    OptionsError (an augmentation chain's names and options, say)."""

    function: Callable[[Any, str], None]


PositiveInt = Annotated[int, Range(1)]
NonNegativeInt = Annotated[int, Range(0)]
PositiveFloat = Annotated[float, Range(0, low_open=True)]
NonNegativeFloat = Annotated[float, Range(0)]
Fraction = Annotated[float, Range(0, 1)]
Beta = Annotated[float, Range(0, 1, high_open=True)]  # a decay of Adam's moment estimates

FLOAT_TEXT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def describe(value: Any) -> str:
    """A found value and its YAML kind, for an error message."""
    kind = {bool: "true/false", int: "an integer", float: "a number", str: "text",
            list: "a list", dict: "a mapping", type(None): "empty"}.get(type(value),
                                                                        type(value).__name__)
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return kind if value is None else f"{shown} ({kind})"


def expected(annotation: Any) -> str:
    """What a type annotation asks for, in words."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Annotated:
        base, *marks = args
        ranges = [m for m in marks if isinstance(m, Range)]
        if ranges and base in (int, float):
            word = "an integer" if base is int else "a number"
            bounds = ranges[0]
            if bounds.low is not None:
                word += f" {'above' if bounds.low_open else 'at least'} {bounds.low:g}"
            if bounds.high is not None:
                word += (f"{' and' if bounds.low is not None else ''} "
                         f"{'below' if bounds.high_open else 'at most'} {bounds.high:g}")
            return word
        return expected(base)
    if annotation is Any:
        return "any value"
    if annotation is bool:
        return "true or false"
    if annotation is int:
        return "an integer"
    if annotation is float:
        return "a number"
    if annotation is str:
        return "text"
    if annotation is type(None):
        return "empty (null)"
    if origin is Literal:
        return "one of " + ", ".join(map(str, args))
    if origin in (Union, types.UnionType):
        named = [expected(a) for a in args if a is not type(None)]
        text = " or ".join(named)
        return text + " or empty (null)" if type(None) in args else text
    if origin is tuple and args and args[-1] is not Ellipsis:
        return f"a list of {len(args)}: " + ", ".join(expected(a) for a in args)
    if origin in (list, tuple):
        return f"a list of {plural(expected(args[0]))}" if args else "a list"
    if origin is dict:
        return f"a mapping of names to {plural(expected(args[1]))}" if args else "a mapping"
    if dataclasses.is_dataclass(annotation):
        return f"a mapping of {', '.join(f.name for f in dataclasses.fields(annotation))}"
    return getattr(annotation, "__name__", str(annotation))


def plural(words: str) -> str:
    for single, many in (("an integer", "integers"), ("a number", "numbers"), ("text", "texts"),
                         ("true or false", "true/false values"), ("a mapping", "mappings"),
                         ("a list", "lists"), ("any value", "values")):
        if words.startswith(single):
            return many + words[len(single):]
    return words


def check_value(value: Any, annotation: Any, path: str) -> Any:
    """``value`` checked against ``annotation`` (converted where the type says so: an int or
    float text to float, a mapping to its dataclass); OptionsError ``"PATH: expected ..., found
    ..."`` otherwise."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)

    def wrong() -> OptionsError:
        found, wanted = describe(value), expected(annotation)
        if isinstance(value, str) and FLOAT_TEXT.fullmatch(value.strip()) and "number" in wanted:
            # YAML 1.1 reads 1e-4 (no dot) as text: say how to write it
            found = (f"{value!r} (text: YAML reads a number without a dot before the exponent "
                     f"as text; write {float(value)!r})")
        return OptionsError(f"{path}: expected {wanted}, found {found}")

    if origin is Annotated:
        base, *marks = args
        try:
            checked = check_value(value, base, path)
        except OptionsError as err:  # this value's own type: say it with the bounds
            if str(err).startswith(f"{path}: expected"):
                raise wrong() from None
            raise
        for mark in marks:
            if isinstance(mark, Range) and not mark.allows(checked):
                raise wrong()
            if isinstance(mark, Check):
                mark.function(checked, path)
        return checked
    if annotation is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return check_value(value, option, path)
            except OptionsError:
                continue
        raise wrong()
    if annotation is type(None):
        if value is not None:
            raise wrong()
        return None
    if annotation is bool:
        if not isinstance(value, bool):
            raise wrong()
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong()
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise wrong()
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise wrong()
        return value
    if origin is Literal:
        if value not in args:
            raise OptionsError(f"{path}: expected {expected(annotation)}, found "
                               f"{describe(value)}{closest(value, args)}")
        return value
    if origin is tuple and args and args[-1] is not Ellipsis:  # a fixed number of values
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise wrong()
        return tuple(check_value(v, kind, f"{path}[{i}]")
                     for i, (v, kind) in enumerate(zip(value, args)))
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise wrong()
        item = args[0] if args else Any
        checked = [check_value(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(checked) if origin is tuple else checked
    if origin is dict:
        if not isinstance(value, dict):
            raise wrong()
        key_type, item = args if args else (Any, Any)
        if typing.get_origin(key_type) is Literal:  # the names a mapping may use
            for key in value:
                if key not in typing.get_args(key_type):
                    raise OptionsError(unknown_name("key", key, typing.get_args(key_type), path))
        return {k: check_value(v, item, f"{path}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(annotation):
        if dataclasses.is_dataclass(value) and isinstance(value, annotation):
            return value
        if not isinstance(value, dict):
            raise wrong()
        return make_options(annotation, value, path, "key(s)")
    if isinstance(annotation, type):
        if not isinstance(value, annotation):
            raise wrong()
        return value
    raise TypeError(f"{path}: cannot check values of type {annotation!r}")


@functools.lru_cache(maxsize=None)
def field_types(cls: type) -> dict[str, Any]:
    """A dataclass's fields and their types (resolved from the annotations' text once: callers
    must not change the mapping)."""
    hints = typing.get_type_hints(cls, include_extras=True)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


@functools.lru_cache(maxsize=None)
def keyword_types(function: Callable[..., Any], skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """A function's (or class's) keyword parameters and their types (Any where unannotated;
    resolved once: callers must not change the mapping)."""
    target = function.__init__ if isinstance(function, type) else function
    hints = typing.get_type_hints(target, include_extras=True)
    return {name: hints.get(name, Any) for name in inspect.signature(function).parameters
            if name not in ("self", *skip)}


def check_mapping(values: Any, types_by_key: dict[str, Any], where: str,
                  noun: str = "key(s)") -> dict[str, Any]:
    """``values`` (a mapping) with every key known and every value of its type, converted as
    :func:`check_value` does; an error names ``where``, the key and the accepted keys."""
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise OptionsError(f"{where}: expected a mapping of {', '.join(types_by_key)}, found "
                           f"{describe(values)}")
    problem = unknown_keys(values, types_by_key, noun)
    if problem:
        raise OptionsError(f"{where}: {problem}")
    return {k: check_value(v, types_by_key[k], f"{where}.{k}" if where else str(k))
            for k, v in values.items()}


def make_options(cls: type, values: dict[str, Any] | None, where: str,
                 noun: str = "option(s)") -> Any:
    """``cls(**values)``, every key known and every value of its field's type (see
    :func:`check_value`); errors name ``where`` and the key."""
    checked = check_mapping(values, field_types(cls), where, noun)
    try:
        return cls(**checked)
    except (ValueError, TypeError) as err:  # the dataclass's own checks (__post_init__)
        raise OptionsError(f"{where}: {err}") from None
