r"""LinOSS (Rusch & Rus, ICLR 2025, "Oscillatory State-Space Models", arXiv
2410.03943) and its damped variant D-LinOSS (Boyer, Rusch & Rus 2025,
"Learning to Dissipate Energy in Oscillatory State-Space Models", arXiv
2505.12171): uncoupled forced harmonic oscillators, discretised so that each
oscillator's (z, y) takes a 2×2 linear step. Linear in the carry, so it runs
with ``impl="associative"`` and ``"chunked"`` (``parallel.BlockCoefficients``).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from recurrent_jax import _checks, parallel
from recurrent_jax.cells import _ssm, base

DISCRETIZATIONS = ("im", "imex")
RING = {"r_min": 0.9, "r_max": 1.0, "max_phase": math.pi}  # D-LinOSS's defaults


def linoss(
    hidden_size: int,
    *,
    state_size: int = 64,
    discretization: str | None = None,
    damping: bool = False,
    r_min: float | None = None,
    r_max: float | None = None,
    max_phase: float | None = None,
    **options,
) -> base.Cell:
    r"""A LinOSS cell (D-LinOSS with ``damping=True``).

    The oscillators y'' = −A y − G y' + B u, x = Re(C y) + D u (LinOSS
    eq. (1), G = 0; D-LinOSS §2 adds the damping G), written first order
    with z = y' and stepped with Δt per oscillator (LinOSS §2, D-LinOSS
    §2.2):

    .. math::
        z_k = s ⊙ (z_{k−1} − Δt ⊙ A ⊙ y_{k−1} + Δt ⊙ B u_k)
        y_k = y_{k−1} + Δt ⊙ z_k
        x_k = \mathrm{Re}(C y_k) + D ⊙ u_k

    - ``"im"`` (LinOSS-IM, implicit: z_k reads −A y_k): s = (1 + Δt² A)⁻¹;
      the step's matrix has |λ|² = s < 1 (Prop. 3.1), so it dissipates.
    - ``"imex"`` (LinOSS-IMEX, symplectic, eqs. (5)–(6): z_k reads
      −A y_{k−1}): s = 1; det = 1, energy-conserving, time-reversible.
    - damping (D-LinOSS, the IMEX step with implicit damping −G z_k):
      s = (1 + Δt G)⁻¹, |λ|² = s (D-LinOSS Prop. 3.2): G sets the decay
      apart from the frequency.

    Each oscillator's step is h_k = M h_{k−1} + F_k on h = (z, y):
    M = [[s, −sΔtA], [sΔt, 1 − sΔt²A]], F_k = (sΔt Bu_k, sΔt² Bu_k).
    A = ReLU(Â) ≥ 0 and Δt = sigmoid(Δ̂) as the papers parameterise them;
    with damping G = ReLU(Ĝ) and A clipped to the oscillatory region
    [(2 + ΔtG − 2√(1+ΔtG))/Δt², (2 + ΔtG + 2√(1+ΔtG))/Δt²], where M has
    complex eigenvalues of modulus √s ≤ 1.

    B and C are complex, as in the papers' implementations: each oscillator
    is two real ones (Re and Im parts of y) sharing A, G and Δt.

    Initialisation: LinOSS draws Â, Δ̂ ~ U[0, 1); D-LinOSS draws M's
    eigenvalues on the ring r ∈ [r_min, r_max] (uniform in area), phase in
    [0, max_phase], Δ̂ ~ N(0, 0.5²), and solves G = (1/r² − 1)/Δt,
    A = |1 − λ|²/(r²Δt²). B ~ U(±1/√D), C ~ U(±1/√P) (real and imaginary
    parts), D ~ N(0, 1).

    Args:
      hidden_size: H, the output size.
      state_size: P, complex oscillators; the papers' default 64.
      discretization: "im" or "imex"; default "im", and "imex" (the only
        one D-LinOSS defines) with damping.
      damping: D-LinOSS's learnt damping G.
      r_min, r_max, max_phase: D-LinOSS's ring initialisation (defaults
        0.9, 1.0, π; only with damping).
      **options: ``param_dtype`` and ``dtype`` of ``base.CellOptions``
        (params' dtype; the GEMMs' compute dtype). The recurrence runs in
        float32 (float64 for float64 params).

    Params: ``a_diag``, ``dt_logit`` (P,) (Â, Δ̂); ``g_diag`` (P,) (Ĝ) with
    damping; ``w_ih`` (D, 2P) = ``[Re Bᵀ, Im Bᵀ]``; ``w_out`` (2P, H) =
    ``[Re Cᵀ; −Im Cᵀ]``; ``d`` (H,), the papers' diagonal D, when D == H,
    else a (D, H) matrix. Count (D == H): P(4H + 2) + H, + P with damping.

    Carry: (B..., 4P) real ``[z, y]``, each ``[Re, Im]`` (P each): the
    planes ``[h[:, 0], h[:, 1]]`` of 2P oscillator units h = (z, y).
    ``y_k``: (B..., H).
    """
    H = _checks.check_positive_int("hidden_size", hidden_size)
    P = _checks.check_positive_int("state_size", state_size)
    damping = _checks.check_bool("damping", damping)
    if discretization is None:
        discretization = "imex" if damping else "im"
    _checks.check_choice("discretization", discretization, DISCRETIZATIONS)
    if damping and discretization != "imex":
        _checks.fail("discretization", "'imex' with damping (D-LinOSS's step)", discretization)
    ring = _ring(damping, r_min=r_min, r_max=r_max, max_phase=max_phase)
    _ssm.check_options(options)
    opts = base.make_options(**options)
    dt, pdt = opts.dtype, opts.param_dtype
    cdt = base.carry_dtype(dt, pdt)

    def init(key, input_size):
        D = base.check_init_args(key, input_size)
        k_a, k_dt, k_b, k_c, k_d = jax.random.split(key, 5)
        params = {
            "a_diag": jax.random.uniform(k_a, (P,)),
            "dt_logit": jax.random.uniform(k_dt, (P,)),
            "w_ih": jax.random.uniform(k_b, (D, 2 * P), minval=-1, maxval=1) / math.sqrt(D),
            "w_out": jax.random.uniform(k_c, (2 * P, H), minval=-1, maxval=1) / math.sqrt(P),
            "d": _ssm.feedthrough_init(k_d, D, H),
        }
        if damping:
            params.update(_ring_init(k_a, k_dt, P, **ring))
        return jax.tree_util.tree_map(lambda p: p.astype(pdt), params)

    def project(params, xs):
        """(B..., T, D) -> (B..., T, 2P + D): ``[Re Bu, Im Bu, u]``."""
        bu = _ssm.matmul(xs, params["w_ih"], dt, cdt)
        return jnp.concatenate([bu, xs.astype(cdt)], axis=-1)

    def oscillators(params):
        """(A, Δt, s), each (2P,): the P oscillators' for both Re and Im units."""
        p = {k: params[k].astype(cdt) for k in ("a_diag", "dt_logit", "g_diag") if k in params}
        step = jax.nn.sigmoid(p["dt_logit"])
        if damping:
            g = jax.nn.relu(p["g_diag"])
            root = 2.0 * jnp.sqrt(1.0 + step * g)
            a = jnp.clip(
                p["a_diag"], (2.0 + step * g - root) / step**2, (2.0 + step * g + root) / step**2
            )
            s = 1.0 / (1.0 + step * g)
        else:
            a = jax.nn.relu(p["a_diag"])
            s = 1.0 / (1.0 + step**2 * a) if discretization == "im" else jnp.ones_like(a)
        return tuple(jnp.tile(v, 2) for v in (a, step, s))

    def linear(params, xp):
        a, step, s = oscillators(params)
        bu = xp[..., : 2 * P].astype(cdt)
        m = jnp.stack(
            [jnp.stack([s, -s * step * a], -1), jnp.stack([s * step, 1.0 - s * step**2 * a], -1)],
            axis=-2,
        )  # (2P, 2, 2): rows z, y
        f = jnp.stack([bu * _ssm.lead(s * step, bu.ndim), bu * _ssm.lead(s * step**2, bu.ndim)], -1)
        return parallel.BlockCoefficients(
            jnp.broadcast_to(_ssm.lead(m, f.ndim + 1), (*f.shape, 2)), f
        )

    def update(params, carry, xp_t, h_in):
        a, step, s = (_ssm.lead(v, xp_t.ndim) for v in oscillators(params))
        xp_t = xp_t.astype(cdt)
        bu, u = xp_t[..., : 2 * P], xp_t[..., 2 * P :]
        z, y = jnp.split(carry.astype(cdt), 2, axis=-1)
        z = s * (z - step * a * y + step * bu)
        y = y + step * z
        out = _ssm.matmul(y, params["w_out"], dt, cdt) + _ssm.feedthrough(params["d"], u, dt)
        return jnp.concatenate([z, y], axis=-1).astype(carry.dtype), out

    def step(params, carry, xp_t):
        return update(params, carry, xp_t, carry)

    return base.Cell(
        init=init,
        step=step,
        initial_carry=base.zeros_carry(4 * P, cdt),
        project=project,
        read=base.default_read,
        update=update,
        hidden_size=H,
        name="linoss",
        compute_dtype=dt,
        linear=linear,
    )


