"""A front door's stacked module and the config's ``rnn`` model are one
function: the same params, keys and inputs give the same outputs and the
same gradients, with every regulariser on (both are
``rj.layers.cell_stack``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import assert_trees_close

import recurrent_jax as rj

pytest.importorskip("ml_collections")

from recurrent_jax.train import config_files, core, from_config_dict, rnn_model  # noqa: E402

B, T, D, H = 3, 7, 2, 8
RATES = dict(dropout=0.2, input_dropout=0.3, recurrent_dropout=0.25, zoneout=0.1)


def config_and_door(door: str, cell: str, bidirectional: bool):
    raw = config_files.load_config("adding:smoke")
    overrides = {
        "model.cell": cell,
        "model.hidden_size": H,
        "model.num_layers": 2,
        "model.bidirectional": bidirectional,
        **{f"model.{k}": v for k, v in RATES.items()},
    }
    config = from_config_dict(
        config_files.apply_overrides(raw, [(k, str(v)) for k, v in overrides.items()])
    )
    family = {"lstm": "LSTM", "gru": "GRU", "elman": "SimpleRNN"}[cell]
    options = dict(num_layers=2, bidirectional=bidirectional, **RATES)
    if door == "eqx":
        module = getattr(pytest.importorskip("equinox") and rj.eqx, family)(
            D, H, key=jax.random.key(9), **options
        )
    else:
        from flax import nnx

        module = getattr(rj.nnx, family)(D, H, rngs=nnx.Rngs(9), **options)
    return config, module


def door_value_and_grad(door, module, params, xs, lengths, key, probe):
    """(outputs, gradient of sum(outputs * probe) as the core's params) of a
    door's module holding ``params``, its masks drawn from ``key``."""
    if door == "eqx":

        def loss(p):
            ys = rj.eqx.load_params(module, p)(xs, seq_lengths=lengths, key=key, inference=False)
            return jnp.sum(ys * probe), ys

        (_, ys), grads = jax.value_and_grad(loss, has_aux=True)(params)
        return ys, grads
    from flax import nnx

    def loss(m):
        ys = m(xs, seq_lengths=lengths, rngs=key, deterministic=False)
        return jnp.sum(ys * probe), ys

    rj.nnx.load_params(module, params)
    (_, ys), grads = nnx.value_and_grad(loss, has_aux=True)(module)
    return ys, nnx.to_pure_dict(grads)["params"]


@pytest.mark.parametrize(
    "door, cell, bidirectional",
    [("nnx", "lstm", True), ("eqx", "gru", False), ("eqx", "elman", True)],
    ids=str,
)
def test_door_module_and_config_model_are_one_function(door, cell, bidirectional, rng):
    config, module = config_and_door(door, cell, bidirectional)
    hparams = core.default_hparams(config)
    task = core.build_task(config)
    params = rnn_model.init(config.model, task, hparams, jax.random.key(1))["rnn"]
    xs = jnp.asarray(rng.standard_normal((B, T, D)), jnp.float32)
    lengths = jnp.asarray([T, 3, 1])
    key = jax.random.key(5)
    network = rnn_model.make_network(config.model, hparams.rates)
    mask = rj.length_mask(lengths, T)
    probe = jnp.asarray(rng.standard_normal((B, T, network.output_size)), jnp.float32)

    def config_loss(p):
        _, ys = network.apply(p, xs, mask=mask, key=key, deterministic=False)
        return jnp.sum(ys * probe), ys

    (_, want), want_grads = jax.value_and_grad(config_loss, has_aux=True)(params)
    got, got_grads = door_value_and_grad(door, module, params, xs, lengths, key, probe)
    assert not np.allclose(
        np.asarray(got), np.asarray(network.apply(params, xs, mask=mask, deterministic=True)[1])
    )
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert_trees_close(got_grads, want_grads, atol=0, rtol=0)
    # every layer's inputs are dropped out (as Keras's stacked layers), not only layer 0's
    no_input = dict(RATES, input_dropout=0.0)
    other = rj.layers.cell_stack(
        rj.cells.REGISTRY[cell](H), 2, bidirectional=bidirectional, **no_input
    )
    _, without = other.apply(params, xs, mask=mask, key=key, deterministic=False)
    assert not np.allclose(np.asarray(without), np.asarray(want))
