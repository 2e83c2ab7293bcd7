"""The pure training stages of one run.

``make_setup(config)`` builds what a run's stages close over once: the
model, the optimizer and the task (a ``Setup``). Every stage is a top-level
pure function of that setup, the traced ``HParams``, explicit keys and the
state, so ``jax.jit(jax.vmap(...))`` runs many runs at once (PureJaxRL's
``make_train`` shape); ``make_train(config) -> train(hparams, key)`` is a
whole run. ``recurrent_jax.train.runs`` compiles the stages for N >= 1 runs
and the host loop calls them between its calls.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from recurrent_jax.data import registry
from recurrent_jax.data.base import Batch, TaskSpec
from recurrent_jax.train import hparams as hparams_table
from recurrent_jax.train import online_loop
from recurrent_jax.train.config import ConfigError, ExperimentConfig, OptimizerConfig
from recurrent_jax.train.hparams import HParams, default_hparams  # noqa: F401
from recurrent_jax.train.models import make_model, use_dtype
from recurrent_jax.train.stages import Model


class TrainState(NamedTuple):
    """One run's training state: updates done, params and optimizer state."""

    step: jax.Array  # int32 scalar: updates done
    params: dict
    opt_state: optax.OptState


class RunKeys(NamedTuple):
    init: jax.Array
    train: jax.Array  # per step: fold_in(train, step)
    eval: jax.Array  # the held-out set of synthetic tasks


class Optimizer(NamedTuple):
    """The config's optax chain with its traced hyperparameters as
    arguments: ``transform(hparams)`` and ``learning_rate(hparams, step)``."""

    transform: Callable[[HParams], optax.GradientTransformation]
    learning_rate: Callable[[HParams, jax.Array], jax.Array]


class Setup(NamedTuple):
    """What the stages of a run close over, built once from the config."""

    model: Model
    optimizer: Optimizer
    task: TaskSpec
    batch_size: int
    eval_size: int
    steps_per_call: int
    num_calls: int  # of steps_per_call steps in the whole run
    streamed: bool = False  # batches come from the host (config.data.stream)
    online: online_loop.Online | None = None  # training.gradient other than "bptt"


def make_setup(config: ExperimentConfig, task: TaskSpec | None = None) -> Setup:
    """The setup of ``config`` (its task built unless given); the model is
    built here, once, which checks that it can train on the task."""
    task = build_task(config) if task is None else task
    t = config.training
    return Setup(
        make_model(config.model, task),
        make_optimizer(config.optimizer, t.num_steps),
        task,
        config.data.batch_size,
        config.data.eval_size,
        t.steps_per_call,
        t.num_steps // t.steps_per_call,
        config.data.stream,
        online_loop.make_online(config, task),
    )


def static_config(config: ExperimentConfig) -> ExperimentConfig:
    """``config`` with the ``HParams`` values and the host-only fields set to
    placeholders (``hparams.with_placeholders``): what the compiled stages
    depend on, so configs that differ only there share one compile."""
    t = config.training
    training = dataclasses.replace(t, eval_every=t.steps_per_call, keep_checkpoints=1, seed=0)
    data = dataclasses.replace(config.data, shuffle_seed=0, prefetch=2)  # the stream's host side
    config = dataclasses.replace(config, name="static", training=training, data=data)
    return hparams_table.with_placeholders(config)


def compiler_options(config: ExperimentConfig) -> dict | None:
    """XLA options for ``jax.jit`` (``training.fast_compile``)."""
    return {"xla_backend_optimization_level": 0} if config.training.fast_compile else None


def build_task(config: ExperimentConfig) -> TaskSpec:
    """Builds the task (``make_setup`` checks the model against it)."""
    use_dtype(config.model)  # before the task's arrays exist
    task = registry.get_task(config.data.task).build(config.data.options)
    if config.data.stream and task.train_rows is None:
        raise ConfigError(
            f"config.data.stream: task {config.data.task!r} has no rows on the host to stream "
            "(TaskSpec.train_rows); expected False for it, got True"
        )
    return task


def run_keys(key: jax.Array) -> RunKeys:
    return RunKeys(*jax.random.split(key, 3))


# --- the optimizer ---------------------------------------------------------------


def make_optimizer(optimizer: OptimizerConfig, num_steps: int) -> Optimizer:
    """The ``Optimizer`` of the config's section: clipping, then Adam, AdamW
    or SGD, at ``hparams.learning_rate`` times a warmup / cosine shape."""
    shape = _schedule(optimizer, num_steps)
    learning_rate = lambda hparams, step: hparams.learning_rate * shape(step)  # noqa: E731
    return Optimizer(lambda hparams: _chain(optimizer, hparams, shape), learning_rate)


