"""Gated recurrent unit (Cho et al. 2014), PyTorch/cuDNN gate order (r, z, n)."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from recurrent_jax import _checks
from recurrent_jax.cells import base


def gru(
    hidden_size: int,
    *,
    reset_after: bool = True,
    num_heads: int | None = None,
    activation: Callable = jnp.tanh,
    recurrent_activation: Callable = jax.nn.sigmoid,
    **options,
) -> base.Cell:
    r"""A GRU cell.

    .. math::
        r = σ(x W_{ir} + b_{ir} + h W_{hr} + b_{hr})
        z = σ(x W_{iz} + b_{iz} + h W_{hz} + b_{hz})
        n = \tanh(x W_{in} + b_{in} + r ⊙ (h W_{hn} + b_{hn}))   (reset_after)
        n = \tanh(x W_{in} + b_{in} + (r ⊙ h) W_{hn} + b_{hn})   (reset before)
        h' = (1 − z) ⊙ n + z ⊙ h

    Args:
      hidden_size: H.
      reset_after: True applies the reset gate after the recurrent matmul
        (PyTorch, cuDNN, Keras default); False before it (Cho et al. 2014,
        Keras ``reset_after=False``, D2L).
      num_heads: n; W_hh block-diagonal, n independent recurrences of H/n
        units (FlashRNN's heads; the input projection stays dense). Needs
        ``reset_after``.
      activation / recurrent_activation: tanh / sigmoid by default.
      **options: ``base.CellOptions`` (bias mode, initialisers, dtypes).

    Params: ``w_ih`` (D, 3H), ``w_hh`` (H, 3H) — (n, H/n, 3H/n) with heads —
    biases per ``bias`` (with ``bias="single"`` there is no ``b_hn`` term).
    Carry: h (B..., H); y_t = h'.
    """
    H = _checks.check_positive_int("hidden_size", hidden_size)
    heads = base.check_heads(num_heads, H)
    _checks.check_bool("reset_after", reset_after)
    if heads is not None and not reset_after:
        raise ValueError("num_heads: needs reset_after=True (the reset gate after W_hh)")
    opts = base.make_options(**options)
    dt = opts.dtype
    keep_hn = reset_after and opts.bias == "double"
    act, sig = activation, recurrent_activation
    plain = reset_after and act is jnp.tanh and sig is jax.nn.sigmoid

    def init(key, input_size):
        base.check_init_args(key, input_size)
        k_w, k_b = jax.random.split(key)
        params = base.init_weights(k_w, input_size, H, H, 3, opts, heads)
        return params | base.init_biases(k_b, 3 * H, opts)

    def project(params, xs):
        xp = base.matmul(xs, params["w_ih"], dt)
        if keep_hn:  # b_hn sits inside r ⊙ (...), so it stays in the step
            bias = params["b_ih"] + params["b_hh"].at[2 * H :].set(0.0)
            return xp + base.lift(bias, xp)
        return base.add_bias(xp, params)

    def pointwise(params, h, xp_t, hh_t):
        x_r, x_z, x_n = jnp.split(xp_t, 3, axis=-1)
        h_r, h_z, h_n = jnp.split(hh_t, 3, axis=-1)
        if keep_hn:
            h_n = h_n + base.lift(params["b_hh"][2 * H :], h_n)
        r, z = sig(x_r + h_r), sig(x_z + h_z)
        n = act(x_n + r * h_n)
        h = (1.0 - z) * n + z * h
        return h, h

    def update_after(params, h, xp_t, h_in):
        return pointwise(params, h, xp_t, base.recurrent_product(h_in, params["w_hh"], dt))

    def update_before(params, h, xp_t, h_in):
        x_r, x_z, x_n = jnp.split(xp_t, 3, axis=-1)
        w_rz, w_n = params["w_hh"][:, : 2 * H], params["w_hh"][:, 2 * H :]
        h_r, h_z = jnp.split(base.matmul(h_in, w_rz, dt), 2, axis=-1)
        r, z = sig(x_r + h_r), sig(x_z + h_z)
        n = act(x_n + base.matmul(r * h_in, w_n, dt))
        h = (1.0 - z) * n + z * h
        return h, h

    update = update_after if reset_after else update_before

    def step(params, h, xp_t):
        return update(params, h, xp_t, h)

    return base.Cell(
        init=init,
        step=step,
        initial_carry=base.zeros_carry(H, opts.carry_dtype),
        project=project,
        read=base.default_read,
        update=update,
        pointwise=pointwise if reset_after and heads is None else None,
        hidden_size=H,
        name="gru",
        compute_dtype=dt,
        cudnn_kernel="gru" if plain and heads is None and dt in (None, jnp.float32) else None,
    )
