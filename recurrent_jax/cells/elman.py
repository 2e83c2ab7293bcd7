"""The Elman (vanilla) RNN, PyTorch's ``nn.RNN``."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from recurrent_jax.cells import base

ACTIVATIONS = {"tanh": jnp.tanh, "relu": jax.nn.relu}


def elman(hidden_size: int, *, activation="tanh", **options) -> base.Cell:
    r"""An Elman cell: :math:`h' = φ(x W_{ih} + b_{ih} + h W_{hh} + b_{hh})`.

    Args:
      hidden_size: H.
      activation: "tanh" (default), "relu" or a callable φ.
      **options: ``base.CellOptions`` (bias mode, initialisers, dtypes).

    Params: ``w_ih`` (D, H), ``w_hh`` (H, H), biases per ``bias``.
    Carry: h (B..., H); ``y_t = h'``.
    """
    H = base.check_positive_int("hidden_size", hidden_size)
    if not callable(activation):
        activation = ACTIVATIONS[base.check_choice("activation", activation, ACTIVATIONS)]
    opts = base.make_options(**options)
    dt = opts.dtype

    def init(key, input_size):
        base.check_positive_int("input_size", input_size)
        k_w, k_b = jax.random.split(key)
        params = base.init_weights(k_w, input_size, H, H, 1, opts)
        return params | base.init_biases(k_b, H, opts)

    def project(params, xs):
        return base.add_bias(base.matmul(xs, params["w_ih"], dt), params)

    def pointwise(params, carry, xp_t, hh_t):
        h = activation(xp_t + hh_t)
        return h, h

    def update(params, carry, xp_t, h_in):
        return pointwise(params, carry, xp_t, base.matmul(h_in, params["w_hh"], dt))

    def step(params, carry, xp_t):
        return update(params, carry, xp_t, carry)

    return base.Cell(
        init=init,
        step=step,
        initial_carry=base.zeros_carry(H),
        project=project,
        read=base.default_read,
        update=update,
        pointwise=pointwise,
        hidden_size=H,
        name="elman",
        compute_dtype=dt,
    )
