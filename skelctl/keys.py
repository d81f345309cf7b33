"""The one check of a mapping's keys against the keys its reader accepts, so that every misspelt
key, wherever it is written (a run entry, a method's or an encoder's options, a layout file, a
params section), gets the same message: what is unknown, where, and what is accepted."""

from __future__ import annotations

import difflib
from typing import Any, Iterable, Mapping


def unknown_keys(given: Iterable, accepted: Iterable[str], noun: str = "key(s)",
                 place: str = "") -> str | None:
    """None when every key of ``given`` is in ``accepted``; otherwise ``"unknown key(s) a, b in
    PLACE; accepted: x, y, z"`` (the unknown ones sorted, the accepted ones in their order)."""
    accepted = list(accepted)
    unknown = sorted(map(str, set(given) - set(accepted)))
    if not unknown:
        return None
    where = f" in {place}" if place else ""
    hint = closest(unknown[0], accepted) if len(unknown) == 1 else ""
    hint = f" ({hint[2:]})" if hint else ""
    return (f"unknown {noun} {', '.join(unknown)}{where}{hint}; accepted: "
            f"{', '.join(accepted) or 'none'}")


def closest(name: Any, known: Iterable[Any]) -> str:
    """``"; did you mean 'x'?"`` when a known name is close to ``name``, else ``""``."""
    match = difflib.get_close_matches(str(name), [str(k) for k in known], n=1, cutoff=0.6)
    return f"; did you mean {match[0]!r}?" if match else ""


def unknown_name(what: str, name: Any, known: Iterable[Any], where: str = "") -> str:
    """``"[WHERE: ]unknown WHAT 'x'; did you mean 'y'? (known: a, b)"``, in one line."""
    known = [str(k) for k in known]
    head = f"{where}: " if where else ""
    return (f"{head}unknown {what} {name!r}{closest(name, known)} "
            f"(known: {', '.join(known) or 'none'})")


MISSING = "(not set)"


def differences(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = ""
                ) -> list[tuple[str, Any, Any]]:
    """Where two nested mappings differ, as ``(dotted key, old value, new value)`` in the new
    mapping's key order (keys only in the old one after); a key one side lacks has the value
    ``MISSING`` there. Lists and other values are compared whole."""
    found = []
    for key in [*new, *(k for k in old if k not in new)]:
        a, b = old.get(key, MISSING), new.get(key, MISSING)
        path = f"{prefix}{key}"
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            found += differences(a, b, path + ".")
        elif a != b:
            found.append((path, a, b))
    return found
