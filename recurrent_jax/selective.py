r"""``impl="selective"``: Mamba's selective scan as one function with its own
gradient, for cells that declare ``Cell.selective`` (``s6``).

The recurrence, per channel d and state n (Gu & Dao 2023, Algorithm 2):

.. math::
    h_t[d, n] = \exp(Δ_t[d] A[d, n])\, h_{t−1}[d, n] + Δ_t[d]\, u_t[d]\, B_t[n],
    \qquad y_t[d] = \textstyle\sum_n C_t[n]\, h_t[d, n].

Autodiff of the step scanned over time stores every step's (B, H, N)
factors and state (three arrays of T·B·H·N numbers) and reads them back one
fusion at a time. Here, as in Mamba's kernel, the forward keeps only the
state at the start of each segment of ``SEGMENT`` steps; the backward walks the
segments in reverse, recomputes each segment's states from its start, and runs
the adjoint recurrence over it with the per-step gradients written by hand:

.. math::
    g_t = \bar h_t + C_t\, \bar y_t \qquad (\bar h_t: \text{the cotangent from step } t + 1)
    \bar h_{t−1} = \exp(Δ_t A) ⊙ g_t,\quad
    \bar B_t = \textstyle\sum_d g_t[d]\, Δ_t[d] u_t[d],\quad
    \bar C_t = \textstyle\sum_d \bar y_t[d]\, h_t[d],
    \bar u_t = Δ_t \textstyle\sum_n g_t B_t,\quad
    \bar Δ_t = u_t \textstyle\sum_n g_t B_t + \sum_n q_t A,\quad
    \bar A = \textstyle\sum_{t,b} q_t Δ_t,
    \quad q_t = g_t ⊙ h_{t−1} ⊙ \exp(Δ_t A).

The inputs are kept in separate arrays (u, Δ, B, C), so each step is one
fused pass over the state plus a batched product for y. A padded step is
an identity step (its Δ, u, B and C set to 0: exp(0·A) = 1 and Δ u B = 0
exactly, whatever the padding held) with output 0, so padding, seq_lengths
and reverse runs mean what they mean in the scan.

``selective_scan`` is a custom VJP, so forward-mode autodiff (``jax.jvp``,
``jax.jacfwd``) does not pass through it; ``impl="scan"`` runs those.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

SEGMENT = 32  # steps between the states the forward keeps; measured in benchmarks/RESULTS.md

# What ``impl="selective"`` needs of a cell, and the per-step options it
# does not run besides those that edit the carry (``backends._whole_row_blockers``).
NEEDS = "a selective state-space cell (`Cell.selective`, as s6's)"
REFUSED = {
    "resets": "`resets` is set: a restart inside a row is not a step of the selective scan",
    "return_carries": "`return_carries` is set: the selective scan keeps no per-step "
    "carries ('scan' or 'chunked' return them)",
    "remat": "`remat` is set: the selective scan already recomputes its states in segments",
}


class SelectiveTerms(NamedTuple):
    """A selective SSM's inputs over time, time-major.

    Attributes:
      a: (H, N) the continuous-time A (real, ≤ 0 for a stable system).
      u: (T, B..., H) the channels' inputs.
      delta: (T, B..., H) the step sizes Δ.
      b: (T, B..., N) the input matrices B_t.
      c: (T, B..., N) the output matrices C_t.
    """

    a: jax.Array
    u: jax.Array
    delta: jax.Array
    b: jax.Array
    c: jax.Array


def run_carry(terms: SelectiveTerms, carry0, valid):
    """``scan`` on the engine's terms: carry (B..., H·N) channel-major,
    ``valid`` (T, B...) or None. Returns ``(final carry, ys (T, B..., H))``;
    a padded step keeps the carry (its y is the caller's to zero, after
    the cell's readout)."""
    if valid is not None:  # identity steps: whatever the padding held (NaN too) is not read
        keep = valid[..., None]
        terms = terms._replace(
            **{
                name: jnp.where(keep, getattr(terms, name), 0.0)
                for name in ("u", "delta", "b", "c")
            }
        )
    h0 = carry0.reshape(*carry0.shape[:-1], *terms.a.shape)
    ys, final = selective_scan(terms, h0)
    return final.reshape(carry0.shape), ys


def selective_scan(terms: SelectiveTerms, h0):
    r"""Outputs and final state of Mamba's selective scan, from ``h0``:

    .. math::
        h_t[d, n] = \exp(Δ_t[d] A[d, n])\, h_{t−1}[d, n] + Δ_t[d]\, u_t[d]\, B_t[n],
        \qquad y_t[d] = \textstyle\sum_n C_t[n]\, h_t[d, n].

    Args:
      terms: the ``SelectiveTerms`` (time-major).
      h0: (B..., H, N) the initial state.

    Returns:
      ``(ys (T, B..., H), h_T (B..., H, N))``. Gradients by the segmented
      adjoint of the module doc: the forward keeps every ``SEGMENT``-th
      state, the backward recomputes each segment from it.
    """
    u = terms.u
    batch_shape = u.shape[1:-1]
    flat = lambda x: x.reshape(x.shape[0], -1, x.shape[-1])  # noqa: E731
    num_steps = u.shape[0]
    if num_steps == 0:
        return jnp.zeros_like(u), h0
    pad = -num_steps % SEGMENT
    steps = [flat(x) for x in (terms.u, terms.delta, terms.b, terms.c)]
    if pad:  # identity steps at the end (Δ = 0): the final state is unchanged
        steps = [jnp.pad(x, ((0, pad), (0, 0), (0, 0))) for x in steps]
    h0 = h0.reshape(-1, *terms.a.shape)
    ys, final = _scan(terms.a, *steps, h0)
    ys = ys[:num_steps].reshape(num_steps, *batch_shape, u.shape[-1])
    return ys, final.reshape(*batch_shape, *terms.a.shape)


def _step(a, h, step_inputs):
    """One step: (B, H, N) state, (B, H) output."""
    u, delta, b, c = step_inputs
    h = jnp.exp(delta[..., None] * a[None]) * h + (delta * u)[..., None] * b[:, None, :]
    return h, jnp.einsum("bdn,bn->bd", h, c, precision="highest")


def _segments(x):
    return x.reshape(-1, SEGMENT, *x.shape[1:])


@jax.custom_vjp
def _scan(a, u, delta, b, c, h0):
    final, ys = jax.lax.scan(functools.partial(_step, a), h0, (u, delta, b, c))
    return ys, final


def _scan_fwd(a, u, delta, b, c, h0):
    def segment(h, inputs):
        end, ys = jax.lax.scan(functools.partial(_step, a), h, inputs)
        return end, (ys, h)

    final, (ys, starts) = jax.lax.scan(segment, h0, tuple(map(_segments, (u, delta, b, c))))
    return (ys.reshape(u.shape), final), (a, u, delta, b, c, starts)


def _scan_bwd(residuals, cotangents):
    a, u, delta, b, c, starts = residuals
    d_ys, d_final = cotangents

    def segment(carry, inputs):
        start, *steps = inputs

        def forward(h, step_inputs):  # each step's previous state, recomputed
            return _step(a, h, step_inputs)[0], h

        _, previous = jax.lax.scan(forward, start, tuple(steps[:4]))
        adjoint = functools.partial(_adjoint_step, a)
        return jax.lax.scan(adjoint, carry, (previous, *steps), reverse=True)

    init = (d_final, jnp.zeros_like(a))
    inputs = (starts, *map(_segments, (u, delta, b, c, d_ys)))
    (d_h0, d_a), grads = jax.lax.scan(segment, init, inputs, reverse=True)
    d_u, d_delta, d_b, d_c = (g.reshape(g.shape[0] * SEGMENT, *g.shape[2:]) for g in grads)
    return d_a, d_u, d_delta, d_b, d_c, d_h0


def _adjoint_step(a, carry, inputs):
    """One step of the adjoint recurrence (the module doc's equations)."""
    d_h, d_a = carry
    previous, u, delta, b, c, d_y = inputs
    decay = jnp.exp(delta[..., None] * a[None])
    du = delta * u
    h = decay * previous + du[..., None] * b[:, None, :]
    g = d_h + d_y[..., None] * c[:, None, :]
    d_c = jnp.einsum("bd,bdn->bn", d_y, h, precision="highest")
    d_b = jnp.einsum("bdn,bd->bn", g, du, precision="highest")
    d_du = jnp.einsum("bdn,bn->bd", g, b, precision="highest")
    q = g * previous * decay
    d_delta = jnp.einsum("bdn,dn->bd", q, a, precision="highest") + d_du * u
    d_a = d_a + jnp.einsum("bdn,bd->dn", q, delta, precision="highest")
    return (decay * g, d_a), (d_du * delta, d_delta, d_b, d_c)


_scan.defvjp(_scan_fwd, _scan_bwd)
