"""Long short-term memory (Hochreiter & Schmidhuber 1997), PyTorch/cuDNN form."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from recurrent_jax import _checks
from recurrent_jax.cells import base


def lstm(
    hidden_size: int,
    *,
    proj_size: int | None = None,
    peephole: bool = False,
    layer_norm: bool = False,
    forget_bias: float = 1.0,
    num_heads: int | None = None,
    activation: Callable = jnp.tanh,
    recurrent_activation: Callable = jax.nn.sigmoid,
    **options,
) -> base.Cell:
    r"""An LSTM cell, gates in PyTorch/cuDNN order (i, f, g, o).

    .. math::
        i = σ(x W_{ii} + h W_{hi} + b_i)      f = σ(x W_{if} + h W_{hf} + b_f)
        g = \tanh(x W_{ig} + h W_{hg} + b_g)  o = σ(x W_{io} + h W_{ho} + b_o)
        c' = f ⊙ c + i ⊙ g                   h' = o ⊙ \tanh(c')

    Options:
      proj_size: P; ``h' = (o ⊙ tanh c') W_hr`` (PyTorch LSTMP), so h and
        ``y`` have P features and ``w_hh`` has P rows.
      peephole: adds ``p_i ⊙ c`` to i, ``p_f ⊙ c`` to f and ``p_o ⊙ c'`` to o
        (Gers & Schmidhuber 2000), params ``w_peephole`` (3, H).
      layer_norm: normalises each gate's input and recurrent pre-activations
        separately and ``c'`` before its tanh (Ba et al. 2016, per gate as TF
        Addons' LayerNormLSTMCell); params ``ln_ih_scale``, ``ln_hh_scale``
        (4H,), ``ln_c_scale``, ``ln_c_bias`` (H,).
      forget_bias: initial value of the forget-gate bias (added to the
        input-side bias; ignored with ``bias="none"``).
      num_heads: n; W_hh block-diagonal, n independent recurrences of H/n
        units (as sLSTM and FlashRNN; the input projection stays dense).
        Not with ``proj_size``.
      activation / recurrent_activation: tanh / sigmoid by default.
      **options: ``base.CellOptions`` (bias mode, initialisers, dtypes).

    Params: ``w_ih`` (D, 4H), ``w_hh`` (K, 4H) with K = P or H — (n, H/n,
    4H/n) with heads — biases per ``bias``, plus the option params above.
    Carry: ``LSTMCarry(h, c)`` with h (B..., K) and c (B..., H); ``y_t = h'``.
    """
    H = _checks.check_positive_int("hidden_size", hidden_size)
    heads = base.check_heads(num_heads, H)
    if proj_size is not None and not (_checks.check_positive_int("proj_size", proj_size) < H):
        _checks.fail("proj_size", f"None or an int in [1, hidden_size={H}) (as PyTorch)", proj_size)
    _checks.check_bool("peephole", peephole)
    _checks.check_bool("layer_norm", layer_norm)
    _checks.check_number("forget_bias", forget_bias)
    if heads is not None and proj_size is not None:
        raise ValueError("num_heads: cannot be combined with proj_size (h has P != H units)")
    plain = (
        proj_size is None
        and not (peephole or layer_norm)
        and activation is jnp.tanh
        and recurrent_activation is jax.nn.sigmoid
    )
    P = H if proj_size is None else _checks.check_positive_int("proj_size", proj_size)
    opts = base.make_options(**options)
    dt = opts.dtype

    def init(key, input_size):
        base.check_init_args(key, input_size)
        k_w, k_b, k_r = jax.random.split(key, 3)
        offsets = jnp.zeros(4 * H).at[H : 2 * H].set(forget_bias)
        params = base.init_weights(k_w, input_size, P, H, 4, opts, heads)
        params |= base.init_biases(k_b, 4 * H, opts, offsets=offsets)
        if proj_size is not None:
            params["w_hr"] = base.draw(opts.kernel_init, k_r, (H, P), opts.param_dtype)
        if peephole:
            params["w_peephole"] = jnp.zeros((3, H), opts.param_dtype)
        if layer_norm:
            ones = lambda n: jnp.ones((n,), opts.param_dtype)  # noqa: E731
            params |= {"ln_ih_scale": ones(4 * H), "ln_hh_scale": ones(4 * H)}
            params |= {"ln_c_scale": ones(H), "ln_c_bias": jnp.zeros((H,), opts.param_dtype)}
        return params

    def initial_carry(batch_shape, dtype=None):
        batch_shape = _checks.check_batch_shape("batch_shape", batch_shape)
        dtype = opts.carry_dtype if dtype is None else dtype
        return base.LSTMCarry(
            jnp.zeros((*batch_shape, P), dtype), jnp.zeros((*batch_shape, H), dtype)
        )

    def project(params, xs):
        xp = base.matmul(xs, params["w_ih"], dt)
        if layer_norm:
            xp = base.layer_norm(xp, params["ln_ih_scale"], groups=4)
        return base.add_bias(xp, params)

    def pointwise(params, carry, xp_t, hh_t):
        if layer_norm:
            hh_t = base.layer_norm(hh_t, params["ln_hh_scale"], groups=4)
        i, f, g, o = jnp.split(xp_t + hh_t, 4, axis=-1)
        c = carry.c
        if peephole:
            p_i, p_f, p_o = (base.lift(p, c) for p in params["w_peephole"])
            i, f = i + p_i * c, f + p_f * c
        c_new = recurrent_activation(f) * c + recurrent_activation(i) * activation(g)
        if peephole:
            o = o + p_o * c_new
        c_out = c_new
        if layer_norm:
            c_out = base.layer_norm(c_new, params["ln_c_scale"], params["ln_c_bias"])
        h = recurrent_activation(o) * activation(c_out)
        if proj_size is not None:
            h = base.matmul(h, params["w_hr"], dt)
        return base.LSTMCarry(h, c_new), h

    def update(params, carry, xp_t, h_in):
        return pointwise(params, carry, xp_t, base.recurrent_product(h_in, params["w_hh"], dt))

    def step(params, carry, xp_t):
        return update(params, carry, xp_t, carry.h)

    return base.Cell(
        init=init,
        step=step,
        initial_carry=initial_carry,
        project=project,
        read=base.default_read,
        update=update,
        pointwise=pointwise if heads is None else None,  # the fused VJP: one dense GEMM
        hidden_size=P,
        name="lstm",
        compute_dtype=dt,
        cudnn_kernel="lstm" if plain and heads is None and dt in (None, jnp.float32) else None,
    )
