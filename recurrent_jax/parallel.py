r"""Parallel-in-time scans for cells that are linear in the carry.

A cell with ``Cell.linear`` declares that its step is

.. math::  h_t = a_t ⊙ h_{t-1} + b_t,

with ``a_t``, ``b_t`` computed from the inputs alone (minGRU, minLSTM, LRU,
RG-LRU). The affine maps ``h ↦ a h + b`` compose associatively,

.. math::  (a_1, b_1) ∘ (a_2, b_2) = (a_1 a_2,\; a_2 b_1 + b_2),

so all T carries come out of ``jax.lax.associative_scan`` in O(log T) depth
(Blelloch 1990; Martin & Cundy 2018). Log-space coefficients (positive a, b;
Feng et al. 2024) compose as ``(la_1 + la_2, logaddexp(la_2 + lb_1, lb_2))``.

The engine's per-step semantics (``_step.step``) become coefficient edits, so
every impl computes the same function as the sequential scan:

- a padded step keeps the carry: ``(a, b) = (1, 0)``, and outputs zero;
- zoneout keeping unit j: ``(a_j, b_j) = (1, 0)``; averaged zoneout p:
  ``(p + (1−p) a, (1−p) b)``;
- a reset restarts from r before reading x_t: ``(a, b) = (0, a r + b)``;
- the initial carry enters at the end: ``h_t = A_t h_0 + B_t`` where
  ``(A_t, B_t)`` is the composition of steps 1..t.

Outputs come from the cell's own ``update`` applied to every
``(h_{t-1}, x_t)`` pair at once (time as a batch axis), so ``y_t`` is the
sequential step's output. ``chunked`` runs the associative scan inside
chunks of ``chunk_length`` steps (by recursive doubling, which compiles
fast) and a ``lax.scan`` across them, which
bounds the scan's working memory at long T. Both differentiate by the
adjoint recurrence (``solve``), itself a parallel scan, so the backward
pass is as parallel as the forward and stores only a, b and the states.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from recurrent_jax import _step
from recurrent_jax.cells.base import CARRY_DTYPE, Cell

DEFAULT_CHUNK_LENGTH = 256
# T from which impl="auto" prefers the associative scan for linear cells
# (None: never). CPU, measured with benchmarks/parallel_speed.py --crossover
# (minGRU training step, H=128, B=8, 2 shared cores): scan/associative time
# ratios 2.5, 1.2, 1.7 at T = 64-256 but 0.34, 0.29, 0.88, 1.07, 0.78 at
# T = 512-8192 (noisy, no stable crossover), so "auto" keeps the sequential
# scan there. H100: the associative scan ran 5.6x faster than the scan at
# T = 512 and 10x at T = 4096 (shorter T not measured), so 512; TPU: not
# measured, the GPU value.
CROSSOVER_T = {"cpu": None, "gpu": 512, "tpu": 512}
_LOG_ZERO = -1e30  # log of 0 kept finite so that gradients stay finite


class LogCoefficients(NamedTuple):
    """Coefficients of ``h' = a h + b`` as ``log a``, ``log b`` (a, b > 0)."""

    log_a: jax.Array
    log_b: jax.Array


class BlockCoefficients(NamedTuple):
    """Coefficients of ``h' = a h + b`` with 2×2 blocks: ``a`` (..., N, 2, 2)
    and ``b`` (..., N, 2) real, each unit n a 2-vector ``h[n]`` updated as
    ``a[n] @ h[n] + b[n]`` (the oscillators of LinOSS). The carry holds the
    two components as planes, (..., 2N) = ``[h[:, 0], h[:, 1]]``, as a
    complex carry holds ``[Re h, Im h]``."""

    a: jax.Array
    b: jax.Array


def prefers_associative(cell: Cell, num_steps: int) -> bool:
    """Whether ``impl="auto"`` runs ``cell`` with the associative scan."""
    threshold = CROSSOVER_T.get(jax.default_backend(), CROSSOVER_T["gpu"])
    return cell.linear is not None and threshold is not None and num_steps >= threshold


