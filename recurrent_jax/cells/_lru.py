r"""The Linear Recurrent Unit (Orvieto et al. 2023, "Resurrecting Recurrent
Neural Networks for Long Sequences", arXiv 2303.06349): a complex diagonal
linear recurrence with a real projection out. Linear in the carry, so it
runs with ``impl="associative"``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from recurrent_jax import _checks
from recurrent_jax.cells import base


def lru(
    hidden_size: int,
    *,
    state_size: int | None = None,
    r_min: float = 0.0,
    r_max: float = 1.0,
    max_phase: float = 2 * math.pi,
    **options,
) -> base.Cell:
    r"""An LRU cell.

    .. math::
        λ = \exp(−\exp(ν_{log}) + i \exp(θ_{log}))        γ = \exp(γ_{log})
        h_t = λ ⊙ h_{t−1} + γ ⊙ (x_t B)
        y_t = \mathrm{Re}(h_t C) + x_t ⊙ d

    Ring initialisation: |λ| uniform on the ring [r_min, r_max] (in area),
    arg λ uniform in [0, max_phase]; γ_log = log √(1 − |λ|²); B, C complex
    Glorot-like normals (B/√(2D), C/√N) as in the paper.

    Args:
      hidden_size: H, the output size.
      state_size: N, complex state units (default H).
      r_min, r_max, max_phase: the ring initialisation.
      **options: ``param_dtype`` and ``dtype`` of ``base.CellOptions``.

    Params: ``nu_log``, ``theta_log``, ``gamma_log`` (N,); ``w_ih`` (D, 2N)
    ``[Re B, Im B]``; ``w_out`` (2N, H) ``[Re C; −Im C]`` so that
    ``Re(h C) = [Re h, Im h] w_out``; ``d`` (H,) the paper's diagonal skip
    when D == H, else a (D, H) matrix. Carry: (B..., 2N) ``[Re h, Im h]``
    (real, in the carry dtype); ``y_t`` (B..., H).
    """
    H = _checks.check_positive_int("hidden_size", hidden_size)
    N = H if state_size is None else _checks.check_positive_int("state_size", state_size)
    if not 0.0 <= r_min < r_max <= 1.0:
        raise ValueError(f"r_min, r_max: expected 0 <= r_min < r_max <= 1, got {r_min}, {r_max}")
    opts = base.make_options(**options)
    dt, pdt = opts.dtype, opts.param_dtype

    def init(key, input_size):
        D = base.check_init_args(key, input_size)
        k_u1, k_u2, k_b, k_c, k_d = jax.random.split(key, 5)
        u1, u2 = jax.random.uniform(k_u1, (N,)), jax.random.uniform(k_u2, (N,))
        nu_log = jnp.log(-0.5 * jnp.log(u1 * (r_max**2 - r_min**2) + r_min**2))
        theta_log = jnp.log(max_phase * u2)
        gamma_log = jnp.log(jnp.sqrt(1.0 - jnp.exp(-2.0 * jnp.exp(nu_log))))
        d_shape = (H,) if D == H else (D, H)
        params = {
            "nu_log": nu_log,
            "theta_log": theta_log,
            "gamma_log": gamma_log,
            "w_ih": jax.random.normal(k_b, (D, 2 * N)) / math.sqrt(2 * D),
            "w_out": jax.random.normal(k_c, (2 * N, H)) / math.sqrt(N),
            "d": jax.random.normal(k_d, d_shape),
        }
        return jax.tree_util.tree_map(lambda p: p.astype(pdt), params)

    def project(params, xs):
        """(B..., T, D) -> (B..., T, 2N + D): ``[γ Re xB, γ Im xB, x]``."""
        xb = base.matmul(xs, params["w_ih"], dt)
        gamma = jnp.tile(jnp.exp(base.widen(params["gamma_log"], dt)), 2)
        return jnp.concatenate([xb * base.lift(gamma, xb), xs.astype(xb.dtype)], axis=-1)

    def lam(params):
        nu = jnp.exp(base.widen(params["nu_log"], dt))
        theta = jnp.exp(base.widen(params["theta_log"], dt))
        return jnp.exp(-nu) * jnp.cos(theta), jnp.exp(-nu) * jnp.sin(theta)

    def linear(params, xp):
        lam_re, lam_im = lam(params)
        xp = base.widen(xp)
        b = jax.lax.complex(xp[..., :N], xp[..., N : 2 * N])
        a = jnp.broadcast_to(base.lift(jax.lax.complex(lam_re, lam_im), b), b.shape)
        return a, b

    def update(params, carry, xp_t, h_in):
        lam_re, lam_im = lam(params)
        xp_t = base.widen(xp_t)
        h_re, h_im = carry[..., :N], carry[..., N:]
        lam_re, lam_im = base.lift(lam_re, h_re), base.lift(lam_im, h_re)
        new = jnp.concatenate(
            [
                lam_re * h_re - lam_im * h_im + xp_t[..., :N],
                lam_re * h_im + lam_im * h_re + xp_t[..., N : 2 * N],
            ],
            axis=-1,
        )
        return new, _output(params, new, xp_t[..., 2 * N :])

    def _output(params, h, x):
        y = base.matmul(h, params["w_out"], dt)
        d = params["d"]
        skip = x * base.lift(d, x) if d.ndim == 1 else base.matmul(x, d, dt)
        return y + skip.astype(y.dtype)

    def step(params, carry, xp_t):
        return update(params, carry, xp_t, carry)

    return base.Cell(
        init=init,
        step=step,
        initial_carry=base.zeros_carry(2 * N, opts.carry_dtype),
        project=project,
        read=base.default_read,
        update=update,
        hidden_size=H,
        name="lru",
        compute_dtype=dt,
        linear=linear,
    )
