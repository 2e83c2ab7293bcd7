"""``config.model.cell_options``: a cell's own constructor options reach
the cell a run builds (built-in cells and a researcher's own by import
path), are checked against the constructor's signature, sweep on the grid
axis, and come back with a loaded run."""

from __future__ import annotations

import importlib
import sys
import textwrap

import jax
import numpy as np
import pytest
from _helpers import one_line

pytest.importorskip("ml_collections")
pytest.importorskip("orbax.checkpoint")

import recurrent_jax as rj  # noqa: E402
from recurrent_jax.sweep import parse_sweep, run_sweep  # noqa: E402
from recurrent_jax.train import (  # noqa: E402
    config_files,
    core,
    fit,
    from_config_dict,
    load_run,
    rnn_model,  # noqa: E402
)
from recurrent_jax.train.config import ConfigError, base_config  # noqa: E402

LEAKY = """
import jax, jax.numpy as jnp
import recurrent_jax as rj

def leaky(hidden_size, *, leak: float = 0.5, scale: float = 0.3) -> rj.Cell:
    '''h_t = (1 - leak) h_{t-1} + leak tanh(x_t W + h_{t-1} U).'''
    def init(key, input_size):
        k1, k2 = jax.random.split(key)
        return {"w_ih": jax.random.normal(k1, (input_size, hidden_size)) * scale,
                "w_hh": jax.random.normal(k2, (hidden_size, hidden_size)) * scale}
    def step(params, h, x):
        h = (1 - leak) * h + leak * jnp.tanh(x @ params["w_ih"] + h @ params["w_hh"])
        return h, h
    return rj.Cell(init=init, step=step, hidden_size=hidden_size, name="leaky")
"""


@pytest.fixture
def leaky(tmp_path, monkeypatch):
    (tmp_path / "option_cells.py").write_text(textwrap.dedent(LEAKY))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "option_cells", raising=False)  # this test's own file
    return importlib.import_module("option_cells").leaky


def _config(cell, options, task="adding", **model):
    raw = base_config(task)
    raw.model.update(cell=cell, hidden_size=8, cell_options=options, **model)
    raw.data.update(batch_size=4, eval_size=4)
    raw.training.update(num_steps=20, steps_per_call=10, eval_every=10)
    return raw


def _stack_params(config, key):
    setup = core.make_setup(config)
    return setup.model.init(core.default_hparams(config), key)["rnn"], setup.task


def _numpy_leaky(params, xs, leak):
    """The leaky cell over time, a NumPy loop (the oracle)."""
    h = np.zeros((xs.shape[0], params["w_hh"].shape[0]))
    out = []
    for t in range(xs.shape[1]):
        pre = xs[:, t] @ np.asarray(params["w_ih"]) + h @ np.asarray(params["w_hh"])
        h = (1 - leak) * h + leak * np.tanh(pre)
        out.append(h)
    return np.stack(out, 1)


@pytest.mark.parametrize(
    "cell, options, other",
    [("s4d", {"init": "inv"}, {"init": "lin"}), ("linoss", {"discretization": "imex"}, {})],
)
def test_a_built_in_cells_option_gives_the_directly_built_cell(cell, options, other):
    key = jax.random.key(3)
    config = from_config_dict(_config(cell, options))
    got, task = _stack_params(config, key)
    k_rnn = jax.random.split(key)[0]  # the stack's key (``rnn_model.init``)
    make = rj.cells.REGISTRY[cell]
    direct = rj.layers.cell_stack(make(8, **options), 1)
    leaves = jax.tree_util.tree_leaves
    want = direct.init(k_rnn, task.input_size)
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want)
    assert all(np.array_equal(a, b) for a, b in zip(leaves(got), leaves(want), strict=True))
    xs = jax.random.normal(jax.random.key(4), (2, 7, task.input_size))
    run = dict(deterministic=True, return_sequences=True)
    _, ys = rnn_model.make_network(config.model).apply(got, xs, **run)
    np.testing.assert_allclose(ys, direct.apply(got, xs, **run)[1], rtol=1e-6, atol=1e-6)
    # the option really changes the cell: the default's params or outputs differ
    default = rj.layers.cell_stack(make(8, **other), 1)
    params = default.init(k_rnn, task.input_size)
    same_params = all(
        np.array_equal(a, b) for a, b in zip(leaves(got), leaves(params), strict=True)
    )
    assert not (same_params and np.allclose(ys, default.apply(got, xs, **run)[1], atol=1e-4))


def test_an_own_cells_option_reaches_training_and_a_loaded_run(leaky, tmp_path):
    raw = _config("option_cells:leaky", {"leak": 0.9}, task="arrays")
    raw.data.update(path="", batch_size=8, eval_size=8)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 5, 2)).astype(np.float32)
    y = (x[:, :, 0].sum(1) > 0).astype(np.int32)
    fitted = fit(raw, x, y, workdir=tmp_path / "run", progress=False)
    run = load_run(tmp_path / "run", trust_code=True)
    assert dict(run.config.model.cell_options) == {"leak": 0.9}
    assert dict(fitted.config.model.cell_options) == {"leak": 0.9}
    cell_params = run.params["rnn"]["layer_0"]
    new = rng.normal(size=(3, 5, 2)).astype(np.float32)
    states = run.states(new)
    h = np.asarray(states["layer_0/outputs"])
    encoded = np.asarray(run.task.inputs.encode(new, np.full(3, 5)))
    np.testing.assert_allclose(h, _numpy_leaky(cell_params, encoded, 0.9), atol=1e-5)
    assert not np.allclose(h, _numpy_leaky(cell_params, encoded, 0.5), atol=1e-3)


