"""The RNN model family (``model.kind="rnn"``): ``layers.cell_stack`` (the
stack of the front doors' ``LSTM``/``GRU``/``SimpleRNN``) and a linear
readout, as the ``Model`` stages of ``train.stages`` (each function here
takes ``(model, task, ...)`` and then the stage's own arguments).

Regulariser rates, the init scale and the LSTM forget bias are traced
values (``HParams``), so a sweep can vmap over them; whether a regulariser
is compiled in at all is static (its rate in ``RNNModelConfig`` is
non-zero).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

import recurrent_jax as rj
from recurrent_jax.cells.base import widen
from recurrent_jax.data.base import LAST, REGRESSION, Batch, TaskSpec, losses_and_metrics
from recurrent_jax.data.seq2seq_specs import SEQ2SEQ
from recurrent_jax.mamba import BLOCKS
from recurrent_jax.train.config import ConfigError, RNNModelConfig
from recurrent_jax.train.hparams import Rates


def check_task(model: RNNModelConfig, task: TaskSpec) -> None:
    """The stack can train on ``task``: not a seq2seq one, convolutional
    cells for frames only, one direction for causal tasks."""
    if task.kind == SEQ2SEQ:
        raise ConfigError(
            f"config.model.kind: expected 'seq2seq' for a {task.kind} task, got {model.KIND!r}"
        )
    if (model.cell in rj.cells.CONV_REGISTRY) != bool(task.spatial_shape):
        expected = (
            "a convolutional cell (conv_lstm, conv_gru)"
            if task.spatial_shape
            else "a cell for feature vectors"
        )
        raise ConfigError(
            f"config.model.cell: expected {expected} for a task with spatial shape "
            f"{task.spatial_shape}, got {model.cell!r}"
        )
    if task.causal and model.bidirectional:
        raise ConfigError(
            "config.model.bidirectional: expected False for a causal task "
            "(its outputs may only use the past), got True"
        )
    if task.input_vocab is not None and model.embedding_size is None:
        raise ConfigError(
            f"config.model.embedding_size: expected a size for the token ids of this task "
            f"(a vocabulary of {task.input_vocab}), got None"
        )
    if task.input_vocab is None and model.embedding_size is not None:
        raise ConfigError(
            "config.model.embedding_size: expected None for a task of feature vectors "
            f"(it embeds token ids), got {model.embedding_size}"
        )
    if task.output_mode != LAST and model.pooling != "last":
        raise ConfigError(
            f"config.model.pooling: expected 'last' for a task with an output at every step "
            f"(it pools a many-to-one task's outputs), got {model.pooling!r}"
        )


def make_cell(model: RNNModelConfig, spatial_dims: int = 0, forget_bias=None):
    """The config's cell; a convolutional one over ``spatial_dims`` axes.
    ``forget_bias`` (an LSTM's, traced at init) overrides the default. A
    block (``mamba``) comes as ``block(**layer_options) -> Layer`` of
    ``hidden_size`` features, as ``layers.cell_stack`` takes it."""
    if model.cell in BLOCKS:
        return functools.partial(BLOCKS[model.cell], model.hidden_size, **model.cell_options)
    options = dict(model.cell_options)  # the cell's own (``config.model.cell_options``)
    if model.num_heads:
        options["num_heads"] = model.num_heads
    if forget_bias is not None:
        options["forget_bias"] = forget_bias
    if model.bias != "double":  # the cells' default: a cell of one's own need not take it
        options["bias"] = model.bias
    if model.dtype != "float32":  # likewise
        options["param_dtype"] = jnp.dtype(model.dtype)
    make = model.cell_constructor()
    if model.cell in rj.cells.CONV_REGISTRY:
        return make(model.hidden_size, model.kernel_size, spatial_dims=spatial_dims, **options)
    return make(model.hidden_size, **options)


def make_network(
    model: RNNModelConfig, rates: Rates | None = None, spatial_dims: int = 0, forget_bias=None
) -> rj.Layer:
    """The recurrent stack (``layers.cell_stack``); a rate that the config
    leaves at 0 is compiled out (the Python 0.0, not a traced value)."""
    rates = Rates() if rates is None else rates
    rates = Rates(*(r if getattr(model, n) else 0.0 for n, r in rates._asdict().items()))
    return rj.layers.cell_stack(
        make_cell(model, spatial_dims, forget_bias),
        model.num_layers,
        bidirectional=model.bidirectional,
        residual=model.residual,
        engine=model.engine,
        **rates._asdict(),
    )


def init(model: RNNModelConfig, task: TaskSpec, hparams, key: jax.Array) -> dict:
    """Params ``{"rnn": stack params, "readout": {"w": (F, C), "b": (C,)}}``
    and, for token inputs, ``"embedding"`` (V, E) drawn uniform in ±0.05
    (Keras); every weight matrix ``w*`` (and conv kernel ``k_*``) is
    multiplied by ``hparams.init_scale``, the LSTM forget-gate biases start
    at ``hparams.forget_bias``; every param in ``model.dtype``."""
    forget_bias = hparams.forget_bias if model.cell == "lstm" else None
    network = make_network(model, spatial_dims=len(task.spatial_shape), forget_bias=forget_bias)
    k_rnn, k_out = jax.random.split(key)
    features = network.output_size
    input_size = task.input_size if task.input_vocab is None else model.embedding_size
    params = {
        "rnn": network.init(k_rnn, input_size),
        "readout": {
            "w": jax.random.normal(k_out, (features, task.output_size)) / jnp.sqrt(features),
            "b": jnp.zeros((task.output_size,)),
        },
    }
    if task.input_vocab is not None:
        shape = (task.input_vocab, model.embedding_size)
        params["embedding"] = jax.random.uniform(
            jax.random.fold_in(key, 2), shape, None, -0.05, 0.05
        )
    params = jax.tree_util.tree_map(lambda p: p.astype(model.dtype), params)
    return scale_weights(params, hparams.init_scale)


def scale_weights(params: dict, scale) -> dict:
    def scale_leaf(path, leaf):
        name = getattr(path[-1], "key", "")
        weight = isinstance(name, str) and name.startswith(("w", "k_"))  # matrices, conv kernels
        return leaf * scale if weight else leaf

    return jax.tree_util.tree_map_with_path(scale_leaf, params)


def apply(
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
    network = make_network(model, rates, spatial_dims=len(task.spatial_shape))
    num_steps = batch.xs.shape[1]
    mask = None if batch.seq_lengths is None else rj.length_mask(batch.seq_lengths, num_steps)
    xs = batch.xs if task.input_vocab is None else params["embedding"][batch.xs]
    pooled = task.output_mode == LAST and model.pooling != "last"
    _, ys = network.apply(
        params["rnn"],
        xs,
        mask=mask,
        key=key,
        deterministic=deterministic,
        return_sequences=task.output_mode != LAST or pooled,
    )
    if pooled:
        ys = pool(ys, mask, model.pooling)
    bias = params["readout"]["b"]
    return ys @ params["readout"]["w"] + bias.reshape((1,) * (ys.ndim - 1) + bias.shape)


def pool(ys, mask, how: str):
    """(B, F) of ``ys`` (B, T, F) over the valid steps of ``mask`` (B, T) (or
    all): their mean, or their maximum; zeros for a sequence of length 0."""
    valid = jnp.ones(ys.shape[:2], bool) if mask is None else mask
    valid = valid[..., None]
    if how == "mean":
        count = jnp.maximum(valid.sum(1), 1).astype(ys.dtype)
        return jnp.where(valid, ys, 0.0).sum(1) / count
    peak = jnp.where(valid, ys, -jnp.inf).max(1)
    return jnp.where(valid.any(1), peak, 0.0)


def loss(model: RNNModelConfig, task: TaskSpec, hparams, params, batch: Batch, key, step):
    """(loss, metrics) of one training batch, regularisers on."""
    outputs = apply(model, task, params, batch, hparams.rates, key=key, deterministic=False)
    metrics = losses_and_metrics(task, outputs, batch)
    return metrics["loss"], metrics


def evaluate(model: RNNModelConfig, task: TaskSpec, hparams, params, batch: Batch):
    """(metrics, readout values) of deterministic outputs on ``batch``."""
    outputs = apply(model, task, params, batch, hparams.rates, key=None, deterministic=True)
    return losses_and_metrics(task, outputs, batch), outputs


def predict(model: RNNModelConfig, task: TaskSpec, hparams, params, batch: Batch) -> dict:
    """Named predictions for ``batch.xs`` (``batch.seq_lengths``; targets
    unused): a classification's ``probabilities`` (softmax of the readout,
    (B, C) or per step (B, T, C)) and ``classes`` (their argmax), a
    regression's ``values`` (B, C) or (B, T, C)."""
    outputs = apply(model, task, params, batch, hparams.rates, key=None, deterministic=True)
    if task.kind == REGRESSION:
        return {"values": outputs}
    probabilities = jax.nn.softmax(widen(outputs), axis=-1)
    return {"classes": jnp.argmax(outputs, axis=-1), "probabilities": probabilities}


def write_eval(model, task, workdir, step, batch, outputs) -> None:
    """Nothing per evaluation: the picture is drawn once, at the end."""


def write_final(model, task, end) -> tuple[list[str], str | None]:
    """The predictions plot and, for language models, sampled text."""
    from recurrent_jax.train import rnn_outputs  # it samples through make_network

    return rnn_outputs.write_final(model, task, end)
