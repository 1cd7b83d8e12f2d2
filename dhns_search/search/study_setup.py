"""Creating a study, or continuing one with the same definition: its seed, metric, objectives and caps
are fixed when it is created, and a continued study must be given the same (or none)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import optuna

from dhns_search.errors import StudyError
from dhns_search.search.objectives import (
    CAPS,
    ObjectiveSpec,
    describe,
    parse_objectives,
    specs_to_attr,
    study_caps,
    study_objectives,
)
from dhns_search.search.options import RunOptions
from dhns_search.search.samplers import CONSTRAINED_SAMPLERS
from dhns_search.search.space import SearchSpace
from dhns_search.search.storage import create_or_load

__all__ = ["create_or_continue", "joined_options", "space_changed", "space_definition", "space_differences",
           "study_notes"]


def joined_options(options: RunOptions) -> RunOptions:
    """``dhns-search worker``: ``options`` with what the study's ``run`` recorded (space file, overrides,
    sampler, pruner, MLflow metrics); the space file must be here, at the same path."""
    from dataclasses import replace
    from pathlib import Path

    from dhns_search.search.storage import open_study

    if not options.study or not options.storage:
        raise StudyError("dhns-search worker needs --study NAME and --storage URL (those of the study's run)")
    study, _ = open_study(options.study, options.storage)
    settings = study.user_attrs.get("dhns.run")
    if not isinstance(settings, dict):
        raise StudyError(f"study {options.study!r} was not created by this version of dhns-search run (it records "
                         "no run settings); continue it with dhns-search run --study NAME --storage URL --space FILE")
    space = Path(settings["space"])
    if not space.is_file():
        raise StudyError(f"study {options.study!r} runs the space file {space}, which is not here: start the worker "
                         "in a checkout that has it at that path (the study's run was started from its root)")
    return replace(options, space=space, overrides=list(settings.get("overrides", [])),
                   sampler=settings.get("sampler", options.sampler), pruner=settings.get("pruner"),
                   pruner_startup=settings.get("pruner_startup"),
                   mlflow_metrics=settings.get("mlflow_metrics", options.mlflow_metrics))


def _caps_text(caps: dict[str, float]) -> str:
    return ", ".join(f"{CAPS[k]} {v:g}" for k, v in caps.items()) or "no caps"


def create_or_continue(name: str, storage: optuna.storages.BaseStorage, options: RunOptions,
                        space: SearchSpace, metric: str, specs: list[ObjectiveSpec] | None,
                        caps: dict[str, float]) -> tuple[optuna.Study, int, list[ObjectiveSpec], dict[str, float]]:
    """Create the study or load it; returns it with its seed, objectives and caps.

    ``specs`` None (no ``--objective``) and empty ``caps`` mean "the study's own" when it exists and
    "the defaults" when it is created.  A continued study must get the same objectives and caps.
    """
    new_specs = specs or parse_objectives(None, metric)
    study = create_or_load(name, storage, [s.direction for s in new_specs])  # a racing worker loads it
    if "dhns.uid" not in study.user_attrs:  # a new study: record what defines it
        chosen = specs or parse_objectives(None, metric)
        if [d.name.lower() for d in study.directions] != [s.direction for s in chosen]:
            raise StudyError(f"study {name!r} exists with {len(study.directions)} direction(s) but no dhns-search "
                             "attributes; use another --study name")
        seed = 0 if options.seed is None else options.seed
        for key, value in {"dhns.uid": uuid.uuid4().hex, "dhns.seed": seed, "dhns.space": str(space.path),
                           "dhns.space_sha256": space.sha256, "dhns.space_def": space_definition(space),
                           "dhns.metric": metric,
                           "dhns.objectives": specs_to_attr(chosen), "dhns.caps": dict(caps)}.items():
            study.set_user_attr(key, value)
        return study, seed, chosen, dict(caps)
    _check_space(study, name, space)
    return study, *_check_continued(study, name, options.seed, metric, specs, caps)


def space_definition(space: SearchSpace) -> dict[str, Any]:
    """What defines a space's trials (recorded on the study): each parameter's spec, the fixed values and
    the base (its description and comments may change freely)."""
    return {"base": space.base_name, "fixed": _plain(space.fixed),
            "params": {p.name: _plain(p.spec.model_dump(exclude={"description"}, exclude_none=True))
                       for p in space.params}}


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def space_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Each difference between two :func:`space_definition` records, naming the parameter or key."""
    out = []
    before, after = old.get("params", {}), new.get("params", {})
    for name in before:
        if name not in after:
            out.append(f"parameter {name} was removed")
        elif before[name] != after[name]:
            keys = sorted(set(before[name]) | set(after[name]))
            changes = ", ".join(f"{k} {before[name].get(k)!r} -> {after[name].get(k)!r}" for k in keys
                                if before[name].get(k) != after[name].get(k))
            out.append(f"parameter {name}: {changes}")
    out += [f"parameter {name} was added" for name in after if name not in before]
    fixed_before, fixed_after = old.get("fixed", {}), new.get("fixed", {})
    out += [f"fixed {k}: {fixed_before.get(k)!r} -> {fixed_after.get(k)!r}"
            for k in sorted(set(fixed_before) | set(fixed_after)) if fixed_before.get(k) != fixed_after.get(k)]
    if old.get("base") != new.get("base"):
        out.append(f"base: {old.get('base')!r} -> {new.get('base')!r}")
    return out


