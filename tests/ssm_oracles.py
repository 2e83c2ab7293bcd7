"""Float64 NumPy oracles of the state-space recurrences, from the papers' equations.

The tests of the state-space cells compare against these loops. Each one is a
plain transcription of the published, discretised recurrence: float64 and
complex128 throughout, one Python step per time step, nothing shared with the
package (this module imports only NumPy). Slow on purpose; it must be
obviously right.

Papers (section numbers refer to the arXiv versions):

- S4D: Gu, Goel, Gupta, Ré, "On the Parameterization and Initialization of
  Diagonal State Space Models", NeurIPS 2022 (arXiv 2206.11893).
- S5: Smith, Warrington, Linderman, "Simplified State Space Layers for
  Sequence Modeling", ICLR 2023 (arXiv 2208.04933).
- Mamba: Gu, Dao, "Mamba: Linear-Time Sequence Modeling with Selective State
  Spaces", 2023 (arXiv 2312.00752); the math of ``selective_scan_ref`` and
  ``mamba_simple.Mamba`` in state-spaces/mamba.
- LinOSS: Rusch, Rus, "Oscillatory State-Space Models", ICLR 2025
  (arXiv 2410.03943). D-LinOSS: Boyer, Rusch, Rus, "Learning to Dissipate
  Energy in Oscillatory State-Space Models", 2025 (arXiv 2505.12171).

Time convention everywhere: the input of step t enters the state of step t,
``x_t = Ā x_{t-1} + B̄ u_t`` and ``y_t = C x_t (+ D u_t)``, from ``x_{-1} = h0``
(zero by default), as in every reference implementation above.
"""

from __future__ import annotations

import math

import numpy as np

# --- shared: discretising a diagonal continuous system x' = Λx + Bu -------------


def discretize_diagonal(Lambda, dt, method):
    """(Λ̄, g) with B̄ = g·B for the diagonal system x' = Λx + Bu (S4D §3, S5 §2, §3.2).

    ``"zoh"`` (zero-order hold, exact for piecewise-constant u):
    Λ̄ = exp(ΔΛ), g = (Λ̄ − 1)/Λ (Λ must be nonzero).
    ``"bilinear"`` (Tustin): Λ̄ = (1 + ΔΛ/2)/(1 − ΔΛ/2), g = Δ/(1 − ΔΛ/2).
    Λ and Δ broadcast against each other.
    """
    Lambda = np.asarray(Lambda, np.complex128)
    dt = np.asarray(dt, np.float64)
    if method == "zoh":
        Lambda_bar = np.exp(dt * Lambda)
        return Lambda_bar, (Lambda_bar - 1.0) / Lambda
    if method == "bilinear":
        inverse = 1.0 / (1.0 - dt / 2.0 * Lambda)
        return inverse * (1.0 + dt / 2.0 * Lambda), inverse * dt
    raise ValueError(f"method: expected 'zoh' or 'bilinear', got {method!r}")


# --- S4D: H independent SISO diagonal SSMs, N/2 stored complex modes each -------


def s4d_discretize(log_dt, A, B, method):
    """Ā, B̄ of S4D (§3): Δ_h = exp(log_dt_h) per channel; A, B (H, N2) complex."""
    dt = np.exp(np.asarray(log_dt, np.float64))[:, None]
    A_bar, gain = discretize_diagonal(A, dt, method)
    return A_bar, gain * np.asarray(B, np.complex128)


