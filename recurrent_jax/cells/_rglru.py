r"""The Real-Gated Linear Recurrent Unit of Griffin / RecurrentGemma
(De et al. 2024, arXiv 2402.19427). Gates depend on x_t only, so it is linear
in the carry and runs with ``impl="associative"``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from recurrent_jax import _checks
from recurrent_jax.cells import base


def rglru(
    hidden_size: int,
    *,
    c: float = 8.0,
    min_rad: float = 0.9,
    max_rad: float = 0.999,
    **options,
) -> base.Cell:
    r"""An RG-LRU cell, gate order (r, i, x̃).

    .. math::
        r_t = σ(x_t W_a + b_a)     i_t = σ(x_t W_x + b_x)     \tilde x_t = x_t W_{in}
        \log a_t = −c · r_t ⊙ \mathrm{softplus}(−Λ)      (a_t = a^{c r_t},\ a = σ(Λ))
        h_t = a_t ⊙ h_{t−1} + \sqrt{1 − a_t^2} ⊙ (i_t ⊙ \tilde x_t)

    The paper feeds the block's own (H-wide) input as x_t; here ``x̃ = x W_in``
    is a learned input map (D, H) so that any D works. Λ is initialised so
    that a^c is uniform in [min_rad, max_rad].

    Args:
      hidden_size: H.
      c: the fixed scale of the recurrence gate (8 in the paper).
      min_rad, max_rad: the range of a^c at initialisation.
      **options: ``base.CellOptions`` (bias mode, initialisers, dtypes).

    Params: ``w_ih`` (D, 3H) ``[W_a, W_x, W_in]``, biases (3H,) per ``bias``
    (the x̃ part is zeroed, it has no bias in the paper), ``a_param`` Λ (H,).
    Carry: h (B..., H); ``y_t = h_t``. No recurrent kernel, so
    ``recurrent_dropout`` has no effect.
    """
    H = _checks.check_positive_int("hidden_size", hidden_size)
    if not 0.0 < min_rad < max_rad < 1.0:
        raise ValueError(f"min_rad, max_rad: expected 0 < min < max < 1, got {min_rad}, {max_rad}")
    opts = base.make_options(**options)
    dt = opts.dtype

    def init(key, input_size):
        base.check_init_args(key, input_size)
        k_w, k_b, k_a = jax.random.split(key, 3)
        w_ih = base.draw(opts.kernel_init, k_w, (input_size, 3 * H), opts.param_dtype)
        biases = base.init_biases(k_b, 3 * H, opts)
        biases = {k: v.at[2 * H :].set(0.0) for k, v in biases.items()}
        a_c = jax.random.uniform(k_a, (H,), minval=min_rad, maxval=max_rad)
        a_param = -jnp.log(jnp.expm1(-jnp.log(a_c) / c))  # softplus(−Λ) = −log(a^c)/c
        return {"w_ih": w_ih, "a_param": a_param.astype(opts.param_dtype)} | biases

    def project(params, xs):
        return base.add_bias(base.matmul(xs, params["w_ih"], dt), params)

    def log_a_and_input(params, xp):
        k_r, k_i, x = jnp.split(base.widen(xp), 3, axis=-1)
        log_a = -c * jax.nn.sigmoid(k_r) * base.lift(jax.nn.softplus(-params["a_param"]), k_r)
        gated = jax.nn.sigmoid(k_i) * x
        return log_a, jnp.sqrt(-jnp.expm1(2.0 * log_a)) * gated

    def linear(params, xp):
        log_a, b = log_a_and_input(params, xp)
        return jnp.exp(log_a), b

    def update(params, h, xp_t, h_in):
        a, b = linear(params, xp_t)
        h = a * h + b
        return h, h

    def step(params, h, xp_t):
        return update(params, h, xp_t, h)

    return base.Cell(
        init=init,
        step=step,
        initial_carry=base.zeros_carry(H, opts.carry_dtype),
        project=project,
        read=base.default_read,
        update=update,
        hidden_size=H,
        name="rglru",
        compute_dtype=dt,
        linear=linear,
    )
