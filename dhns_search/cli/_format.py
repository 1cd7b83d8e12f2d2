"""Formatting shared by the commands' tables: short parameter names, ``name=value`` lists."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dhns_search.search.space.encoding import format_cell

__all__ = ["params_text", "short_names"]


def short_names(names: Sequence[str]) -> dict[str, str]:
    """The shortest dotted suffix that still tells the parameters apart (``train.lr`` -> ``lr``)."""
    out = {}
    for name in names:
        parts = name.split(".")
        for k in range(1, len(parts) + 1):
            cand = ".".join(parts[-k:])
            if sum(1 for o in names if o == cand or o.endswith("." + cand)) == 1:
                out[name] = cand
                break
        else:
            out[name] = name
    return out


def params_text(params: Mapping[str, Any], short: Mapping[str, str] | None = None, *, digits: int = 4) -> str:
    """``lr=0.01  scorer=rotate``: parameters with their short names, floats to ``digits`` digits."""
    short = short or {}
    return "  ".join(f"{short.get(k, k)}={format_cell(v, digits)}" for k, v in params.items())

