r"""The step every online learner shares, and a whole stream under ``lax.scan``.

At step t the learner holds the carry h_{t−1} and its traces, an exact or
approximate ``J_{t−1} = dh_{t−1}/dθ``. It reads x_t, computes y_t and the
loss L_t, and returns the gradient of L_t with respect to the params,

.. math::  \frac{dL_t}{dθ} = \frac{∂L_t}{∂θ}\Big|_{h_{t−1}} + \frac{∂L_t}{∂h_{t−1}}\, J_{t−1},

the first term by ordinary backprop through the step (the readout, the
output map, the input projection's direct path), the second from the
traces. Then the traces advance to ``J_t``. Nothing of earlier steps is
kept: memory does not depend on the length of the stream.

Padding and resets mean what they mean in ``rj.unroll``: a padded step
keeps the carry and its traces and outputs zeros; a reset restarts the
carry from the cell's initial carry (a constant) before reading x_t, and
its traces from zero.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from recurrent_jax import _checks, _step
from recurrent_jax.cells.base import Cell, carry_dtype_of, with_defaults
from recurrent_jax.sequence import valid_steps


class OnlineState(NamedTuple):
    """What an online learner carries from step to step.

    Attributes:
      carry: the cell's carry, leaves (B..., ·).
      traces: the learner's sensitivity traces (see each learner), leaves
        with the batch axes (B...) first.
      key: the PRNG key of a stochastic learner (UORO), else None.
    """

    carry: Any
    traces: Any
    key: jax.Array | None = None


class Step(NamedTuple):
    """What one step returns beside the state.

    Attributes:
      loss: the scalar ``loss_fn(head, y_t, target_t)``.
      y: the cell's output y_t (B..., H), zero at padded steps.
      grads: dL_t/dθ for the cell's params (same tree).
      head_grads: dL_t/d head (same tree as ``head``; None without one).
    """

    loss: jax.Array
    y: jax.Array
    grads: Any
    head_grads: Any


class OnlineLearner(NamedTuple):
    """An online gradient for one cell: two pure functions (optax's shape).

    Attributes:
      init: ``init(params, batch_shape, key=None) -> OnlineState``, the
        cell's initial carry and zero traces; ``key`` is required by UORO.
      step: ``step(params, state, x_t, loss_fn, head=None, target=None, *,
        valid=None, reset=None) -> (state, Step)``: reads x_t (B..., D),
        evaluates ``loss_fn(head, y_t, target) -> scalar`` and returns its
        gradient; ``valid``, ``reset`` (B...) bool as ``rj.unroll``'s mask
        and resets at this step.
      method: "rtrl", "snap1" or "uoro".
      cell: the cell (defaults filled).
    """

    init: Callable[..., OnlineState]
    step: Callable[..., tuple[OnlineState, Step]]
    method: str
    cell: Cell


class Rule(NamedTuple):
    """A learner's traces, on a flat axis of E examples.

    init(params, num_examples, key) -> traces; gradient(params, traces,
    delta) -> per param leaf (``tree_leaves`` order) Σ_e δ_e J_e, or None
    where the traces hold nothing; advance(params, traces, carry, x, key)
    -> traces after reading x (E, D) from ``carry`` (already restarted).
    """

    init: Callable[..., Any]
    gradient: Callable[..., list]
    advance: Callable[..., Any]
    needs_key: bool = False


def check_cell(cell) -> Cell:
    """An ``rj.Cell`` without spatial axes, its defaults filled."""
    cell = with_defaults(_checks.check_cell("cell", cell))
    if cell.spatial_dims:
        raise ValueError(
            f"cell: online learning needs a cell without spatial axes, got {cell.name} "
            f"with {cell.spatial_dims}"
        )
    return cell


def learner(cell: Cell, rule: Rule, method: str) -> OnlineLearner:
    """The ``OnlineLearner`` that runs ``rule`` beside ``cell``."""

    def init(params, batch_shape, key=None):
        batch_shape = _checks.check_batch_shape("batch_shape", batch_shape)
        if rule.needs_key:
            _checks.check_key("key", key)
        elif key is not None:
            raise ValueError(f"key: {method} is deterministic and takes no key, got {key!r}")
        carry = cell.initial_carry(batch_shape, carry_dtype_of(cell, params))
        examples = math.prod(batch_shape)
        traces = rule.init(params, examples, key)
        return OnlineState(carry, _unflatten_examples(traces, batch_shape), key)

    def step(params, state, x, loss_fn, head=None, target=None, *, valid=None, reset=None):
        batch = x.shape[:-1]
        if valid is not None:
            valid = _checks.check_mask("valid", valid, batch)
        restart = _restarts(batch, valid, reset)
        options = _step.StepOptions(
            reset_carry=None if reset is None else cell.initial_carry(batch, _dtype(state.carry))
        )

        def objective(params, head, carry):
            inputs = _step.StepInputs(cell.project(params, x), valid=valid, reset=reset)
            new, y = _step.step(cell, params, options, carry, inputs)
            return loss_fn(head, y, target), (new, y)

        loss, vjp, (carry, y) = jax.vjp(objective, params, head, state.carry, has_aux=True)
        if jnp.shape(loss) != ():
            _checks.fail("loss_fn", "a scalar loss of (head, y_t, target_t)", loss)
        direct, head_grads, delta = vjp(jnp.ones_like(loss))
        traces = _flatten_examples(state.traces, batch)
        through_traces = rule.gradient(params, traces, _flatten_examples(delta, batch))
        grads = _add(direct, through_traces)

        restarted = state.carry
        if restart is not None:
            restarted = _step.where_batch(restart, options.reset_carry, state.carry)
            traces = _where_examples(restart.reshape(-1), _zeros(traces), traces)
        key, subkey = (None, None) if state.key is None else jax.random.split(state.key)
        restarted, flat_x = _flatten_examples((restarted, x), batch)
        new_traces = rule.advance(params, traces, restarted, flat_x, subkey)
        if valid is not None:
            new_traces = _where_examples(valid.reshape(-1), new_traces, traces)
        state = OnlineState(carry, _unflatten_examples(new_traces, batch), key)
        return state, Step(loss, y, grads, head_grads)

    return OnlineLearner(init=init, step=step, method=method, cell=cell)


def accumulate(
    learner: OnlineLearner,
    params,
    xs,
    loss_fn,
    head=None,
    targets=None,
    *,
    state: OnlineState | None = None,
    seq_lengths=None,
    mask=None,
    resets=None,
    key=None,
    time_major: bool = False,
    return_outputs: bool = True,
):
    """Runs ``learner`` over a whole stream under ``lax.scan``, summing the
    per-step losses and gradients: the online gradient of
    Σ_t ``loss_fn(head, y_t, target_t)``, equal to BPTT's for an exact
    learner.

    Args:
      learner: an ``OnlineLearner``.
      params: the cell's params (fixed over the stream).
      xs: inputs (B..., T, D); (T, B..., D) with ``time_major``.
      loss_fn: ``loss_fn(head, y_t, target_t) -> scalar``.
      head: params of the loss (a readout), or None.
      targets: a pytree of leaves laid out as ``xs`` (B..., T, ...), read
        one step at a time; None passes None.
      state: the state to start from (default ``learner.init``).
      seq_lengths, mask, resets: as ``rj.unroll`` (``mask`` and ``resets``
        in the layout of ``xs``).
      key: the key of a stochastic learner when ``state`` is not given.
      time_major: the layout of ``xs``, ``targets``, ``mask``, ``resets``
        and the outputs. Time-major inputs and ``return_outputs=False``
        keep no array of T steps beyond the inputs themselves.
      return_outputs: stack y_t over the stream (else ``Step.y`` is None).

    Returns:
      ``(state, Step)``: the state after the stream; ``Step.loss``,
      ``grads`` and ``head_grads`` summed over the steps, ``Step.y``
      (B..., T, H) (or (T, B..., H)).
    """
    for name, flag in dict(time_major=time_major, return_outputs=return_outputs).items():
        _checks.check_bool(name, flag)
    _checks.check_inputs(xs, None, time_major=time_major)
    batch = xs.shape[1:-1] if time_major else xs.shape[:-2]
    num_steps = xs.shape[0 if time_major else -2]
    if state is None:
        state = learner.init(params, batch, key)
    to_time_major = (lambda a: a) if time_major else (lambda a: jnp.moveaxis(a, len(batch), 0))
    valid = valid_steps(seq_lengths, mask, batch, num_steps, time_major=time_major)
    if resets is not None:
        shape = (num_steps, *batch) if time_major else (*batch, num_steps)
        resets = to_time_major(_checks.check_mask("resets", resets, shape))
    steps = dict(
        x=to_time_major(xs),
        target=jax.tree_util.tree_map(to_time_major, targets),
        valid=valid,
        reset=resets,
    )

    def one_step(state, inputs):
        return learner.step(
            params, state, inputs["x"], loss_fn, head, inputs["target"],
            valid=inputs["valid"], reset=inputs["reset"],
        )  # fmt: skip

    def body(carry, inputs):
        state, totals = carry
        state, out = one_step(state, inputs)
        totals = jax.tree_util.tree_map(jnp.add, totals, (out.loss, out.grads, out.head_grads))
        return (state, totals), (out.y if return_outputs else None)

    first = jax.tree_util.tree_map(lambda a: a[0], steps)
    out = jax.eval_shape(one_step, state, first)[1]
    zeros = jax.tree_util.tree_map(
        lambda s: jnp.zeros(s.shape, s.dtype), (out.loss, out.grads, out.head_grads)
    )
    (state, (loss, grads, head_grads)), ys = jax.lax.scan(body, (state, zeros), steps)
    if return_outputs and not time_major:
        ys = jnp.moveaxis(ys, 0, len(batch))
    return state, Step(loss, ys, grads, head_grads)


# --- the example axis -------------------------------------------------------------


def _restarts(batch, valid, reset):
    """(B...) where the carry restarts: a reset on a valid step."""
    if reset is None:
        return None
    reset = _checks.check_mask("reset", reset, batch)
    return reset if valid is None else reset & valid


def _dtype(carry):
    return jax.tree_util.tree_leaves(carry)[0].dtype


def _flatten_examples(tree, batch):
    """Leaves (B..., ·) -> (E, ·)."""
    n = len(batch)
    return jax.tree_util.tree_map(lambda a: a.reshape(-1, *a.shape[n:]), tree)


def _unflatten_examples(tree, batch):
    """Leaves (E, ·) -> (B..., ·)."""
    return jax.tree_util.tree_map(lambda a: a.reshape(*batch, *a.shape[1:]), tree)


def _where_examples(pred, on_true, on_false):
    """``where`` per example: pred (E,), leaves (E, ·)."""

    def pick(a, b):
        return jnp.where(pred.reshape(-1, *(1,) * (a.ndim - 1)), a, b)

    return jax.tree_util.tree_map(pick, on_true, on_false)


def _zeros(tree):
    return jax.tree_util.tree_map(jnp.zeros_like, tree)


def _add(direct, through_traces):
    """``direct`` plus the traces' part, leaf by leaf (None: nothing to add)."""
    leaves, treedef = jax.tree_util.tree_flatten(direct)
    summed = [
        d if t is None else d + t.astype(d.dtype)
        for d, t in zip(leaves, through_traces, strict=True)
    ]
    return jax.tree_util.tree_unflatten(treedef, summed)
