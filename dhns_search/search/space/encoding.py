"""Values as text: the comma-separated encoding of list choices, and configs flattened for MLflow.

Optuna's categorical choices must be plain values, so a list-valued field is searched with string
choices: ``"0,0.1,0.125"`` is ``[0.0, 0.1, 0.125]`` for a ``list[float]`` field, ``""`` the empty list,
blanks around items are ignored.  The same text is used for ``--set``, the MLflow params and the Optuna
storage (:mod:`dhns_search.config.flat` writes it; it is re-exported here).
"""

from __future__ import annotations

from typing import Any

from dhns_search.config.flat import encode_list, flatten_config, format_value
from dhns_search.config.io import decode_list as _decode_list
from dhns_search.search.space.fields import FieldRef

__all__ = [
    "decode_list",
    "decode_value",
    "encode_list",
    "flatten_config",
    "format_cell",
    "format_value",
    "short_values",
]


def format_cell(value: Any, digits: int) -> str:
    """A value for a table cell: floats with ``digits`` significant digits, the rest by :func:`format_value`."""
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return format_value(value)


def short_values(values: dict[str, Any], limit: int = 300) -> str:
    """``(name=value, ...)`` for a message, cut to ``limit`` characters."""
    text = ", ".join(f"{k}={format_value(v)}" for k, v in values.items())
    return f"({text[: limit - 3]}...)" if len(text) > limit else f"({text})"


def decode_list(text: str, item_type: Any, where: str = "value") -> list:
    """``"0,0.1"`` -> ``[0.0, 0.1]`` for ``item_type`` float (the inverse of :func:`encode_list`; the same
    decoding as ``train --set``, :func:`dhns_search.config.io.decode_list`)."""
    return _decode_list(text, item_type, where)


def decode_value(ref: FieldRef, value: Any, where: str | None = None) -> Any:
    """Decode an encoded list choice for a list-valued field; other values pass through."""
    if ref.is_list and isinstance(value, str):
        return decode_list(value, ref.item_type, where or ref.path)
    return value
