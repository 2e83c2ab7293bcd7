r"""DEER: nonlinear recurrences solved in parallel over time by Newton's
method (Lim et al. 2023, arXiv 2309.12252), and quasi-DEER with diagonal
Jacobians (Gonzalez et al. 2024, arXiv 2407.19115).

The trajectory h_{1..T} of ``h_t = f_t(h_{t−1})`` is the root of the
residual ``h_t − f_t(h_{t−1})``. Linearising f_t around the current guess
h^{(k)} gives a *linear* recurrence, solved by an associative scan over
(J_t, b_t):

.. math::
    h^{(k+1)}_t = J_t h^{(k+1)}_{t−1} + b_t,\qquad
    J_t = ∂f_t/∂h\,(h^{(k)}_{t−1}),\quad b_t = f_t(h^{(k)}_{t−1}) − J_t h^{(k)}_{t−1}

Newton is exact after at most T iterations (step t is exact after t) and
converges quadratically near the solution; quasi-DEER keeps only
diag(J_t), cheaper per iteration (elementwise scans) with linear
convergence. f_t is the engine's full step (``_step.step``), so padding,
resets and zoneout are part of the fixed point.

Iteration stops when no carry entry changes more than ``tol``; if
``max_iters`` is reached first (or the iterates are not finite) the result
is recomputed by the sequential scan inside a ``lax.cond`` and a
``RuntimeWarning`` is emitted through ``jax.debug.callback``.

Gradients: implicit differentiation at the converged fixed point. The
adjoint is the linear recurrence ``λ_t = ḡ_t + J_{t+1}^⊤ λ_{t+1}`` with the
exact (full) Jacobians at the solution, solved by the same parallel scan
backwards in time; parameter and input cotangents are one vmapped VJP of
the step over all t. So gradients are exact for DEER and quasi-DEER alike.
"""

from __future__ import annotations

import functools
import itertools
import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp

from recurrent_jax import _step
from recurrent_jax.cells.base import Cell, carry_dtype, carry_dtype_of, with_defaults

tree_map = jax.tree_util.tree_map


class DeerOptions(NamedTuple):
    """``tol``: absolute change that ends the iteration; ``max_iters``:
    limit (None: min(T + 1, 100); T + 1 suffices in exact arithmetic);
    ``quasi``: diagonal Jacobians."""

    tol: float = 1e-5
    max_iters: int | None = None
    quasi: bool = False


class DeerInfo(NamedTuple):
    """Convergence report: Newton iterations run, whether ``tol`` was met,
    and the last iteration's largest change."""

    iterations: jax.Array
    converged: jax.Array
    max_change: jax.Array


class _Spec(NamedTuple):
    cell: Cell
    options: DeerOptions
    treedef: object
    sizes: tuple


def deer_scan(cell: Cell, params, carry0, inputs: _step.StepInputs, options, deer_options):
    """``(final_carry, ys, carries)`` of the cell over time-major ``inputs``,
    by DEER; the same function as scanning ``_step.step``."""
    states, _ = _solve(cell, params, carry0, inputs, options, deer_options)
    spec = _spec(cell, carry0, deer_options)
    carries = _unflatten(spec, states)
    prev = tree_map(lambda c0, c: jnp.concatenate([c0[None], c[:-1]], 0), carry0, carries)
    _, ys = jax.vmap(lambda c, i: _step.step(cell, params, options, c, i))(prev, inputs)
    final = tree_map(lambda c0, c: c[-1] if c.shape[0] else c0, carry0, carries)
    return final, ys, carries