def linear_scan(
    cell: Cell, params, carry0, inputs: _step.StepInputs, options, chunk_length=None, solver=None
):
    """All carries of a linear cell by associative scans, or by ``solver``.

    Args:
      cell: a cell with ``linear``, defaults filled.
      carry0: (B..., S) initial carry.
      inputs: time-major ``StepInputs`` (xp (T, B..., G)), already flipped
        for reverse.
      options: ``_step.StepOptions``.
      chunk_length: None for one associative scan over all T; else the
        length of the chunks scanned sequentially.
      solver: None, or ``solver(a, b, h0) -> states``, a sequential solver of
        linear-space coefficients (``pallas_tpu.scan``). Log-space ones are
        exponentiated for it: a sequential recurrence forms no products over
        time, so it takes them as exactly as the plain scan.

    Returns:
      ``(final_carry, ys (T, B..., H), carries (T, B..., S))``.
    """
    num_steps = inputs.xp.shape[0]
    if num_steps == 0:
        empty = carry0[None][:0]
        return carry0, _outputs(cell, params, options, empty, inputs)[1], empty
    coeffs = cell.linear(params, inputs.xp)
    log_space = isinstance(coeffs, LogCoefficients)
    if log_space and solver is not None:
        coeffs, log_space = (jnp.exp(coeffs.log_a), jnp.exp(coeffs.log_b)), False
    is_complex = jnp.iscomplexobj(coeffs[0])
    if log_space and inputs.reset is not None:
        raise ValueError(
            f"resets: the log-space {cell.name} cell cannot restart inside a parallel "
            "scan; use impl='scan' or a linear-space cell"
        )
    a, b = _edit(coeffs, inputs, options, log_space, is_complex)
    if solver is None:
        solver = functools.partial(solve, log_space=log_space, chunk_length=chunk_length)
    states = solver(a, b, _to_state(carry0, is_complex))
    carries = _from_state(states, is_complex)
    prev = jnp.concatenate([carry0[None], carries[:-1]], axis=0)
    ys = _outputs(cell, params, options, prev, inputs)[1]
    return carries[-1], ys, carries


def _outputs(cell, params, options, prev, inputs):
    """The sequential step applied to every (h_{t-1}, x_t) at once (vmapped
    over time, so per-sequence options broadcast as in the scan)."""

    def one(carry, inputs_t):
        carry = _step.restart(options, carry, inputs_t)
        return cell.update(params, carry, inputs_t.xp, _step.read(cell, options, carry))

    new, y = jax.vmap(one)(prev, inputs)
    if inputs.valid is not None:
        y = jnp.where(inputs.valid[..., None], y, jnp.zeros((), y.dtype))
    return new, y


def _edit(coeffs, inputs, options, log_space, is_complex):
    """The coefficient form of restart, zoneout and padding (see module doc)."""
    a, b = coeffs
    one, zero = (0.0, _LOG_ZERO) if log_space else (1.0, 0.0)
    if (inputs.keep is not None or options.zoneout is not None) and is_complex:
        raise ValueError("zoneout: not supported with a complex-state cell in a parallel impl")
    if inputs.keep is not None:
        a, b = jnp.where(inputs.keep, one, a), jnp.where(inputs.keep, zero, b)
    elif options.zoneout is not None:
        p = options.zoneout
        if log_space:
            a = _logaddexp(jnp.log(p), jnp.log1p(-p) + a)
            b = jnp.log1p(-p) + b
        else:
            a, b = p + (1.0 - p) * a, (1.0 - p) * b
    if inputs.reset is not None:
        r = _to_state(options.reset_carry, is_complex)
        reset = inputs.reset[..., None]
        a, b = jnp.where(reset, 0.0, a), jnp.where(reset, a * r[None] + b, b)
    if inputs.valid is not None:  # last: a padded step keeps the carry, reset or not
        valid = inputs.valid[..., None]
        a, b = jnp.where(valid, a, one), jnp.where(valid, b, zero)
    return a, b


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def solve(a, b, h0, log_space=False, chunk_length=None):
    """All states of ``h_t = a_t h_{t−1} + b_t`` (t = 1..T, axis 0).

    a, b: (T, B..., N) real or complex, or log a, log b with ``log_space``;
    h0: (B..., N). One associative scan over T, or chunks of
    ``chunk_length`` scanned in sequence. Gradients come from the adjoint
    recurrence ``λ_t = ḡ_t + a_{t+1} λ_{t+1}``, solved the same way
    backwards in time: ``ā_t = λ_t h_{t−1}``, ``b̄_t = λ_t``, ``h̄_0 = a_1 λ_1``.
    """
    if chunk_length is None or chunk_length >= a.shape[0]:
        return _apply(_scan(a, b, log_space), h0, log_space)
    return _chunked(a, b, h0, log_space, chunk_length)


def _solve_fwd(a, b, h0, log_space, chunk_length):
    states = solve(a, b, h0, log_space, chunk_length)
    return states, (a, b, h0, states)


