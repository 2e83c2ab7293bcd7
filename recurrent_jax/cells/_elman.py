"""The Elman (vanilla) RNN, PyTorch's ``nn.RNN``."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from recurrent_jax import _checks
from recurrent_jax.cells import base

ACTIVATIONS = {"tanh": jnp.tanh, "relu": jax.nn.relu}


def elman(
    hidden_size: int, *, activation="tanh", num_heads: int | None = None, **options
) -> base.Cell:
    r"""An Elman cell: :math:`h' = φ(x W_{ih} + b_{ih} + h W_{hh} + b_{hh})`.

    Args:
      hidden_size: H.
      activation: "tanh" (default), "relu" or a callable φ.
      num_heads: n; W_hh block-diagonal, n independent recurrences of H/n
        units (the input projection stays dense).
      **options: ``base.CellOptions`` (bias mode, initialisers, dtypes).

    Params: ``w_ih`` (D, H), ``w_hh`` (H, H) — (n, H/n, H/n) with heads —
    biases per ``bias``.
    Carry: h (B..., H); ``y_t = h'``.
    """
    H = _checks.check_positive_int("hidden_size", hidden_size)
    if not callable(activation):
        activation = ACTIVATIONS[_checks.check_choice("activation", activation, ACTIVATIONS)]
    heads = base.check_heads(num_heads, H)
    opts = base.make_options(**options)
    dt = opts.dtype

    def init(key, input_size):
        base.check_init_args(key, input_size)
        k_w, k_b = jax.random.split(key)
        params = base.init_weights(k_w, input_size, H, H, 1, opts, heads)
        return params | base.init_biases(k_b, H, opts)

    def project(params, xs):
        return base.add_bias(base.matmul(xs, params["w_ih"], dt), params)

    def pointwise(params, carry, xp_t, hh_t):
        h = activation(xp_t + hh_t)
        return h, h

    def update(params, carry, xp_t, h_in):
        return pointwise(params, carry, xp_t, base.recurrent_product(h_in, params["w_hh"], dt))

    def step(params, carry, xp_t):
        return update(params, carry, xp_t, carry)

    return base.Cell(
        init=init,
        step=step,
        initial_carry=base.zeros_carry(H, opts.carry_dtype),
        project=project,
        read=base.default_read,
        update=update,
        pointwise=pointwise if heads is None else None,  # the fused VJP: one dense GEMM
        hidden_size=H,
        name="elman",
        compute_dtype=dt,
    )