def s4d_recurrent(u, log_dt, A, B, C, D, method, h0=None):
    """The recurrent view of S4D: returns (y (L, H) real, h_final (H, N2) complex).

    h_t = Ā h_{t-1} + B̄ u_t and y_t = 2·Re(Σ_n C_n h_{t,n}) + D u_t per channel.
    Only one mode of each conjugate pair is stored (N = 2·N2 real states); the
    factor 2 with Re adds the conjugate mode's equal-and-conjugate contribution.
    u (L, H) real; log_dt (H,); A, B, C (H, N2) complex; D (H,); h0 (H, N2).
    """
    u = np.asarray(u, np.float64)
    A_bar, B_bar = s4d_discretize(log_dt, A, B, method)
    C = np.asarray(C, np.complex128)
    h = np.zeros(A_bar.shape, np.complex128) if h0 is None else np.array(h0, np.complex128)
    y = np.zeros(u.shape)
    for t in range(u.shape[0]):
        h = A_bar * h + B_bar * u[t][:, None]
        y[t] = 2.0 * np.sum(C * h, axis=-1).real + D * u[t]
    return y, h


def s4d_kernel(log_dt, A, B, C, L, method):
    """K (H, L): K_l = 2·Re(Σ_n C_n B̄_n Ā_n^l), the Vandermonde product (B̄ᵀ∘C)·V_L(Ā) (§3)."""
    A_bar, B_bar = s4d_discretize(log_dt, A, B, method)
    vandermonde = A_bar[..., None] ** np.arange(L)  # (H, N2, L): Ā_n^l
    return 2.0 * np.einsum("hn,hnl->hl", np.asarray(C) * B_bar, vandermonde).real


def s4d_convolution(u, log_dt, A, B, C, D, method):
    """The convolution view of S4D: y = K * u + D u, by FFT zero-padded to 2L (no wrap-around).

    From a zero state; equals ``s4d_recurrent(...)[0]``. Shapes as there.
    """
    u = np.asarray(u, np.float64)
    L = u.shape[0]
    K = s4d_kernel(log_dt, A, B, C, L, method)  # (H, L)
    spectrum = np.fft.rfft(u, n=2 * L, axis=0) * np.fft.rfft(K.T, n=2 * L, axis=0)
    return np.fft.irfft(spectrum, n=2 * L, axis=0)[:L] + D * u


def s4d_lin_init(H, N2):
    """S4D-Lin (§4): A_n = −1/2 + iπn, n = 0..N2−1, the same for every channel: (H, N2)."""
    n = np.arange(N2)
    return np.tile(-0.5 + 1j * math.pi * n, (H, 1))


def s4d_inv_init(H, N2):
    """S4D-Inv (§4): A_n = −1/2 + i·(N/π)·(N/(2n+1) − 1), n = 0..N2−1, with N = 2·N2.

    N is the full real state size (N2 = N/2 stored modes), as in the paper and
    state-spaces/s4; these approximate the upper-half imaginary parts of the
    HiPPO-LegS normal part's spectrum. Imaginary parts are positive as the paper
    writes them (state-spaces/s4 stores the conjugates; the real output is the
    same with conjugated B and C). Returns (H, N2) complex.
    """
    N = 2 * N2
    n = np.arange(N2)
    return np.tile(-0.5 + 1j * (N / math.pi) * (N / (2 * n + 1) - 1), (H, 1))


def s4d_real_init(H, N):
    """S4D-Real (S4D paper; Mamba's default): A_n = −(n + 1), n = 0..N−1, real: (H, N)."""
    return np.tile(-(np.arange(N) + 1.0), (H, 1))


# --- S5: one MIMO diagonal SSM over P complex states --------------------------------


def hippo_legs(N):
    """The HiPPO-LegS state matrix as used in x' = Ax (negative, lower triangular): (N, N).

    A_nk = −sqrt(2n+1)·sqrt(2k+1) for n > k, −(n+1) for n = k, 0 for n < k.
    """
    A = np.zeros((N, N))
    for n in range(N):
        for k in range(n + 1):
            A[n, k] = -(n + 1.0) if n == k else -math.sqrt(2 * n + 1) * math.sqrt(2 * k + 1)
    return A


def hippo_legs_low_rank(N):
    """P_n = sqrt(n + 1/2): HiPPO-LegS = HiPPO-N − P Pᵀ (S5 §3.2, normal plus low rank): (N,)."""
    return np.sqrt(np.arange(N) + 0.5)


