r"""Training on one long stream: ``training.gradient`` other than "bptt".

The task's training sequences are read end to end as one stream, the carry
never reset between them (sequence k of the stream is ``sample_train``'s
batch drawn from ``fold_in(data key, k)``, so the stream is a function of
its position and a resumed run reads what an uninterrupted one does). A
training step is one update of the params after ``update_every`` stream
steps; the objective of an update is the task's loss over its steps, the
weighted mean over the batch and the steps as ``model.loss`` takes it.

- "rtrl", "snap1", "uoro": the gradient is carried forward (``rj.online``),
  each recurrent layer with its own learner and traces. Nothing of earlier
  steps is kept: the state is the carries, the traces, the current
  sequence of the task (one batch of it, as ``sample_train`` gives it) and
  the stream position.
- "truncated": backpropagation through the last ``update_every`` steps
  (TBPTT; ``rj.truncated_unroll``'s rule, one window per update), the
  carry's gradient stopped between updates.

Stacks (``model.num_layers`` > 1) are ``rj.online.stack``: each layer's
traces for its own params, the layers below reached by backprop through
the current step only (Zucchet et al. 2023, §3). Exact (BPTT's gradient,
to rounding, for "rtrl") with one recurrent layer reading the task's
features; approximate below the top layer of a stack, and for an
embedding (its gradient is this step's backprop alone).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

import recurrent_jax as rj
from recurrent_jax.cells.base import Cell, carry_dtype_of, widen
from recurrent_jax.data.base import REGRESSION, SEQUENCE, Batch, TaskSpec
from recurrent_jax.engine import Engine
from recurrent_jax.mamba import BLOCKS
from recurrent_jax.train import rnn_model
from recurrent_jax.train.config import ConfigError, ExperimentConfig

ONLINE = ("rtrl", "snap1", "uoro")  # the gradients carried forward


class Online(NamedTuple):
    """What the stream's stages close over (``core.Setup.online``).

    gradient: ``training.gradient``; update_every: K stream steps per update;
    model: the ``RNNModelConfig``; cells: one per layer; learner: the
    layers' ``rj.online.stack`` (None for "truncated"); segment_length: T
    of the task's sequences.
    """

    gradient: str
    update_every: int
    model: Any
    cells: tuple
    learner: Any
    segment_length: int


class StreamState(NamedTuple):
    """One run's state on the stream, as checkpointed.

    step: updates done (int32); params, opt_state: as ``core.TrainState``;
    layers: the stack's ``rj.online.OnlineState``: a tuple of the layers'
    carries and one of their traces (None for "truncated"); its key None
    (UORO's noise is drawn from the run's key and the position); segment:
    the task's sequence being read (``Batch``, (B, T, ...)); position:
    stream steps read.
    """

    step: jax.Array
    params: dict
    opt_state: Any
    layers: Any
    segment: Batch
    position: jax.Array


def make_online(config: ExperimentConfig, task: TaskSpec) -> Online | None:
    """The ``Online`` of ``config`` (None for "bptt"); an option the stream
    cannot honour is a ``ConfigError`` naming it."""
    t, model = config.training, config.model
    if t.gradient == "bptt":
        return None
    _check(config, task)
    cell = rnn_model.make_cell(model)
    sizes = [task.input_size if task.input_vocab is None else model.embedding_size]
    sizes += [model.hidden_size] * (model.num_layers - 1)
    learner = None
    if t.gradient in ONLINE:
        learner = rj.online.stack([_learner(t.gradient, cell, size) for size in sizes])
    length = jax.eval_shape(lambda k: task.sample_train(k, 1), jax.random.key(0)).targets.shape[1]
    return Online(t.gradient, t.update_every, model, (cell,) * len(sizes), learner, length)


def _check(config: ExperimentConfig, task: TaskSpec) -> None:
    model, gradient = config.model, config.training.gradient
    where = f"with training.gradient={gradient!r}"
    if model.KIND != "rnn":
        raise ConfigError(f"config.model.kind: expected 'rnn' {where}, got {model.KIND!r}")
    if task.output_mode != SEQUENCE or not task.causal:
        raise ConfigError(
            f"config.data.task: expected a causal task with an output at every step {where} "
            f"(it is read as one stream), got {config.data.task!r}"
        )
    if model.cell in BLOCKS or model.cell in rj.cells.CONV_REGISTRY:
        raise ConfigError(
            f"config.model.cell: expected a cell of vectors {where}, got {model.cell!r}"
        )
    if config.data.stream:
        raise ConfigError(
            f"config.data.stream: expected False {where} (the stream is on device), got True"
        )
    if gradient in ONLINE and model.engine != Engine():  # the rules step the cell themselves
        raise ConfigError(
            f"config.model.engine: expected the default Engine() {where} (the cell is stepped "
            f"one step at a time beside its traces), got {model.engine!r}"
        )
    for name in ("bidirectional", "residual", *rnn_model.Rates._fields):
        if getattr(model, name):
            off = 0.0 if name in rnn_model.Rates._fields else False
            raise ConfigError(
                f"config.model.{name}: expected {off} {where}, got {getattr(model, name)!r}"
            )


def _learner(gradient: str, cell: Cell, input_size: int):
    """The ``rj.online`` learner of ``gradient``, its refusal a ConfigError."""
    if gradient == "uoro":
        return rj.online.uoro(cell)
    try:
        return getattr(rj.online, gradient)(cell, input_size)
    except ValueError as error:
        if gradient == "snap1" and cell.linear is not None:
            raise ConfigError(
                f"config.training.gradient: 'snap1' on the {cell.name} cell (linear in its carry) "
                "equals 'rtrl', its exact gradient; use 'rtrl'"
            ) from None
        if gradient == "rtrl":
            raise ConfigError(
                f"config.training.gradient: 'rtrl' has no exact rule for the {cell.name} cell "
                f"(not linear in its carry); it can use {_approximations(cell, input_size)}"
            ) from None
        raise ConfigError(f"config.training.gradient: {error}") from None


def _approximations(cell: Cell, input_size: int) -> str:
    try:
        rj.online.snap1(cell, input_size)
    except ValueError:
        return "'uoro' (unbiased, noisy)"
    return "'snap1' (biased) or 'uoro' (unbiased, noisy)"


# --- the stages -----------------------------------------------------------------------


def init_state(setup, hparams, keys) -> StreamState:
    """Step 0 (``keys``: the run's ``core.RunKeys``): params and optimizer
    state as ``core.init_state``, zero carries and traces, the stream's
    first sequence."""
    online = setup.online
    params = setup.model.init(hparams, keys.init)
    opt_state = setup.optimizer.transform(hparams).init(params)
    batch = setup.batch_size
    if online.learner is None:
        dtype = carry_dtype_of(online.cells[0], params["rnn"]["layer_0"])
        carries = tuple(c.initial_carry((batch,), dtype) for c in online.cells)
        layers = rj.online.OnlineState(carries, None)
    else:
        key = _uoro_key(online, keys, 0)
        layers = online.learner.init(params["rnn"], (batch,), key)._replace(key=None)
    zero = jnp.zeros((), jnp.int32)
    return StreamState(zero, params, opt_state, layers, _segment(setup, keys, zero), zero)


def run_steps(setup, hparams, keys, state: StreamState):
    """``setup.steps_per_call`` updates under one ``lax.scan``, metrics per
    update (as ``core.run_steps``)."""
    update = lambda s, _: train_step(setup, hparams, keys, s)  # noqa: E731
    return jax.lax.scan(update, state, None, length=setup.steps_per_call)


def train_step(setup, hparams, keys, state: StreamState):
    """One update after ``update_every`` stream steps."""
    grads, sums, state = window_gradient(setup, keys, state)
    weight = jnp.maximum(sums.pop("weight"), 1.0)
    grads = jax.tree_util.tree_map(lambda g: g / weight.astype(g.dtype), grads)
    updates, opt_state = setup.optimizer.transform(hparams).update(
        grads, state.opt_state, state.params
    )
    params = optax.apply_updates(state.params, updates)
    metrics = {name: value / weight for name, value in sums.items()}
    metrics["grad_norm"] = optax.tree.norm(grads)
    metrics["learning_rate"] = setup.optimizer.learning_rate(hparams, state.step)
    state = state._replace(step=state.step + 1, params=params, opt_state=opt_state)
    return state, metrics


def window_gradient(setup, keys, state: StreamState):
    """``(grads, sums, state)`` after reading ``update_every`` stream steps
    at the params of ``state``: the gradient of Σ_{t,b} w ℓ over them (not
    yet divided by Σ w), the sums of the loss, the metric and the weights,
    and the state with the carries, traces and position moved on."""
    if setup.online.learner is None:
        return _truncated_window(setup, keys, state)
    return _online_window(setup, keys, state)


# --- the stream -----------------------------------------------------------------------


def _stream_keys(keys):
    """(data, noise): the keys of the stream's sequences and of UORO's noise,
    each folded with the index of what it draws (a sequence, a step)."""
    return jax.random.split(keys.train)


def _segment(setup, keys, index) -> Batch:
    """Sequence ``index`` of the stream: a batch of the task, weights filled."""
    data = _stream_keys(keys)[0]
    batch = setup.task.sample_train(jax.random.fold_in(data, index), setup.batch_size)
    weights = jnp.ones(batch.targets.shape[:2]) if batch.weights is None else batch.weights
    return batch._replace(weights=weights.astype(jnp.float32), seq_lengths=None)


def _read(setup, keys, segment: Batch, position):
    """The inputs, targets and weights of stream step ``position`` (B, ...)
    and the segment they come from (the next one drawn at its start)."""
    length = setup.online.segment_length
    within = position % length
    segment = jax.lax.cond(
        (within == 0) & (position > 0),
        lambda: _segment(setup, keys, position // length),
        lambda: segment,
    )
    at = lambda a: jax.lax.dynamic_index_in_dim(a, within, axis=1, keepdims=False)  # noqa: E731
    return jax.tree_util.tree_map(at, segment), segment


def _inputs(setup, params, xs):
    """The first layer's inputs: features, or token ids embedded."""
    return xs if setup.task.input_vocab is None else params["embedding"][xs]


def _step_sums(task: TaskSpec, outputs, target, weight) -> dict:
    """Σ_b w_b ℓ_b of one step (readout values (B, C)), the metric's sum and Σ w."""
    if task.kind == REGRESSION:
        per = jnp.mean(jnp.square(outputs - target), axis=-1)
        weight = weight.astype(per.dtype)
        return {
            "loss": jnp.sum(per * weight),
            "mse": jnp.sum(per * weight),
            "weight": jnp.sum(weight),
        }
    log_probs = jax.nn.log_softmax(widen(outputs), axis=-1)  # as losses_and_metrics
    nll = -jnp.take_along_axis(log_probs, target[..., None], axis=-1)[..., 0]
    weight = weight.astype(nll.dtype)
    correct = (jnp.argmax(outputs, axis=-1) == target).astype(nll.dtype)
    return {
        "loss": jnp.sum(nll * weight),
        "accuracy": jnp.sum(correct * weight),
        "weight": jnp.sum(weight),
    }


def _readout(readout, y):
    bias = readout["b"]
    return y @ readout["w"] + bias.reshape((1,) * (y.ndim - 1) + bias.shape)


# --- TBPTT ----------------------------------------------------------------------------


def _truncated_window(setup, keys, state: StreamState):
    """The gradient of the window's summed loss by backprop through its
    ``update_every`` steps, from the carries of the last window (stopped)."""
    steps, segment, position = _gather(setup, keys, state)
    network = rnn_model.make_network(setup.online.model)

    def window_loss(params):
        xs = _inputs(setup, params, steps.xs)
        carries = jax.lax.stop_gradient(state.layers.carry)
        carries, ys = network.apply(params["rnn"], xs, initial_carry=carries, deterministic=True)
        sums = _step_sums(setup.task, _readout(params["readout"], ys), steps.targets, steps.weights)
        return sums["loss"], (sums, carries)

    grads, (sums, carries) = jax.grad(window_loss, has_aux=True)(state.params)
    layers = state.layers._replace(carry=carries)
    return grads, sums, state._replace(layers=layers, segment=segment, position=position)


def _gather(setup, keys, state: StreamState):
    """The window's steps as a ``Batch`` (B, K, ...), the segment and position after it."""

    def one(carry, _):
        segment, position = carry
        step, segment = _read(setup, keys, segment, position)
        return (segment, position + 1), step

    (segment, position), steps = jax.lax.scan(
        one, (state.segment, state.position), None, length=setup.online.update_every
    )
    steps = jax.tree_util.tree_map(lambda a: jnp.moveaxis(a, 0, 1), steps)
    return steps, segment, position


# --- RTRL, SnAp-1, UORO ----------------------------------------------------------------


def _online_window(setup, keys, state: StreamState):
    """The window's summed gradient, one stream step at a time (module doc)."""
    zeros = jax.tree_util.tree_map(jnp.zeros_like, state.params)
    first = jax.tree_util.tree_map(lambda a: a[:, 0], state.segment)
    shapes = jax.eval_shape(lambda: stream_step(setup, keys, state.params, state.layers, first, 0))
    sums0 = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes[2])

    def one(carry, _):
        layers, segment, position, grads, sums = carry
        step, segment = _read(setup, keys, segment, position)
        layers, g, s = stream_step(setup, keys, state.params, layers, step, position)
        grads = jax.tree_util.tree_map(jnp.add, grads, g)
        sums = jax.tree_util.tree_map(jnp.add, sums, s)
        return (layers, segment, position + 1, grads, sums), None

    init = (state.layers, state.segment, state.position, zeros, sums0)
    (layers, segment, position, grads, sums), _ = jax.lax.scan(
        one, init, None, length=setup.online.update_every
    )
    return grads, sums, state._replace(layers=layers, segment=segment, position=position)


