r"""UORO: an unbiased rank-one estimate of the influence matrix (Tallec &
Ollivier 2018, "Unbiased Online Recurrent Optimization", ICLR).

Each example carries ``J_t ≈ s̃_t θ̃_tᵀ``, s̃ shaped like the carry and θ̃
like the params. With ν a fresh vector of random signs at each step,

.. math::
    s̃_t = ρ_0\, I_t s̃_{t−1} + ρ_1 ν,\qquad
    θ̃_t = θ̃_{t−1}/ρ_0 + (νᵀ D_t)/ρ_1,

``I_t s̃`` one JVP of the step in the carry and ``νᵀ D_t`` one VJP in the
params. Given the past, E[ν] = 0 and E[ννᵀ] = 1 make
``E[s̃_t θ̃_tᵀ] = I_t s̃_{t−1} θ̃_{t−1}ᵀ + D_t``, so by induction the
estimate is unbiased for every ρ_0 > 0 and every ρ_1 > 0 even in ν. The
paper's choice ``ρ_0 = √(‖θ̃‖/‖I s̃‖)``, ``ρ_1 = √(‖νᵀD‖/‖ν‖)`` (each with
ε added) minimises the variance of the next step. The variance is the
price: it grows with the state and param counts and over the stream (the
tests measure it). Any cell, any carry; memory B·(S + |θ|), time about
three forward passes per step.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from recurrent_jax.cells.base import Cell, carry_dtype_of
from recurrent_jax.online import _learner
from recurrent_jax.online._structure import transition


class UoroTraces(NamedTuple):
    """UORO's rank-one factors, per example: ``state`` s̃ (like the carry)
    and ``params`` θ̃ (like the params), with the batch axes first."""

    state: Any
    params: Any


def uoro(cell: Cell, *, epsilon: float = 1e-7) -> _learner.OnlineLearner:
    r"""Unbiased Online Recurrent Optimization for any cell (module doc).

    Args:
      cell: any cell without spatial axes.
      epsilon: ε in the variance-minimising scales ρ_0, ρ_1.

    Returns:
      An ``OnlineLearner`` whose ``init`` needs a key (ν is drawn from it,
      a new subkey at every step) and whose traces are ``UoroTraces``.
    """
    cell = _learner.check_cell(cell)

    def init(params, examples, key):
        state = cell.initial_carry((examples,), carry_dtype_of(cell, params))
        theta = jax.tree_util.tree_map(lambda p: jnp.zeros((examples, *p.shape), p.dtype), params)
        return UoroTraces(state, theta)

    def gradient(params, traces, delta):
        per_example = sum(
            jnp.sum((d * s).reshape(d.shape[0], -1), axis=1)
            for d, s in zip(_leaves(delta), _leaves(traces.state), strict=True)
        )
        return [
            jnp.tensordot(per_example.astype(t.dtype), t, axes=1) for t in _leaves(traces.params)
        ]

    def advance(params, traces, carry, x, key):
        keys = jax.random.split(key, x.shape[0])
        step = jax.vmap(lambda s, t, c, x, k: _advance(cell, params, s, t, c, x, k, epsilon))
        return UoroTraces(*step(traces.state, traces.params, carry, x, keys))

    return _learner.learner(cell, _learner.Rule(init, gradient, advance, needs_key=True), "uoro")


def _advance(cell, params, state, theta, carry, x, key, epsilon):
    """One example's (s̃, θ̃) after one step (module doc)."""
    _, pushed = jax.jvp(lambda h: transition(cell, params, h, x), (carry,), (state,))
    new, vjp = jax.vjp(lambda p: transition(cell, p, carry, x), params)
    leaves, treedef = jax.tree_util.tree_flatten(new)
    keys = jax.random.split(key, len(leaves))
    signs = [jax.random.rademacher(k, a.shape, a.dtype) for a, k in zip(leaves, keys, strict=True)]
    signs = jax.tree_util.tree_unflatten(treedef, signs)
    (projected,) = vjp(signs)
    rho0 = jnp.sqrt((_norm(theta) + epsilon) / (_norm(pushed) + epsilon))
    rho1 = jnp.sqrt((_norm(projected) + epsilon) / (_norm(signs) + epsilon))
    state = jax.tree_util.tree_map(lambda p, v: rho0 * p + rho1 * v, pushed, signs)
    theta = jax.tree_util.tree_map(lambda t, g: t / rho0 + g / rho1, theta, projected)
    return state, theta


def _norm(tree):
    return jnp.sqrt(sum(jnp.sum(jnp.abs(a) ** 2) for a in _leaves(tree)))


def _leaves(tree):
    return jax.tree_util.tree_leaves(tree)
