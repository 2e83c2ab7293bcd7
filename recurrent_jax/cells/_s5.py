r"""S5 (Smith, Warrington & Linderman, ICLR 2023, "Simplified State Space
Layers for Sequence Modeling", arXiv 2208.04933): one multi-input,
multi-output diagonal SSM over P complex states (P/2 stored, conjugate
symmetry), initialised from the diagonalised normal part of HiPPO-LegS.
Linear in the carry, so it runs with ``impl="associative"`` and
``"chunked"``.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from recurrent_jax import _checks
from recurrent_jax.cells import _ssm, base

# jax's lecun_normal draws from a normal truncated at ±2 scaled by this, so
# that the truncated draw keeps unit variance.
_TRUNCATED_STD = 0.87962566103423978


def s5(
    hidden_size: int,
    *,
    state_size: int = 256,
    blocks: int = 8,
    discretization: str = "zoh",
    dt_min: float = 1e-3,
    dt_max: float = 1e-1,
    variable_steps: bool = False,
    **options,
) -> base.Cell:
    r"""An S5 cell.

    .. math::
        Λ = Λ^{re} + iΛ^{im}        Δ = \exp(\log Δ)\ (\cdot s_k)
        x_k = Λ̄ ⊙ x_{k−1} + B̄ u_k
        y_k = 2\,\mathrm{Re}(C̃ x_k) + D u_k

    the paper's continuous system x' = Ax + Bu, y = Cx + Du in the
    eigenbasis of A = VΛV⁻¹ (B̃ = V⁻¹B, C̃ = CV, §3.2), discretised (§2.1) by ZOH
    (Λ̄ = e^{ΛΔ}, B̄ = Λ⁻¹(Λ̄ − 1)B̃) or the bilinear transform (``_ssm``),
    with one learnt Δ per state (§3.2). Only one of each conjugate pair of
    states is kept, hence the 2 Re(·) (§3.2).

    Initialisation (§3.2): Λ and V from HiPPO-N, the normal
    part A_LegS + p pᵀ (p_n = √(n + 1/2)) of the HiPPO-LegS matrix,
    diagonalised on each of ``blocks`` J diagonal blocks of size P/J (the
    block-diagonal initialisation); B drawn LeCun-normal then B̃ = V⁻¹B; C
    drawn truncated-normal with variance 1/P per real part then C̃ = CV;
    D standard normal; log Δ uniform in [log dt_min, log dt_max].

    With ``variable_steps`` the last input feature of every step is a
    positive scale s_k of that step's Δ (Δ_k = s_k Δ, the paper's
    irregularly sampled extension, §6.3), and the other D − 1 features are
    u_k; Λ̄ and B̄ then change from step to step, still linear in the carry.

    Args:
      hidden_size: H, the output size (and the input size of the paper).
      state_size: P, complex states (P/2 stored); divisible by 2·blocks.
      blocks: J, the HiPPO-N blocks of the initialisation.
      discretization: "zoh" or "bilinear".
      dt_min, dt_max: the range of the initial steps Δ.
      variable_steps: read a per-step Δ scale from the last input feature.
      **options: ``param_dtype`` and ``dtype`` of ``base.CellOptions``
        (params' dtype; the GEMMs' compute dtype). The recurrence runs in
        float32 (float64 for float64 params).

    Params (U = P/2 stored states, D the input features, D − 1 with
    ``variable_steps``): ``lambda_re``, ``lambda_im``, ``log_step`` (U,);
    ``w_ih`` (D, 2U) = ``[Re B̃ᵀ, Im B̃ᵀ]`` (named ``w_u``, (D − 1, 2U), with
    ``variable_steps``, as it reads all features but the last); ``w_out`` (2U, H) =
    ``[Re C̃ᵀ; −Im C̃ᵀ]`` so that Re(C̃x) = ``[Re x, Im x] @ w_out``; ``d``
    (H,), the paper's diagonal D, when D == H, else a (D, H) matrix. Count
    (D == H): 2PH + 3P/2 + H.

    Carry: (B..., P) real, ``[Re x, Im x]``. ``y_k``: (B..., H).
    """
    H = _checks.check_positive_int("hidden_size", hidden_size)
    P = _checks.check_positive_int("state_size", state_size)
    J = _checks.check_positive_int("blocks", blocks)
    if P % (2 * J):
        _checks.fail(
            "state_size",
            f"a multiple of 2 * blocks = {2 * J} (blocks of conjugate pairs)",
            state_size,
        )
    _checks.check_choice("discretization", discretization, _ssm.DISCRETIZATIONS)
    _ssm.check_step_range(dt_min, dt_max)
    _checks.check_bool("variable_steps", variable_steps)
    _ssm.check_options(options)
    opts = base.make_options(**options)
    dt, pdt = opts.dtype, opts.param_dtype
    cdt = base.carry_dtype(dt, pdt)
    U = P // 2
    w_in = "w_u" if variable_steps else "w_ih"  # w_ih's rows are the input features

    def init(key, input_size):
        D = base.check_init_args(key, input_size)
        if variable_steps and D < 2:
            _checks.fail("input_size", "at least 2 with variable_steps (u and the scale)", D)
        D -= int(variable_steps)
        lam, eigvecs = block_hippo_n(P // J, J)
        k_b, k_c, k_d, k_step = jax.random.split(key, 4)
        b = jax.nn.initializers.lecun_normal()(k_b, (P, D))  # fan-in P, as the paper's code
        c = jax.random.truncated_normal(k_c, -2.0, 2.0, (2, H, P))
        c = c / (_TRUNCATED_STD * math.sqrt(P))
        b_tilde = jnp.asarray(eigvecs.conj().T, jnp.complex64) @ b  # V⁻¹ B, V unitary
        c_tilde = jax.lax.complex(c[0], c[1]) @ jnp.asarray(eigvecs, jnp.complex64)
        params = {
            "lambda_re": jnp.asarray(lam.real),
            "lambda_im": jnp.asarray(lam.imag),
            "log_step": _ssm.log_uniform(k_step, (U,), dt_min, dt_max),
            w_in: _ssm.as_planes(b_tilde.T),
            "w_out": jnp.concatenate([c_tilde.real.T, -c_tilde.imag.T], axis=0),
            "d": _ssm.feedthrough_init(k_d, D, H),
        }
        return jax.tree_util.tree_map(lambda p: p.astype(pdt), params)

    def project(params, xs):
        """(B..., T, D) -> (B..., T, 2U + D): ``[Re B̃u, Im B̃u, u(, s)]``."""
        u = xs[..., :-1] if variable_steps else xs
        xb = _ssm.matmul(u, params[w_in], dt, cdt)
        return jnp.concatenate([xb, xs.astype(cdt)], axis=-1)

    def coefficients(params, xp):
        """(Λ̄, B̄u): Λ̄ (U,), or (..., U) with variable steps; B̄u (..., U)."""
        lam = jax.lax.complex(params["lambda_re"].astype(cdt), params["lambda_im"].astype(cdt))
        delta = jnp.exp(params["log_step"].astype(cdt))
        if variable_steps:
            delta = _ssm.lead(delta, xp.ndim) * xp[..., -1:]
            lam = _ssm.lead(lam, xp.ndim)
        lam_bar, to_b_bar = _ssm.discretize(lam, delta, discretization)
        bu = _ssm.as_complex(xp[..., :P], cdt)
        return lam_bar, _ssm.lead(to_b_bar, bu.ndim) * bu

    def linear(params, xp):
        lam_bar, b = coefficients(params, xp.astype(cdt))
        return jnp.broadcast_to(_ssm.lead(lam_bar, b.ndim), b.shape), b

    def update(params, carry, xp_t, h_in):
        xp_t = xp_t.astype(cdt)
        lam_bar, b = coefficients(params, xp_t)
        x = _ssm.lead(lam_bar, b.ndim) * _ssm.as_complex(carry, cdt) + b
        new = _ssm.as_planes(x)
        u = xp_t[..., P : xp_t.shape[-1] - int(variable_steps)]
        y = 2.0 * _ssm.matmul(new, params["w_out"], dt, cdt)
        return new.astype(carry.dtype), y + _ssm.feedthrough(params["d"], u, dt)

    def step(params, carry, xp_t):
        return update(params, carry, xp_t, carry)

    return base.Cell(
        init=init,
        step=step,
        initial_carry=base.zeros_carry(P, cdt),
        project=project,
        read=base.default_read,
        update=update,
        hidden_size=H,
        name="s5",
        compute_dtype=dt,
        linear=linear,
    )


@functools.lru_cache
def hippo_n(size: int):
    """HiPPO-N of ``size`` states, diagonalised in float64: (Λ (size/2,),
    V (size, size/2)), one eigenpair of each conjugate pair (Im Λ < 0).

    HiPPO-LegS is A_nk = −√(2n+1)√(2k+1) (n > k), −(n+1) (n = k), 0 (n < k);
    adding p pᵀ with p_n = √(n + 1/2) leaves its normal part −I/2 + S, S
    skew-symmetric, whose eigenvectors are those of the Hermitian −iS.
    """
    n = np.arange(size)
    root = np.sqrt(2 * n + 1.0)
    legs = -(np.tril(np.outer(root, root)) - np.diag(n))
    normal = legs + np.outer(np.sqrt(n + 0.5), np.sqrt(n + 0.5))
    skew = normal - np.diag(np.diag(normal))
    imag, eigvecs = np.linalg.eigh(-1j * skew)  # ascending: the Im Λ < 0 half first
    lam = np.mean(np.diag(normal)) + 1j * imag
    return lam[: size // 2], eigvecs[:, : size // 2]


def block_hippo_n(block_size: int, blocks: int):
    """Λ (P/2,) and V (P, P/2) of ``blocks`` HiPPO-N blocks on the diagonal."""
    lam, eigvecs = hippo_n(block_size)
    return np.tile(lam, blocks), np.kron(np.eye(blocks), eigvecs)
