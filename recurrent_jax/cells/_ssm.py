r"""What the state-space cells share: the discretisations of a complex
diagonal system, complex states held as real planes, and option checks.

A continuous system ``h'(t) = Λ h(t) + B u(t)`` with diagonal Λ, sampled
with step Δ, becomes ``h_k = Λ̄ h_{k−1} + B̄ u_k``:

.. math::
    \text{ZOH:}\quad Λ̄ = e^{ΔΛ},\qquad B̄ = Λ^{-1}(Λ̄ − 1)\, B
    \text{bilinear:}\quad Λ̄ = (1 − ΔΛ/2)^{-1}(1 + ΔΛ/2),\qquad B̄ = (1 − ΔΛ/2)^{-1} Δ B

(S4D §3; S5 §2.1, §3.2; both elementwise for a diagonal Λ.)
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from recurrent_jax import _checks

DISCRETIZATIONS = ("zoh", "bilinear")


def discretize(lam, delta, method: str):
    """``(Λ̄, B̄ / B)``, both complex like ``lam``: the transition and the
    factor that turns B into B̄ (see the module docstring)."""
    if method == "zoh":
        lam_bar = jnp.exp(delta * lam)
        return lam_bar, (lam_bar - 1.0) / lam
    inverse = 1.0 / (1.0 - 0.5 * delta * lam)
    return inverse * (1.0 + 0.5 * delta * lam), inverse * delta


def log_uniform(key, shape, low: float, high: float):
    """``log Δ`` with Δ log-uniform in [low, high] (S4, S4D, S5's Δ init)."""
    return jax.random.uniform(key, shape, minval=math.log(low), maxval=math.log(high))


def as_complex(planes, dtype):
    """(..., 2M) ``[Re, Im]`` as complex (..., M) of the real ``dtype``."""
    re, im = jnp.split(planes.astype(dtype), 2, axis=-1)
    return jax.lax.complex(re, im)


def as_planes(h):
    """Complex (..., M) as real (..., 2M) ``[Re h, Im h]``."""
    return jnp.concatenate([jnp.real(h), jnp.imag(h)], axis=-1)


def check_step_range(dt_min, dt_max):
    """``0 < dt_min <= dt_max``, the range of the initial steps Δ."""
    _checks.check_positive("dt_min", dt_min)
    _checks.check_positive("dt_max", dt_max)
    if dt_max < dt_min:
        _checks.fail("dt_max", f"at least dt_min={dt_min}", dt_max)


def check_options(options) -> None:
    """The state-space cells take only the dtype options of ``CellOptions``
    (they have no biases and draw their own initialisations)."""
    _checks.check_unknown("options", options, ("param_dtype", "dtype"))


def feedthrough_init(key, input_size: int, hidden_size: int):
    """``d``: the papers' diagonal skip (H,) ~ N(0, 1) when the input has H
    features; else a (D, H) matrix ~ N(0, 1/D)."""
    if input_size == hidden_size:
        return jax.random.normal(key, (hidden_size,))
    return jax.random.normal(key, (input_size, hidden_size)) / math.sqrt(input_size)


def matmul(x, w, compute_dtype, accumulate_dtype):
    """``x @ w`` with operands in ``compute_dtype`` (None: w's), accumulated
    and returned in ``accumulate_dtype`` (the cell's carry dtype)."""
    dtype = w.dtype if compute_dtype is None else compute_dtype
    return jnp.matmul(x.astype(dtype), w.astype(dtype), preferred_element_type=accumulate_dtype)


def lead(x, ndim: int):
    """``x`` with leading 1-axes up to rank ``ndim`` (explicit broadcasting,
    for ``jax_numpy_rank_promotion="raise"``; the dtype is kept, complex too)."""
    return x.reshape((1,) * (ndim - x.ndim) + x.shape)


def feedthrough(d, u, compute_dtype):
    """``D u`` in ``u``'s dtype: ``u ⊙ d`` for a diagonal d (H,), ``u @ d``
    for a (D, H) matrix."""
    if d.ndim == 1:
        return u * lead(d.astype(u.dtype), u.ndim)
    return matmul(u, d, compute_dtype, u.dtype)