def trajectory(cell: Cell, params, xs, *, initial_carry=None, **deer_options):
    """DEER on ``xs`` (B..., T, D) without masks, for diagnostics:
    ``(carries (T, B..., ·) time-major, DeerInfo)``."""
    cell = with_defaults(cell)
    xp = jnp.moveaxis(cell.project(params, xs), -2, 0)
    carry0 = initial_carry
    if carry0 is None:
        carry0 = cell.initial_carry(xs.shape[:-2], carry_dtype_of(cell, params))
    opts = DeerOptions(**deer_options)
    states, info = _solve(cell, params, carry0, _step.StepInputs(xp), _step.StepOptions(), opts)
    return _unflatten(_spec(cell, carry0, opts), states), info


def _spec(cell, carry0, deer_options):
    leaves, treedef = jax.tree_util.tree_flatten(carry0)
    return _Spec(cell, deer_options, treedef, tuple(leaf.shape[-1] for leaf in leaves))


def _flatten(carry):
    """The carry's leaves side by side (..., S), in their widest dtype."""
    leaves = jax.tree_util.tree_leaves(carry)
    dtype = carry_dtype(*(leaf.dtype for leaf in leaves))
    return jnp.concatenate([leaf.astype(dtype) for leaf in leaves], -1)


def _unflatten(spec, flat):
    leaves = jnp.split(flat, list(itertools.accumulate(spec.sizes))[:-1], axis=-1)
    return jax.tree_util.tree_unflatten(spec.treedef, leaves)


def _solve(cell, params, carry0, inputs, options, deer_options):
    spec = _spec(cell, carry0, deer_options)
    masks = jax.lax.stop_gradient(inputs._replace(xp=None))
    return _states(spec, params, options, _flatten(carry0), inputs.xp, masks)


def _step_fn(spec, params, options, masks):
    """f(h_prev (·, S), xp_t, masks_t) -> h_t, for one time step."""

    def f(h, xp_t, masks_t):
        carry = _unflatten(spec, h)
        new, _ = _step.step(spec.cell, params, options, carry, masks_t._replace(xp=xp_t))
        return _flatten(new)

    return f


def _jacobians(f, prev, xp, masks, quasi):
    """J_t (T, B..., S, S) or its diagonal (T, B..., S), by one JVP per unit
    (batch rows are independent, so one tangent serves them all)."""
    size = prev.shape[-1]
    step = jax.vmap(f)

    def column(e):
        tangent = jnp.broadcast_to(e, prev.shape)
        return jax.jvp(lambda h: step(h, xp, masks), (prev,), (tangent,))[1]

    cols = jax.vmap(column, out_axes=-1)(jnp.eye(size, dtype=prev.dtype))
    return jnp.diagonal(cols, axis1=-2, axis2=-1) if quasi else cols


def _linear_solve(jac, b, h0, quasi):
    """h_t = J_t h_{t−1} + b_t for all t, by recursive doubling."""
    if quasi:
        mul_a = lambda a2, a1: a2 * a1  # noqa: E731
        mul_b = lambda a2, b1: a2 * b1  # noqa: E731
        one = jnp.ones_like(jac[:1])
    else:
        mul_a = lambda a2, a1: jnp.einsum("...ij,...jk->...ik", a2, a1)  # noqa: E731
        mul_b = lambda a2, b1: jnp.einsum("...ij,...j->...i", a2, b1)  # noqa: E731
        one = jnp.broadcast_to(jnp.eye(jac.shape[-1], dtype=jac.dtype), jac[:1].shape)
    length, shift = jac.shape[0], 1
    a = jac
    while shift < length:
        prev_a = jnp.concatenate([jnp.broadcast_to(one, a[:shift].shape), a[:-shift]], 0)
        prev_b = jnp.concatenate([jnp.zeros_like(b[:shift]), b[:-shift]], 0)
        a, b = mul_a(a, prev_a), mul_b(a, prev_b) + b
        shift *= 2
    return mul_b(a, jnp.broadcast_to(h0, b.shape)) + b