def test_unknown_owned_and_bad_options_are_one_line_errors(leaky):
    cases = [
        (
            "option_cells:leaky",
            {"leek": 0.9},
            r"unknown option 'leek' of the option_cells:leaky cell; it takes \['leak', 'scale'\]",
        ),
        (
            "s4d",
            {"int": "inv"},
            r"unknown option 'int' of the s4d cell; it takes \['discretization', 'dt_max', "
            r"'dt_min', 'init', 'state_size'\]",
        ),
        ("lstm", {"activation": "relu"}, "unknown option 'activation' of the lstm cell"),
        ("lstm", {"num_heads": 2}, "'num_heads' is set by config.model.num_heads"),
        ("lstm", {"forget_bias": 2.0}, "'forget_bias' is set by config.model.forget_bias"),
        ("s4d", {"init": "nope"}, "config.model.cell_options: init: expected one of"),
        ("s4d", {"init": {"a": 1}}, "config.model.cell_options.init: expected None, a bool"),
    ]
    for cell, options, message in cases:
        with pytest.raises(ConfigError, match=message) as error:
            from_config_dict(_config(cell, options))
        assert "\n" not in str(error.value) and str(error.value).startswith(
            "config.model.cell_options"
        )


def test_the_seq2seq_cells_take_their_options_too():
    raw = base_config("reversal")
    raw.model.update(cell="gru", hidden_size=8, cell_options={"reset_after": False})
    config = from_config_dict(raw)
    setup = core.make_setup(config)
    params = setup.model.init(core.default_hparams(config), jax.random.key(0))
    encoder = params["encoder"]["layer_0"] if "layer_0" in params["encoder"] else params["encoder"]
    names = {getattr(p[-1], "key", None) for p, _ in jax.tree_util.tree_leaves_with_path(encoder)}
    assert "b_hn" not in names  # reset-before GRUs have no separate b_hn
    with pytest.raises(ConfigError, match="unknown option 'leak' of the gru cell"):
        raw.model.update(cell_options={"leak": 1.0})
        from_config_dict(raw)


def test_a_grid_over_an_option_gives_cells_that_differ_as_the_direct_ones(leaky):
    raw = _config("s4d", {}).to_dict()
    raw["sweep"] = {"grid": {"model": {"cell_options": {"init": ["lin", "inv"]}}}}
    plan = parse_sweep(raw)
    assert plan.grid == ("model.cell_options.init",) and len(plan.points) == 2
    key, a_imag = jax.random.key(1), []
    for point, init in zip(plan.points, ["lin", "inv"], strict=True):
        assert dict(point.config.model.cell_options) == {"init": init}
        got, task = _stack_params(point.config, key)
        direct = rj.layers.cell_stack(rj.cells.s4d(8, init=init), 1)
        direct = direct.init(jax.random.split(key)[0], task.input_size)["layer_0"]
        for name, want in direct.items():
            np.testing.assert_array_equal(got["layer_0"][name], want)
        a_imag.append(got["layer_0"]["a_imag"])
    assert not np.allclose(*a_imag)  # the two points' cells differ as the direct ones do
    raw["sweep"]["grid"] = {"model": {"cell_options": {"int": ["lin", "inv"]}}}
    with pytest.raises(ConfigError, match="unknown option 'int' of the s4d cell"):
        parse_sweep(raw)


def test_the_command_line_sets_an_option(leaky, tmp_path, capsys):
    raw = config_files.load_config("adding:smoke")
    config_files.apply_overrides(raw, [("model.cell", "s4d"), ("model.cell_options.init", "inv")])
    assert dict(from_config_dict(raw).model.cell_options) == {"init": "inv"}
    raw = config_files.load_config("adding:smoke")
    config_files.apply_overrides(raw, [("model.cell", "s4d"), ("model.cell_options.nit", "inv")])
    with pytest.raises(ConfigError, match="unknown option 'nit'"):
        from_config_dict(raw)
    err = one_line(
        [
            "train",
            "--config=adding:smoke",
            "--config.model.cell=s4d",
            "--config.model.cell_options.nit=inv",
            f"--workdir={tmp_path / 'w'}",
        ],
        capsys,
    )
    assert "unknown option 'nit' of the s4d cell" in err


@pytest.mark.slow
def test_a_swept_option_trains_and_its_best_run_loads_with_it(leaky, tmp_path):
    raw = _config("option_cells:leaky", {}, task="arrays").to_dict()
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 5, 2)).astype(np.float32)
    y = (x[:, :, 0].sum(1) > 0).astype(np.int32)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    raw["data"].update(path=str(tmp_path / "d.npz"), batch_size=8, eval_size=8)
    raw["sweep"] = {"grid": {"model": {"cell_options": {"leak": [0.2, 0.9]}}}}
    summary = run_sweep(parse_sweep(raw), tmp_path / "sweep", progress=False)
    assert summary["status"] == "completed" and summary["counts"]["completed"] == 2
    best = load_run(tmp_path / "sweep" / "best_run", trust_code=True)
    leak = best.config.model.cell_options["leak"]
    assert leak in (0.2, 0.9)
    new = rng.normal(size=(3, 5, 2)).astype(np.float32)
    h = np.asarray(best.states(new)["layer_0/outputs"])
    encoded = np.asarray(best.task.inputs.encode(new, np.full(3, 5)))
    layer = best.params["rnn"]["layer_0"]
    np.testing.assert_allclose(h, _numpy_leaky(layer, encoded, leak), atol=1e-5)
    other = 0.9 if leak == 0.2 else 0.2
    assert not np.allclose(h, _numpy_leaky(layer, encoded, other), atol=1e-3)
