"""Configs: every file loads, validates and documents its command; bad
values are errors naming the key, the expected and the given value."""

from __future__ import annotations

import ast
import dataclasses
import functools
import json
from pathlib import Path

import pytest

pytest.importorskip("ml_collections")

import recurrent_jax as rj  # noqa: E402
from recurrent_jax.train import config as cfg  # noqa: E402
from recurrent_jax.train import config_files  # noqa: E402
from recurrent_jax.train.config import ConfigError, from_config_dict, to_dict  # noqa: E402

CONFIGS = sorted(p.stem for p in (Path(__file__).parents[1] / "configs").glob("*.py"))


def test_there_are_configs():
    assert {"adding", "copy", "parity", "digits", "japanese_vowels", "char_lm", "airline"} <= set(
        CONFIGS
    )


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("variant", [None, "smoke"])
def test_config_loads_and_validates(name, variant):
    spec = name if variant is None else f"{name}:{variant}"
    config = config_files.load_config(spec)
    experiment = from_config_dict(config)
    assert experiment.name
    # Round trip through the saved form (config.json).
    assert from_config_dict(to_dict(experiment)) == experiment


@pytest.mark.parametrize("name", CONFIGS)
def test_docstring_is_the_command(name):
    """A sweep config (one with a ``sweep`` section) leads with its
    ``sweep`` command, any other with its ``train`` command."""
    path = Path(__file__).parents[1] / "configs" / f"{name}.py"
    doc = ast.get_docstring(ast.parse(path.read_text()))
    command = "sweep" if "sweep" in config_files.load_config(name) else "train"
    assert doc.splitlines()[0] == f"recurrent-jax {command} --config=configs/{name}.py"


@pytest.mark.parametrize("name", CONFIGS)
def test_smoke_variant_is_small(name):
    experiment = from_config_dict(config_files.load_config(f"{name}:smoke"))
    assert experiment.training.num_steps <= 50
    assert experiment.model.hidden_size <= 16


def test_configs_are_locked():
    config = config_files.load_config("adding")
    with pytest.raises(AttributeError):
        config.model.hiden_size = 3


def test_overrides_parse_by_type():
    config = config_files.load_config("adding:smoke")
    config_files.apply_overrides(
        config,
        [
            ("model.hidden_size", "32"),
            ("optimizer.learning_rate", "0.1"),
            ("model.bidirectional", "true"),
            ("model.cell", "gru"),
        ],
    )
    experiment = from_config_dict(config)
    assert experiment.model.hidden_size == 32
    assert experiment.optimizer.learning_rate == 0.1
    assert experiment.model.bidirectional is True
    assert experiment.model.cell == "gru"


def test_split_overrides_both_forms():
    rest, overrides = config_files.split_overrides(
        ["train", "--config.model.hidden_size=8", "--config.data.seq_len", "5", "--workdir=x"]
    )
    assert rest == ["train", "--workdir=x"]
    assert overrides == [("model.hidden_size", "8"), ("data.seq_len", "5")]


def test_override_unknown_key_lists_valid_keys():
    config = config_files.load_config("adding:smoke")
    with pytest.raises(ConfigError, match=r"config\.model\.hiden_size: unknown key.*hidden_size"):
        config_files.apply_overrides(config, [("model.hiden_size", "3")])


def test_override_wrong_type():
    config = config_files.load_config("adding:smoke")
    with pytest.raises(ConfigError, match=r"config\.model\.hidden_size: expected int, got 'big'"):
        config_files.apply_overrides(config, [("model.hidden_size", "big")])


def _raw(**changes):
    raw = to_dict(from_config_dict(config_files.load_config("adding:smoke")))
    for dotted, value in changes.items():
        *parents, key = dotted.split("__")
        functools.reduce(dict.__getitem__, parents, raw)[key] = value
    return raw


@pytest.mark.parametrize(
    "changes, message",
    [
        (
            {"model__cell": "lsmt"},
            r"config\.model\.cell: expected one of \['elman', 'lstm', 'gru', 'mgu', 'mingru', "
            r"'minlstm', 'lru', 'rglru', 'conv_lstm', 'conv_gru'\], got 'lsmt'",
        ),
        (
            {"model__cell": "gru", "model__engine__impl": "associative"},
            r"config\.model\.engine\.impl: expected a backend other than 'associative' for "
            r"the gru cell, got 'associative'",
        ),
        (
            {"model__hidden_size": -3},
            r"config\.model\.hidden_size: expected a positive number, got -3",
        ),
        ({"model__hidden_size": 2.5}, r"config\.model\.hidden_size: expected int, got float 2\.5"),
        ({"model__bidirectional": "yes"}, r"config\.model\.bidirectional: expected bool"),
        (
            {"model__engine__remat": 0},
            r"config\.model\.engine\.remat: expected None or a positive int, got 0",
        ),
        ({"model__engine__hoist": "no"}, r"config\.model\.engine\.hoist: expected bool"),
        ({"model__engine__impl": "fast"}, r"config\.model\.engine\.impl: expected one of"),
        (
            {"model__engine": {"remats": 4}},
            r"config\.model\.engine: unknown key\(s\) \['remats'\]",
        ),
        ({"model__dropout": 1.0}, r"config\.model\.dropout: expected a rate in \[0, 1\), got 1\.0"),
        ({"model__zoneout": -0.1}, r"config\.model\.zoneout: expected a rate in \[0, 1\)"),
        (
            {"optimizer__name": "rmsprop"},
            r"config\.optimizer\.name: expected one of \['adam', 'adamw', 'sgd'\]",
        ),
        (
            {"optimizer__learning_rate": 0.0},
            r"config\.optimizer\.learning_rate: expected a positive float",
        ),
        (
            {"optimizer__weight_decay": 0.1},
            r"config\.optimizer\.weight_decay: expected 0 with adam",
        ),
        ({"training__num_steps": 25}, r"config\.training\.num_steps: expected a multiple of"),
        (
            {"optimizer__warmup_steps": 30},
            r"config\.optimizer\.warmup_steps: expected fewer than training\.num_steps \(30\)",
        ),
        ({"data__seq_len": 1}, r"config\.data\.seq_len: expected at least 2, got 1"),
        ({"data__task": "subtraction"}, r"config\.data\.task: expected one of \["),
        ({"data__delay": 3}, r"config\.data: unknown key\(s\) \['delay'\]; valid keys: \["),
        ({"model__layers": 3}, r"config\.model: unknown key\(s\) \['layers'\]"),
    ],
)
def test_bad_values_name_the_key(changes, message):
    with pytest.raises(ConfigError, match=message):
        from_config_dict(_raw(**changes))


