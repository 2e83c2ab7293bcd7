"""``impl="cudnn"``: a plain LSTM layer through cuDNN's fused RNN kernel
(``jax.experimental.rnn.lstm``), forward and backward.

The kernel computes the same equations as ``rj.cells.lstm`` (gates i, f, g,
o; PyTorch's weight layout), so the params pass through a cheap repacking
into its flat weight vector. Its limits are the kernel's: a CUDA GPU, fp32,
one cell with ``Cell.cudnn_kernel == "lstm"``, prefix padding given as
``seq_lengths``, no regulariser on the carry, no ``remat`` (under
``jax.checkpoint`` the kernel's gradients came out wrong on an H100), and no
``jax.vmap`` (the
primitive has no batching rule; sweeps vmap the training step, which is why
``impl="auto"`` never picks it).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from recurrent_jax.cells.base import Cell, LSTMCarry


def blockers(cell: Cell, params, xs, options) -> list[str]:
    """Why ``impl="cudnn"`` cannot run this call (empty: it can)."""
    found = []
    if jax.default_backend() != "gpu":
        found.append(f"it needs a CUDA GPU, the default backend is {jax.default_backend()!r}")
    if cell.cudnn_kernel != "lstm":
        found.append(
            f"the {cell.name} cell has no cuDNN kernel (a plain fp32 LSTM: default "
            "activations, no proj_size, peephole or layer_norm)"
        )
    dtypes = {jnp.dtype(a.dtype) for a in jax.tree_util.tree_leaves(params)} | {xs.dtype}
    if dtypes != {jnp.dtype(jnp.float32)}:
        found.append(f"it runs in float32 only, got dtypes {sorted(map(str, dtypes))}")
    for name, active in options.items():
        if active:
            found.append(f"`{name}` is set")
    return found


def flat_weights(params) -> jax.Array:
    """Params of one LSTM cell as the kernel's flat vector:
    ``W_ih (4H, D), W_hh (4H, H), b_ih (4H,), b_hh (4H,)`` raveled in order
    (a single bias goes in ``b_ih``; no bias gives zeros)."""
    w_ih, w_hh = params["w_ih"], params["w_hh"]
    zeros = jnp.zeros(w_hh.shape[1:], w_hh.dtype)
    b_ih = params.get("b_ih", params.get("b", zeros))
    b_hh = params.get("b_hh", zeros)
    return jnp.concatenate([w_ih.T.ravel(), w_hh.T.ravel(), b_ih, b_hh])


def cudnn_lstm(params, carry0: LSTMCarry, xs, lengths):
    """Runs the kernel over time-major ``xs`` (T, B..., D).

    Args:
      params: ``rj.cells.lstm`` params (fp32).
      carry0: ``LSTMCarry`` with leaves (B..., H).
      xs: (T, B..., D) inputs.
      lengths: int (B...) valid steps per sequence, in [0, T].

    Returns:
      ``(final_carry, ys)`` with ys (T, B..., H), zero at padded steps, and
      the carry after each sequence's last valid step (``carry0`` for
      length 0), as the scan gives.
    """
    from jax.experimental import rnn

    num_steps, batch_shape, features = xs.shape[0], xs.shape[1:-1], xs.shape[-1]
    hidden = carry0.h.shape[-1]
    flat = lambda a: a.reshape(-1, a.shape[-1])  # noqa: E731
    x = jnp.moveaxis(xs, 0, -2).reshape(-1, num_steps, features)
    lengths = lengths.reshape(-1).astype(jnp.int32)
    # The kernel needs at least one step per sequence; a length-0 sequence
    # reads one step whose results are discarded below.
    run_lengths = jnp.maximum(lengths, 1)
    ys, h_n, c_n = rnn.lstm(
        x,
        flat(carry0.h)[None],
        flat(carry0.c)[None],
        flat_weights(params),
        run_lengths,
        features,
        hidden,
        1,
        0.0,
        False,
    )
    empty = (lengths == 0)[:, None]
    final = LSTMCarry(
        jnp.where(empty, flat(carry0.h), h_n[0]).reshape(*batch_shape, hidden),
        jnp.where(empty, flat(carry0.c), c_n[0]).reshape(*batch_shape, hidden),
    )
    ys = jnp.where(jnp.arange(num_steps)[None, :, None] < lengths[:, None, None], ys, 0.0)
    ys = jnp.moveaxis(ys.reshape(*batch_shape, num_steps, hidden), -2, 0)
    return final, ys