def stream_step(setup, keys, params, layers, step: Batch, position):
    """One stream step of the stack's learner: (layers, grads of Σ_b w ℓ
    for all params, the step's sums)."""
    online, task = setup.online, setup.task
    target = (step.targets, step.weights)
    x = _inputs(setup, params, step.xs)
    before = layers.carry
    layers = layers._replace(key=_uoro_key(online, keys, position))
    layers, out = online.learner.step(
        params["rnn"], layers, x, _loss_fn(task), params["readout"], target
    )
    grads = {"rnn": out.grads, "readout": out.head_grads}
    if "embedding" in params:
        grads["embedding"] = _embedding_grads(setup, params, before, step, target)
    sums = _step_sums(task, _readout(params["readout"], out.y), *target)
    return layers._replace(key=None), grads, sums


def _loss_fn(task):
    def loss_fn(readout, y, target):
        return _step_sums(task, _readout(readout, y), *target)["loss"]

    return loss_fn


def _embedding_grads(setup, params, carries, step, target):
    """The embedding's gradient through this step only (spatial backprop)."""
    online = setup.online

    def loss(embedding):
        y = embedding[step.xs]
        for j, cell in enumerate(online.cells):
            p = params["rnn"][f"layer_{j}"]
            _, y = cell.step(p, carries[j], cell.project(p, y))
        return _loss_fn(setup.task)(params["readout"], y, target)

    return jax.grad(loss)(params["embedding"])


def _uoro_key(online, keys, position):
    """The stack's key at stream step ``position``: for UORO, else None."""
    if online.gradient != "uoro":
        return None
    return jax.random.fold_in(_stream_keys(keys)[1], position)
