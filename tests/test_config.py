"""Strict configuration: types, unknown keys, key paths in errors, YAML round trip, dotted overrides."""

from pathlib import Path

import pytest

from dhns_search.config import RunConfig, dump_yaml, load_config, preset_names, validate_config, write_yaml
from dhns_search.config.io import apply_overrides, parse_yaml_text
from dhns_search.errors import ConfigError


def test_defaults_validate_and_round_trip(tmp_path):
    cfg = RunConfig()
    path = write_yaml(cfg, tmp_path / "c.yaml")
    again = load_config(path)
    assert again == cfg
    assert dump_yaml(again) == dump_yaml(cfg)


def test_yaml_reads_exponent_floats():
    assert parse_yaml_text("a: 1e-4")["a"] == pytest.approx(1e-4)
    assert isinstance(parse_yaml_text("a: 5e-6")["a"], float)
    assert parse_yaml_text("a: 3")["a"] == 3  # ints stay ints


def test_unknown_key_named_with_path():
    with pytest.raises(ConfigError, match=r"dhns\.margin\.schedul: unknown key"):
        validate_config({"dhns": {"margin": {"schedul": "fixed"}}})


def test_wrong_type_named_with_path_and_not_coerced():
    with pytest.raises(ConfigError, match=r"train\.lr: .*got '0\.1'"):
        validate_config({"train": {"lr": "0.1"}})
    with pytest.raises(ConfigError, match=r"train\.epochs"):
        validate_config({"train": {"epochs": 2.5}})


def test_several_errors_reported_together():
    with pytest.raises(ConfigError) as err:
        validate_config({"model": {"scorer": "transH"}, "negatives": {"num": 0}})
    msg = str(err.value)
    assert "model.scorer" in msg and "negatives.num" in msg


def test_consistency_rules():
    with pytest.raises(ConfigError, match="level_weights has 2 entries but levels has 5"):
        validate_config({"dhns": {"level_weights": [1.0, 1.0]}})
    with pytest.raises(ConfigError, match="beta_end"):
        validate_config({"dhns": {"beta_start": 0.02, "beta_end": 0.01}})
    with pytest.raises(ConfigError, match="sampler_steps"):
        validate_config({"dhns": {"sampler": "strided", "sampler_steps": None}})


def test_dotted_overrides():
    cfg = load_config(overrides=["train.lr=1e-3", "model.scorer=rotate", "dhns.enabled=false", "data.path=/x"])
    assert cfg.train.lr == pytest.approx(1e-3)
    assert cfg.model.scorer == "rotate" and cfg.dhns.enabled is False and cfg.data.path == "/x"
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        apply_overrides({}, ["train.lr"])
    with pytest.raises(ConfigError, match="train.lrr: unknown key"):
        load_config(overrides=["train.lrr=0.1"])


def test_file_plus_preset_plus_override(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  epochs: 7\n")
    cfg = load_config(f, preset="dhns-rotate", overrides=["train.lr=0.01"])
    assert cfg.model.scorer == "rotate" and cfg.train.epochs == 7 and cfg.train.lr == 0.01


def test_bad_yaml_and_missing_file(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(f)
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.yaml")
    f.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(f)


def test_every_preset_validates():
    names = preset_names()
    assert {"paper-distmult-mkgy", "dhns-transe", "dhns-rotate", "dhns-distmult", "dhns-complex"} <= set(names)
    assert {"uniform-transe", "uniform-rotate", "uniform-distmult", "uniform-complex"} <= set(names)
    for name in names:
        load_config(preset=name)
    paper = load_config(preset="paper-distmult-mkgy")
    assert (paper.model.dim, paper.negatives.num, paper.train.batch_size, paper.dhns.steps) == (1024, 64, 2000, 50)
    with pytest.raises(ConfigError, match="unknown preset"):
        load_config(preset="nope")


def test_every_preset_says_what_it_is_and_the_tuned_ones_cite_their_campaign():
    import re

    from typer.testing import CliRunner

    from dhns_search.cli import app
    from dhns_search.config import preset_summary

    for name in preset_names():
        assert len(preset_summary(name)) > 20, name
    tuned = [n for n in preset_names() if n.startswith("tuned-")]
    assert {"tuned-complex-mkgy", "tuned-distmult-mkgy"} <= set(tuned)
    for name in tuned:
        text = (Path(__file__).parents[1] / "dhns_search" / "config" / "presets" / f"{name}.yaml").read_text()
        assert "campaigns/" in text and re.search(r"test MRR 0\.\d{4}", text), name  # the campaign, the row
        cfg = load_config(preset=name)
        assert cfg.provenance and str(cfg.provenance["study"]).startswith("campaign-")
    listed = CliRunner().invoke(app, ["train", "--list-presets"])
    assert listed.exit_code == 0 and "tuned-complex-mkgy" in listed.output
    assert preset_summary("tuned-complex-mkgy")[:40] in " ".join(listed.output.split())


def test_shipped_dhns_defaults_are_cheap_and_the_paper_preset_is_faithful():
    from dhns_search.config import load_config
    from dhns_search.config.models import DHNSConfig

    d = DHNSConfig()
    assert (d.sampler, d.sampler_steps, d.hidden_mult) == ("strided", 10, 2)
    assert (d.batch_fraction, d.generator_fraction, d.refresh_every, d.precision) == (0.5, 0.5, 2, "fp32")
    paper = load_config(preset="paper-distmult-mkgy").dhns
    assert (paper.sampler, paper.hidden_mult, paper.batch_fraction, paper.generator_fraction) == ("ancestral", 4, 1.0, 1.0)
    assert paper.refresh_every == 1 and paper.steps == 50
