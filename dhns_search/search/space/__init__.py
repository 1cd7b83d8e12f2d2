"""Search spaces: a strict YAML schema, validation against :class:`RunConfig`, define-by-run sampling.

A space file (``spaces/*.yaml``) has four top-level keys::

    description: what this space is for
    base: preset:dhns-distmult        # or a config YAML path, relative to the space file; omitted = defaults
    fixed:                            # dotted path -> value, applied on top of the base
      train.epochs: 20
    params:                           # dotted path -> how to sample it
      train.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
      model.scorer: {type: categorical, choices: [transe, rotate, distmult, complex]}
      model.gamma: {type: float, low: 2.0, high: 24.0, when: {model.scorer: [transe, rotate]}}

Parameter specs (every key is checked; an unknown one is an error, never silently ignored):

``type``
    ``float`` | ``int`` (need ``low`` and ``high``; optional ``log: true`` or ``step``),
    ``categorical`` (needs a non-empty ``choices``), ``bool`` (samples ``false``/``true``).
``when``
    ``{other_param: value or [values]}``: the parameter is sampled only when every named parameter was
    sampled with one of the values (define-by-run); otherwise the base/fixed value stays.
``description``
    free text, shown by ``dhns-search spaces show``.

**List-valued fields** (``dhns.levels``, ``dhns.modalities`` ...) are sampled as categorical strings,
because Optuna's categorical choices must be plain values.  The encoding is the comma-separated list:
``"0,0.1,0.125,0.25,0.5"`` is ``[0.0, 0.1, 0.125, 0.25, 0.5]`` for a ``list[float]`` field and
``"structural,visual"`` is ``["structural", "visual"]`` for a ``list[str]`` field; blanks around items
are ignored and ``""`` is the empty list.  Items are converted to the field's item type.

**Bundles**: a categorical parameter whose ``choices`` is a *mapping* ``label -> {dotted path: value}``
sets several fields at once, e.g. a hardness-level set with its matching weights and margin factors.
Its key is a free name (not a config path); Optuna sees only the label; the values are plain YAML.

Everything is validated before any trial starts, and every message names the file and the key path.

The package, by job:

- :mod:`~.schema`: the YAML schema (:class:`ParamSpec`, :class:`SpaceFile`) and the reserved paths;
- :mod:`~.fields`: dotted paths into :class:`~dhns_search.config.models.RunConfig` (:func:`resolve_field`);
- :mod:`~.encoding`: list choices as text, configs flattened for MLflow;
- :mod:`~.runtime`: the validated space (:class:`SearchSpace`, :class:`Param`), :func:`suggest`, :func:`apply`;
- :mod:`~.validation`: :func:`load_space`, which reads a file and runs every check.
"""

from dhns_search.search.space.encoding import (
    decode_list,
    decode_value,
    encode_list,
    flatten_config,
    format_value,
)
from dhns_search.search.space.fields import FieldRef, resolve_field
from dhns_search.search.space.runtime import Param, SearchSpace, apply, suggest
from dhns_search.search.space.schema import RESERVED_PATHS, ParamSpec, SpaceFile
from dhns_search.search.space.validation import load_space

__all__ = [
    "RESERVED_PATHS",
    "FieldRef",
    "Param",
    "ParamSpec",
    "SearchSpace",
    "SpaceFile",
    "apply",
    "decode_list",
    "decode_value",
    "encode_list",
    "flatten_config",
    "format_value",
    "load_space",
    "resolve_field",
    "suggest",
]
