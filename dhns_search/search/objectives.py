"""What a study optimises (``run --objective``) and the caps it must respect (``--max-*``).

Objective names
---------------

- **accuracy** (validation metrics of the evaluator, read at the trial's best epoch): ``mrr``, ``mr``,
  ``hits@1``, ``hits@3``, ``hits@10`` (also spelled ``hits_at_10`` or ``hits10``), or a full metric
  name such as ``mrr_realistic_filtered`` or ``tail_hits_at_10_optimistic_filtered``.  Short names take
  the rank policy of the space's ``train.metric`` (``realistic`` unless it is
  ``mrr_optimistic_filtered``).  ``mr`` (mean rank) is minimised, the others maximised.
- **cost** (measured by the search layer, minimised): ``epoch_seconds`` (mean seconds of a training
  epoch, evaluation excluded), ``train_seconds`` (wall time of the training run, evaluations included),
  ``peak_memory_mb`` (see :mod:`dhns_search.search.resources`).

The default is the single objective ``train.metric``.  A list needs at least one accuracy objective,
and the first one must be ``train.metric`` itself: the trainer keeps the checkpoint (and an export
replays the epoch) that is best by ``train.metric``, and the other accuracy objectives are read at
that epoch.

Caps
----

``--max-epoch-seconds``, ``--max-train-seconds`` and ``--max-memory-mb`` turn the same measurements into
Optuna constraints (``trial.set_constraint(name, measured - cap)``; a trial is feasible when every
value is <= 0).  Objectives and caps are stored in the study's user attributes ``dhns.objectives`` and
``dhns.caps`` when it is created; a continued study keeps them.
"""

from __future__ import annotations

import difflib
import math
import re
import typing
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from dhns_search.config.models import TrainConfig
from dhns_search.errors import ConfigError, StudyError

__all__ = [
    "CAPS",
    "COSTS",
    "ObjectiveSpec",
    "check_caps",
    "constraint_values",
    "describe",
    "is_feasible",
    "parse_objectives",
    "primary_index",
    "resolve",
    "specs_from_attr",
    "specs_to_attr",
    "study_caps",
    "study_objectives",
    "violations",
]

#: cost objectives (all minimised): name -> what it measures
COSTS: dict[str, str] = {
    "epoch_seconds": "mean seconds per training epoch (evaluation excluded)",
    "train_seconds": "wall-clock seconds of the training run (evaluations included)",
    "peak_memory_mb": "peak memory during the trial in MiB (CUDA allocator peak on a GPU, process RSS on CPU)",
}

#: caps: measurement -> command-line option
CAPS: dict[str, str] = {
    "epoch_seconds": "--max-epoch-seconds",
    "train_seconds": "--max-train-seconds",
    "peak_memory_mb": "--max-memory-mb",
}

_BASES = ("mrr", "mr", "hits_at_1", "hits_at_3", "hits_at_10")
_POLICIES = ("optimistic", "pessimistic", "realistic")
_FULL = re.compile(r"^(?P<prefix>head_|tail_)?(?P<base>mrr|mr|hits_at_(?:1|3|10))_(?P<policy>optimistic|"
                   r"pessimistic|realistic)_filtered$")
_HITS = re.compile(r"^hits(?:@|_at_|_|)(?P<k>\d+)$")
#: the values train.metric can take (the trainer selects the best epoch by it)
_SELECTABLE: tuple[str, ...] = typing.get_args(TrainConfig.model_fields["metric"].annotation)


@dataclass(frozen=True)
class ObjectiveSpec:
    """One objective of a study."""

    name: str  # the value's key: a validation metric (``mrr_realistic_filtered``) or a cost name
    direction: str  # "maximize" | "minimize"
    kind: str  # "accuracy" | "cost"
    label: str  # short display name, also what ``--pick best-<label>`` accepts (``mrr``, ``hits@10``)

    @property
    def arrow(self) -> str:
        return "max" if self.direction == "maximize" else "min"


def _policy_of(metric: str) -> str:
    m = _FULL.match(metric)
    return m.group("policy") if m else "realistic"


def _short_label(base: str) -> str:
    return f"hits@{base[len('hits_at_'):]}" if base.startswith("hits_at_") else base


def _accuracy(name: str, policy: str) -> ObjectiveSpec:
    m = _FULL.match(name)
    assert m is not None
    base = m.group("base")
    short = not m.group("prefix") and m.group("policy") == policy
    return ObjectiveSpec(name=name, direction="minimize" if base == "mr" else "maximize", kind="accuracy",
                         label=_short_label(base) if short else name)


def _known_names() -> str:
    return ("accuracy: mrr, mr, hits@1, hits@3, hits@10 (or a full metric name such as mrr_realistic_filtered, "
            "tail_hits_at_10_optimistic_filtered); cost: " + ", ".join(COSTS))