def _ring(damping, **given):
    """D-LinOSS's ring settings; an error when set without damping."""
    chosen = {k: v for k, v in given.items() if v is not None}
    for name, value in chosen.items():
        if not damping:
            _checks.fail(name, "None without damping (it initialises D-LinOSS)", value)
        _checks.check_positive(name, value)
    ring = RING | chosen
    if not ring["r_min"] <= ring["r_max"] <= 1.0:
        _checks.fail("r_min, r_max", "0 < r_min <= r_max <= 1", (ring["r_min"], ring["r_max"]))
    return ring


def _ring_init(k_eig, k_dt, size, *, r_min, r_max, max_phase):
    """``a_diag``, ``g_diag``, ``dt_logit`` whose step matrices have the
    eigenvalues r e^{±iθ} drawn on the ring (D-LinOSS's initialisation)."""
    k_r, k_theta = jax.random.split(k_eig)
    r = jnp.sqrt(jax.random.uniform(k_r, (size,)) * (r_max**2 - r_min**2) + r_min**2)
    theta = jax.random.uniform(k_theta, (size,)) * max_phase
    dt_logit = 0.5 * jax.random.normal(k_dt, (size,))
    step = jax.nn.sigmoid(dt_logit)
    g = (1.0 / r**2 - 1.0) / step
    a = (1.0 - 2.0 * r * jnp.cos(theta) + r**2) / (r**2 * step**2)
    return {"a_diag": a, "g_diag": g, "dt_logit": dt_logit}