def _schedule(optimizer: OptimizerConfig, num_steps: int):
    if optimizer.schedule == "warmup_cosine":
        return optax.warmup_cosine_decay_schedule(
            0.0, 1.0, optimizer.warmup_steps, num_steps, optimizer.end_lr_fraction
        )
    if optimizer.warmup_steps:
        return optax.join_schedules(
            [optax.linear_schedule(0.0, 1.0, optimizer.warmup_steps), optax.constant_schedule(1.0)],
            [optimizer.warmup_steps],
        )
    return optax.constant_schedule(1.0)


def _chain(o: OptimizerConfig, hparams: HParams, shape) -> optax.GradientTransformation:
    lr = lambda step: hparams.learning_rate * shape(step)  # noqa: E731
    parts = [optax.clip_by_global_norm(hparams.clip_norm)] if o.clip_norm else []
    pick = lambda traced, constant: constant if traced is None else traced  # noqa: E731
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


# --- the stages -----------------------------------------------------------------


def init_state(setup: Setup, hparams: HParams, key) -> TrainState:
    """Step 0: the model's params drawn from ``key`` and the optimizer state
    (a stream's ``online_loop.StreamState`` when ``setup.online``)."""
    if setup.online is not None:
        return online_loop.init_state(setup, hparams, run_keys(key))
    params = setup.model.init(hparams, run_keys(key).init)
    opt_state = setup.optimizer.transform(hparams).init(params)
    return TrainState(jnp.zeros((), jnp.int32), params, opt_state)


def train_step(setup: Setup, hparams: HParams, key, state: TrainState, batch=None):
    """One update on ``batch``, or (the in-memory path) on a fresh batch
    drawn from ``fold_in(key, step)``; dropout keys come from the same."""
    k_data, k_dropout = jax.random.split(jax.random.fold_in(key, state.step))
    if batch is None:
        batch = setup.task.sample_train(k_data, setup.batch_size)
    grad_fn = jax.grad(setup.model.loss, argnums=1, has_aux=True)
    grads, metrics = grad_fn(hparams, state.params, batch, k_dropout, state.step)
    updates, opt_state = setup.optimizer.transform(hparams).update(
        grads, state.opt_state, state.params
    )
    params = optax.apply_updates(state.params, updates)
    lr = setup.optimizer.learning_rate(hparams, state.step)
    metrics = metrics | {"grad_norm": optax.tree.norm(grads), "learning_rate": lr}
    return TrainState(state.step + 1, params, opt_state), metrics


def run_steps(setup: Setup, hparams: HParams, key, state: TrainState, batches=None):
    """``setup.steps_per_call`` updates under one ``lax.scan``; metrics
    are per step, shape (steps_per_call,). ``batches``: the call's batches
    from the host (a streamed run), fields (steps_per_call, batch, ...).
    With ``setup.online``: updates on the task's stream (``online_loop``)."""
    if setup.online is not None:
        return online_loop.run_steps(setup, hparams, run_keys(key), state)
    if setup.streamed and batches is None:
        raise ConfigError(
            "config.data.stream: a streamed run's steps take their batches from the host "
            "(runs.Program.open_stream); whole runs on the device (make_train) need stream=False"
        )
    step = lambda s, x: train_step(setup, hparams, run_keys(key).train, s, x)  # noqa: E731
    return jax.lax.scan(step, state, batches, length=setup.steps_per_call)


def eval_batch(setup: Setup, key) -> Batch:
    """The held-out batch of the run with ``key``."""
    return setup.task.eval_set(run_keys(key).eval, setup.eval_size)


def evaluate(setup: Setup, hparams: HParams, key, state: TrainState, batch=None):
    """(metrics, outputs) of the model's deterministic outputs on the
    held-out ``batch`` (default: ``eval_batch(setup, key)``, drawn here)."""
    batch = eval_batch(setup, key) if batch is None else batch
    return setup.model.evaluate(hparams, state.params, batch)


def make_train(config: ExperimentConfig, task: TaskSpec | None = None):
    """Returns the pure ``train(hparams, key) -> (state, metrics)``.

    ``metrics["train"]``: per-step training metrics, (num_calls,
    steps_per_call) each; ``metrics["eval"]``: held-out metrics at the end.
    Run it with ``jax.jit(train)`` or ``jax.jit(jax.vmap(train))``
    (``train.runs.compile_runs`` does, for N >= 1 runs and a mesh).
    """
    setup = make_setup(config, task)
    if setup.streamed:
        raise ConfigError(
            "config.data.stream: make_train runs whole runs on the device, with the data "
            "there; expected False, got True (a streamed run is driven by the host loop)"
        )
    return functools.partial(whole_run, setup)


def whole_run(setup: Setup, hparams: HParams, key: jax.Array):
    """A whole run in one call: ``make_train``'s ``train``."""
    state = init_state(setup, hparams, key)
    call = lambda s, _: run_steps(setup, hparams, key, s)  # noqa: E731
    state, train_metrics = jax.lax.scan(call, state, None, length=setup.num_calls)
    eval_metrics, _ = evaluate(setup, hparams, key, state)
    return state, {"train": train_metrics, "eval": eval_metrics}