def _solve_bwd(log_space, chunk_length, residuals, d_states):
    a, b, h0, states = residuals
    a_lin = jnp.exp(a) if log_space else a
    # λ_t = ḡ_t + a_{t+1} λ_{t+1}: a forward recurrence on the flipped axis
    a_next = jnp.concatenate([a_lin[1:], jnp.zeros_like(a_lin[:1])], axis=0)
    lam = jnp.flip(
        solve(jnp.flip(a_next, 0), jnp.flip(d_states, 0), jnp.zeros_like(h0), False, chunk_length),
        0,
    )
    prev = jnp.concatenate([h0[None], states[:-1]], axis=0)
    d_a, d_b = lam * prev, lam
    if log_space:
        d_a, d_b = d_a * a_lin, d_b * jnp.exp(b)
    return d_a, d_b, jnp.sum(a_lin[:1] * lam[:1], axis=0)


solve.defvjp(_solve_fwd, _solve_bwd)


def _combine(earlier, later):
    (a1, b1), (a2, b2) = earlier, later
    return a1 * a2, a2 * b1 + b2


def _combine_log(earlier, later):
    (a1, b1), (a2, b2) = earlier, later
    return a1 + a2, _logaddexp(a2 + b1, b2)


def _logaddexp(x, y):
    """``log(e^x + e^y)`` for finite x, y (log 0 is ``_LOG_ZERO``); fewer ops
    than ``jnp.logaddexp``, which also handles infinities."""
    return jnp.maximum(x, y) + jnp.log1p(jnp.exp(-jnp.abs(x - y)))


def _scan(a, b, log_space):
    """(A_t, B_t): the composition of steps 1..t, for every t (axis 0)."""
    return jax.lax.associative_scan(_combine_log if log_space else _combine, (a, b), axis=0)


def _doubling_scan(a, b, log_space):
    """``_scan`` by recursive doubling (Hillis & Steele 1986): log2(L) levels
    of static shifts; O(L log L) work but a small, T-independent program, so
    it compiles fast. Used inside chunks."""
    combine = _combine_log if log_space else _combine
    one, zero = (0.0, _LOG_ZERO) if log_space else (1.0, 0.0)
    length, shift = a.shape[0], 1
    while shift < length:
        prev_a = jnp.concatenate([jnp.full_like(a[:shift], one), a[:-shift]], axis=0)
        prev_b = jnp.concatenate([jnp.full_like(b[:shift], zero), b[:-shift]], axis=0)
        a, b = combine((prev_a, prev_b), (a, b))
        shift *= 2
    return a, b


def _apply(composed, h0, log_space):
    """``h_t = A_t h_0 + B_t``; in log space ``exp(log B_t) + exp(log A_t) h_0``,
    so h_0 may have any sign."""
    a, b = composed
    if log_space:
        a, b = jnp.exp(a), jnp.exp(b)
    return a * h0[None] + b


def _chunked(a, b, h0, log_space, chunk_length):
    num_steps = a.shape[0]
    num_chunks = -(-num_steps // chunk_length)
    pad = num_chunks * chunk_length - num_steps
    one, zero = (0.0, _LOG_ZERO) if log_space else (1.0, 0.0)

    def split(x, fill):  # (T, ...) -> (chunks, L, ...), identity steps at the end
        x = jnp.concatenate([x, jnp.full((pad, *x.shape[1:]), fill, x.dtype)], axis=0)
        return x.reshape(num_chunks, chunk_length, *x.shape[1:])

    def body(h, chunk):
        states = _apply(_doubling_scan(*chunk, log_space), h, log_space)
        return states[-1], states

    _, states = jax.lax.scan(body, h0, (split(a, one), split(b, zero)))
    return states.reshape(num_chunks * chunk_length, *states.shape[2:])[:num_steps]


def _to_state(carry, is_complex):
    """A real carry (..., S), or (..., 2N) ``[Re h, Im h]`` as complex (..., N)."""
    if not isinstance(carry, jax.Array | jnp.ndarray) and not hasattr(carry, "shape"):
        raise TypeError("linear cells must have a single-array carry")
    carry = carry.astype(CARRY_DTYPE)
    if not is_complex:
        return carry
    re, im = jnp.split(carry, 2, axis=-1)
    return jax.lax.complex(re, im)


def _from_state(states, is_complex):
    if not is_complex:
        return states
    return jnp.concatenate([jnp.real(states), jnp.imag(states)], axis=-1)
