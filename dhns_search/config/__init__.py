"""Configuration: typed models, YAML, dotted overrides and presets."""

from dhns_search.config.io import (
    apply_overrides,
    deep_merge,
    dump_yaml,
    load_config,
    preset_names,
    preset_summary,
    read_preset,
    read_yaml,
    validate_config,
    write_yaml,
)
from dhns_search.config.models import RunConfig

__all__ = [
    "RunConfig",
    "apply_overrides",
    "deep_merge",
    "dump_yaml",
    "load_config",
    "preset_names",
    "preset_summary",
    "read_preset",
    "read_yaml",
    "validate_config",
    "write_yaml",
]
