r"""The convolution view of a time-invariant diagonal recurrence, by FFT.

A cell with ``Cell.time_invariant`` declares that each of its H channels is a
single-input single-output system of M complex modes whose coefficients do
not change over time (S4D):

.. math::
    x_t = Ā ⊙ x_{t−1} + B̄ u_t,\qquad y_t = 2\,\mathrm{Re}\textstyle\sum_m C_m x_{t,m} + D u_t

(the 2 Re reads each stored mode with its implied conjugate). From
``x_{−1} = h_0`` it unrolls to

.. math::
    y_t = \sum_{l=0}^{t} K_l u_{t−l} + D u_t + 2\,\mathrm{Re}\textstyle\sum_m C_m Ā_m^{t+1} h_{0,m},
    \qquad K_l = 2\,\mathrm{Re}\textstyle\sum_m C_m Ā_m^l B̄_m

(S4D §3: K is a Vandermonde product), a causal convolution per channel,
computed here with real FFTs of a length n ≥ 2T − 1 (zero-padded, so the
circular convolution equals the linear one on the first T steps):
O(B·H·T log T) work and no state per step, where a scan holds B·H·M states
at every step. The final state has a closed form,

.. math::  h_T = Ā^T h_0 + \textstyle\sum_{l<T} Ā^{T−1−l} B̄ u_l,

one contraction over time (under ``jit`` XLA drops it when the final carry
is unused; the h_0 terms are computed only when an initial carry is given).

Powers Ā^l come from ``exp(l log Ā)`` split as ``Ā^{qR} Ā^r`` (l = qR + r,
R ≈ √T), so that K is a batched matrix product of a (T/R, M) and an (M, R)
table per channel and no (T, H, M) array is formed.

Padding: the valid steps of each row must be one contiguous block
``[start, start + L)`` (``seq_lengths``: start 0, or T − L once the engine
has flipped a reversed row). Inputs outside the block are zeroed, which
leaves a causal convolution's outputs inside it exact; the h_0 term and the
final-state sum are shifted row by row to the block.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp


class DiagonalSystem(NamedTuple):
    """H single-input single-output diagonal systems of M complex modes.

    Attributes:
      transition: Ā, complex (H, M).
      input: B̄, complex (H, M).
      output: C, complex (H, M); y reads ``2 Re Σ_m C_m x_m``.
      feedthrough: D, real (H,).
    """

    transition: jax.Array
    input: jax.Array
    output: jax.Array
    feedthrough: jax.Array


# What ``impl="fft"`` needs of a cell, and why each per-step option of
# ``rj.unroll`` stops the convolution (it sees a row whole); the options that
# edit the carry at every step stop it as any whole-row backend
# (``backends._whole_row_blockers``).
NEEDS = "a time-invariant cell (`Cell.time_invariant`, as S4D's)"
REFUSED = {
    "mask": "`mask` is set: a convolution needs each row's valid steps as one prefix "
    "(give `seq_lengths`)",
    "resets": "`resets` is set: a restart inside a row breaks the convolution",
    "return_carries": "`return_carries` is set: a convolution forms no per-step carries "
    "('scan' or 'chunked' return them)",
    "remat": "`remat` is set: a convolution keeps no per-step carries to rematerialise",
}


def run_carry(system: DiagonalSystem, u, carry0, valid, reverse: bool):
    """``run`` on the engine's terms: carries as real planes (B..., 2·H·M)
    ``[Re x, Im x]``, ``carry0`` None for zeros; ``valid`` (T, B...) already
    flipped with the inputs when ``reverse`` (each row's block then ends at T).
    Returns ``(final carry, ys (T, B..., H))``."""
    h0 = None
    if carry0 is not None:
        re, im = jnp.split(carry0, 2, axis=-1)
        h0 = jax.lax.complex(re, im).reshape(*carry0.shape[:-1], *system.transition.shape)
    start = None
    if valid is not None and reverse:
        start = u.shape[0] - valid.sum(0).astype(jnp.int32)
    final, ys = run(system, u, h0, valid, start)
    final = final.reshape(*final.shape[:-2], -1)
    return jnp.concatenate([jnp.real(final), jnp.imag(final)], axis=-1), ys


def run(system: DiagonalSystem, u, h0=None, valid=None, start=None):
    """Outputs and final state of ``system`` over ``u`` (see the module doc).

    Args:
      system: the cell's ``DiagonalSystem``.
      u: real (T, B..., H), the channels' inputs, time-major.
      h0: complex (B..., H, M), the initial state; None for zeros.
      valid: bool (T, B...), the valid steps (one block per row), or None.
      start: int (B...), the first valid step of each row (None: 0).

    Returns:
      ``(final, ys)``: complex (B..., H, M) after each row's last valid step
      (``h0`` for an empty row), and real (T, B..., H), zero outside the block.
    """
    num_steps, batch_shape = u.shape[0], u.shape[1:-1]
    if num_steps == 0:
        zeros = jnp.zeros((*batch_shape, *system.transition.shape), system.transition.dtype)
        return (zeros if h0 is None else h0), u
    # Batch-major inside, (B..., T, H): this undoes the engine's time-major
    # transpose (XLA folds the two), and each batch row is turned
    # channel-major for its FFTs while it sits in cache.
    u = jnp.moveaxis(u, 0, -2)
    lengths = jnp.full(batch_shape, num_steps, jnp.int32)
    if valid is not None:
        valid = jnp.moveaxis(valid, 0, -1)[..., None]  # (B..., T, 1)
        u = jnp.where(valid, u, jnp.zeros((), u.dtype))  # zero-padded: exact inside the block
        lengths = valid.sum(-2)[..., 0].astype(jnp.int32)
    start = jnp.zeros(batch_shape, jnp.int32) if start is None else start
    powers = _Powers(system.transition, num_steps)
    kernel = 2.0 * powers.table(system.output * system.input)  # (T, H)
    # D u is the kernel's tap at lag 0: u then has one reader, the FFT
    kernel = kernel.at[0].add(system.feedthrough.astype(kernel.dtype))
    ys = causal_convolution(u, kernel.astype(u.dtype))
    if h0 is not None:
        free = 2.0 * powers.table(system.output * system.transition, h0)
        ys = ys + _roll_rows(free.astype(u.dtype), start, valid is not None)
    if valid is not None:
        ys = jnp.where(valid, ys, jnp.zeros((), ys.dtype))
    # h_T: the inputs of each row right-aligned at T, against Ā^{T−1−t}
    aligned = _roll_rows(u, num_steps - start - lengths, valid is not None)
    summed = powers.contract(jnp.flip(aligned, -2))  # Σ_l Ā^l u_{T−1−l}
    final = summed * _lead(system.input, summed.ndim)
    if h0 is not None:
        final = final + _power(system.transition, lengths) * h0
    return final, jnp.moveaxis(ys, -2, 0)


# Padded samples one FFT call takes at a time on a CPU: the batch rows of
# u go through lax.map in groups of about this many samples (one row at
# least). On a shared 2-core CPU under load a (16·128, 2048) transform
# pipeline ran 3–5x faster in batch rows of 128 channels than whole (a
# group of 2^18, 2 MiB of complex64, stays in L2 while other processes
# contend for memory); on the same machine quiet it made no difference.
# Accelerators take every row in one call (a loop over groups would
# serialise them); the host that traces decides.
_FFT_GROUP = 2**18


def causal_convolution(u, kernel):
    """``y_t = Σ_{l≤t} kernel_l u_{t−l}`` per channel, by real FFTs.

    u: real (B..., T, H); kernel: real (T, H). Returns (B..., T, H).
    """
    num_steps, channels = kernel.shape
    size = 1 << max(0, 2 * num_steps - 2).bit_length()  # a power of two ≥ 2T − 1
    k_f = jnp.fft.rfft(kernel.T, n=size)  # (H, F)

    def convolve(x):  # (..., T, H)
        x_f = jnp.fft.rfft(jnp.swapaxes(x, -1, -2), n=size)  # (..., H, F)
        y = jnp.fft.irfft(x_f * _lead(k_f, x_f.ndim), n=size)[..., :num_steps]
        return jnp.swapaxes(y, -1, -2)

    rows = u.reshape(-1, num_steps, channels)  # (B, T, H)
    group = max(1, _FFT_GROUP // (channels * size))
    grouped = rows.shape[0] > group and jax.default_backend() == "cpu"
    y = jax.lax.map(convolve, rows, batch_size=group) if grouped else convolve(rows)
    return y.reshape(u.shape).astype(u.dtype)


class _Powers:
    """Ā^l for l < T as two tables, Ā^{qR} (Q, H, M) and Ā^r (R, H, M),
    R = ⌈√T⌉, Q = ⌈T/R⌉."""

    def __init__(self, transition, num_steps: int):
        self.num_steps = num_steps
        self.inner = math.isqrt(num_steps - 1) + 1
        self.outer = -(-num_steps // self.inner)
        log_a = jnp.log(transition)[None]
        steps = jnp.arange(max(self.outer, self.inner), dtype=log_a.real.dtype)[:, None, None]
        self.coarse = jnp.exp(steps[: self.outer] * self.inner * log_a)  # (Q, H, M)
        self.fine = jnp.exp(steps[: self.inner] * log_a)  # (R, H, M)

    def table(self, scale, state=None):
        """``Re Σ_m scale_m Ā_m^t``, real (T, H); with a state (B..., H, M)
        ``Re Σ_m scale_m Ā_m^t state_m``, real (B..., T, H). One real
        product over [Re, Im] stacked (a quarter of a complex one's work)."""
        coarse = self.coarse
        if state is not None:
            coarse = coarse.reshape(self.outer, *(1,) * (state.ndim - 2), *state.shape[-2:])
            coarse = coarse * state[None]
        fine = self.fine * scale[None]
        coarse = jnp.concatenate([jnp.real(coarse), -jnp.imag(coarse)], axis=-1)
        fine = jnp.concatenate([jnp.real(fine), jnp.imag(fine)], axis=-1)
        out = jnp.einsum("q...hm,rhm->...qrh", coarse, fine)
        out = out.reshape(*out.shape[:-3], -1, out.shape[-1])
        return out[..., : self.num_steps, :]

    def contract(self, u):
        """``Σ_t Ā^t u_t``: complex (B..., H, M) from real (B..., T, H)."""
        pad = self.outer * self.inner - self.num_steps
        u = jnp.concatenate([u, jnp.zeros((*u.shape[:-2], pad, u.shape[-1]), u.dtype)], axis=-2)
        u = u.reshape(*u.shape[:-2], self.outer, self.inner, u.shape[-1])  # (B..., Q, R, H)
        parts = [jnp.einsum("...qrh,rhm->...hmq", u, f) for f in (self.fine.real, self.fine.imag)]
        inner = jax.lax.complex(*parts)
        coarse = jnp.moveaxis(self.coarse, 0, -1)  # (H, M, Q)
        return jnp.sum(inner * _lead(coarse, inner.ndim), axis=-1)


def _power(transition, lengths):
    """Ā^L: complex (B..., H, M) for int lengths (B...)."""
    exponent = lengths.astype(transition.real.dtype)[..., None, None]
    return jnp.exp(exponent * _lead(jnp.log(transition), exponent.ndim))


def _roll_rows(a, shift, needed: bool):
    """``a[..., t − shift_b, :]`` along time for each row b (cyclically; the
    wrapped steps are outside the row's block). a: (B..., T, H); shift: int
    (B...)."""
    if not needed:
        return a
    num_steps = a.shape[-2]
    steps = jnp.arange(num_steps).reshape(*(1,) * shift.ndim, num_steps, 1)
    index = (steps - shift[..., None, None]) % num_steps  # (B..., T, 1)
    return jnp.take_along_axis(a, jnp.broadcast_to(index, a.shape), axis=-2)


def _lead(x, ndim: int):
    """``x`` with leading 1-axes up to rank ``ndim`` (explicit broadcasting)."""
    return x.reshape((1,) * (ndim - x.ndim) + x.shape)