def resolve(text: str, metric: str) -> ObjectiveSpec:
    """One objective name (or alias) -> its spec; ``metric`` is the space's ``train.metric``."""
    raw = text.strip()
    word = raw.lower().replace("-", "_") if not raw.lower().startswith("hits@") else raw.lower()
    policy = _policy_of(metric)
    if word in COSTS:
        return ObjectiveSpec(name=word, direction="minimize", kind="cost", label=word)
    if word in ("mrr", "mr"):
        return _accuracy(f"{word}_{policy}_filtered", policy)
    m = _HITS.match(word)
    if m:
        base = f"hits_at_{int(m.group('k'))}"
        if base not in _BASES:
            raise ConfigError(f"--objective {raw!r}: the evaluator reports hits@1, hits@3 and hits@10 only")
        return _accuracy(f"{base}_{policy}_filtered", policy)
    if _FULL.match(word):
        return _accuracy(word, policy)
    aliases = ["mrr", "mr", "hits@1", "hits@3", "hits@10", *COSTS]
    close = difflib.get_close_matches(word, aliases, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise ConfigError(f"--objective: unknown objective {raw!r}{hint}; known: {_known_names()}")


def parse_objectives(text: str | Sequence[str] | None, metric: str) -> list[ObjectiveSpec]:
    """``--objective`` (a comma list, or a list of names) -> specs; None or empty: ``[metric]``."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return [_accuracy(metric, _policy_of(metric))]
    items = text.split(",") if isinstance(text, str) else [p for t in text for p in str(t).split(",")]
    if any(not p.strip() for p in items):
        raise ConfigError(f"--objective {','.join(items)!r}: an empty name; write e.g. --objective mrr,epoch_seconds")
    specs: list[ObjectiveSpec] = []
    for item in items:
        spec = resolve(item, metric)
        same = next((s for s in specs if s.name == spec.name), None)
        if same is not None:
            raise ConfigError(f"--objective: {item.strip()!r} names {spec.name} twice")
        specs.append(spec)
    accuracy = [s for s in specs if s.kind == "accuracy"]
    if not accuracy:
        raise ConfigError(f"--objective {','.join(s.label for s in specs)}: add an accuracy objective (e.g. "
                          f"--objective mrr,{specs[0].label}); cost objectives alone would favour models that "
                          "learn nothing")
    if accuracy[0].name != metric:
        hint = (f"add --set train.metric={accuracy[0].name}" if accuracy[0].name in _SELECTABLE
                else f"train.metric can be {', '.join(_SELECTABLE)}")
        raise ConfigError(
            f"--objective: the first accuracy objective is {accuracy[0].name}, but trials keep the epoch that is "
            f"best by train.metric = {metric}; list {_accuracy(metric, _policy_of(metric)).label} first "
            f"(other accuracy objectives are read at that epoch), or {hint}"
        )
    return specs


def primary_index(specs: Sequence[ObjectiveSpec]) -> int:
    """Index of the first accuracy objective (the value shown as "value" and sorted by)."""
    return next((i for i, s in enumerate(specs) if s.kind == "accuracy"), 0)


def describe(specs: Sequence[ObjectiveSpec]) -> str:
    return ", ".join(f"{s.label} ({s.arrow})" for s in specs)


def specs_to_attr(specs: Sequence[ObjectiveSpec]) -> list[dict[str, str]]:
    return [asdict(s) for s in specs]


def specs_from_attr(value: Any) -> list[ObjectiveSpec]:
    return [ObjectiveSpec(**{k: str(d[k]) for k in ("name", "direction", "kind", "label")}) for d in value]


def study_objectives(study: Any) -> list[ObjectiveSpec]:
    """The objectives of a study: ``dhns.objectives``, else (older studies) ``dhns.metric`` maximised."""
    attrs = study.user_attrs
    if "dhns.objectives" in attrs:
        try:
            return specs_from_attr(attrs["dhns.objectives"])
        except (KeyError, TypeError) as err:
            raise StudyError(f"study {study.study_name!r}: unreadable user attribute dhns.objectives "
                             f"({type(err).__name__}: {err})") from None
    metric = str(attrs.get("dhns.metric", "value"))
    directions = [d.name.lower() for d in study.directions]
    if len(directions) == 1:
        label = _accuracy(metric, _policy_of(metric)).label if _FULL.match(metric) else metric
        return [ObjectiveSpec(name=metric, direction=directions[0], kind="accuracy", label=label)]
    # a multi-objective study not made by dhns-search run: name the values by position
    return [ObjectiveSpec(name=f"value{i}", direction=d, kind="accuracy", label=f"value{i}")
            for i, d in enumerate(directions)]


# ------------------------------------------------------------------------------------------ caps
def check_caps(caps: Mapping[str, float | None]) -> dict[str, float]:
    """Drop unset caps, check the others are positive finite numbers."""
    out = {}
    for name, value in caps.items():
        if value is None:
            continue
        if name not in CAPS:
            raise ConfigError(f"unknown cap {name!r}; known: {', '.join(CAPS)}")
        v = float(value)
        if not (v > 0 and math.isfinite(v)):
            raise ConfigError(f"{CAPS[name]} must be a positive number (got {value})")
        out[name] = v
    return out


def study_caps(study: Any) -> dict[str, float]:
    return {str(k): float(v) for k, v in dict(study.user_attrs.get("dhns.caps") or {}).items()}


def constraint_values(measures: Mapping[str, Any], caps: Mapping[str, float]) -> dict[str, float]:
    """``measured - cap`` for every cap (Optuna: feasible when <= 0).  A measurement that is missing
    (a trial that failed before its first epoch) counts 0.0, never NaN."""
    out = {}
    for name, cap in caps.items():
        v = measures.get(name)
        out[name] = float(v) - float(cap) if isinstance(v, (int, float)) and math.isfinite(v) else 0.0
    return out


def violations(trial: Any) -> dict[str, float]:
    """The trial's violated constraints: name -> amount above the cap (empty: feasible)."""
    return {k: float(v) for k, v in trial.constraints.items() if v > 0}


def is_feasible(trial: Any) -> bool:
    """Optuna's rule: every constraint value <= 0 (a trial without constraints is feasible)."""
    return all(v <= 0 for v in trial.constraints.values())
