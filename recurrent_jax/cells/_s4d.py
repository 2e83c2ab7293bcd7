r"""S4D (Gu, Gupta, Goel & Ré 2022, "On the Parameterization and
Initialization of Diagonal State Space Models", NeurIPS, arXiv 2206.11893):
H independent single-input single-output SSMs, one per channel, each a
complex diagonal system of N/2 modes whose conjugates are implied. Linear
in the carry, so it runs with ``impl="associative"`` and ``"chunked"``;
time-invariant, so also as a convolution (``impl="fft"``).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from recurrent_jax import _checks, convolution
from recurrent_jax.cells import _ssm, base

INITS = ("lin", "inv")


def s4d(
    hidden_size: int,
    *,
    state_size: int = 64,
    init: str = "lin",
    discretization: str = "zoh",
    dt_min: float = 1e-3,
    dt_max: float = 1e-1,
    **options,
) -> base.Cell:
    r"""An S4D cell: for each channel h = 1..H and mode n = 1..N/2,

    .. math::
        A_{hn} = −\exp(a^{re}_{hn}) + i\, a^{im}_{hn}        Δ_h = \exp(\log Δ_h)
        x_{k,hn} = Ā_{hn} x_{k−1,hn} + B̄_{hn} u_{k,h}
        y_{k,h} = 2\,\mathrm{Re}\big(\textstyle\sum_n C_{hn} x_{k,hn}\big) + D_h u_{k,h}

    the paper's continuous system x' = Ax + Bu, y = Cx + Du (§2) made
    diagonal, discretised per channel by ZOH or the bilinear transform (§3;
    ``_ssm`` has the formulas) and read out over conjugate pairs, so the
    N/2 stored modes stand for N real-valued states (§3). The same
    recurrence is the convolution y = K ∗ u + Du with
    ``K_{l,h} = 2 Re Σ_n C_hn Ā_hn^l B̄_hn`` (a Vandermonde product, §3).

    Initialisations (§4): Re A = −1/2 for every mode; Im A = π n (S4D-Lin,
    ``init="lin"``) or (N/π)(N/(2n+1) − 1) (S4D-Inv, ``init="inv"``),
    n = 0..N/2−1; B = 1; C complex standard normal; D standard normal;
    log Δ uniform in [log dt_min, log dt_max].

    Args:
      hidden_size: H, the channels (inputs and outputs).
      state_size: N, real states per channel (even; N/2 complex modes are
        stored); the paper's default 64.
      init: "lin" (S4D-Lin) or "inv" (S4D-Inv).
      discretization: "zoh" or "bilinear".
      dt_min, dt_max: the range of the initial steps Δ.
      **options: ``param_dtype`` and ``dtype`` of ``base.CellOptions``
        (params' dtype; the dtype of the input map's GEMM). The recurrence
        runs in float32 (float64 for float64 params).

    Params: ``log_dt`` (H,); ``log_a_real``, ``a_imag`` (H, N/2) (A as
    above); ``b``, ``c`` (H, N), each ``[Re, Im]`` along the last axis;
    ``d`` (H,); and ``w_ih`` (D, H), a linear map of the inputs onto the H
    channels (as the S4 models' encoder), present only when the input size
    D differs from H. Count: H(3N + 2), plus D·H with ``w_ih``.

    Carry: (B..., H·N) real, ``[Re x, Im x]``, each half the (H, N/2) modes
    flattened channel-major. ``y_k``: (B..., H).
    """
    H = _checks.check_positive_int("hidden_size", hidden_size)
    N = _checks.check_positive_int("state_size", state_size)
    if N % 2:
        _checks.fail("state_size", "an even number (conjugate pairs of modes)", state_size)
    _checks.check_choice("init", init, INITS)
    _checks.check_choice("discretization", discretization, _ssm.DISCRETIZATIONS)
    _ssm.check_step_range(dt_min, dt_max)
    _ssm.check_options(options)
    opts = base.make_options(**options)
    dt, pdt = opts.dtype, opts.param_dtype
    cdt = base.carry_dtype(dt, pdt)
    modes = N // 2

    def init_params(key, input_size):
        D = base.check_init_args(key, input_size)
        k_dt, k_c, k_d, k_in = jax.random.split(key, 4)
        n = jnp.arange(modes, dtype=jnp.float32)
        a_imag = math.pi * n if init == "lin" else N / math.pi * (N / (2 * n + 1) - 1)
        params = {
            "log_dt": _ssm.log_uniform(k_dt, (H,), dt_min, dt_max),
            "log_a_real": jnp.full((H, modes), math.log(0.5)),
            "a_imag": jnp.broadcast_to(a_imag, (H, modes)),
            "b": jnp.concatenate([jnp.ones((H, modes)), jnp.zeros((H, modes))], axis=-1),
            "c": jax.random.normal(k_c, (H, N)) * math.sqrt(0.5),
            "d": jax.random.normal(k_d, (H,)),
        }
        if D != H:
            params["w_ih"] = jax.nn.initializers.glorot_uniform()(k_in, (D, H))
        return jax.tree_util.tree_map(lambda p: p.astype(pdt), params)

    def project(params, xs):
        """(B..., T, D) -> (B..., T, H): the channels u."""
        if "w_ih" not in params:
            return xs.astype(cdt)
        return _ssm.matmul(xs, params["w_ih"], dt, cdt)

    def discretized(params):
        """(Ā, B̄), complex (H, N/2)."""
        p = {k: v.astype(cdt) for k, v in params.items()}
        lam = jax.lax.complex(-jnp.exp(p["log_a_real"]), p["a_imag"])
        delta = jnp.exp(p["log_dt"])[:, None]
        lam_bar, to_b_bar = _ssm.discretize(lam, delta, discretization)
        return lam_bar, to_b_bar * _ssm.as_complex(p["b"], cdt)

    def linear(params, xp):
        u = xp.astype(cdt)
        lam_bar, b_bar = discretized(params)
        b = _ssm.lead(b_bar, u.ndim + 1) * u[..., None]
        b = b.reshape(*u.shape[:-1], H * modes)
        return jnp.broadcast_to(_ssm.lead(lam_bar.reshape(-1), b.ndim), b.shape), b

    def update(params, carry, xp_t, h_in):
        u = xp_t.astype(cdt)
        lam_bar, b_bar = discretized(params)
        x = _ssm.as_complex(carry, cdt).reshape(*u.shape[:-1], H, modes)
        x = _ssm.lead(lam_bar, x.ndim) * x + _ssm.lead(b_bar, x.ndim) * u[..., None]
        c = _ssm.lead(_ssm.as_complex(params["c"], cdt), x.ndim)
        y = 2.0 * jnp.real(jnp.sum(c * x, axis=-1)) + _ssm.feedthrough(params["d"], u, dt)
        new = _ssm.as_planes(x.reshape(*u.shape[:-1], H * modes))
        return new.astype(carry.dtype), y

    def step(params, carry, xp_t):
        return update(params, carry, xp_t, carry)

    def time_invariant(params):
        lam_bar, b_bar = discretized(params)
        c = _ssm.as_complex(params["c"], cdt)
        return convolution.DiagonalSystem(lam_bar, b_bar, c, params["d"].astype(cdt))

    return base.Cell(
        init=init_params,
        step=step,
        initial_carry=base.zeros_carry(H * N, cdt),
        project=project,
        read=base.default_read,
        update=update,
        hidden_size=H,
        name="s4d",
        compute_dtype=dt,
        linear=linear,
        time_invariant=time_invariant,
    )