def _check_space(study: optuna.Study, name: str, space: SearchSpace) -> None:
    """A continued study runs the space it was created with: any change that alters trials is refused
    before anything is written (studies made before this record was kept only get a note)."""
    recorded = study.user_attrs.get("dhns.space_def")
    if not isinstance(recorded, dict):
        return
    changes = space_differences(recorded, space_definition(space))
    if changes:
        raise StudyError(
            f"study {name!r} was created with another search space ({study.user_attrs.get('dhns.space')}): "
            + "; ".join(changes) + ". Continue it with the space it was created with, or start a new study "
            "with --study NAME")


def _check_continued(study: optuna.Study, name: str, seed: int | None, metric: str,
                     specs: list[ObjectiveSpec] | None, caps: dict[str, float]
                     ) -> tuple[int, list[ObjectiveSpec], dict[str, float]]:
    """A continued study keeps its seed, metric, objectives and caps: the ones given must match."""
    attrs = study.user_attrs
    stored_seed = int(attrs.get("dhns.seed", 0))
    if seed is not None and seed != stored_seed:
        raise StudyError(
            f"study {name!r} was created with --seed {stored_seed}; continue it with that seed "
            "(or leave --seed out), or start a new study with --study NAME"
        )
    if attrs.get("dhns.metric", metric) != metric:
        raise StudyError(f"study {name!r} optimises {attrs['dhns.metric']}, this space's config says {metric}")
    stored = study_objectives(study)
    if specs is not None and [(s.name, s.direction) for s in specs] != [(s.name, s.direction) for s in stored]:
        raise StudyError(
            f"study {name!r} was created with the objectives {describe(stored)}; --objective gives "
            f"{describe(specs)}. Continue it without --objective (or with the same list), or start a new study "
            "with --study NAME"
        )
    stored_caps = study_caps(study)
    if caps and caps != stored_caps:
        raise StudyError(
            f"study {name!r} was created with {_caps_text(stored_caps)}; this run asks for {_caps_text(caps)}. "
            "Continue it without the caps options (or with the same values), or start a new study with --study NAME"
        )
    return stored_seed, stored, stored_caps


def study_notes(specs: list[ObjectiveSpec], caps: dict[str, float], sampler: str) -> list[str]:
    notes = []
    if len(specs) > 1:
        notes.append(f"{len(specs)} objectives ({describe(specs)}): pruning is off (Optuna's pruners compare one "
                     "value), every trial trains to the end")
    if caps:
        steer = ("the sampler avoids infeasible regions" if sampler in CONSTRAINED_SAMPLERS else
                 f"--sampler {sampler} does not use them when proposing trials (tpe, nsga2 and gp do)")
        notes.append(f"caps {_caps_text(caps)}: trials over a cap are kept but marked infeasible; {steer}")
    return notes


def space_changed(study: optuna.Study, name: str, space: SearchSpace) -> list[str]:
    """A note when a study made before spaces were recorded was created with another version of its space
    file (a recorded study refuses a changed space, :func:`create_or_continue`)."""
    attrs = study.user_attrs
    if "dhns.space_def" in attrs or attrs.get("dhns.space_sha256", space.sha256) == space.sha256:
        return []
    note = (f"study {name!r} was created with another version of its space ({attrs.get('dhns.space')}); "
            "earlier trials keep their own parameters")
    return [note]