def test_unknown_section():
    raw = _raw()
    raw["trainer"] = {}
    with pytest.raises(ConfigError, match=r"config: unknown key\(s\) \['trainer'\]"):
        from_config_dict(raw)


def test_bidirectional_rejected_for_causal_task():
    from recurrent_jax.train.core import build_task

    config = config_files.load_config("copy:smoke")
    config_files.apply_overrides(config, [("model.bidirectional", "true")])
    with pytest.raises(ConfigError, match=r"config\.model\.bidirectional: expected False"):
        build_task(from_config_dict(config))


def test_base_config_has_every_key():
    config = cfg.base_config("adding")
    experiment = from_config_dict(config)
    assert to_dict(experiment) == config.to_dict()


def test_saved_configs_with_model_impl_still_load():
    """A config.json written before ``model.engine`` existed resumes: its
    ``model.impl`` is read as ``model.engine.impl``; both at once is an error."""
    raw = _raw()
    del raw["model"]["engine"]
    raw["model"]["impl"] = "scan"
    assert from_config_dict(raw).model.engine == rj.Engine(impl="scan")
    raw = _raw()
    raw["model"]["impl"] = "scan"
    raw["model"]["engine"]["impl"] = "fused"
    with pytest.raises(ConfigError, match=r"config\.model\.impl: moved to config\.model\.engine"):
        from_config_dict(raw)


def _flat_model(raw: dict) -> dict:
    """``raw`` as earlier versions saved it: one flat model section holding
    every key of every model kind (the other kind's at their defaults)."""
    every = {}
    for cls in reversed(cfg.MODEL_KINDS.values()):
        every.update(dataclasses.asdict(cls()))
    return {**raw, "model": {**every, **raw["model"]}}


@pytest.mark.parametrize("spec", ["adding:smoke", "seq2seq_addition:smoke"])
def test_saved_configs_with_a_flat_model_section_still_load(spec, tmp_path):
    from recurrent_jax.train.loop import CONFIG_FILE, prepare_workdir

    config = from_config_dict(config_files.load_config(spec))
    flat = _flat_model(to_dict(config))
    assert set(flat["model"]) > set(to_dict(config)["model"])
    assert from_config_dict(flat) == config
    (tmp_path / CONFIG_FILE).write_text(json.dumps(flat))
    prepare_workdir(config, tmp_path)  # the same run: resumable
    changed = dataclasses.replace(config, model=dataclasses.replace(config.model, hidden_size=3))
    with pytest.raises(ValueError, match=r"differs at \['model.hidden_size'\]"):
        prepare_workdir(changed, tmp_path)


def test_renamed_keys_are_read_under_their_new_names():
    """``training.steps_per_chunk`` is now ``training.steps_per_call``: saved
    configs and command-line overrides with the old name still work."""
    raw = _raw()
    raw["training"]["steps_per_chunk"] = raw["training"].pop("steps_per_call")
    assert from_config_dict(raw) == from_config_dict(_raw())
    raw["training"]["steps_per_call"] = 10
    with pytest.raises(ConfigError, match=r"config\.training\.steps_per_chunk: renamed to"):
        from_config_dict(raw)
    config = config_files.load_config("adding:smoke")
    config_files.apply_overrides(config, [("training.steps_per_chunk", "5")])
    assert config.training.steps_per_call == 5


def test_old_sweep_key_and_flag_still_work(tmp_path):
    from recurrent_jax.sweep.spec import parse_sweep

    config = config_files.load_config("adding_sweep:smoke").to_dict()
    config["sweep"]["chunk_size"] = config["sweep"].pop("runs_per_call") or 3
    assert parse_sweep(config).runs_per_call == 3
    saved = tmp_path / "sweep.json"
    saved.write_text(json.dumps(config))
    assert config_files.load_config(str(saved)).sweep.runs_per_call == 3