def _newton(spec, params, options, h0, xp, masks):
    f = _step_fn(spec, params, options, masks)
    num_steps = xp.shape[0]
    max_iters = spec.options.max_iters or min(num_steps + 1, 100)
    quasi = spec.options.quasi

    def iterate(states):
        prev = jnp.concatenate([h0[None], states[:-1]], 0)
        fx = jax.vmap(f)(prev, xp, masks)
        jac = _jacobians(f, prev, xp, masks, quasi)
        lin = jac * prev if quasi else jnp.einsum("...ij,...j->...i", jac, prev)
        return _linear_solve(jac, fx - lin, h0, quasi)

    def cond(state):
        k, _, change = state
        return (k < max_iters) & (change > spec.options.tol)

    def body(state):
        k, states, _ = state
        new = iterate(states)
        return k + 1, new, jnp.max(jnp.abs(new - states))

    init = jnp.broadcast_to(h0, (num_steps, *h0.shape))
    # Full fp32 matmuls: with TF32 (the GPU default for fp32) the residual
    # carries ~1e-3 of rounding noise and Newton never meets a tol of 1e-5.
    with jax.default_matmul_precision("highest"):
        start = (0, init, jnp.array(jnp.inf, h0.dtype))
        k, states, change = jax.lax.while_loop(cond, body, start)
    converged = change <= spec.options.tol
    return states, DeerInfo(k, converged, change)


def _sequential(spec, params, options, h0, xp, masks):
    f = _step_fn(spec, params, options, masks)
    return jax.lax.scan(lambda h, per: (f(h, *per),) * 2, h0, (xp, masks))[1]


def _warn(converged, iterations, change):
    if not converged:
        warnings.warn(
            f"impl='deer': Newton did not converge in {int(iterations)} iterations "
            f"(last change {float(change):.3g}); using the sequential scan",
            RuntimeWarning,
            stacklevel=1,
        )


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _states(spec, params, options, h0, xp, masks):
    return _states_fwd(spec, params, options, h0, xp, masks)[0]


def _states_fwd(spec, params, options, h0, xp, masks):
    if xp.shape[0] == 0:
        states = jnp.zeros((0, *h0.shape), h0.dtype)
        info = DeerInfo(jnp.array(0), jnp.array(True), jnp.array(0.0))
    else:
        states, info = _newton(spec, params, options, h0, xp, masks)
        jax.debug.callback(_warn, info.converged, info.iterations, info.max_change)
        states = jax.lax.cond(
            info.converged,
            lambda: states,
            lambda: _sequential(spec, params, options, h0, xp, masks),
        )
    return (states, info), (params, options, h0, xp, masks, states)


def _states_bwd(spec, residuals, cotangents):
    params, options, h0, xp, masks, states = residuals
    d_states = cotangents[0]
    if xp.shape[0] == 0:
        zeros = lambda t: tree_map(jnp.zeros_like, t)  # noqa: E731
        return zeros(params), zeros(options), jnp.zeros_like(h0), jnp.zeros_like(xp), None
    prev = jnp.concatenate([h0[None], states[:-1]], 0)

    def step_all(params, options, prev, xp):
        return jax.vmap(_step_fn(spec, params, options, masks))(prev, xp, masks)

    f = _step_fn(spec, params, options, masks)
    jac_t = jnp.swapaxes(_jacobians(f, prev, xp, masks, quasi=False), -1, -2)
    # λ_t = ḡ_t + J_{t+1}^⊤ λ_{t+1}: a forward recurrence on the flipped axis
    next_jac = jnp.concatenate([jac_t[1:], jnp.zeros_like(jac_t[:1])], 0)
    lam = jnp.flip(
        _linear_solve(
            jnp.flip(next_jac, 0), jnp.flip(d_states, 0), jnp.zeros_like(h0), quasi=False
        ),
        0,
    )
    _, vjp = jax.vjp(step_all, params, options, prev, xp)
    d_params, d_options, d_prev, d_xp = vjp(lam)
    return d_params, d_options, d_prev[0], d_xp, None


_states.defvjp(_states_fwd, _states_bwd)
