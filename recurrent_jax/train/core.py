"""The pure training function: ``make_train(config) -> train(hparams, key)``.

Every stage is a top-level pure function of the static config, the traced
``HParams`` and explicit keys, so ``jax.jit(jax.vmap(train))`` runs many
runs at once (PureJaxRL's ``make_train`` shape). The host loop
(``recurrent_jax.train.loop``) calls the same ``init_state``,
``run_chunk`` and ``evaluate`` between its chunks.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from recurrent_jax.cells import lstm as lstm_cell
from recurrent_jax.data import registry
from recurrent_jax.data.base import Batch, TaskSpec, losses_and_metrics
from recurrent_jax.data.options import ConfigError
from recurrent_jax.data.seq2seq_specs import SEQ2SEQ
from recurrent_jax.train import seq2seq as seq2seq_stages
from recurrent_jax.train.config import ExperimentConfig, OptimizerConfig
from recurrent_jax.train.model import Rates, apply_model, init_params  # noqa: F401


class HParams(NamedTuple):
    """Traced scalars (float32): a sweep vmaps over any of them.

    ``b1``, ``b2`` and ``eps`` (Adam's) are None by default: the config's
    values are then compiled in as constants, exactly as a Python float; a
    sweep that varies them passes arrays. ``forget_bias`` is added to the
    forget-gate slice of every LSTM input-side bias at init (a config error
    with other cells). ``sampling_prob`` is the scheduled-sampling probability of
    sequence-to-sequence models.
    """

    learning_rate: jax.Array
    weight_decay: jax.Array
    clip_norm: jax.Array
    dropout: jax.Array
    input_dropout: jax.Array
    recurrent_dropout: jax.Array
    zoneout: jax.Array
    init_scale: jax.Array
    b1: jax.Array | None = None
    b2: jax.Array | None = None
    eps: jax.Array | None = None
    forget_bias: jax.Array | None = None
    sampling_prob: jax.Array | None = None

    @property
    def rates(self) -> Rates:
        return Rates(self.dropout, self.input_dropout, self.recurrent_dropout, self.zoneout)


class TrainState(NamedTuple):
    step: jax.Array  # int32 scalar: updates done
    params: dict
    opt_state: optax.OptState


class RunKeys(NamedTuple):
    init: jax.Array
    train: jax.Array  # per step: fold_in(train, step)
    eval: jax.Array  # the held-out set of synthetic tasks


# Where each hyperparameter's config value lives.
HPARAM_PATHS = {
    "learning_rate": "optimizer.learning_rate",
    "weight_decay": "optimizer.weight_decay",
    "clip_norm": "optimizer.clip_norm",
    "dropout": "model.dropout",
    "input_dropout": "model.input_dropout",
    "recurrent_dropout": "model.recurrent_dropout",
    "zoneout": "model.zoneout",
    "init_scale": "model.init_scale",
    "b1": "optimizer.b1",
    "b2": "optimizer.b2",
    "eps": "optimizer.eps",
    "forget_bias": "model.forget_bias",
    "sampling_prob": "model.sampling_prob",
}
COMPILED_IN = ("b1", "b2", "eps")  # None in default_hparams: constants unless swept
LSTM_FORGET_BIAS = inspect.signature(lstm_cell).parameters["forget_bias"].default


def config_value(config: ExperimentConfig, path: str):
    """``config.<section>.<field>`` by its dotted path."""
    section, field = path.split(".")
    return getattr(getattr(config, section), field)


def default_hparams(config: ExperimentConfig, traced=()) -> HParams:
    """The config's values of the traced hyperparameters (float32 scalars);
    ``b1``, ``b2``, ``eps`` are None (compiled in) unless named in ``traced``."""
    values = {
        name: jnp.asarray(config_value(config, path), jnp.float32)
        if name not in COMPILED_IN or name in traced
        else None
        for name, path in HPARAM_PATHS.items()
    }
    return HParams(**values)


def static_config(config: ExperimentConfig) -> ExperimentConfig:
    """``config`` with the ``HParams`` values and the host-only fields set to
    placeholders: what the compiled stages depend on. A traced value's
    placeholder keeps whether it is zero, which decides whether the
    regulariser or clipping is compiled in."""
    m, o, t = config.model, config.optimizer, config.training
    flag = lambda value: 0.5 if value else 0.0
    model = dataclasses.replace(
        m,
        dropout=flag(m.dropout),
        input_dropout=flag(m.input_dropout),
        recurrent_dropout=flag(m.recurrent_dropout),
        zoneout=flag(m.zoneout),
        init_scale=1.0,
        forget_bias=LSTM_FORGET_BIAS,
        sampling_prob=flag(m.sampling_prob),
    )
    optimizer = dataclasses.replace(
        o, learning_rate=1.0, weight_decay=flag(o.weight_decay), clip_norm=flag(o.clip_norm)
    )
    training = dataclasses.replace(t, eval_every=t.steps_per_chunk, keep_checkpoints=1, seed=0)
    return dataclasses.replace(
        config, name="static", model=model, optimizer=optimizer, training=training
    )


def compiler_options(config: ExperimentConfig) -> dict | None:
    """XLA options for ``jax.jit`` (``training.fast_compile``)."""
    return {"xla_backend_optimization_level": 0} if config.training.fast_compile else None


def build_task(config: ExperimentConfig) -> TaskSpec:
    """Builds the task and checks it fits the model."""
    task = registry.get_task(config.data.task).build(config.data.options)
    if (task.kind == SEQ2SEQ) != (config.model.kind == "seq2seq"):
        expected = (
            "'seq2seq'" if task.kind == SEQ2SEQ else "'rnn' (a seq2seq model needs a seq2seq task)"
        )
        raise ConfigError(
            f"config.model.kind: expected {expected} for task {config.data.task!r}, "
            f"got {config.model.kind!r}"
        )
    if task.causal and config.model.bidirectional:
        raise ConfigError(
            f"config.model.bidirectional: expected False for task {config.data.task!r} "
            "(its outputs may only use the past), got True"
        )
    return task


def run_keys(key: jax.Array) -> RunKeys:
    return RunKeys(*jax.random.split(key, 3))


def learning_rate_fn(optimizer: OptimizerConfig, num_steps: int, peak):
    """step -> learning rate: ``peak`` times a warmup / cosine shape."""
    if optimizer.schedule == "warmup_cosine":
        shape = optax.warmup_cosine_decay_schedule(
            0.0, 1.0, optimizer.warmup_steps, num_steps, optimizer.end_lr_fraction
        )
    elif optimizer.warmup_steps:
        shape = optax.join_schedules(
            [optax.linear_schedule(0.0, 1.0, optimizer.warmup_steps), optax.constant_schedule(1.0)],
            [optimizer.warmup_steps],
        )
    else:
        shape = optax.constant_schedule(1.0)
    return lambda step: peak * shape(step)


def make_optimizer(config: ExperimentConfig, hparams: HParams) -> optax.GradientTransformation:
    o = config.optimizer
    lr = learning_rate_fn(o, config.training.num_steps, hparams.learning_rate)
    parts = [optax.clip_by_global_norm(hparams.clip_norm)] if o.clip_norm else []
    pick = lambda traced, constant: constant if traced is None else traced
    adam = dict(b1=pick(hparams.b1, o.b1), b2=pick(hparams.b2, o.b2), eps=pick(hparams.eps, o.eps))
    if o.name == "adam":
        parts.append(optax.adam(lr, **adam))
    elif o.name == "adamw":
        parts.append(optax.adamw(lr, **adam, weight_decay=hparams.weight_decay))
    else:
        if o.weight_decay:
            parts.append(optax.add_decayed_weights(hparams.weight_decay))
        parts.append(optax.sgd(lr, momentum=o.momentum))
    return optax.chain(*parts)


def init_state(config: ExperimentConfig, task: TaskSpec, hparams: HParams, key) -> TrainState:
    """Step 0: the model's params drawn from ``key`` and the optimizer state."""
    if config.model.kind == "seq2seq":
        params = seq2seq_stages.init_params(config.model, run_keys(key).init)
    else:
        params = init_params(config.model, task, run_keys(key).init, hparams.init_scale)
    if config.model.cell == "lstm" and hparams.forget_bias is not None:
        params = shift_forget_bias(params, hparams.forget_bias - LSTM_FORGET_BIAS)
    opt_state = make_optimizer(config, hparams).init(params)
    return TrainState(jnp.zeros((), jnp.int32), params, opt_state)


def shift_forget_bias(params: dict, delta) -> dict:
    """Adds ``delta`` to the forget-gate slice ``[H:2H]`` (gates i, f, g, o)
    of every LSTM input-side bias (``b_ih``, or ``b`` with a single bias):
    the recurrent stack's (``rnn``), or a seq2seq model's encoder and decoder
    cells; a zero ``delta`` leaves the params bit-identical."""

    def shift(path, leaf):
        keys = [getattr(entry, "key", None) for entry in path]
        in_cells = keys[0] in ("rnn", "encoder") or keys[:2] == ["decoder", "cells"]
        if not in_cells or keys[-1] not in ("b_ih", "b"):
            return leaf
        hidden = leaf.shape[-1] // 4
        return leaf.at[hidden : 2 * hidden].add(delta.astype(leaf.dtype))

    return jax.tree_util.tree_map_with_path(shift, params)


def loss_fn(config, task, hparams, params, batch: Batch, key, step=None):
    if config.model.kind == "seq2seq":
        return seq2seq_stages.loss_fn(config.model, hparams, params, batch, key, step)
    outputs = apply_model(
        config.model, task, params, batch, hparams.rates, key=key, deterministic=False
    )
    metrics = losses_and_metrics(task, outputs, batch)
    return metrics["loss"], metrics


def train_step(config, task, hparams, key, state: TrainState, _=None):
    """One update on a fresh batch drawn from ``fold_in(key, step)``."""
    k_data, k_dropout = jax.random.split(jax.random.fold_in(key, state.step))
    batch = task.sample_train(k_data, config.data.batch_size)
    grad_fn = jax.grad(loss_fn, argnums=3, has_aux=True)
    grads, metrics = grad_fn(config, task, hparams, state.params, batch, k_dropout, state.step)
    optimizer = make_optimizer(config, hparams)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    lr = learning_rate_fn(config.optimizer, config.training.num_steps, hparams.learning_rate)
    metrics = metrics | {"grad_norm": optax.tree.norm(grads), "learning_rate": lr(state.step)}
    return TrainState(state.step + 1, params, opt_state), metrics


def run_chunk(config, task, hparams, state: TrainState, key) -> tuple[TrainState, dict]:
    """``training.steps_per_chunk`` updates under one ``lax.scan``; metrics
    are per step, shape (steps_per_chunk,)."""
    step = functools.partial(train_step, config, task, hparams, run_keys(key).train)
    return jax.lax.scan(step, state, None, length=config.training.steps_per_chunk)


def eval_batch(config: ExperimentConfig, task: TaskSpec, key) -> Batch:
    return task.eval_set(run_keys(key).eval, config.data.eval_size)


def evaluate(config, task, hparams, params, batch: Batch) -> dict:
    """The task's metrics of deterministic outputs on ``batch``."""
    if config.model.kind == "seq2seq":
        return seq2seq_stages.evaluate(config.model, params, batch)[0]
    outputs = apply_model(
        config.model, task, params, batch, hparams.rates, key=None, deterministic=True
    )
    return losses_and_metrics(task, outputs, batch)


def make_train(config: ExperimentConfig, task: TaskSpec | None = None):
    """Returns the pure ``train(hparams, key) -> (state, metrics)``.

    ``metrics["train"]``: per-step training metrics, (num_chunks,
    steps_per_chunk) each; ``metrics["eval"]``: held-out metrics at the end.
    Run it with ``jax.jit(train)`` or ``jax.jit(jax.vmap(train))`` (pass
    ``compiler_options=compiler_options(config)`` to honour ``fast_compile``).
    """
    task = build_task(config) if task is None else task
    num_chunks = config.training.num_steps // config.training.steps_per_chunk

    def train(hparams: HParams, key: jax.Array):
        state = init_state(config, task, hparams, key)
        chunk = lambda s, _: run_chunk(config, task, hparams, s, key)
        state, train_metrics = jax.lax.scan(chunk, state, None, length=num_chunks)
        eval_metrics = evaluate(config, task, hparams, state.params, eval_batch(config, task, key))
        return state, {"train": train_metrics, "eval": eval_metrics}

    return train
