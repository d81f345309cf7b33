"""The one check of a mapping's keys against the keys its reader accepts, so that every misspelt
key, wherever it is written (a run entry, a method's or an encoder's options, a layout file, a
params section), gets the same message: what is unknown, where, and what is accepted."""

from __future__ import annotations

from typing import Iterable


def unknown_keys(given: Iterable, accepted: Iterable[str], noun: str = "key(s)",
                 place: str = "") -> str | None:
    """None when every key of ``given`` is in ``accepted``; otherwise ``"unknown key(s) a, b in
    PLACE; accepted: x, y, z"`` (the unknown ones sorted, the accepted ones in their order)."""
    accepted = list(accepted)
    unknown = sorted(map(str, set(given) - set(accepted)))
    if not unknown:
        return None
    where = f" in {place}" if place else ""
    return f"unknown {noun} {', '.join(unknown)}{where}; accepted: {', '.join(accepted) or 'none'}"
