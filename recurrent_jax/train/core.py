"""The pure training function: ``make_train(config) -> train(hparams, key)``.

Every stage is a top-level pure function of the static config, the traced
``HParams`` and explicit keys, so ``jax.jit(jax.vmap(train))`` runs many
runs at once (PureJaxRL's ``make_train`` shape). The host loop
(``recurrent_jax.train.loop``) calls the same ``init_state``,
``run_steps`` and ``evaluate`` between its calls.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from recurrent_jax.data import registry
from recurrent_jax.data.base import Batch, TaskSpec
from recurrent_jax.train import hparams as hparams_table
from recurrent_jax.train import models
from recurrent_jax.train.config import ExperimentConfig, OptimizerConfig
from recurrent_jax.train.hparams import HParams, default_hparams  # noqa: F401


class TrainState(NamedTuple):
    """One run's training state: updates done, params and optimizer state."""

    step: jax.Array  # int32 scalar: updates done
    params: dict
    opt_state: optax.OptState


class RunKeys(NamedTuple):
    init: jax.Array
    train: jax.Array  # per step: fold_in(train, step)
    eval: jax.Array  # the held-out set of synthetic tasks


def static_config(config: ExperimentConfig) -> ExperimentConfig:
    """``config`` with the ``HParams`` values and the host-only fields set to
    placeholders (``hparams.with_placeholders``): what the compiled stages
    depend on, so configs that differ only there share one compile."""
    t = config.training
    training = dataclasses.replace(t, eval_every=t.steps_per_call, keep_checkpoints=1, seed=0)
    config = dataclasses.replace(config, name="static", training=training)
    return hparams_table.with_placeholders(config)


def compiler_options(config: ExperimentConfig) -> dict | None:
    """XLA options for ``jax.jit`` (``training.fast_compile``)."""
    return {"xla_backend_optimization_level": 0} if config.training.fast_compile else None


def build_task(config: ExperimentConfig) -> TaskSpec:
    """Builds the task and checks that the model can train on it."""
    task = registry.get_task(config.data.task).build(config.data.options)
    models.make_model(config.model, task)
    return task


def make_model(config: ExperimentConfig, task: TaskSpec) -> models.Model:
    return models.make_model(config.model, task)


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
        parts.append(optax.sgd(lr, momentum=pick(hparams.momentum, o.momentum)))
    return optax.chain(*parts)


def init_state(config: ExperimentConfig, task: TaskSpec, hparams: HParams, key) -> TrainState:
    """Step 0: the model's params drawn from ``key`` and the optimizer state."""
    params = make_model(config, task).init(hparams, run_keys(key).init)
    opt_state = make_optimizer(config, hparams).init(params)
    return TrainState(jnp.zeros((), jnp.int32), params, opt_state)


def loss_fn(config, task, hparams, params, batch: Batch, key, step=None):
    return make_model(config, task).loss(hparams, params, batch, key, step)


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


def run_steps(config, task, hparams, state: TrainState, key) -> tuple[TrainState, dict]:
    """``training.steps_per_call`` updates under one ``lax.scan``; metrics
    are per step, shape (steps_per_call,)."""
    step = functools.partial(train_step, config, task, hparams, run_keys(key).train)
    return jax.lax.scan(step, state, None, length=config.training.steps_per_call)


def eval_batch(config: ExperimentConfig, task: TaskSpec, key) -> Batch:
    return task.eval_set(run_keys(key).eval, config.data.eval_size)


def evaluate(config, task, hparams, params, batch: Batch) -> dict:
    """The task's metrics of deterministic outputs on ``batch``."""
    return evaluate_with_outputs(config, task, hparams, params, batch)[0]


def evaluate_with_outputs(config, task, hparams, params, batch: Batch) -> tuple[dict, object]:
    """(metrics, outputs) of the model's evaluation on ``batch``."""
    return make_model(config, task).evaluate(hparams, params, batch)


def make_train(config: ExperimentConfig, task: TaskSpec | None = None):
    """Returns the pure ``train(hparams, key) -> (state, metrics)``.

    ``metrics["train"]``: per-step training metrics, (num_calls,
    steps_per_call) each; ``metrics["eval"]``: held-out metrics at the end.
    Run it with ``jax.jit(train)`` or ``jax.jit(jax.vmap(train))`` (pass
    ``compiler_options=compiler_options(config)`` to honour ``fast_compile``).
    """
    task = build_task(config) if task is None else task
    num_calls = config.training.num_steps // config.training.steps_per_call

    def train(hparams: HParams, key: jax.Array):
        state = init_state(config, task, hparams, key)
        call = lambda s, _: run_steps(config, task, hparams, s, key)
        state, train_metrics = jax.lax.scan(call, state, None, length=num_calls)
        eval_metrics = evaluate(config, task, hparams, state.params, eval_batch(config, task, key))
        return state, {"train": train_metrics, "eval": eval_metrics}

    return train
