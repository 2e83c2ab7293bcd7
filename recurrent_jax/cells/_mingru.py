r"""minGRU and minLSTM (Feng et al. 2024, "Were RNNs All We Needed?",
arXiv 2410.01201): gates computed from x_t alone, so the recurrence is linear
in the carry and runs with ``impl="associative"``.

With ``log_space=True`` the candidate is made positive by
:math:`g(x) = x + 0.5` (x ≥ 0), :math:`σ(x)` (x < 0), and the parallel scan
composes :math:`\log a_t`, :math:`\log b_t` with log-sum-exp, which stays
finite at any T (the paper's log-space variant).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from recurrent_jax import _checks, parallel
from recurrent_jax.cells import base


def g(x):
    """The paper's positive candidate activation: x + 0.5 (x ≥ 0), σ(x) (x < 0)."""
    return jnp.where(x >= 0, jax.nn.relu(x) + 0.5, jax.nn.sigmoid(x))


def log_g(x):
    """``log g(x)``, computed without forming g for x < 0."""
    return jnp.where(x >= 0, jnp.log(jax.nn.relu(x) + 0.5), -jax.nn.softplus(-x))


def mingru(hidden_size: int, *, log_space: bool = False, **options) -> base.Cell:
    r"""A minGRU cell, gate order (z, h̃).

    .. math::
        z_t = σ(x_t W_z + b_z)      \tilde h_t = x_t W_h + b_h
        h_t = (1 − z_t) ⊙ h_{t−1} + z_t ⊙ \tilde h_t

    With ``log_space`` the candidate is :math:`g(x_t W_h + b_h)` (positive)
    and ``linear`` returns ``log a = −softplus(k)``, ``log b = −softplus(−k)
    + log g(\tilde h)``, k the z pre-activation.

    Args:
      hidden_size: H.
      log_space: the paper's log-space variant (see the module doc).
      **options: ``base.CellOptions`` (bias mode, initialisers, dtypes);
        every bias is additive, so "double" and "single" agree.

    Params: ``w_ih`` (D, 2H), biases (2H,) per ``bias``. Carry: h (B..., H);
    ``y_t = h_t``. There is no recurrent kernel, so ``recurrent_dropout``
    has no effect.
    """
    H = _checks.check_positive_int("hidden_size", hidden_size)
    _checks.check_bool("log_space", log_space)
    opts = base.make_options(**options)

    def gates(xp):
        k, cand = jnp.split(base.widen(xp), 2, axis=-1)
        return k, cand

    def linear(params, xp):
        k, cand = gates(xp)
        if log_space:
            return parallel.LogCoefficients(-jax.nn.softplus(k), -jax.nn.softplus(-k) + log_g(cand))
        z = jax.nn.sigmoid(k)
        return 1.0 - z, z * cand

    def update(params, h, xp_t, h_in):
        k, cand = gates(xp_t)
        z = jax.nn.sigmoid(k)
        h = (1.0 - z) * h + z * (g(cand) if log_space else cand)
        return h, h

    return _linear_cell(H, 2, opts, linear, update, "mingru")


def minlstm(hidden_size: int, *, log_space: bool = False, **options) -> base.Cell:
    r"""A minLSTM cell, gate order (f, i, h̃).

    .. math::
        f_t = σ(x_t W_f + b_f)   i_t = σ(x_t W_i + b_i)   \tilde h_t = x_t W_h + b_h
        f'_t = f_t / (f_t + i_t)      i'_t = i_t / (f_t + i_t)
        h_t = f'_t ⊙ h_{t−1} + i'_t ⊙ \tilde h_t

    With ``log_space`` the candidate is :math:`g(\tilde h_t)` and
    ``log f' = −softplus(d)``, ``log i' = −softplus(−d)`` with
    ``d = softplus(−k_f) − softplus(−k_i)`` (the paper's stable form).

    Args, params and carry as ``mingru`` with ``w_ih`` (D, 3H).
    """
    H = _checks.check_positive_int("hidden_size", hidden_size)
    _checks.check_bool("log_space", log_space)
    opts = base.make_options(**options)

    def log_gates(xp):
        k_f, k_i, cand = jnp.split(base.widen(xp), 3, axis=-1)
        d = jax.nn.softplus(-k_f) - jax.nn.softplus(-k_i)
        return -jax.nn.softplus(d), -jax.nn.softplus(-d), cand

    def linear(params, xp):
        log_f, log_i, cand = log_gates(xp)
        if log_space:
            return parallel.LogCoefficients(log_f, log_i + log_g(cand))
        return jnp.exp(log_f), jnp.exp(log_i) * cand

    def update(params, h, xp_t, h_in):
        k_f, k_i, cand = jnp.split(base.widen(xp_t), 3, axis=-1)
        f, i = jax.nn.sigmoid(k_f), jax.nn.sigmoid(k_i)
        h = (f * h + i * (g(cand) if log_space else cand)) / (f + i)
        return h, h

    return _linear_cell(H, 3, opts, linear, update, "minlstm")


def _linear_cell(H, num_gates, opts, linear, update, name):
    dt = opts.dtype

    def init(key, input_size):
        base.check_init_args(key, input_size)
        k_w, k_b = jax.random.split(key)
        w_ih = base.draw(opts.kernel_init, k_w, (input_size, num_gates * H), opts.param_dtype)
        return {"w_ih": w_ih} | base.init_biases(k_b, num_gates * H, opts)

    def project(params, xs):
        return base.add_bias(base.matmul(xs, params["w_ih"], dt), params)

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
        name=name,
        compute_dtype=dt,
        linear=linear,
    )
