"""Search spaces: one test per kind of mistake, define-by-run conditions, encoded choices, bundles."""

from __future__ import annotations

import textwrap
from pathlib import Path

import optuna
import pytest

from dhns_search.errors import ConfigError
from dhns_search.search.space import (
    apply,
    decode_list,
    encode_list,
    flatten_config,
    load_space,
    resolve_field,
    suggest,
)

SPACES = Path(__file__).resolve().parents[1] / "spaces"

optuna.logging.set_verbosity(optuna.logging.WARNING)


def write(tmp_path: Path, text: str, name: str = "x.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def error_of(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_space(path)
    msg = str(err.value)
    assert msg.startswith(str(path)), msg  # every message names the file
    return msg


# ---------------------------------------------------------------------------------- shipped spaces
@pytest.mark.parametrize("path", sorted(SPACES.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_spaces_validate(path: Path) -> None:
    space = load_space(path)
    assert space.params, f"{path} has no parameters"


# ----------------------------------------------------------------------------------- schema errors
def test_unknown_key_is_named_with_a_hint(tmp_path):
    msg = error_of(tmp_path, """
        params:
          train.lr: {type: float, low: 1.0e-4, high: 1.0e-1, scale: log}
    """)
    assert msg == f"{tmp_path / 'x.yaml'}: params.train.lr: unknown key 'scale' (did you mean log: true?)"


# Each kind of mistake in a space file, and what its message must say (every message also names the file).
MISTAKES = [
    pytest.param("""
        params:
          model.scorer: {type: categorical, chocies: [transe]}
    """, "params.model.scorer: unknown key 'chocies' (did you mean choices?)", id="misspelt_key_gets_a_close_match"),
    pytest.param("""
        parameters: {}
    """, "(top level): unknown key 'parameters' (did you mean params?)", id="unknown_top_level_key"),
    pytest.param("""
        params:
          train.lr: {type: loguniform, low: 1.0e-4, high: 1.0e-1}
    """, "params.train.lr: type must be float, int, categorical or bool", id="unknown_type"),
    pytest.param("""
        params:
          train.lr: {type: float, low: "0.001", high: 0.1}
    """, "params.train.lr.low", id="string_bound_is_rejected"),
    pytest.param("""
        params:
          train.lr: {type: float, low: 0.1, high: 0.001}
    """, "params.train.lr: low (0.1) is greater than high (0.001)", id="inverted_bounds"),
    pytest.param("""
        params:
          loss.adv_temperature: {type: float, low: 0.0, high: 1.0, log: true}
    """, "params.loss.adv_temperature: log: true needs low > 0", id="log_needs_positive_low"),
    pytest.param("""
        params:
          model.dim: {type: int, low: 8, high: 64, step: 8, log: true}
    """, "params.model.dim: step cannot be combined with log: true", id="step_with_log"),
    pytest.param("""
        params:
          model.dim: {type: int, low: 8, high: 60, step: 8}
    """, "is not a multiple of step", id="step_must_divide_the_range"),
    pytest.param("""
        params:
          train.lr: {type: float, low: 0.001}
    """, "params.train.lr: a float parameter needs low and high", id="missing_bounds"),
    pytest.param("""
        params:
          model.dim: {type: int, low: 8.5, high: 64}
    """, "low of an int parameter must be an integer", id="int_parameter_with_float_bounds"),
    pytest.param("""
        params:
          model.scorer: {type: categorical}
    """, "params.model.scorer: a categorical parameter needs a non-empty choices list", id="categorical_without_choices"),
    pytest.param("""
        params:
          model.scorer: {type: categorical, choices: []}
    """, "non-empty choices", id="categorical_with_empty_choices"),
    pytest.param("""
        params:
          model.scorer: {type: categorical, choices: [transe, transh]}
    """, "params.model.scorer: choice 'transh' does not fit model.scorer", id="choice_the_field_cannot_take"),
    pytest.param("""
        params:
          model.dim: {type: int, low: 0, high: 64}
    """, ("params.model.dim: low 0 does not fit model.dim", "greater than or equal to 2"), id="bounds_outside_the_field_constraints"),
    pytest.param("""
        params:
          train.epochs: {type: float, low: 1.0, high: 10.0}
    """, "params.train.epochs: low 1.0 does not fit train.epochs (int)", id="float_parameter_on_an_int_field"),
    pytest.param("""
        params:
          dhns.margin: {type: categorical, choices: [fixed]}
    """, "dhns.margin is a section", id="section_is_not_a_leaf"),
    pytest.param("""
        params:
          dhns.modalities: {type: categorical, choices: [[structural, visual]]}
    """, ("encode a list as a comma-separated string", "'structural,visual'"), id="list_choice_must_be_an_encoded_string"),
    pytest.param("""
        params:
          dhns.levels: {type: categorical, choices: ["0,zero,0.5"]}
    """, "'zero' in '0,zero,0.5' is not a float", id="encoded_list_choice_with_bad_item"),
    pytest.param("""
        params:
          dhns.levels: {type: float, low: 0.0, high: 0.5}
    """, "is a list field", id="numeric_parameter_on_a_list_field"),
    pytest.param("""
        fixed:
          model.scorer: transe
        params:
          model.gamma: {type: float, low: 1.0, high: 10.0, when: {model.scorer: transe}}
    """, ("params.model.gamma.when.model.scorer: no parameter 'model.scorer' in this space", "(it is fixed to transe)"), id="condition_on_a_missing_parameter"),
    pytest.param("""
        params:
          model.scorer: {type: categorical, choices: [transe, distmult]}
          model.gamma: {type: float, low: 1.0, high: 10.0, when: {model.scorer: [transe, rotate]}}
    """, "params.model.gamma.when.model.scorer: model.scorer cannot take 'rotate'", id="condition_on_a_value_the_parameter_cannot_take"),
    pytest.param("""
        params:
          train.lr: {type: float, low: 0.001, high: 0.1}
          model.gamma: {type: float, low: 1.0, high: 10.0, when: {train.lr: 0.01}}
    """, "conditions can only refer to categorical or bool parameters", id="condition_on_a_float_parameter"),
    pytest.param("""
        params:
          dhns.enabled: {type: bool, when: {model.normalize_entities: true}}
          model.normalize_entities: {type: bool, when: {dhns.enabled: true}}
    """, "conditions form a cycle", id="conditions_forming_a_cycle"),
    pytest.param("""
        params:
          seed: {type: int, low: 0, high: 10}
    """, "params.seed: cannot be searched", id="reserved_path"),
    pytest.param("""
        fixed:
          train.epoch: 3
        params:
          train.lr: {type: float, low: 0.001, high: 0.1}
    """, "fixed.train.epoch: train.epoch is not a field", id="fixed_path_not_in_run_config"),
    pytest.param("""
        fixed:
          dhns.levels: [0.0, 0.5]
        params:
          train.lr: {type: float, low: 0.001, high: 0.1}
    """, ("base + fixed", "level_weights has 5 entries but levels has 2"), id="base_plus_fixed_must_validate"),
    pytest.param("""
        fixed:
          train.lr: 0.01
        params:
          train.lr: {type: float, low: 0.001, high: 0.1}
    """, "train.lr is also under fixed:", id="parameter_also_fixed"),
    pytest.param("""
        base: preset:nope
        params:
          train.lr: {type: float, low: 0.001, high: 0.1}
    """, "base: unknown preset 'nope'", id="unknown_preset_base"),
    pytest.param("""
        params:
          train.lr: {type: float, low: 0.1, high: 0.001}
          model.scorer: {type: categorical, choices: []}
    """, ("params.train.lr", "params.model.scorer"), id="several_errors_are_reported_together"),
    pytest.param("""
        params:
          levels:
            type: categorical
            choices:
              a: {dhns.levels: [0.0, 0.5], dhns.level_weight: [1.0, 1.0]}
    """, "params.levels: choices.a.dhns.level_weight: dhns.level_weight is not a field", id="bundle_errors"),
]


@pytest.mark.parametrize(("text", "expected"), MISTAKES)
def test_a_mistake_is_named(tmp_path: Path, text: str, expected: str | tuple[str, ...]) -> None:
    msg = error_of(tmp_path, text)
    for part in (expected,) if isinstance(expected, str) else expected:
        assert part in msg


def test_path_not_in_run_config(tmp_path):
    msg = error_of(tmp_path, """
        params:
          train.learning_rate: {type: float, low: 0.001, high: 0.1}
    """)
    assert "params.train.learning_rate: train.learning_rate is not a field of the run configuration" in msg
    assert "(train has: epochs, batch_size, lr," in msg
    msg = error_of(tmp_path, """
        params:
          train.eval_evry: {type: int, low: 1, high: 5}
    """)
    assert "did you mean train.eval_every?" in msg


def test_one_path_set_by_two_parameters_only_when_their_conditions_exclude_each_other(tmp_path):
    both = """
        params:
          model.scorer: {type: categorical, choices: [distmult, rotate, transe]}
          model.gamma: {type: float, low: 4.0, high: 24.0, when: {model.scorer: %s}}
          distmult_init:
            type: categorical
            when: {model.scorer: distmult}
            choices: {large: {model.gamma: 200.0}, small: {model.gamma: 11.0}}
    """
    msg = error_of(tmp_path, both % "[rotate, distmult]")
    assert "params.distmult_init: sets model.gamma, which parameter 'model.gamma' sets too" in msg

    space = load_space(write(tmp_path, both % "[rotate, transe]", "ok.yaml"))
    seen: dict[str, set] = {}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(30):
        trial = study.ask()
        sampled = suggest(trial, space)
        config = space.config(sampled)
        scorer = sampled["model.scorer"]
        if scorer == "distmult":
            assert "model.gamma" not in sampled
            assert config.model.gamma == {"large": 200.0, "small": 11.0}[sampled["distmult_init"]]
        else:
            assert "distmult_init" not in sampled and config.model.gamma == sampled["model.gamma"]
        seen.setdefault(scorer, set()).add(config.model.gamma)
        study.tell(trial, 0.0)
    assert seen["distmult"] == {200.0, 11.0} and len(seen["rotate"] | seen["transe"]) > 2


def test_base_file_relative_to_the_space(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "base.yaml").write_text("train: {epochs: 7}\n")
    path = write(tmp_path / "sub", """
        base: base.yaml
        params:
          train.lr: {type: float, low: 0.001, high: 0.1}
    """)
    space = load_space(path)
    assert space.config({"train.lr": 0.01}).train.epochs == 7


def test_overrides_are_checked_and_win_over_fixed(tmp_path):
    path = write(tmp_path, """
        fixed:
          train.epochs: 5
        params:
          train.lr: {type: float, low: 0.001, high: 0.1}
    """)
    with pytest.raises(ConfigError, match="train.lr is searched by parameter 'train.lr'"):
        load_space(path, overrides=["train.lr=0.01"])
    with pytest.raises(ConfigError, match="train.epochs"):
        load_space(path, overrides=["train.epochs=0"])
    with pytest.raises(ConfigError, match="--set seed=3: seed cannot be set here"):
        load_space(path, overrides=["seed=3"])
    with pytest.raises(ConfigError, match="--set train.epohcs=2: train.epohcs is not a field"):
        load_space(path, overrides=["train.epohcs=2"])
    space = load_space(path, overrides=["train.epochs=2", "dhns.modalities=structural,visual"])
    cfg = space.config({"train.lr": 0.01}, ["train.epochs=2", "dhns.modalities=structural,visual"])
    assert cfg.train.epochs == 2 and cfg.dhns.modalities == ["structural", "visual"]  # decoded like choices
    assert space.config({"train.lr": 0.01}).train.epochs == 5


# ------------------------------------------------------------------------------------ sampling
COND = """
    fixed:
      train.epochs: 2
    params:
      model.scorer: {type: categorical, choices: [transe, distmult]}
      train.lr: {type: float, low: 1.0e-3, high: 1.0e-1, log: true}
      model.gamma: {type: float, low: 1.0, high: 10.0, when: {model.scorer: transe}}
      dhns.margin.bilinear_scale: {type: float, low: 0.5, high: 2.0, when: {model.scorer: [distmult]}}
      dhns.levels: {type: categorical, choices: ["0,0.1,0.125,0.25,0.5", "0,0.1,0.2,0.3,0.4"]}
      model.dim: {type: int, low: 8, high: 32, step: 8}
      negatives.filtered: {type: bool}
"""


def test_conditional_parameter_sampled_only_when_its_condition_holds(tmp_path):
    space = load_space(write(tmp_path, COND))
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    seen = {"transe": 0, "distmult": 0}
    for _ in range(20):
        trial = study.ask()
        sampled = suggest(trial, space)
        scorer = sampled["model.scorer"]
        seen[scorer] += 1
        assert ("model.gamma" in sampled) == (scorer == "transe")
        assert ("dhns.margin.bilinear_scale" in sampled) == (scorer == "distmult")
        assert set(trial.params) == set(sampled)  # optuna saw exactly these
        study.tell(trial, 0.0)
    assert seen["transe"] and seen["distmult"]


def test_sampling_order_is_file_order_with_conditions_after_their_parameter(tmp_path):
    space = load_space(write(tmp_path, """
        params:
          model.gamma: {type: float, low: 1.0, high: 10.0, when: {model.scorer: transe}}
          train.lr: {type: float, low: 1.0e-3, high: 1.0e-1}
          model.scorer: {type: categorical, choices: [transe, distmult]}
          negatives.num: {type: int, low: 1, high: 8}
    """))
    assert space.names == ["train.lr", "model.scorer", "model.gamma", "negatives.num"]


def test_fixed_trial_and_encoded_choices_are_applied(tmp_path):
    space = load_space(write(tmp_path, COND))
    trial = optuna.trial.FixedTrial({
        "model.scorer": "distmult", "train.lr": 0.01, "dhns.margin.bilinear_scale": 1.5,
        "dhns.levels": "0,0.1,0.125,0.25,0.5", "model.dim": 16, "negatives.filtered": True,
    })
    sampled = suggest(trial, space)
    assert "model.gamma" not in sampled
    cfg = space.config(sampled)
    assert cfg.dhns.levels == [0.0, 0.1, 0.125, 0.25, 0.5]
    assert cfg.dhns.margin.bilinear_scale == 1.5 and cfg.model.dim == 16 and cfg.negatives.filtered is True
    assert cfg.train.epochs == 2  # fixed
    assert cfg.model.gamma == 12.0  # inactive: the base value stays


def test_apply_decodes_list_strings_and_rejects_bad_combinations():
    cfg = apply({}, {"train.epochs": 3}, {"dhns.modalities": "structural, visual", "train.lr": 0.02})
    assert cfg.dhns.modalities == ["structural", "visual"] and cfg.train.epochs == 3 and cfg.train.lr == 0.02
    with pytest.raises(ConfigError, match="level_weights has 5 entries but levels has 2"):
        apply({}, {}, {"dhns.levels": "0,0.5"})


def test_encoded_fixed_values_are_decoded_everywhere(tmp_path):
    space = load_space(write(tmp_path, """
        fixed:
          dhns.modalities: "structural,textual"
        params:
          train.lr: {type: float, low: 0.001, high: 0.1}
    """))
    assert space.merged({"train.lr": 0.01})["dhns"]["modalities"] == ["structural", "textual"]
    assert space.config({"train.lr": 0.01}).dhns.modalities == ["structural", "textual"]


def test_bundle_sets_several_fields(tmp_path):
    space = load_space(write(tmp_path, """
        params:
          hardness:
            type: categorical
            choices:
              two: {dhns.levels: [0.0, 0.5], dhns.level_weights: [1.0, 1.0], dhns.margin.factors: [0.2, 0.8]}
              one: {dhns.levels: [0.0], dhns.level_weights: [1.0], dhns.margin.factors: [0.5]}
    """))
    param = space.param("hardness")
    assert param.is_bundle and param.targets == ("dhns.levels", "dhns.level_weights", "dhns.margin.factors")
    sampled = suggest(optuna.trial.FixedTrial({"hardness": "two"}), space)
    cfg = space.config(sampled)
    assert cfg.dhns.levels == [0.0, 0.5] and cfg.dhns.level_weights == [1.0, 1.0]
    assert cfg.dhns.margin.factors == [0.2, 0.8]


def test_bad_sampled_combination_raises_config_error(tmp_path):
    space = load_space(write(tmp_path, """
        params:
          dhns.levels: {type: categorical, choices: ["0,0.1,0.125,0.25,0.5", "0,0.5"]}
    """))
    with pytest.raises(ConfigError, match="sampled combination"):
        space.config({"dhns.levels": "0,0.5"})


# -------------------------------------------------------------------------------- warm starts
def test_enqueue_values_from_a_param_mapping_and_from_a_config(tmp_path):
    space = load_space(write(tmp_path, COND))
    values = space.enqueue_values({"model.scorer": "transe", "model.gamma": 4.0, "train.lr": 0.01}, "w.yaml")
    assert values == {"model.scorer": "transe", "train.lr": 0.01, "model.gamma": 4.0}
    from_cfg = space.enqueue_values({"model": {"scorer": "distmult", "dim": 16}, "train": {"lr": 0.002}}, "c.yaml")
    assert from_cfg["model.scorer"] == "distmult" and from_cfg["model.dim"] == 16
    assert from_cfg["dhns.levels"] == "0,0.1,0.125,0.25,0.5"  # the default, as the choice is written
    assert "model.gamma" not in from_cfg  # inactive for distmult
    with pytest.raises(ConfigError, match=r"c\.yaml: train\.lr: 0\.5 is outside"):
        space.enqueue_values({"train": {"lr": 0.5}}, "c.yaml")
    with pytest.raises(ConfigError, match="model.dim: 12 is not one of|model.dim: 12"):
        space.enqueue_values({"model.dim": 12.5}, "w.yaml")


# ------------------------------------------------------------------------------------- helpers
def test_list_encoding_round_trip():
    assert encode_list([0.0, 0.1, 0.25]) == "0.0,0.1,0.25"
    assert decode_list("0,0.1, 0.25", float) == [0.0, 0.1, 0.25]
    assert decode_list("structural,visual", str) == ["structural", "visual"]
    assert decode_list("", float) == []


def test_resolve_field_reaches_dict_keys():
    assert resolve_field("data.placeholder_features.visual").annotation is int
    assert resolve_field("dhns.levels").is_list
    with pytest.raises(ConfigError, match="has no sub-key"):
        resolve_field("train.lr.x")


def test_flatten_config_has_the_same_keys_for_any_values():
    a = flatten_config(apply({}, {}, {"model.scorer": "transe"}))
    b = flatten_config(apply({}, {}, {"dhns.levels": "0", "dhns.level_weights": "1", "dhns.margin.factors": "0.5"}))
    assert a.keys() == b.keys()
    assert b["dhns.levels"] == "0.0" and a["data.path"] == "null"
