r"""Exact RTRL for the LRU, written from its algebra.

For ``h_t = λ ⊙ h_{t−1} + γ ⊙ (x_t B)`` (``rj.cells.lru``; λ = exp(−e^ν +
i e^θ), γ = e^{γ_log}, B = w_ih[:, :N] + i w_ih[:, N:]) every param entry
feeds one complex unit, and the traces are complex numbers, the unit's
sensitivity ``∂h_n/∂·`` (Zucchet et al. 2023, "Online learning of
long-range dependencies", NeurIPS; here ν, θ are ``nu_log``, ``theta_log``):

.. math::
    e_ν ← λ e_ν + h_{t−1} ∂λ/∂ν,\quad e_θ ← λ e_θ + h_{t−1} ∂λ/∂θ,\quad
    e_{γ} ← λ e_{γ} + γ\,(x_t B),\quad e_B ← λ e_B + γ\, x_tᵀ,

e_B (N, D) per example: h_n is holomorphic in the complex entry B_nd, so
one complex trace serves both of its real halves (the generic rule of
``_diagonal`` keeps a two-component real trace per real column: (2, D, 2N)
numbers against (N, D) complex ones, twice the memory). With
g = ∂L/∂Re h + i ∂L/∂Im h, a real param's gradient is Re(ḡ e) and B's is
P = Σ ḡ e_B: Re P for w_ih[:, :N], −Im P for w_ih[:, N:].

The rule applies where a cell's params are the LRU's (names and shapes) and
its transition is this equation, checked numerically at the probe points
of ``_structure`` (a user's cell with these names but other algebra keeps
the generic rule).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from recurrent_jax import _checks
from recurrent_jax.cells.base import Cell
from recurrent_jax.online import _learner, _structure

NAMES = ("d", "gamma_log", "nu_log", "theta_log", "w_ih", "w_out")  # tree_leaves order
TRACED = ("gamma_log", "nu_log", "theta_log", "w_ih")


def rule(cell: Cell, input_size: int) -> _learner.Rule | None:
    """The LRU's rule for ``cell``, or None where its algebra is not the LRU's."""
    if cell.linear is None:
        return None
    shapes = jax.eval_shape(lambda key: cell.init(key, input_size), jax.random.PRNGKey(0))
    if not isinstance(shapes, dict) or tuple(sorted(shapes)) != NAMES:
        return None  # decided without compiling anything
    n = shapes["nu_log"].shape
    if len(n) != 1 or shapes["w_ih"].shape != (input_size, 2 * n[0]):
        return None
    with jax.ensure_compile_time_eval():
        params, carry, x = _structure._points(cell, input_size, seed=2)
        if carry.shape[-1:] != (2 * n[0],) or not _agrees(cell, params, carry, x):
            return None
    return _learner.Rule(functools.partial(_init, cell, input_size), _gradient, _advance)


def _agrees(cell, params, carry, x) -> bool:
    """The cell's transition equals ``_next`` at every probe point."""

    def both(p, c, x):
        want = _structure.transition(cell, p, c, x)
        return want, _planes(_next(p, _complex(c[None]), x[None])[0])

    want, got = jax.jit(jax.vmap(both))(params, carry, x)
    want, got = np.asarray(want), np.asarray(got)
    scale = 1 + np.abs(want).max()
    return bool(np.abs(want - got).max() <= 1e-5 * scale)


def _complex(carry):
    """(E, 2N) ``[Re h, Im h]`` -> (E, N) complex."""
    n = carry.shape[-1] // 2
    return jax.lax.complex(carry[..., :n], carry[..., n:])


def _planes(h):
    return jnp.concatenate([jnp.real(h), jnp.imag(h)], axis=-1)


def _lambda(params, dtype):
    nu = jnp.exp(params["nu_log"].astype(dtype))
    theta = jnp.exp(params["theta_log"].astype(dtype))
    lam = jnp.exp(jax.lax.complex(-nu, theta))
    return lam, nu, theta  # ∂λ/∂ν_log = −ν λ, ∂λ/∂θ_log = iθ λ


def _input(params, x, dtype):
    """b_t = x_t B (E, N) complex and γ (N,)."""
    w = params["w_ih"].astype(dtype)
    n = w.shape[1] // 2
    xb = jnp.matmul(x.astype(dtype), w, precision=jax.lax.Precision.HIGHEST)
    return jax.lax.complex(xb[:, :n], xb[:, n:]), jnp.exp(params["gamma_log"].astype(dtype))


def _next(params, h, x):
    """h_t (E, N) complex from h_{t−1} (E, N) and x (E, D)."""
    dtype = jnp.real(h).dtype
    lam = _lambda(params, dtype)[0]
    b, gamma = _input(params, x, dtype)
    return lam[None] * h + gamma[None] * b


def _init(cell, input_size, params, examples, key):
    del key
    _checks.check_params(cell, params, input_size)
    w = params["w_ih"]
    dtype = jnp.result_type(w.dtype, jnp.complex64)
    d, n = w.shape[0], w.shape[1] // 2
    zeros = lambda *shape: jnp.zeros((examples, *shape), dtype)  # noqa: E731
    traces = {"gamma_log": zeros(n), "nu_log": zeros(n), "theta_log": zeros(n), "w_ih": zeros(n, d)}
    return traces | {"d": None, "w_out": None}


def _gradient(params, traces, delta):
    """Per param leaf Σ_e Re(ḡ_e e) (module doc); None for the readouts."""
    g = jnp.conj(_complex(delta)).astype(traces["w_ih"].dtype)  # (E, N)
    per_unit = {k: jnp.real(jnp.sum(g * traces[k], axis=0)) for k in TRACED[:3]}
    # an elementwise product summed over examples: XLA:CPU runs the einsum as
    # N batched (1, E) x (E, D) products, slower than this one fusion (measured)
    p = jnp.sum(g[:, :, None] * traces["w_ih"], axis=0).T  # (D, N)
    grads = dict(per_unit, w_ih=jnp.concatenate([jnp.real(p), -jnp.imag(p)], axis=1))
    return [grads.get(name) for name in NAMES]


def _advance(params, traces, carry, x, key):
    """The traces after reading x (E, D) from ``carry`` (E, 2N)."""
    del key
    dtype = jnp.real(traces["w_ih"]).dtype
    h = _complex(carry).astype(traces["w_ih"].dtype)
    lam, nu, theta = _lambda(params, dtype)
    b, gamma = _input(params, x, dtype)
    keep = lambda e: lam[None] * e  # noqa: E731
    return {
        "gamma_log": keep(traces["gamma_log"]) + gamma[None] * b,
        "nu_log": keep(traces["nu_log"]) - (nu * lam)[None] * h,
        "theta_log": keep(traces["theta_log"]) + (1j * theta * lam)[None] * h,
        "w_ih": lam[None, :, None] * traces["w_ih"]
        + gamma[None, :, None] * x.astype(dtype)[:, None, :],
        "d": None,
        "w_out": None,
    }
