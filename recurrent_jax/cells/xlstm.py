r"""xLSTM cells (Beck et al. 2024, "xLSTM: Extended Long Short-Term Memory",
arXiv 2405.04517): mLSTM (matrix memory, recurrent and parallel forms that
agree) and sLSTM (scalar memory with block-diagonal recurrent heads).

Both use stabilised exponential input gates: with the stabiliser state
:math:`m_t = \max(\log f_t + m_{t−1}, \tilde ı_t)`, the gates
:math:`i'_t = \exp(\tilde ı_t − m_t)` and
:math:`f'_t = \exp(\log f_t + m_{t−1} − m_t)` never overflow, and the
normaliser n makes the output invariant to the stabilisation.
Forget gates are sigmoid (``log f = log σ(f̃)``) as in the paper's code, or
exponential with ``forget_gate="exp"`` (``log f = f̃``).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from recurrent_jax import _checks
from recurrent_jax.cells import base

Array = jax.Array


class MLSTMCarry(NamedTuple):
    """mLSTM state, flattened per head so every leaf is (B..., ·):
    ``c`` (B..., NH·DH·DH) the matrix memories, ``n`` (B..., NH·DH), ``m``
    (B..., NH) the stabilisers."""

    c: Array
    n: Array
    m: Array


class SLSTMCarry(NamedTuple):
    """sLSTM state: ``h``, cell ``c``, normaliser ``n``, stabiliser ``m``,
    each (B..., H)."""

    h: Array
    c: Array
    n: Array
    m: Array


def _log_forget(kind):
    _checks.check_choice("forget_gate", kind, ("sigmoid", "exp"))
    return jax.nn.log_sigmoid if kind == "sigmoid" else (lambda f: f)


def _heads(H, num_heads):
    _checks.check_positive_int("num_heads", num_heads)
    if H % num_heads:
        raise ValueError(f"num_heads: must divide hidden_size {H}, got {num_heads}")
    return num_heads, H // num_heads


def mlstm(
    hidden_size: int, *, num_heads: int = 1, forget_gate: str = "sigmoid", **options
) -> base.Cell:
    r"""An mLSTM cell, projections (q, k, v, ĩ, f̃, o); NH heads of DH = H/NH.

    .. math::
        q_t = x_t W_q\quad k_t = x_t W_k / \sqrt{DH}\quad v_t = x_t W_v
        \quad o_t = σ(x_t W_o + b_o)
        C_t = f'_t C_{t−1} + i'_t\, v_t k_t^⊤      n_t = f'_t n_{t−1} + i'_t k_t
        \tilde h_t = C_t q_t / \max(|n_t^⊤ q_t|, e^{−m_t})     h_t = o_t ⊙ \tilde h_t

    with scalar gates ĩ, f̃ per head (stabilised, see the module doc). All of
    it depends on x only, so ``mlstm_parallel`` computes the same outputs as
    a masked attention over the whole sequence.

    Params: ``w_ih`` (D, 4H + 2NH) ``[W_q, W_k, W_v, W_o, W_ĩ, W_f̃]``, biases
    per ``bias``. Carry: ``MLSTMCarry``; ``y_t = h_t`` (B..., H). There is no
    recurrent kernel, so ``recurrent_dropout`` does not apply.
    """
    H = _checks.check_positive_int("hidden_size", hidden_size)
    NH, DH = _heads(H, num_heads)
    log_f = _log_forget(forget_gate)
    opts = base.make_options(**options)
    dt = opts.dtype
    G = 4 * H + 2 * NH

    def init(key, input_size):
        base.check_init_args(key, input_size)
        k_w, k_b = jax.random.split(key)
        w_ih = base.draw(opts.kernel_init, k_w, (input_size, G), opts.param_dtype)
        return {"w_ih": w_ih} | base.init_biases(k_b, G, opts)

    def initial_carry(batch_shape, dtype=None):
        batch_shape = _checks.check_batch_shape("batch_shape", batch_shape)
        dtype = opts.carry_dtype if dtype is None else dtype
        zeros = lambda n: jnp.zeros((*batch_shape, n), dtype)  # noqa: E731
        return MLSTMCarry(zeros(NH * DH * DH), zeros(NH * DH), zeros(NH))

    def project(params, xs):
        return base.add_bias(base.matmul(xs, params["w_ih"], dt), params)

    def update(params, carry, xp_t, h_in):
        q, k, v, o, i_pre, f_log = split_projection(xp_t, NH, DH, log_f)
        batch = xp_t.shape[:-1]
        c = carry.c.reshape(*batch, NH, DH, DH)
        n = carry.n.reshape(*batch, NH, DH)
        m = jnp.maximum(f_log + carry.m, i_pre)
        f_gate, i_gate = jnp.exp(f_log + carry.m - m), jnp.exp(i_pre - m)
        c = f_gate[..., None, None] * c + i_gate[..., None, None] * (
            v[..., :, None] * k[..., None, :]
        )
        n = f_gate[..., None] * n + i_gate[..., None] * k
        num = jnp.einsum("...vk,...k->...v", c, q)
        den = jnp.maximum(jnp.abs(jnp.sum(n * q, -1)), jnp.exp(-m))
        h = o * (num / den[..., None]).reshape(*batch, H)
        return MLSTMCarry(c.reshape(*batch, -1), n.reshape(*batch, -1), m), h

    def step(params, carry, xp_t):
        return update(params, carry, xp_t, carry)

    return base.Cell(
        init=init,
        step=step,
        initial_carry=initial_carry,
        project=project,
        read=lambda carry: carry.n,
        update=update,
        hidden_size=H,
        name="mlstm",
        compute_dtype=dt,
    )


def split_projection(xp, num_heads, head_size, log_f):
    """(q, k/√DH, v) (..., NH, DH), o (..., H) gated, ĩ and log f (..., NH)."""
    H = num_heads * head_size
    xp = base.widen(xp)
    q, k, v, o = (xp[..., j * H : (j + 1) * H] for j in range(4))
    heads = lambda a: a.reshape(*a.shape[:-1], num_heads, head_size)  # noqa: E731
    i_pre, f_pre = xp[..., 4 * H : 4 * H + num_heads], xp[..., 4 * H + num_heads :]
    k = k / math.sqrt(head_size)
    return heads(q), heads(k), heads(v), jax.nn.sigmoid(o), i_pre, log_f(f_pre)


def mlstm_parallel(cell: base.Cell, params, xs, *, initial_carry=None, forget_gate="sigmoid"):
    r"""The mLSTM's parallel form: the same ``(final_carry, ys)`` as
    ``rj.unroll(cell, params, xs)`` (no masks), as one masked attention.

    .. math::
        \log D_{ts} = \sum_{u=s+1}^{t} \log f_u + \tilde ı_s \ (s ≤ t),\quad
        m_t = \max(\max_s \log D_{ts},\ \log F_{t0} + m_0)
        \tilde h_t = \frac{\sum_s e^{\log D_{ts} − m_t} (q_t·k_s) v_s
                     + e^{\log F_{t0} + m_0 − m_t} C_0 q_t}
                    {\max(|\sum_s e^{\log D_{ts} − m_t} (q_t·k_s)
                     + e^{\log F_{t0} + m_0 − m_t} n_0·q_t|,\ e^{−m_t})}

    Args:
      cell: an ``mlstm`` cell; params its params.
      xs: (B..., T, D).
      initial_carry: an ``MLSTMCarry`` (default zeros).
      forget_gate: the cell's ``forget_gate``.

    Cost O(T²) memory and work per head, fully parallel over T.
    """
    log_f = _log_forget(forget_gate)
    H = cell.hidden_size
    NH = (params["w_ih"].shape[-1] - 4 * H) // 2
    DH = H // NH
    batch, T = xs.shape[:-2], xs.shape[-2]
    carry0 = initial_carry
    if carry0 is None:
        carry0 = cell.initial_carry(batch, base.carry_dtype_of(cell, params))
    q, k, v, o, i_pre, f_log = split_projection(cell.project(params, xs), NH, DH, log_f)
    # time last for the (T, T) matrices: (..., NH, T)
    i_pre, f_log = jnp.moveaxis(i_pre, -2, -1), jnp.moveaxis(f_log, -2, -1)
    cum = jnp.cumsum(f_log, -1)  # log F_{t0}
    log_d = cum[..., :, None] - cum[..., None, :] + i_pre[..., None, :]
    causal = jnp.tril(jnp.ones((T, T), bool))
    log_d = jnp.where(base.lift(causal, log_d), log_d, -jnp.inf)
    m0 = carry0.m[..., None]  # (B..., NH, 1)
    log_init = cum + m0  # weight of the initial state at t
    m = jnp.maximum(jnp.max(log_d, -1), log_init)
    weights = jnp.exp(log_d - m[..., None])  # (B..., NH, T, T)
    w_init = jnp.exp(log_init - m)  # (B..., NH, T)
    qh, kh, vh = (jnp.moveaxis(a, -3, -2) for a in (q, k, v))  # (B..., NH, T, DH)
    scores = jnp.einsum("...td,...sd->...ts", qh, kh) * weights
    c0 = carry0.c.reshape(*batch, NH, DH, DH)
    n0 = carry0.n.reshape(*batch, NH, DH)
    num = jnp.einsum("...ts,...sd->...td", scores, vh)
    num = num + w_init[..., None] * jnp.einsum("...vk,...tk->...tv", c0, qh)
    den = jnp.sum(scores, -1) + w_init * jnp.einsum("...k,...tk->...t", n0, qh)
    den = jnp.maximum(jnp.abs(den), jnp.exp(-m))
    h_tilde = jnp.moveaxis(num / den[..., None], -2, -3).reshape(*batch, T, H)
    ys = o * h_tilde
    # final state: the last row of the decay matrix
    w_last, w0_last = weights[..., -1, :], w_init[..., -1]
    c_t = jnp.einsum("...s,...sv,...sk->...vk", w_last, vh, kh) + w0_last[..., None, None] * c0
    n_t = jnp.einsum("...s,...sk->...k", w_last, kh) + w0_last[..., None] * n0
    final = MLSTMCarry(c_t.reshape(*batch, -1), n_t.reshape(*batch, -1), m[..., -1])
    return final, ys


def slstm(
    hidden_size: int, *, num_heads: int = 1, forget_gate: str = "sigmoid", **options
) -> base.Cell:
    r"""An sLSTM cell, gate order (i, f, z, o), block-diagonal recurrence.

    .. math::
        \tilde g = x_t W_g + h_{t−1} R_g + b_g \quad (g ∈ \{i, f, z, o\},\
        R_g \text{ block-diagonal over NH heads})
        m_t = \max(\log f_t + m_{t−1}, \tilde ı_t)\quad
        i' = e^{\tilde ı_t − m_t}\quad f' = e^{\log f_t + m_{t−1} − m_t}
        c_t = f' c_{t−1} + i' \tanh(\tilde z_t)\quad n_t = f' n_{t−1} + i'
        h_t = σ(\tilde o_t) ⊙ c_t / n_t

    Params: ``w_ih`` (D, 4H), ``w_hh`` (NH, DH, 4, DH) (head j's block maps
    its DH units to its DH units of each gate), biases (4H,) per ``bias``.
    Carry: ``SLSTMCarry(h, c, n, m)``; ``y_t = h_t``.
    """
    H = _checks.check_positive_int("hidden_size", hidden_size)
    NH, DH = _heads(H, num_heads)
    log_f = _log_forget(forget_gate)
    opts = base.make_options(**options)
    dt = opts.dtype

    def init(key, input_size):
        base.check_init_args(key, input_size)
        k_w, k_r, k_b = jax.random.split(key, 3)
        w_ih = base.draw(opts.kernel_init, k_w, (input_size, 4 * H), opts.param_dtype)
        blocks = [
            base.draw(opts.recurrent_init, k, (DH, DH), opts.param_dtype)
            for k in jax.random.split(k_r, 4 * NH)
        ]
        w_hh = jnp.stack(blocks).reshape(4, NH, DH, DH).transpose(1, 2, 0, 3)
        return {"w_ih": w_ih, "w_hh": w_hh} | base.init_biases(k_b, 4 * H, opts)

    def initial_carry(batch_shape, dtype=None):
        batch_shape = _checks.check_batch_shape("batch_shape", batch_shape)
        zeros = jnp.zeros((*batch_shape, H), opts.carry_dtype if dtype is None else dtype)
        return SLSTMCarry(zeros, zeros, zeros, zeros)

    def project(params, xs):
        return base.add_bias(base.matmul(xs, params["w_ih"], dt), params)

    def update(params, carry, xp_t, h_in):
        heads = h_in.reshape(*h_in.shape[:-1], NH, DH)
        w = base.compute(params["w_hh"], dt)
        accumulate = base.carry_dtype(w.dtype)
        hh = jnp.einsum(
            "...nd,ndgk->...gnk", base.compute(heads, dt), w, preferred_element_type=accumulate
        )
        i_pre, f_pre, z, o = jnp.split(xp_t + hh.reshape(*h_in.shape[:-1], 4 * H), 4, -1)
        f_log = log_f(f_pre)
        m = jnp.maximum(f_log + carry.m, i_pre)
        f_gate, i_gate = jnp.exp(f_log + carry.m - m), jnp.exp(i_pre - m)
        c = f_gate * carry.c + i_gate * jnp.tanh(z)
        n = f_gate * carry.n + i_gate
        h = jax.nn.sigmoid(o) * c / n
        return SLSTMCarry(h, c, n, m), h

    def step(params, carry, xp_t):
        return update(params, carry, xp_t, carry.h)

    return base.Cell(
        init=init,
        step=step,
        initial_carry=initial_carry,
        project=project,
        read=base.default_read,
        update=update,
        hidden_size=H,
        name="slstm",
        compute_dtype=dt,
    )