def hippo_n(N):
    """HiPPO-N, the normal part of HiPPO-LegS (S5 §3.2): A_LegS + P Pᵀ, an (N, N) matrix.

    Entries: −sqrt((n+½)(k+½)) below the diagonal, −1/2 on it, +sqrt((n+½)(k+½))
    above: −I/2 plus a skew-symmetric matrix, so it is normal and its
    eigenvalues are −1/2 + iω.
    """
    P = hippo_legs_low_rank(N)
    return hippo_legs(N) + np.outer(P, P)


def s5_init_lambda(P, J=1, conj_sym=False):
    """S5's block-diagonal HiPPO-N initialisation (S5 §3.2): (Λ, V, V_inv).

    Each of the J blocks is HiPPO-N of size P/J, diagonalised HiPPO-N = V_b Λ_b V_bᴴ
    with V_b unitary (its skew part is diagonalised as the Hermitian −i·K). Λ
    repeats Λ_b J times; V, V_inv are block diagonal. The continuous system with
    A = V diag(Λ) V_inv, real B (P, H), C (H, P) becomes B̃ = V_inv B, C̃ = C V.

    ``conj_sym=False``: Λ (P,), V (P, P), V_inv = V⁻¹ (P, P).
    ``conj_sym=True`` (P/J even): keep one mode of each conjugate pair per block,
    the half with negative imaginary parts in ascending order (the S5
    reference's choice; the other half gives the same real output):
    Λ (P/2,), V (P, P/2), V_inv (P/2, P), and y = 2·Re(C̃ x).
    """
    if P % J:
        raise ValueError(f"J: expected a divisor of P={P}, got {J}")
    size = P // J
    skew = hippo_n(size) + 0.5 * np.eye(size)
    omega, V_block = np.linalg.eigh(-1j * skew)  # skew V = V diag(iω), ω ascending
    Lambda_block = -0.5 + 1j * omega
    if conj_sym:
        if size % 2:
            raise ValueError(f"conj_sym: expected an even block size P/J, got {size}")
        Lambda_block, V_block = Lambda_block[: size // 2], V_block[:, : size // 2]
    V = _block_diag([V_block] * J)
    V_inv = _block_diag([V_block.conj().T] * J)
    return np.tile(Lambda_block, J), V, V_inv


def _block_diag(blocks):
    rows, cols = sum(b.shape[0] for b in blocks), sum(b.shape[1] for b in blocks)
    out = np.zeros((rows, cols), np.complex128)
    r = c = 0
    for b in blocks:
        out[r : r + b.shape[0], c : c + b.shape[1]] = b
        r, c = r + b.shape[0], c + b.shape[1]
    return out


def s5_discretize(Lambda, B_tilde, dt, method):
    """Λ̄ (P,), B̄ = g·B̃ (P, H) with a step Δ_p per state (S5 §2, §3.2)."""
    Lambda_bar, gain = discretize_diagonal(Lambda, dt, method)
    return Lambda_bar, gain[:, None] * np.asarray(B_tilde, np.complex128)


def s5_recurrent(
    u, Lambda, B_tilde, C_tilde, D, log_dt, method, conj_sym=True, dt_scale=None, h0=None
):
    """The S5 recurrence: returns (y (L, H) real, x_final (P,) complex).

    x_t = Λ̄_t x_{t-1} + B̄_t u_t; y_t = c·Re(C̃ x_t) + D ⊙ u_t with c = 2 when
    ``conj_sym`` (only one mode of each conjugate pair is stored) and 1 otherwise.
    Δ = exp(log_dt) per state; with ``dt_scale`` (L,), step t uses Δ·dt_scale_t,
    discretised at that step (S5's variable observation interval, §6.3).
    u (L, H); Λ (P,); B̃ (P, H); C̃ (H, P) complex; D (H,); log_dt (P,); h0 (P,).
    """
    u = np.asarray(u, np.float64)
    dt = np.exp(np.asarray(log_dt, np.float64))
    C_tilde = np.asarray(C_tilde, np.complex128)
    x = np.zeros(len(Lambda), np.complex128) if h0 is None else np.array(h0, np.complex128)
    y = np.zeros(u.shape)
    for t in range(u.shape[0]):
        step = dt if dt_scale is None else dt * dt_scale[t]
        Lambda_bar, B_bar = s5_discretize(Lambda, B_tilde, step, method)
        x = Lambda_bar * x + B_bar @ u[t]
        y[t] = (2.0 if conj_sym else 1.0) * (C_tilde @ x).real + D * u[t]
    return y, x


# --- the selective SSM (S6) and the Mamba block ----------------------------------


def softplus(x):
    """log(1 + eˣ), computed without overflow."""
    return np.logaddexp(0.0, x)


def silu(x):
    """x·σ(x)."""
    return x / (1.0 + np.exp(-x))


def selective_scan_ref(
    u,
    delta,
    A,
    B,
    C,
    D=None,
    z=None,
    delta_bias=None,
    delta_softplus=False,
    return_last_state=True,
    h0=None,
):
    """Mamba's selective scan (Gu & Dao 2023, Algorithm 2) in ``selective_scan_ref``'s math.

    Per batch b, channel d, state n, step t:
        Δ = delta (+ delta_bias_d), then softplus(Δ) if ``delta_softplus``;
        x_t = exp(Δ_t A_dn) x_{t-1} + Δ_t B_{n,t} u_t;   y_t = Σ_n C_{n,t} x_{t,n};
        out = (y + D_d u_t) · silu(z_t)   (D and z optional).
    A is discretised exactly (exp(ΔA)) but B by Euler (Δ·B), not by exact ZOH,
    (ΔA)⁻¹(exp(ΔA) − 1)·ΔB of the paper's eq. (4): the reference code and the
    CUDA kernels compute Δ·B.
    Shapes (Mamba's): u, delta, z (batch, D, L); A (D, N) real; B, C (batch, N, L)
    (input-dependent) or (D, N) (time-invariant); D, delta_bias (D,).
    ``h0`` (batch, D, N), an extension (the reference starts from zero).
    Returns out (batch, D, L), and last_state (batch, D, N) if ``return_last_state``
    (the reference's default is False).
    """
    u, delta = np.asarray(u, np.float64), np.asarray(delta, np.float64)
    A, B, C = (np.asarray(a, np.float64) for a in (A, B, C))
    if delta_bias is not None:
        delta = delta + np.asarray(delta_bias, np.float64)[:, None]
    if delta_softplus:
        delta = softplus(delta)
    batch, dim, L = u.shape
    x = np.zeros((batch, dim, A.shape[1])) if h0 is None else np.array(h0, np.float64)
    y = np.zeros(u.shape)
    for t in range(L):
        B_t = B[None] if B.ndim == 2 else B[:, None, :, t]  # (batch|1, D|1, N)
        C_t = C[None] if C.ndim == 2 else C[:, None, :, t]
        dt = delta[:, :, t, None]  # (batch, D, 1)
        x = np.exp(dt * A) * x + dt * B_t * u[:, :, t, None]
        y[:, :, t] = np.sum(C_t * x, axis=-1)
    out = y if D is None else y + np.asarray(D, np.float64)[:, None] * u
    if z is not None:
        out = out * silu(np.asarray(z, np.float64))
    return (out, x) if return_last_state else out


def mamba_block_ref(x, params, state=None, return_state=False):
    """The Mamba block (Gu & Dao 2023, Fig. 3; ``mamba_simple.Mamba.forward``'s math).

    x (L, d_model) or (batch, L, d_model) -> same shape. Weights are (in, out)
    matrices applied as x @ W. With E = expand·d_model, N states, R = dt_rank,
    K = d_conv, ``params`` holds:
        in_proj_W (d_model, 2E)   [x_in | z] = x @ in_proj_W (+ in_proj_b (2E,), optional)
        conv_W (K, E), conv_b (E,)  causal depthwise conv, zero history:
                                  c_t = conv_b + Σ_k conv_W[k] ⊙ x_in[t − (K−1) + k]
                                  (tap K−1 multiplies the current step: torch's
                                  Conv1d weight (E, 1, K) transposed)
        x_proj_W (E, R + 2N)      [dt_low | B | C] = silu(c_t) @ x_proj_W
        dt_proj_W (R, E), dt_proj_b (E,)   Δ = softplus(dt_low @ dt_proj_W + dt_proj_b)
        A_log (E, N)              A = −exp(A_log)
        D (E,)                    skip
        out_proj_W (E, d_model)   out = y @ out_proj_W (+ out_proj_b (d_model,), optional)
    with y = selective_scan_ref(silu(c), Δ, A, B, C, D, z) (gate silu(z)).
    ``state`` = (conv_state (batch, K−1, E): the last K−1 values of x_in, oldest
    first; ssm_state (batch, E, N)), zero if None. ``return_state`` adds the
    final state in that form: (out, state).
    """
    x = np.asarray(x, np.float64)
    single = x.ndim == 2
    x = x[None] if single else x
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    E, N = p["A_log"].shape
    K, R = p["conv_W"].shape[0], p["dt_proj_W"].shape[0]
    xz = x @ p["in_proj_W"] + p.get("in_proj_b", 0.0)
    x_in, z = xz[..., :E], xz[..., E:]
    conv_state = np.zeros((x.shape[0], K - 1, E)) if state is None else state[0]
    padded = np.concatenate([conv_state, x_in], axis=1)  # (batch, K−1+L, E)
    L = x.shape[1]
    conv = p["conv_b"] + sum(p["conv_W"][k] * padded[:, k : k + L] for k in range(K))
    x_act = silu(conv)
    dt_low, B, C = np.split(x_act @ p["x_proj_W"], [R, R + N], axis=-1)
    out, ssm_state = selective_scan_ref(
        x_act.transpose(0, 2, 1),
        (dt_low @ p["dt_proj_W"]).transpose(0, 2, 1),
        -np.exp(p["A_log"]),
        B.transpose(0, 2, 1),
        C.transpose(0, 2, 1),
        D=p["D"],
        z=z.transpose(0, 2, 1),
        delta_bias=p["dt_proj_b"],
        delta_softplus=True,
        h0=None if state is None else state[1],
    )
    out = out.transpose(0, 2, 1) @ p["out_proj_W"] + p.get("out_proj_b", 0.0)
    out = out[0] if single else out
    new_state = (padded[:, padded.shape[1] - (K - 1) :], ssm_state)
    return (out, new_state) if return_state else out


def mamba_block_params(
    rng, d_model, d_state=16, d_conv=4, expand=2, dt_rank=None, dt_min=1e-3, dt_max=0.1
):
    """Random params for ``mamba_block_ref`` with Mamba's SSM initialisation (mamba_simple.py).

    A_log = log(1..N) per channel (S4D-Real), D = 1, dt_proj_b = softplus⁻¹(Δ) with
    Δ log-uniform in [dt_min, dt_max] (floored at 1e-4), dt_proj_W uniform ±R^(−1/2),
    R = ceil(d_model/16) by default; the other weights uniform ±fan_in^(−1/2).
    """
    E, N, K = expand * d_model, d_state, d_conv
    R = math.ceil(d_model / 16) if dt_rank is None else dt_rank
    uniform = lambda shape, bound: rng.uniform(-bound, bound, shape)
    dt = np.exp(rng.uniform(math.log(dt_min), math.log(dt_max), E)).clip(min=1e-4)
    return {
        "in_proj_W": uniform((d_model, 2 * E), d_model**-0.5),
        "conv_W": uniform((K, E), K**-0.5),
        "conv_b": uniform((E,), K**-0.5),
        "x_proj_W": uniform((E, R + 2 * N), E**-0.5),
        "dt_proj_W": uniform((R, E), R**-0.5),
        "dt_proj_b": dt + np.log(-np.expm1(-dt)),
        "A_log": np.log(np.tile(np.arange(1.0, N + 1), (E, 1))),
        "D": np.ones(E),
        "out_proj_W": uniform((E, d_model), E**-0.5),
    }


# --- LinOSS and D-LinOSS: forced (damped) harmonic oscillators -------------------


def linoss_im_step_matrices(A, dt):
    """LinOSS-IM (Rusch & Rus 2025, §2, implicit Euler) per oscillator: (M (P, 2, 2), F (P, 2)).

    z_n = z_{n-1} + Δt(−A y_n + B u_n), y_n = y_{n-1} + Δt z_n, solved for the
    state (z, y): (z_n, y_n) = M (z_{n-1}, y_{n-1}) + F·(B u_n) with S = 1/(1 + Δt²A),
        M = [[S, −Δt A S], [Δt S, S]],   F = [Δt S, Δt² S].
    det M = S and |λ(M)|² = S ≤ 1 (the paper's Proposition 3.1): dissipative.
    A (P,) ≥ 0 and dt (P,) or scalar.
    """
    A, dt = np.broadcast_arrays(np.asarray(A, np.float64), np.asarray(dt, np.float64))
    S = 1.0 / (1.0 + dt**2 * A)
    M = np.stack([np.stack([S, -dt * A * S], -1), np.stack([dt * S, S], -1)], -2)
    return M, np.stack([dt * S, dt**2 * S], -1)


def linoss_imex_step_matrices(A, dt):
    """LinOSS-IMEX (Rusch & Rus 2025, eqs. (5)-(6), symplectic Euler): (M (P, 2, 2), F (P, 2)).

    z_n = z_{n-1} + Δt(−A y_{n-1} + B u_n), y_n = y_{n-1} + Δt z_n:
        M = [[1, −Δt A], [Δt, 1 − Δt²A]],   F = [Δt, Δt²].
    det M = 1 (symplectic, volume preserving); |λ(M)| = 1 when Δt²A ≤ 4 (two real
    eigenvalues with product 1, one outside the unit circle, when Δt²A > 4).
    """
    return dlinoss_step_matrices(A, 0.0, dt)


def dlinoss_step_matrices(A, G, dt):
    """D-LinOSS (Boyer, Rusch & Rus 2025, §2.2, IMEX with implicit damping): (M, F).

    z_n = z_{n-1} + Δt(−A y_{n-1} − G z_n + B u_n), y_n = y_{n-1} + Δt z_n, with
    S = 1 + Δt G (the paper's Schur complement):
        M = [[1/S, −Δt A/S], [Δt/S, 1 − Δt²A/S]],   F = [Δt/S, Δt²/S].
    det M = 1/S; |λ(M)|² = 1/(1 + Δt G) when (G − Δt A)² ≤ 4A (Prop. 3.2).
    G = 0 is LinOSS-IMEX. A, G (P,) ≥ 0; dt (P,) or scalar.
    """
    A, G, dt = np.broadcast_arrays(*(np.asarray(a, np.float64) for a in (A, G, dt)))
    S = 1.0 + dt * G
    M = np.stack(
        [np.stack([1 / S, -dt * A / S], -1), np.stack([dt / S, 1 - dt**2 * A / S], -1)], -2
    )
    return M, np.stack([dt / S, dt**2 / S], -1)


def linoss_recurrent(u, A_diag, B, C, D, dt, method, h0=None, G=None):
    """The LinOSS recurrence: returns (out (L, H) real, (z_final, y_final) each (P,)).

    Per oscillator p the state (z_p, y_p) (velocity, position) steps as
    (z, y)_t = M_p (z, y)_{t-1} + F_p (B u_t)_p, M, F from ``linoss_im_step_matrices``
    (``method="im"``), ``linoss_imex_step_matrices`` (``"imex"``), or
    ``dlinoss_step_matrices`` when a damping ``G`` (P,) is given (D-LinOSS; IMEX
    only). The output reads the positions: out_t = Re(C y_t) + D ⊙ u_t.
    B (P, H) and C (H, P) may be real or complex (the reference stores them
    complex; then the state is complex and its real and imaginary parts are two
    independent real oscillator banks driven by Re(B)u and Im(B)u).
    u (L, H); A_diag (P,) ≥ 0 (the reference applies ReLU first); dt (P,) or
    scalar (the reference uses sigmoid of a parameter); D (H,); h0 = (z0, y0).
    """
    if G is not None and method != "imex":
        raise ValueError(f"method: D-LinOSS (G given) is discretised by 'imex', got {method!r}")
    if method == "im":
        M, F = linoss_im_step_matrices(A_diag, dt)
    elif method == "imex":
        M, F = dlinoss_step_matrices(A_diag, 0.0 if G is None else G, dt)
    else:
        raise ValueError(f"method: expected 'im' or 'imex', got {method!r}")
    u = np.asarray(u, np.float64)
    kind = np.result_type(B, C, *(() if h0 is None else h0), np.float64)
    P = len(np.atleast_1d(A_diag))
    z, y = (np.zeros(P, kind), np.zeros(P, kind)) if h0 is None else (np.array(h, kind) for h in h0)
    out = np.zeros(u.shape)
    for t in range(u.shape[0]):
        force = B @ u[t]
        z, y = (
            M[..., 0, 0] * z + M[..., 0, 1] * y + F[..., 0] * force,
            M[..., 1, 0] * z + M[..., 1, 1] * y + F[..., 1] * force,
        )
        out[t] = (C @ y).real + D * u[t]
    return out, (z, y)


def oscillator_energy(z, y, A):
    """E = ½(|z|² + A|y|²) per oscillator: the Hamiltonian of the unforced y'' = −Ay.

    Under LinOSS-IM with u = 0 it decays exactly geometrically:
    E_n = E_{n-1}/(1 + Δt²A) (= det M_IM = |λ|²); under IMEX it is not conserved
    exactly but oscillates without drift (see ``imex_modified_energy``).
    """
    return 0.5 * (np.abs(z) ** 2 + A * np.abs(y) ** 2)


def imex_modified_energy(z, y, A, dt, G=None):
    """Ẽ = ½(|z|² + A|y|² + (G − Δt A)·Re(z̄ y)), the quadratic invariant of the IMEX step.

    With u = 0, Mᵀ Q M = Q/(1 + Δt G) for Q = [[1, (G − ΔtA)/2], [(G − ΔtA)/2, A]], so
    Ẽ_n = Ẽ_{n-1}/(1 + Δt G) exactly: LinOSS-IMEX (G = 0) conserves Ẽ = E − ½ΔtA·zy,
    the modified energy of symplectic Euler (equivalently ½(z_n² + A y_n y_{n-1})),
    and D-LinOSS dissipates it at the rate of its Prop. 3.2, |λ|² = 1/(1 + ΔtG).
    Ẽ is positive definite iff (G − ΔtA)² < 4A, the condition of Prop. 3.2; then
    E stays within [Ẽ/(1 + Δt√A/2), Ẽ/(1 − Δt√A/2)] for G = 0, Δt√A < 2.
    """
    G = 0.0 if G is None else G
    return 0.5 * (np.abs(z) ** 2 + A * np.abs(y) ** 2 + (G - dt * A) * (np.conj(z) * y).real)
