r"""Parallel-in-time scans for cells that are linear in the carry.

A cell with ``Cell.linear`` declares that its step is

.. math::  h_t = a_t ⊙ h_{t-1} + b_t,

with ``a_t``, ``b_t`` computed from the inputs alone (minGRU, minLSTM, LRU,
RG-LRU, S4D, S5, LinOSS, S6). The affine maps ``h ↦ a h + b`` compose
associatively, step 1 then step 2 being

.. math::  (a_1, b_1) ∘ (a_2, b_2) = (a_2 a_1,\; a_2 b_1 + b_2),

so all T carries come out of ``jax.lax.associative_scan`` in O(log T) depth
(Blelloch 1990; Martin & Cundy 2018). The coefficients take one of four
forms: real or complex diagonal (``a``, ``b`` (..., N)); positive diagonal
in log space (``LogCoefficients``; Feng et al. 2024), composed as
``(la_1 + la_2, logaddexp(la_2 + lb_1, lb_2))``; or 2×2 blocks
(``BlockCoefficients``: ``a`` (..., N, 2, 2), ``b`` (..., N, 2)), whose
products do not commute, so the later matrix multiplies from the left:
``a_2 a_1``, never ``a_1 a_2``.

The engine's per-step semantics (``_step.step``) become coefficient edits, so
every impl computes the same function as the sequential scan:

- a padded step keeps the carry: ``(a, b) = (1, 0)`` (I for blocks), and
  outputs zero;
- zoneout keeping unit j: ``(a_j, b_j) = (1, 0)`` (a block's row j becomes
  the unit vector e_j); averaged zoneout p: ``(p + (1−p) a, (1−p) b)``
  (``p I + (1−p) a`` for blocks);
- a reset restarts from r before reading x_t: ``(a, b) = (0, a r + b)``;
- the initial carry enters at the end: ``h_t = A_t h_0 + B_t`` where
  ``(A_t, B_t)`` is the composition of steps 1..t.

Outputs come from the cell's own ``update`` applied to every
``(h_{t-1}, x_t)`` pair at once (time as a batch axis), so ``y_t`` is the
sequential step's output. Both differentiate the scan by the adjoint
recurrence (``solve``), itself a parallel scan, so the backward pass is as
parallel as the forward.

``associative`` solves all T steps at once, storing the coefficients and
states of every step, (T, B..., S) each. ``chunked`` runs the whole step —
coefficients, associative scan and outputs — inside chunks of
``chunk_length`` steps, under a ``lax.scan`` across chunks that passes only
the carry; its backward recomputes each chunk from the carry it started
from (``jax.checkpoint``). So no (T, B..., S) array exists
unless ``return_carries`` asks for one: memory O(T·(G + H) + L·S) for
chunk length L, the economy of Mamba's fused kernel for a state S = D·N
much wider than the input G, for one more forward pass in training.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from recurrent_jax import _step
from recurrent_jax.cells.base import Cell, widen

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
    cell: Cell,
    params,
    carry0,
    inputs: _step.StepInputs,
    options,
    chunk_length=None,
    return_carries=True,
    solver=None,
):
    """All outputs (and carries) of a linear cell by associative scans, or by ``solver``.

    Args:
      cell: a cell with ``linear``, defaults filled.
      carry0: (B..., S) initial carry.
      inputs: time-major ``StepInputs`` (xp (T, B..., G)), already flipped
        for reverse.
      options: ``_step.StepOptions``.
      chunk_length: None for one associative scan over all T; else the
        length of the chunks scanned sequentially (see the module doc).
      return_carries: also return the carry after every step.
      solver: None, or ``solver(a, b, h0) -> states``, a sequential solver of
        linear-space coefficients (``pallas_tpu.scan``) that takes all T at
        once (``chunk_length`` does not apply). Log-space ones are
        exponentiated for it: a sequential recurrence forms no products over
        time, so it takes them as exactly as the plain scan.

    Returns:
      ``(final_carry, ys (T, B..., H), carries (T, B..., S) or None)``.
    """
    num_steps = inputs.xp.shape[0]
    if num_steps == 0:
        empty = carry0[None][:0]
        return carry0, _outputs(cell, params, options, empty, inputs)[1], empty
    if solver is None and chunk_length is not None and chunk_length < num_steps:
        return _chunked_steps(cell, params, carry0, inputs, options, chunk_length, return_carries)
    coeffs = cell.linear(params, inputs.xp)
    form = _form(coeffs)
    if form == LOG and solver is not None:
        coeffs, form = (jnp.exp(coeffs.log_a), jnp.exp(coeffs.log_b)), REAL
    if form == LOG and inputs.reset is not None:
        raise ValueError(
            f"resets: the log-space {cell.name} cell cannot restart inside a parallel "
            "scan; use impl='scan' or a linear-space cell"
        )
    a, b = _edit(coeffs, inputs, options, form)
    if solver is None:
        solver = functools.partial(solve, form=form, chunk_length=chunk_length)
    states = solver(a, b, _to_state(carry0, form))
    carries = _from_state(states, form)
    prev = jnp.concatenate([carry0[None], carries[:-1]], axis=0)
    ys = _outputs(cell, params, options, prev, inputs)[1]
    return carries[-1], ys, carries


def _chunked_steps(cell, params, carry0, inputs, options, chunk_length, return_carries):
    """``linear_scan`` chunk by chunk: each chunk's steps solved whole, only
    the carry passed on, each chunk recomputed from it in the backward."""
    num_steps = inputs.xp.shape[0]
    num_chunks = -(-num_steps // chunk_length)
    inputs = _pad_with_invalid_steps(inputs, num_chunks * chunk_length - num_steps)

    @jax.checkpoint
    def body(carry, chunk):  # one associative scan over the chunk
        final, ys, carries = linear_scan(cell, params, carry, chunk, options)
        return final, (ys, carries if return_carries else None)

    chunks = jax.tree_util.tree_map(
        lambda x: x.reshape(num_chunks, chunk_length, *x.shape[1:]), inputs
    )
    final, outs = jax.lax.scan(body, carry0, chunks)
    steps = lambda x: x.reshape(num_chunks * chunk_length, *x.shape[2:])[:num_steps]  # noqa: E731
    ys, carries = jax.tree_util.tree_map(steps, outs)
    return final, ys, carries


def _pad_with_invalid_steps(inputs: _step.StepInputs, pad: int) -> _step.StepInputs:
    """``inputs`` with ``pad`` padded steps at the end (they keep the carry)."""
    if not pad:
        return inputs
    num_steps, batch_shape = inputs.xp.shape[0], inputs.xp.shape[1:-1]
    valid = inputs.valid
    if valid is None:
        valid = jnp.ones((num_steps, *batch_shape), bool)
    extend = lambda x: jnp.concatenate([x, jnp.zeros((pad, *x.shape[1:]), x.dtype)])  # noqa: E731
    return jax.tree_util.tree_map(extend, inputs._replace(valid=valid))


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


# --- the four forms of coefficients ---------------------------------------------

REAL, COMPLEX, LOG, BLOCK = "real", "complex", "log", "block"


def _form(coeffs) -> str:
    if isinstance(coeffs, LogCoefficients):
        return LOG
    if isinstance(coeffs, BlockCoefficients):
        return BLOCK
    return COMPLEX if jnp.iscomplexobj(coeffs[0]) else REAL


def _identity(form, a, b):
    """The step that keeps the carry, shaped like ``(a, b)``."""
    if form == LOG:
        return jnp.zeros_like(a), jnp.full_like(b, _LOG_ZERO)
    if form == BLOCK:  # the scan's layout: a (T, 2, 2, B..., N)
        eye = jnp.eye(2, dtype=a.dtype).reshape(1, 2, 2, *(1,) * (a.ndim - 3))
        return jnp.broadcast_to(eye, a.shape), jnp.zeros_like(b)
    return jnp.ones_like(a), jnp.zeros_like(b)


def _over_steps(mask, x):
    """A (T, B...) mask with trailing axes to broadcast against ``x``."""
    return mask.reshape(*mask.shape, *(1,) * (x.ndim - mask.ndim))


def _edit(coeffs, inputs, options, form):
    """The coefficient form of restart, zoneout and padding (see module doc)."""
    a, b = coeffs
    if (inputs.keep is not None or options.zoneout is not None) and form == COMPLEX:
        raise ValueError("zoneout: not supported with a complex-state cell in a parallel impl")
    one = {LOG: 0.0, BLOCK: jnp.eye(2, dtype=a.dtype).reshape(*(1,) * (a.ndim - 2), 2, 2)}
    one, zero = one.get(form, 1.0), _LOG_ZERO if form == LOG else 0.0
    if inputs.keep is not None:
        keep = _to_state(inputs.keep, form)
        # a kept component j of a block unit: row j of its block becomes e_j
        a = jnp.where(keep[..., None] if form == BLOCK else keep, one, a)
        b = jnp.where(keep, zero, b)
    elif options.zoneout is not None:
        p = options.zoneout
        if form == LOG:
            a = _logaddexp(jnp.log(p), jnp.log1p(-p) + a)
            b = jnp.log1p(-p) + b
        else:
            a, b = p * one + (1.0 - p) * a, (1.0 - p) * b
    if inputs.reset is not None:
        r = _to_state(options.reset_carry, form)[None]
        restart = jnp.einsum("...ij,...j->...i", a, r) if form == BLOCK else a * r
        b = jnp.where(_over_steps(inputs.reset, b), restart + b, b)
        a = jnp.where(_over_steps(inputs.reset, a), 0.0, a)
    if inputs.valid is not None:  # last: a padded step keeps the carry, reset or not
        a = jnp.where(_over_steps(inputs.valid, a), a, one)
        b = jnp.where(_over_steps(inputs.valid, b), b, zero)
    return a, b


def solve(a, b, h0, form=REAL, chunk_length=None):
    """All states of ``h_t = a_t h_{t−1} + b_t`` (t = 1..T, axis 0).

    a, b: (T, B..., N) real or complex (``form`` "real", "complex"), log a,
    log b ("log"), or 2×2 blocks a (T, B..., N, 2, 2), b (T, B..., N, 2)
    ("block"); h0: (B..., N) or (B..., N, 2). One associative scan over T,
    or chunks of ``chunk_length`` scanned in sequence. Gradients come from
    the adjoint recurrence ``λ_t = ḡ_t + a_{t+1}ᵀ λ_{t+1}``, solved the same
    way backwards in time: ``ā_t = λ_t h_{t−1}ᵀ``, ``b̄_t = λ_t``,
    ``h̄_0 = a_1ᵀ λ_1`` (transposes only matter for blocks).

    Blocks are scanned with their 2×2 axes after time, a (T, 2, 2, B..., N),
    so that every elementwise op runs along N rather than along pairs.
    """
    if form != BLOCK:
        return _solve(a, b, h0, form, chunk_length)
    a, b, h0 = jnp.moveaxis(a, (-2, -1), (1, 2)), jnp.moveaxis(b, -1, 1), jnp.moveaxis(h0, -1, 0)
    return jnp.moveaxis(_solve(a, b, h0, form, chunk_length), 1, -1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _solve(a, b, h0, form, chunk_length):
    """``solve`` in the scan's layout (blocks: a (T, 2, 2, B..., N), b
    (T, 2, B..., N), h0 (2, B..., N))."""
    if chunk_length is None or chunk_length >= a.shape[0]:
        return _apply(_scan(a, b, form), h0, form)
    return _chunked(a, b, h0, form, chunk_length)


def _solve_fwd(a, b, h0, form, chunk_length):
    states = _solve(a, b, h0, form, chunk_length)
    return states, (a, b, h0, states)


def _solve_bwd(form, chunk_length, residuals, d_states):
    a, b, h0, states = residuals
    a_lin = jnp.exp(a) if form == LOG else a
    if form == BLOCK:
        a_lin = jnp.swapaxes(a_lin, 1, 2)
    adjoint = REAL if form == LOG else form
    # λ_t = ḡ_t + a_{t+1}ᵀ λ_{t+1}: a forward recurrence on the flipped axis
    a_next = jnp.concatenate([a_lin[1:], jnp.zeros_like(a_lin[:1])], axis=0)
    flipped = _solve(
        jnp.flip(a_next, 0), jnp.flip(d_states, 0), jnp.zeros_like(h0), adjoint, chunk_length
    )
    lam = jnp.flip(flipped, 0)
    prev = jnp.concatenate([h0[None], states[:-1]], axis=0)
    if form == BLOCK:
        d_a = lam[:, :, None] * prev[:, None, :]
        return d_a, lam, _matvec(a_lin[:1], lam[:1])[0]
    d_a, d_b = lam * prev, lam
    if form == LOG:
        d_a, d_b = d_a * a_lin, d_b * jnp.exp(b)
    return d_a, d_b, jnp.sum(a_lin[:1] * lam[:1], axis=0)


_solve.defvjp(_solve_fwd, _solve_bwd)


def _matmul(x, y):
    """``x @ y`` for blocks (T, 2, 2, ...), as elementwise ops."""
    return x[:, :, :1] * y[:, :1, :] + x[:, :, 1:] * y[:, 1:, :]


def _matvec(x, v):
    """``x @ v`` for blocks (T, 2, 2, ...) and 2-vectors (T, 2, ...)."""
    return x[:, :, 0] * v[:, :1] + x[:, :, 1] * v[:, 1:]


def _combine(earlier, later):
    (a1, b1), (a2, b2) = earlier, later
    return a2 * a1, a2 * b1 + b2


def _combine_blocks(earlier, later):
    (a1, b1), (a2, b2) = earlier, later
    return _matmul(a2, a1), _matvec(a2, b1) + b2


def _combine_log(earlier, later):
    (a1, b1), (a2, b2) = earlier, later
    return a1 + a2, _logaddexp(a2 + b1, b2)


_COMBINE = {REAL: _combine, COMPLEX: _combine, LOG: _combine_log, BLOCK: _combine_blocks}


def _logaddexp(x, y):
    """``log(e^x + e^y)`` for finite x, y (log 0 is ``_LOG_ZERO``); fewer ops
    than ``jnp.logaddexp``, which also handles infinities."""
    return jnp.maximum(x, y) + jnp.log1p(jnp.exp(-jnp.abs(x - y)))


def _scan(a, b, form):
    """(A_t, B_t): the composition of steps 1..t, for every t (axis 0)."""
    return jax.lax.associative_scan(_COMBINE[form], (a, b), axis=0)


def _doubling_scan(a, b, form):
    """``_scan`` by recursive doubling (Hillis & Steele 1986): log2(L) levels
    of static shifts; O(L log L) work but a small, T-independent program, so
    it compiles fast. Used inside chunks."""
    length, shift = a.shape[0], 1
    while shift < length:
        one, zero = _identity(form, a[:shift], b[:shift])
        prev_a = jnp.concatenate([one, a[:-shift]], axis=0)
        prev_b = jnp.concatenate([zero, b[:-shift]], axis=0)
        a, b = _COMBINE[form]((prev_a, prev_b), (a, b))
        shift *= 2
    return a, b


def _apply(composed, h0, form):
    """``h_t = A_t h_0 + B_t``; in log space ``exp(log B_t) + exp(log A_t) h_0``,
    so h_0 may have any sign."""
    a, b = composed
    if form == LOG:
        a, b = jnp.exp(a), jnp.exp(b)
    if form == BLOCK:
        return _matvec(a, h0[None]) + b
    return a * h0[None] + b


def _chunked(a, b, h0, form, chunk_length):
    num_steps = a.shape[0]
    num_chunks = -(-num_steps // chunk_length)
    pad = num_chunks * chunk_length - num_steps

    def split(x, fill):  # (T, ...) -> (chunks, L, ...), identity steps at the end
        x = jnp.concatenate([x, fill[:pad]], axis=0)
        return x.reshape(num_chunks, chunk_length, *x.shape[1:])

    def body(h, chunk):
        states = _apply(_doubling_scan(*chunk, form), h, form)
        return states[-1], states

    one, zero = _identity(form, a[:pad], b[:pad])  # pad < chunk_length < T
    _, states = jax.lax.scan(body, h0, (split(a, one), split(b, zero)))
    return states.reshape(num_chunks * chunk_length, *states.shape[2:])[:num_steps]


def _to_state(carry, form):
    """A real carry (..., S) as the scan's state: itself; (..., 2N)
    ``[Re h, Im h]`` as complex (..., N); for blocks, (..., 2N)
    ``[h[:, 0], h[:, 1]]`` as (..., N, 2)."""
    if not isinstance(carry, jax.Array | jnp.ndarray) and not hasattr(carry, "shape"):
        raise TypeError("linear cells must have a single-array carry")
    carry = widen(carry)
    if form == BLOCK:
        return jnp.stack(jnp.split(carry, 2, axis=-1), axis=-1)
    if form != COMPLEX:
        return carry
    re, im = jnp.split(carry, 2, axis=-1)
    return jax.lax.complex(re, im)


def _from_state(states, form):
    if form == BLOCK:
        return jnp.concatenate([states[..., 0], states[..., 1]], axis=-1)
    if form != COMPLEX:
        return states
    return jnp.concatenate([jnp.real(states), jnp.imag(states)], axis=-1)
