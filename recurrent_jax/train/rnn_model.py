"""The RNN model family (``model.kind="rnn"``): a recurrent stack from the
library and a linear readout, as pure ``init`` / ``apply`` functions.

Regulariser rates, the init scale and the LSTM forget bias are traced
values (``HParams``), so a sweep can vmap over them; whether a regulariser
is compiled in at all is static (its rate in ``RNNModelConfig`` is
non-zero).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

import recurrent_jax as rj
from recurrent_jax.data.base import LAST, Batch, TaskSpec, losses_and_metrics
from recurrent_jax.train.config import RNNModelConfig
from recurrent_jax.train.hparams import HParams, Rates


def static_rates(model: RNNModelConfig, rates: Rates) -> Rates:
    """Keeps the traced rate where the config enables a regulariser, and the
    Python 0.0 (no mask computed) where it does not."""
    return Rates(
        *(r if getattr(model, n) else 0.0 for n, r in zip(Rates._fields, rates, strict=True))
    )


def make_cell(model: RNNModelConfig, cell_options=None, spatial_dims: int = 0) -> rj.Cell:
    """The config's cell; a convolutional one over ``spatial_dims`` axes."""
    options = dict(cell_options or {})
    if model.num_heads:
        options["num_heads"] = model.num_heads
    if model.cell in rj.cells.CONV_REGISTRY:
        make = rj.cells.CONV_REGISTRY[model.cell]
        return make(model.hidden_size, model.kernel_size, spatial_dims=spatial_dims, **options)
    return rj.cells.REGISTRY[model.cell](model.hidden_size, **options)


def make_network(
    model: RNNModelConfig, rates: Rates, cell_options=None, spatial_dims: int = 0
) -> rj.Layer:
    """The recurrent stack: ``num_layers`` cells, each optionally
    bidirectional; ``cell_options`` go to the cell constructor."""
    cell = make_cell(model, cell_options, spatial_dims)
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


def cell_options(model: RNNModelConfig, hparams: HParams) -> dict:
    """The traced hyperparameters that the cell constructor owns."""
    return {"forget_bias": hparams.forget_bias} if model.cell == "lstm" else {}


def init_params(model: RNNModelConfig, task: TaskSpec, key: jax.Array, hparams: HParams) -> dict:
    """Params ``{"rnn": stack params, "readout": {"w": (F, C), "b": (C,)}}``;
    every weight matrix ``w*`` (and conv kernel ``k_*``) is multiplied by
    ``hparams.init_scale``, the
    LSTM forget-gate biases start at ``hparams.forget_bias``."""
    spatial = len(task.spatial_shape)
    network = make_network(model, Rates(), cell_options(model, hparams), spatial)
    k_rnn, k_out = jax.random.split(key)
    features = network.output_size
    params = {
        "rnn": network.init(k_rnn, task.input_size),
        "readout": {
            "w": jax.random.normal(k_out, (features, task.output_size)) / jnp.sqrt(features),
            "b": jnp.zeros((task.output_size,)),
        },
    }
    return scale_weights(params, hparams.init_scale)


def scale_weights(params: dict, scale) -> dict:
    def scale_leaf(path, leaf):
        name = getattr(path[-1], "key", "")
        weight = isinstance(name, str) and name.startswith(("w", "k_"))  # matrices, conv kernels
        return leaf * scale if weight else leaf

    return jax.tree_util.tree_map_with_path(scale_leaf, params)


def length_mask(seq_lengths, num_steps: int):
    """(B, T) bool valid-step mask, or None."""
    if seq_lengths is None:
        return None
    return rj.length_mask(seq_lengths, num_steps)


def apply_model(
    model: RNNModelConfig,
    task: TaskSpec,
    params: dict,
    batch: Batch,
    rates: Rates,
    *,
    key: jax.Array | None,
    deterministic: bool,
) -> jax.Array:
    """Readout values: (B, C) for many-to-one tasks, (B, T, C) otherwise."""
    network = make_network(model, static_rates(model, rates), spatial_dims=len(task.spatial_shape))
    _, ys = network.apply(
        params["rnn"],
        batch.xs,
        mask=length_mask(batch.seq_lengths, batch.xs.shape[1]),
        key=key,
        deterministic=deterministic,
        return_sequences=task.output_mode != LAST,
    )
    bias = params["readout"]["b"]
    return ys @ params["readout"]["w"] + bias.reshape((1,) * (ys.ndim - 1) + bias.shape)


def loss(model: RNNModelConfig, task: TaskSpec, hparams, params, batch: Batch, key, step=None):
    """(loss, metrics) of one training batch, regularisers on."""
    outputs = apply_model(model, task, params, batch, hparams.rates, key=key, deterministic=False)
    metrics = losses_and_metrics(task, outputs, batch)
    return metrics["loss"], metrics


def evaluate(model: RNNModelConfig, task: TaskSpec, hparams, params, batch: Batch):
    """(metrics, readout values) of deterministic outputs on ``batch``."""
    outputs = apply_model(model, task, params, batch, hparams.rates, key=None, deterministic=True)
    return losses_and_metrics(task, outputs, batch), outputs
