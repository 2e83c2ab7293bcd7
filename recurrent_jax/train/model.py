"""The model of an experiment: a recurrent stack from the library and a
linear readout, as pure ``init`` / ``apply`` functions.

Regulariser rates and the init scale are traced values (``HParams``), so a
sweep can vmap over them; whether a regulariser is compiled in at all is
static (its rate in ``ModelConfig`` is non-zero).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

import recurrent_jax as rj
from recurrent_jax.data.base import LAST, Batch, TaskSpec
from recurrent_jax.train.config import ModelConfig

CELL_CONSTRUCTORS = {
    "elman": rj.cells.elman,
    "lstm": rj.cells.lstm,
    "gru": rj.cells.gru,
    "mgu": rj.cells.mgu,
    "mingru": rj.cells.mingru,
    "minlstm": rj.cells.minlstm,
    "lru": rj.cells.lru,
    "rglru": rj.cells.rglru,
}


class Rates(NamedTuple):
    """Regulariser rates (floats or traced scalars); 0.0 is compiled out."""

    dropout: float | jax.Array = 0.0
    input_dropout: float | jax.Array = 0.0
    recurrent_dropout: float | jax.Array = 0.0
    zoneout: float | jax.Array = 0.0


def static_rates(model: ModelConfig, rates: Rates) -> Rates:
    """Keeps the traced rate where the config enables a regulariser, and the
    Python 0.0 (no mask computed) where it does not."""
    return Rates(
        *(r if getattr(model, n) else 0.0 for n, r in zip(Rates._fields, rates, strict=True))
    )


def make_network(model: ModelConfig, rates: Rates) -> rj.Layer:
    """The recurrent stack: ``num_layers`` cells, each optionally bidirectional."""
    cell = CELL_CONSTRUCTORS[model.cell](model.hidden_size)
    layers = []
    for i in range(model.num_layers):
        options = dict(
            dropout=rates.input_dropout if i == 0 else 0.0,
            recurrent_dropout=rates.recurrent_dropout,
            zoneout=rates.zoneout,
            engine=model.engine,
        )
        if model.bidirectional:
            layers.append(rj.bidirectional(cell, **options))
        else:
            layers.append(rj.layer(cell, **options))
    return rj.stack(layers, dropout=rates.dropout)


def init_params(model: ModelConfig, task: TaskSpec, key: jax.Array, init_scale) -> dict:
    """Params ``{"rnn": stack params, "readout": {"w": (F, C), "b": (C,)}}``;
    every weight matrix ``w*`` is multiplied by ``init_scale`` (traced)."""
    network = make_network(model, Rates())
    k_rnn, k_out = jax.random.split(key)
    features = network.output_size
    params = {
        "rnn": network.init(k_rnn, task.input_size),
        "readout": {
            "w": jax.random.normal(k_out, (features, task.output_size)) / jnp.sqrt(features),
            "b": jnp.zeros((task.output_size,)),
        },
    }
    return scale_weights(params, init_scale)


def scale_weights(params: dict, scale) -> dict:
    def scale_leaf(path, leaf):
        name = getattr(path[-1], "key", "")
        return leaf * scale if isinstance(name, str) and name.startswith("w") else leaf

    return jax.tree_util.tree_map_with_path(scale_leaf, params)


def length_mask(seq_lengths, num_steps: int):
    """(B, T) bool valid-step mask, or None."""
    if seq_lengths is None:
        return None
    return rj.length_mask(seq_lengths, num_steps)


def apply_model(
    model: ModelConfig,
    task: TaskSpec,
    params: dict,
    batch: Batch,
    rates: Rates,
    *,
    key: jax.Array | None,
    deterministic: bool,
) -> jax.Array:
    """Readout values: (B, C) for many-to-one tasks, (B, T, C) otherwise."""
    network = make_network(model, static_rates(model, rates))
    _, ys = network.apply(
        params["rnn"],
        batch.xs,
        mask=length_mask(batch.seq_lengths, batch.xs.shape[-2]),
        key=key,
        deterministic=deterministic,
        return_sequences=task.output_mode != LAST,
    )
    bias = params["readout"]["b"]
    return ys @ params["readout"]["w"] + bias.reshape((1,) * (ys.ndim - 1) + bias.shape)
