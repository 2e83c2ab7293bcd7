"""Minimal gated unit (Zhou et al. 2016): a GRU with one gate."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from recurrent_jax import _checks
from recurrent_jax.cells import base


def mgu(
    hidden_size: int,
    *,
    activation: Callable = jnp.tanh,
    recurrent_activation: Callable = jax.nn.sigmoid,
    **options,
) -> base.Cell:
    r"""A minimal gated unit, gate order (f, h̃).

    .. math::
        f = σ(x W_{if} + h W_{hf} + b_f)
        \tilde h = \tanh(x W_{ih} + (f ⊙ h) W_{hh} + b_h)
        h' = (1 − f) ⊙ h + f ⊙ \tilde h

    Args:
      hidden_size: H.
      activation / recurrent_activation: tanh / sigmoid by default.
      **options: ``base.CellOptions`` (bias mode, initialisers, dtypes).

    Params: ``w_ih`` (D, 2H), ``w_hh`` (H, 2H), biases per ``bias`` (every
    bias term is additive, so "double" and "single" compute the same
    function). Carry: h (B..., H); y_t = h'.
    """
    H = _checks.check_positive_int("hidden_size", hidden_size)
    opts = base.make_options(**options)
    dt = opts.dtype

    def init(key, input_size):
        base.check_init_args(key, input_size)
        k_w, k_b = jax.random.split(key)
        params = base.init_weights(k_w, input_size, H, H, 2, opts)
        return params | base.init_biases(k_b, 2 * H, opts)

    def project(params, xs):
        return base.add_bias(base.matmul(xs, params["w_ih"], dt), params)

    def update(params, h, xp_t, h_in):
        x_f, x_h = jnp.split(xp_t, 2, axis=-1)
        w_f, w_h = params["w_hh"][:, :H], params["w_hh"][:, H:]
        f = recurrent_activation(x_f + base.matmul(h_in, w_f, dt))
        candidate = activation(x_h + base.matmul(f * h_in, w_h, dt))
        h = (1.0 - f) * h + f * candidate
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
        name="mgu",
        compute_dtype=dt,
    )
