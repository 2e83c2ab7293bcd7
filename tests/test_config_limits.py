"""Configs a careless or hostile user gives: a name that is not one path
component (or 50 MB long), nesting thousands deep, a sweep of 10^8 values
or runs. Each is one line from the CLI (exit 2) before anything is
written; the messages stay short whatever the value's size."""

from __future__ import annotations

import json
import os

import pytest
from _helpers import one_line

pytest.importorskip("ml_collections")

from recurrent_jax.train import config_files, from_config_dict, to_dict  # noqa: E402
from recurrent_jax.train.config import NAME_MAX_LENGTH, ConfigError  # noqa: E402


def smoke() -> dict:
    return to_dict(from_config_dict(config_files.load_config("adding:smoke")))


@pytest.mark.parametrize(
    "name", ["/abs/path", "../../x", "a/b", "a\\b", ".", "..", "", "tab\there", "x" * 101]
)
def test_a_name_that_is_not_one_path_component_is_refused(tmp_path, monkeypatch, capsys, name):
    monkeypatch.chdir(tmp_path)  # the default run directory: runs/<name>-<time>
    err = one_line(["train", "--config=adding:smoke", f"--config.name={name}"], capsys)
    assert err.startswith("recurrent-jax: error: config.name: expected one path component")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("name", ["a\x00b", "x" * 50_000_000])
def test_a_nul_byte_or_a_50_mb_name_is_refused_in_a_short_line(tmp_path, capsys, name):
    config = smoke() | {"name": name}
    with pytest.raises(ConfigError, match="config.name: expected one path component") as error:
        from_config_dict(config)
    assert len(str(error.value)) < 300
    if len(name) < 100:  # from a JSON config on the command line too
        (tmp_path / "c.json").write_text(json.dumps(config))
        err = one_line(["train", f"--config={tmp_path / 'c.json'}"], capsys)
        assert r"got 'a\x00b'" in err


def test_a_name_of_the_longest_length_is_a_run_directory(tmp_path):
    name = "n" * NAME_MAX_LENGTH
    assert from_config_dict(smoke() | {"name": name}).name == name


@pytest.mark.parametrize("depth", [5000, 40])
def test_a_config_nested_thousands_deep_is_one_line(tmp_path, capsys, depth):
    (tmp_path / "deep.json").write_text('{"name": ' + "[" * depth + "]" * depth + "}")
    err = one_line(["train", f"--config={tmp_path / 'deep.json'}"], capsys)
    assert err.endswith("deep.json: nested more than 32 levels deep")
    err = one_line(["sweep", f"--config={tmp_path / 'deep.json'}"], capsys)
    assert err.endswith("deep.json: nested more than 32 levels deep")


@pytest.mark.parametrize(
    "override, where, count",
    [
        (
            "vmap.learning_rate={'linear': [0.001, 0.1], 'num': 100000000}",
            "vmap.learning_rate",
            10**8,
        ),
        ("vmap.learning_rate={'range': [0.0, 1.0, 1e-8]}", "vmap.learning_rate", 10**8),
        ("grid.model.hidden_size={'range': [100000000]}", "grid.model.hidden_size", 10**8),
        ("seeds=100000000", "seeds", 10**8),
    ],
)
def test_a_sweep_axis_of_a_hundred_million_values_is_one_line(capsys, override, where, count):
    argv = ["sweep", "--config=adding_sweep:smoke", f"--config.sweep.{override}"]
    err = one_line(argv, capsys)
    assert f"config.sweep.{where}: expected at most 10000 values" in err and f"got {count}" in err


def test_a_sweep_of_a_hundred_million_runs_is_one_line(capsys):
    axes = [
        "--config.sweep.vmap.learning_rate={'log': [0.001, 0.1], 'num': 10000}",
        "--config.sweep.vmap.forget_bias={'linear': [0.0, 1.0], 'num': 10000}",
    ]
    err = one_line(["sweep", "--config=adding_sweep:smoke", *axes], capsys)
    assert "config.sweep: expected at most 10000 runs" in err and "got 200000000" in err
