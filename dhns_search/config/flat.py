"""A configuration as flat text: every leaf under its dotted path, each value as text.

This is how a configuration is logged as tracking params and how a list-valued choice is written: a list
is its items joined by commas (``[0.0, 0.1]`` -> ``"0.0,0.1"``), ``None`` is ``null``, booleans are lower
case, floats keep their ``repr``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from dhns_search.config.models import RunConfig

__all__ = ["encode_list", "flatten_config", "format_value"]


def format_value(value: Any) -> str:
    """A plain value as text: ``None`` -> ``null``, booleans lower case, floats by ``repr``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return encode_list(value)
    return str(value)


def encode_list(values: list | tuple) -> str:
    """``[0.0, 0.1]`` -> ``"0.0,0.1"``: the categorical encoding of a list value."""
    return ",".join(format_value(v) for v in values)


def flatten_config(cfg: RunConfig | dict, prefix: str = "") -> dict[str, str]:
    """Every leaf of a config as ``dotted.path -> text`` (lists encoded, mappings flattened further).

    The keys depend only on the config schema (and mapping-valued fields' keys), so every trial of a
    study logs the same keys.
    """
    data = cfg.model_dump(mode="json") if isinstance(cfg, BaseModel) else cfg
    out: dict[str, str] = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten_config(value, path + "."))
        elif isinstance(value, dict):
            out[path] = "{}"
        else:
            out[path] = format_value(value)
    return out
