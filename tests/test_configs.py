"""Configs: every file loads, validates and documents its command; bad
values are errors naming the key, the expected and the given value."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

pytest.importorskip("ml_collections")

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
    if (
        name != "seed_text_classifier"
    ):  # its smoke keeps the seed model whole (its size is the point)
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
    with pytest.raises(
        ConfigError, match=r"config\.model: unknown key\(s\) \['hiden_size'\].*hidden_size"
    ):
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
            r"config\.model\.cell: expected one of \['conv_gru', 'conv_lstm', 'elman', 'gru', "
            r"'linoss', 'lru', 'lstm', 'mamba', 'mgu', 'mingru', 'minlstm', 'rglru', 's4d', 's5', "
            r"'s6'\], got 'lsmt'",
        ),
        (
            {"model__cell": "mamba", "model__zoneout": 0.1},
            r"config\.model\.zoneout: expected 0 for the mamba block, got 0\.1",
        ),
        (
            {"model__cell": "s6", "model__bias": "single"},
            r"config\.model\.bias: expected the default 'double' \(s6 has no bias mode\)",
        ),
        (
            {"model__cell": "gru", "model__engine__impl": "associative"},
            r"config\.model\.engine\.impl: expected a backend other than 'associative' for "
            r"the gru cell, got 'associative'",
        ),
        (  # fft needs a time-invariant cell: linear in its carry (lru, mamba's s6) is not enough
            {"model__cell": "lru", "model__engine__impl": "fft"},
            r"config\.model\.engine\.impl: expected a backend other than 'fft' for the lru cell, "
            r"got 'fft'",
        ),
        (
            {"model__cell": "mamba", "model__engine__impl": "fft"},
            r"config\.model\.engine\.impl: expected a backend other than 'fft' for the mamba",
        ),
        (  # the selective scan is s6's (and the mamba block's): another linear cell is refused
            {"model__cell": "lru", "model__engine__impl": "selective"},
            r"config\.model\.engine\.impl: expected a backend other than 'selective' for the lru",
        ),
        (
            {"model__cell": "gru", "model__engine__impl": "fft"},
            r"config\.model\.engine\.impl: expected a backend other than 'fft' for the gru",
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
        ({"data__task": "subtraction"}, r"config\.data\.task: expected a task of \["),
        ({"data__delay": 3}, r"config\.data: unknown key\(s\) \['delay'\]; expected some of \["),
        ({"model__layers": 3}, r"config\.model: unknown key\(s\) \['layers'\]"),
    ],
)
def test_bad_values_name_the_key(changes, message):
    with pytest.raises(ConfigError, match=message):
        from_config_dict(_raw(**changes))


@pytest.mark.parametrize(
    "cell, impl",
    [
        ("s4d", "fft"),
        ("lru", "associative"),
        ("mamba", "chunked"),
        ("s6", "selective"),
        ("mamba", "selective"),
    ],
)
def test_backend_for_its_cells_is_accepted(cell, impl):
    experiment = from_config_dict(_raw(model__cell=cell, model__engine__impl=impl))
    assert experiment.model.engine.impl == impl


def test_unknown_section():
    raw = _raw()
    raw["trainer"] = {}
    with pytest.raises(ConfigError, match=r"config: unknown key\(s\) \['trainer'\]"):
        from_config_dict(raw)


def test_bidirectional_rejected_for_causal_task():
    from recurrent_jax.train.core import make_setup

    config = config_files.load_config("copy:smoke")
    config_files.apply_overrides(config, [("model.bidirectional", "true")])
    with pytest.raises(ConfigError, match=r"config\.model\.bidirectional: expected False"):
        make_setup(from_config_dict(config))


def test_base_config_has_every_key():
    config = cfg.base_config("adding")
    experiment = from_config_dict(config)
    assert to_dict(experiment) == config.to_dict()


@pytest.mark.parametrize(
    "section, old, new",
    [("model", "impl", "engine"), ("training", "steps_per_chunk", "steps_per_call")],
)
def test_keys_of_no_release_are_unknown_keys(section, old, new):
    """There is no release before this one, so no key names to migrate: an
    old name is an unknown key, listing the valid ones."""
    from recurrent_jax.train.sweep_spec import parse_sweep

    raw = _raw()
    raw[section][old] = raw[section][new]
    with pytest.raises(ConfigError, match=rf"config\.{section}: unknown key\(s\) \['{old}'\]"):
        from_config_dict(raw)
    config = config_files.load_config("adding_sweep:smoke").to_dict()
    config["sweep"]["chunk_size"] = 3
    with pytest.raises(ConfigError, match=r"config\.sweep: unknown key\(s\) \['chunk_size'\]"):
        parse_sweep(config)
