r"""The selective state-space model S6 of Mamba (Gu & Dao 2023, "Mamba:
Linear-Time Sequence Modeling with Selective State Spaces", arXiv
2312.00752): a diagonal SSM whose step size Δ and matrices B, C are
functions of the input. Linear in the carry with per-step coefficients, so
it runs with ``impl="associative"`` and ``"chunked"``; on its own terms
(``Cell.selective``) with ``impl="selective"``, Mamba's scan with a
chunked hand-written gradient (``recurrent_jax.selective``).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from recurrent_jax import _checks, selective
from recurrent_jax.cells import base

# PyTorch's nn.Linear default, U(±1/√fan_in): Mamba's x_proj and in_proj init.
TORCH_LINEAR_INIT = jax.nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
_NOT_OPTIONS = ("bias", "recurrent_init", "bias_init")  # no such weights in S6


def s6(
    hidden_size: int,
    *,
    state_size: int = 16,
    dt_rank: int | str = "auto",
    dt_min: float = 0.001,
    dt_max: float = 0.1,
    dt_init_floor: float = 1e-4,
    dt_scale: float = 1.0,
    dt_bias: bool = True,
    dt_softplus: bool = True,
    use_d: bool = True,
    gate: bool = False,
    input_proj: bool = True,
    **options,
) -> base.Cell:
    r"""An S6 cell: H channels, each a diagonal SSM of N real states.

    The continuous system h'(τ) = A h(τ) + B x(τ), y = C h (Eq. 1a-b) is
    discretised per step (Eq. 2a-b) with the selection mechanism of
    Algorithm 2 (Δ, B, C from the input; s_Δ a rank-R projection as in §3.6):

    .. math::
        Δ_t = \mathrm{softplus}(u_t W_x^{Δ} W_{dt} + b_{dt}) ∈ ℝ^H
        \qquad B_t = u_t W_x^B,\ C_t = u_t W_x^C ∈ ℝ^N
        A = −\exp(A_{log}) ∈ ℝ^{H×N}
        h_t[d, n] = \exp(Δ_t[d] A[d, n])\, h_{t−1}[d, n] + Δ_t[d]\, B_t[n]\, u_t[d]
        y_t[d] = \textstyle\sum_n C_t[n]\, h_t[d, n] + D[d]\, u_t[d]
        \qquad (·\, \mathrm{silu}(z_t[d]) \text{ with } \texttt{gate})

    Discretisation is that of Mamba's reference scan
    (``selective_scan_ref``): Ā = exp(ΔA) is Eq. 4's zero-order hold, but
    B̄ = ΔB is the first-order (Euler) term, not Eq. 4's exact
    (ΔA)⁻¹(exp(ΔA) − I)ΔB. Initialisation as Mamba's: A_log[d, n] = log n
    (S4D-Real, A = −(n)), D = 1, W_dt uniform in ±dt_scale/√R, b_dt so that
    softplus(b_dt) is log-uniform in [dt_min, dt_max] (floored at
    ``dt_init_floor``).

    Args:
      hidden_size: H, the channels (the SSM's D in the paper).
      state_size: N, states per channel (16 in Mamba).
      dt_rank: R, the rank of Δ's projection; "auto" is ⌈H/16⌉ (Mamba's
        block passes ⌈d_model/16⌉ itself).
      dt_min, dt_max, dt_init_floor, dt_scale: Δ's initialisation.
      dt_bias: learn the Δ bias b_dt (False: none, as the reference's
        ``delta_bias=None``).
      dt_softplus: apply softplus to Δ (False: Δ is the projection itself).
      use_d: the skip D u (False: none).
      gate: multiply the output by silu(z).
      input_proj: True: u = x W_u (and z = x W_z with ``gate``), any input
        size; False: the input is u itself (H features), or [u, z] (2H)
        with ``gate`` — the arguments of the reference scan, as Mamba's
        block feeds them (``rj.layers.mamba_block``).
      **options: ``kernel_init`` (of W_u, W_z and W_x; default PyTorch's
        Linear init U(±1/√fan_in), as Mamba), ``param_dtype``, ``dtype``
        (the matmuls' compute dtype; Δ, the state and y stay fp32).

    Params: ``w_ih`` (D, H) ``[W_u]`` or (D, 2H) ``[W_u, W_z]`` (only with
    ``input_proj``); ``w_x`` (H, R + 2N) ``[W_x^Δ, W_x^B, W_x^C]``; ``w_dt``
    (R, H); ``dt_bias`` (H,); ``a_log`` (H, N); ``d`` (H,).
    Carry: h (B..., H·N), channel-major (``h.reshape(..., H, N)`` is
    h[d, n]); ``y_t`` (B..., H). No recurrent kernel, so
    ``recurrent_dropout`` has no effect.
    """
    H = _checks.check_positive_int("hidden_size", hidden_size)
    N = _checks.check_positive_int("state_size", state_size)
    R = math.ceil(H / 16) if dt_rank == "auto" else _checks.check_positive_int("dt_rank", dt_rank)
    _check_dt_range(dt_min, dt_max, dt_init_floor, dt_scale)
    flags = dict(dt_bias=dt_bias, dt_softplus=dt_softplus, use_d=use_d, gate=gate)
    for name, value in (flags | {"input_proj": input_proj}).items():
        _checks.check_bool(name, value)
    opts = _options(options)
    dt, pdt = opts.dtype, opts.param_dtype
    n_in = 2 * H if gate else H  # the u and z features
    width = 2 * H + 2 * N  # of [u, Δ, B, C] in the projected input

    def init(key, input_size):
        features = base.check_init_args(key, input_size)
        if not input_proj and features != n_in:
            expected = "2 * hidden_size ([u, z], gate=True)" if gate else "hidden_size (u)"
            _checks.fail("input_size", f"{expected} = {n_in} with input_proj=False", features)
        k_in, k_x, k_dt, k_b = jax.random.split(key, 4)
        params = {}
        if input_proj:
            params["w_ih"] = base.draw(opts.kernel_init, k_in, (features, n_in), pdt)
        params["w_x"] = base.draw(opts.kernel_init, k_x, (H, R + 2 * N), pdt)
        scale = dt_scale / math.sqrt(R)
        params["w_dt"] = jax.random.uniform(k_dt, (R, H), minval=-scale, maxval=scale).astype(pdt)
        if dt_bias:
            params["dt_bias"] = _dt_bias_init(k_b, H, dt_min, dt_max, dt_init_floor).astype(pdt)
        params["a_log"] = jnp.log(jnp.tile(jnp.arange(1.0, N + 1.0), (H, 1))).astype(pdt)
        if use_d:
            params["d"] = jnp.ones((H,), pdt)
        return params

    def project(params, xs):
        """(B..., T, D) -> (B..., T, 2H + 2N [+ H]): ``[u, Δ, B, C (, z)]``."""
        sd = base.carry_dtype(xs.dtype, params["w_x"].dtype)
        x = base.matmul(xs, params["w_ih"], dt) if input_proj else xs
        u, z = (x[..., :H], x[..., H:]) if gate else (x, None)
        x_dbl = base.matmul(u, params["w_x"], dt)
        delta = base.matmul(x_dbl[..., :R], params["w_dt"], dt).astype(sd)
        if dt_bias:
            delta = delta + base.lift(params["dt_bias"], delta)
        if dt_softplus:
            delta = jax.nn.softplus(delta)
        parts = [u, delta, x_dbl[..., R:]] + ([z] if gate else [])
        return jnp.concatenate([p.astype(sd) for p in parts], axis=-1)

    def split(xp):
        u, delta, b_t, c_t = jnp.split(xp[..., :width], [H, 2 * H, 2 * H + N], axis=-1)
        return u, delta, b_t, c_t, (xp[..., width:] if gate else None)

    def coefficients(params, xp):
        """(ā, b̄ u) (..., H, N): exp(Δ A) and Δ B u."""
        u, delta, b_t, _, _ = split(xp)
        a = -jnp.exp(base.lift(params["a_log"].astype(xp.dtype), delta[..., None]))
        return jnp.exp(delta[..., None] * a), (delta * u)[..., None] * b_t[..., None, :]

    def linear(params, xp):
        a, b = coefficients(params, xp)
        return a.reshape(*a.shape[:-2], H * N), b.reshape(*b.shape[:-2], H * N)

    def readout(params, xp, y):
        """y_t from Σ_n C_t h_t: the skip D u_t and the gate silu(z_t)."""
        u, _, _, _, z = split(xp)
        if use_d:
            y = y + u * base.lift(params["d"].astype(u.dtype), u)
        if gate:
            y = y * jax.nn.silu(z)
        return y

    def update(params, h, xp_t, h_in):
        xp_t = xp_t.astype(base.carry_dtype(xp_t.dtype, h.dtype))
        a, b = coefficients(params, xp_t)
        state = a * h.reshape(a.shape).astype(a.dtype) + b
        c_t = split(xp_t)[3]
        y = jnp.sum(state * c_t[..., None, :], axis=-1)  # elementwise: exact on any device
        return state.reshape(h.shape), readout(params, xp_t, y)

    def terms(params, xp):
        """``impl="selective"``'s view of the projected inputs (T, B..., G)."""
        u, delta, b_t, c_t, _ = split(xp)
        a = -jnp.exp(params["a_log"].astype(xp.dtype))
        return selective.SelectiveTerms(a, u, delta, b_t, c_t), functools.partial(readout, params)

    def step(params, h, xp_t):
        return update(params, h, xp_t, h)

    return base.Cell(
        init=init,
        step=step,
        initial_carry=base.zeros_carry(H * N),
        project=project,
        read=base.default_read,
        update=update,
        hidden_size=H,
        name="s6",
        compute_dtype=dt,
        linear=linear,
        selective=terms,
    )


def _check_dt_range(dt_min, dt_max, dt_init_floor, dt_scale) -> None:
    for name, value in dict(dt_min=dt_min, dt_max=dt_max, dt_scale=dt_scale).items():
        _checks.check_positive(name, value)
    _checks.check_non_negative("dt_init_floor", dt_init_floor)
    if not dt_min <= dt_max:
        _checks.fail("dt_min, dt_max", "dt_min <= dt_max", (dt_min, dt_max))


def _options(options) -> base.CellOptions:
    """``base.CellOptions`` without the ones S6 has no weights for, and
    PyTorch's Linear init as the default ``kernel_init``."""
    for name in _NOT_OPTIONS:
        if name in options:
            _checks.fail(
                name,
                "no value (S6 has no such weights; its one bias is the Δ bias, dt_bias=)",
                options[name],
            )
    return base.make_options(**{"kernel_init": TORCH_LINEAR_INIT, **options})


def _dt_bias_init(key, size, dt_min, dt_max, floor):
    """b with softplus(b) = Δ₀, Δ₀ log-uniform in [dt_min, dt_max] (floored)."""
    log_dt = jax.random.uniform(key, (size,), minval=math.log(dt_min), maxval=math.log(dt_max))
    dt0 = jnp.maximum(jnp.exp(log_dt), floor)
    return dt0 + jnp.log(-jnp.expm1(-dt0))  # softplus⁻¹
