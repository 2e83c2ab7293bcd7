"""Convolutional recurrences: ConvLSTM (Shi et al. 2015) and ConvGRU
(Ballas et al. 2016), over any number of spatial axes, channels last.

The dense cells' products ``x W`` and ``h W`` become "same"-padded
convolutions ``x ∗ K`` and ``h ∗ K``, so every carry is a feature map:
inputs (B..., T, *spatial, C), carry leaves and outputs (B..., *spatial, F).
``project`` convolves the inputs of all steps at once (hoisted out of the
loop, as the dense cells' input GEMM); the step convolves only h. Each
convolution is one matmul of the input's patches (``conv_patches``): inside
a loop (the engine's scan, a training loop's), the gradients of XLA's CPU
convolutions are an order of magnitude slower (0.94 s against 0.06 s for
a ConvLSTM layer's gradient at B=16, T=9, 16×16×16).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from recurrent_jax import _checks
from recurrent_jax.cells import base


def conv_lstm(
    features: int,
    kernel_size: int | Sequence[int],
    *,
    spatial_dims: int | None = None,
    forget_bias: float = 1.0,
    **options,
) -> base.Cell:
    r"""A ConvLSTM cell, gates in PyTorch order (i, f, g, o).

    .. math::
        i = σ(x ∗ K_{ii} + h ∗ K_{hi} + b_i)      f = σ(x ∗ K_{if} + h ∗ K_{hf} + b_f)
        g = \tanh(x ∗ K_{ig} + h ∗ K_{hg} + b_g)  o = σ(x ∗ K_{io} + h ∗ K_{ho} + b_o)
        c' = f ⊙ c + i ⊙ g                       h' = o ⊙ \tanh(c')

    (Keras ``ConvLSTM2D`` without peepholes; ∗ a stride-1 "same"
    convolution.)

    Args:
      features: F, the channels of h and c.
      kernel_size: a tuple, one size per spatial axis, or an int with
        ``spatial_dims``.
      spatial_dims: S when ``kernel_size`` is an int.
      forget_bias: initial forget-gate bias (added to the input-side bias).
      **options: ``base.CellOptions`` (bias mode, initialisers, dtypes).

    Params: ``k_ih`` (*kernel, C, 4F), ``k_hh`` (*kernel, F, 4F) in HWIO
    layout, biases (4F) per ``bias``. Carry: ``LSTMCarry(h, c)``, each
    (B..., *spatial, F); ``y_t = h'``.
    """
    F = _checks.check_positive_int("features", features)
    kernel = _kernel_shape(kernel_size, spatial_dims)
    _checks.check_number("forget_bias", forget_bias)
    opts = base.make_options(**options)

    def init(key, input_size):
        offsets = jnp.zeros(4 * F).at[F : 2 * F].set(forget_bias)
        return _init(key, input_size, F, kernel, 4, opts, offsets)

    def project(params, xs):
        return base.add_bias(conv_patches(xs, params["k_ih"], opts.dtype), params)

    def step(params, carry, xp_t):
        return update(params, carry, xp_t, carry.h)

    def update(params, carry, xp_t, h_in):
        gates = xp_t + conv_patches(h_in, params["k_hh"], opts.dtype)
        i, f, g, o = jnp.split(gates, 4, axis=-1)
        c = jax.nn.sigmoid(f) * carry.c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return base.LSTMCarry(h, c), h

    def initial_carry(shape, dtype=None):  # shape: (*batch, *spatial)
        shape = _checks.check_batch_shape("batch_shape", shape)
        zeros = jnp.zeros((*shape, F), opts.carry_dtype if dtype is None else dtype)
        return base.LSTMCarry(zeros, zeros)

    return base.Cell(
        init=init,
        step=step,
        initial_carry=initial_carry,
        project=project,
        update=update,
        hidden_size=F,
        name="conv_lstm",
        compute_dtype=opts.dtype,
        spatial_dims=len(kernel),
    )


def conv_gru(
    features: int, kernel_size: int | Sequence[int], *, spatial_dims: int | None = None, **options
) -> base.Cell:
    r"""A ConvGRU cell, gates in PyTorch order (r, z, n), the reset gate
    applied after the recurrent convolution (as ``rj.cells.gru``).

    .. math::
        r = σ(x ∗ K_{ir} + b_{ir} + h ∗ K_{hr} + b_{hr})
        z = σ(x ∗ K_{iz} + b_{iz} + h ∗ K_{hz} + b_{hz})
        n = \tanh(x ∗ K_{in} + b_{in} + r ⊙ (h ∗ K_{hn} + b_{hn}))
        h' = (1 − z) ⊙ n + z ⊙ h

    Args and params as ``conv_lstm`` with 3F gate channels. Carry: h
    (B..., *spatial, F); ``y_t = h'``.
    """
    F = _checks.check_positive_int("features", features)
    kernel = _kernel_shape(kernel_size, spatial_dims)
    opts = base.make_options(**options)

    def init(key, input_size):
        return _init(key, input_size, F, kernel, 3, opts, None)

    def project(params, xs):  # b_hn stays inside r ⊙ (...), in the step
        xp = conv_patches(xs, params["k_ih"], opts.dtype)
        if "b_hh" not in params:
            return base.add_bias(xp, params)
        return xp + base.lift(params["b_ih"] + params["b_hh"].at[2 * F :].set(0.0), xp)

    def update(params, carry, xp_t, h_in):
        hh = conv_patches(h_in, params["k_hh"], opts.dtype)
        if "b_hh" in params:  # b_hn: the part of b_hh inside r ⊙ (...)
            hh = hh + base.lift(params["b_hh"].at[: 2 * F].set(0.0), hh)
        x_r, x_z, x_n = jnp.split(xp_t, 3, axis=-1)
        h_r, h_z, h_n = jnp.split(hh, 3, axis=-1)
        r = jax.nn.sigmoid(x_r + h_r)
        z = jax.nn.sigmoid(x_z + h_z)
        n = jnp.tanh(x_n + r * h_n)
        h = (1.0 - z) * n + z * carry
        return h, h

    return base.Cell(
        init=init,
        step=lambda params, carry, xp_t: update(params, carry, xp_t, carry),
        initial_carry=base.zeros_carry(F, opts.carry_dtype),  # over (*batch, *spatial)
        project=project,
        update=update,
        hidden_size=F,
        name="conv_gru",
        compute_dtype=opts.dtype,
        spatial_dims=len(kernel),
    )


# --- shared ---------------------------------------------------------------------


def _kernel_shape(kernel_size, spatial_dims) -> tuple[int, ...]:
    if isinstance(kernel_size, int) and not isinstance(kernel_size, bool):
        if spatial_dims is None:
            raise ValueError(
                f"kernel_size: an int ({kernel_size}) needs spatial_dims; or give one size "
                "per spatial axis, e.g. (3, 3)"
            )
        _checks.check_positive_int("spatial_dims", spatial_dims)
        kernel_size = (kernel_size,) * spatial_dims
    kernel = tuple(kernel_size)
    if not kernel or not all(isinstance(k, int) and k >= 1 and k % 2 == 1 for k in kernel):
        raise ValueError(
            f"kernel_size: expected odd positive sizes (a 'same' convolution centred on "
            f"each position), got {kernel_size!r}"
        )
    if spatial_dims is not None and spatial_dims != len(kernel):
        raise ValueError(f"spatial_dims: {spatial_dims} but kernel_size has {len(kernel)} sizes")
    return kernel


def _init(key, input_size, features, kernel, num_gates, opts, offsets):
    base.check_init_args(key, input_size)
    k_ih, k_hh, k_b = jax.random.split(key, 3)
    gates = num_gates * features
    dt = opts.param_dtype
    params = {
        "k_ih": base.draw(opts.kernel_init, k_ih, (*kernel, input_size, gates), dt),
        "k_hh": base.draw(opts.recurrent_init, k_hh, (*kernel, features, gates), dt),
    }
    return params | base.init_biases(k_b, gates, opts, offsets=offsets)


def conv_patches(x, kernel, dtype):
    """Stride-1 "same" convolution of x (N..., *spatial, C) with an HWIO
    ``kernel`` (*k, C, O), leading axes batch, as one matmul: the k₁·k₂·…
    shifted copies of x (zero-padded) side by side, times the kernel
    flattened to (k…·C, O); accumulated as ``base.matmul`` does."""
    spatial = kernel.ndim - 2
    sizes, extent = kernel.shape[:spatial], x.shape[x.ndim - spatial - 1 : -1]
    lead = x.ndim - spatial - 1
    padded = jnp.pad(x, [(0, 0)] * lead + [(k // 2, k // 2) for k in sizes] + [(0, 0)])
    shifted = [
        padded[
            (Ellipsis, *(slice(o, o + n) for o, n in zip(offset, extent, strict=True)), slice(None))
        ]
        for offset in itertools.product(*(range(k) for k in sizes))
    ]
    patches = jnp.concatenate(shifted, axis=-1)
    return base.matmul(patches, kernel.reshape(-1, kernel.shape[-1]), dtype)
