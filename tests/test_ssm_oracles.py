"""Self-checks of the float64 state-space oracles (tests/ssm_oracles.py).

Each oracle is checked against a second, independent computation: the
convolution view, the matrix exponential, a dense (undiagonalised) system,
hand-worked numbers, or an exact invariant of the discrete map. Tolerances are
float64 rounding over the stated number of steps, so a wrong sign, index or
factor fails by many orders of magnitude.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
from ssm_oracles import (
    dlinoss_step_matrices,
    hippo_legs,
    hippo_legs_low_rank,
    hippo_n,
    imex_modified_energy,
    linoss_im_step_matrices,
    linoss_imex_step_matrices,
    linoss_recurrent,
    mamba_block_params,
    mamba_block_ref,
    oscillator_energy,
    s4d_convolution,
    s4d_discretize,
    s4d_inv_init,
    s4d_lin_init,
    s4d_real_init,
    s4d_recurrent,
    s5_discretize,
    s5_init_lambda,
    s5_recurrent,
    selective_scan_ref,
    silu,
    softplus,
)

rng = np.random.default_rng(0)
complex_normal = lambda *shape: rng.normal(size=shape) + 1j * rng.normal(size=shape)

# --- S4D --------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["zoh", "bilinear"])
@pytest.mark.parametrize("init", [s4d_lin_init, s4d_inv_init])
def test_s4d_recurrent_equals_convolution(method, init):
    L, H, N2 = 1000, 3, 8
    A = init(H, N2)
    B, C = complex_normal(H, N2), complex_normal(H, N2)
    D, u = rng.normal(size=H), rng.normal(size=(L, H))
    log_dt = np.log([1e-3, 1e-2, 1e-1])
    y_rec, _ = s4d_recurrent(u, log_dt, A, B, C, D, method)
    y_conv = s4d_convolution(u, log_dt, A, B, C, D, method)
    # FFT of length 2L: error ~ eps·log(L)·Σ|K|·|u|; measured ≤ 1e-14 of the scale.
    np.testing.assert_allclose(y_conv, y_rec, rtol=0, atol=1e-12 * np.abs(y_rec).max())


@pytest.mark.parametrize("method", ["zoh", "bilinear"])
def test_s4d_stored_half_is_the_full_conjugate_symmetric_system(method):
    """2·Re over the N/2 stored modes = the plain sum over all N modes (A, Ā), (B, B̄), (C, C̄)."""
    L, H, N2 = 60, 2, 4
    A, B, C = s4d_inv_init(H, N2), complex_normal(H, N2), complex_normal(H, N2)
    D, u, log_dt = rng.normal(size=H), rng.normal(size=(L, H)), np.log([0.03, 0.3])
    full = [np.concatenate([m, m.conj()], axis=1) for m in (A, B, C)]
    dt = np.exp(log_dt)[:, None]
    if method == "zoh":
        A_bar = np.exp(dt * full[0])
        B_bar = (A_bar - 1) / full[0] * full[1]
    else:
        A_bar = (1 + dt / 2 * full[0]) / (1 - dt / 2 * full[0])
        B_bar = dt / (1 - dt / 2 * full[0]) * full[1]
    h, y_full = np.zeros((H, 2 * N2), complex), np.zeros((L, H))
    for t in range(L):
        h = A_bar * h + B_bar * u[t][:, None]
        total = np.sum(full[2] * h, axis=1)
        assert np.all(np.abs(total.imag) <= 1e-12 * (1 + np.abs(total)))  # real by symmetry
        y_full[t] = total.real + D * u[t]
    y, _ = s4d_recurrent(u, log_dt, A, B, C, D, method)
    np.testing.assert_allclose(y, y_full, rtol=1e-12, atol=1e-12)


def test_s4d_final_state_continues_the_sequence():
    H, N2 = 2, 4
    A, B, C = s4d_lin_init(H, N2), complex_normal(H, N2), complex_normal(H, N2)
    D, u, log_dt = rng.normal(size=H), rng.normal(size=(50, H)), np.log([0.05, 0.2])
    y, h = s4d_recurrent(u, log_dt, A, B, C, D, "zoh")
    y1, h1 = s4d_recurrent(u[:20], log_dt, A, B, C, D, "zoh")
    y2, h2 = s4d_recurrent(u[20:], log_dt, A, B, C, D, "zoh", h0=h1)
    np.testing.assert_allclose(np.concatenate([y1, y2]), y, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(h2, h, rtol=1e-13, atol=1e-13)


def test_s4d_initialisations_are_the_papers():
    np.testing.assert_allclose(
        s4d_lin_init(2, 3), [[-0.5, -0.5 + math.pi * 1j, -0.5 + 2j * math.pi]] * 2
    )
    # N2 = 2 stored modes, N = 4: (4/π)(4/1 − 1) = 12/π and (4/π)(4/3 − 1) = 4/(3π).
    np.testing.assert_allclose(
        s4d_inv_init(1, 2), [[-0.5 + 12j / math.pi, -0.5 + 4j / (3 * math.pi)]]
    )
    np.testing.assert_array_equal(s4d_real_init(2, 3), [[-1.0, -2.0, -3.0]] * 2)


def test_s4d_inv_approximates_the_hippo_n_spectrum():
    # S4D-Inv is the paper's closed-form fit of HiPPO-N's eigenvalues (N = 2·N2):
    # within 30% everywhere at N = 64; reading N as N2 would be off 4x at the top.
    N2 = 32
    eig = np.linalg.eigvals(hippo_n(2 * N2))
    upper = np.sort(eig.imag[eig.imag > 0])[::-1]
    approx = s4d_inv_init(1, N2)[0].imag
    assert np.all(np.abs(approx - upper) <= 0.3 * upper)


# --- discretisation against the matrix exponential and a dense system ------------


def test_zoh_is_the_matrix_exponential_of_the_augmented_system():
    a, b, dt = -0.3 + 2.0j, 0.7 - 0.4j, 0.37
    # expm([[aΔ, bΔ], [0, 0]]) = [[e^{aΔ}, ∫_0^Δ e^{as} ds · b], [0, 1]]
    exact = scipy.linalg.expm(np.array([[a * dt, b * dt], [0.0, 0.0]]))
    A_bar, B_bar = s4d_discretize(np.log([dt]), [[a]], [[b]], "zoh")
    np.testing.assert_allclose([A_bar[0, 0], B_bar[0, 0]], exact[0], rtol=1e-13)
    Lambda_bar, B_bar5 = s5_discretize(np.array([a]), np.array([[b]]), np.array([dt]), "zoh")
    np.testing.assert_allclose([Lambda_bar[0], B_bar5[0, 0]], exact[0], rtol=1e-13)


@pytest.mark.parametrize("method", ["zoh", "bilinear"])
@pytest.mark.parametrize("conj_sym", [False, True])
def test_s5_equals_the_dense_hippo_n_system(method, conj_sym):
    """S5 run in the eigenbasis equals the dense system x' = HiPPO-N x + B u, y = C x + D u."""
    P, J, H, L, dt = 8, 2, 3, 40, 0.3
    A = scipy.linalg.block_diag(*[hippo_n(P // J)] * J)
    B, C, D, u = (rng.normal(size=s) for s in [(P, H), (H, P), H, (L, H)])
    if method == "zoh":
        A_bar = scipy.linalg.expm(dt * A)
        B_bar = np.linalg.solve(A, A_bar - np.eye(P)) @ B
    else:
        left = np.eye(P) - dt / 2 * A
        A_bar, B_bar = np.linalg.solve(left, np.eye(P) + dt / 2 * A), np.linalg.solve(left, dt * B)
    x, y_dense = np.zeros(P), np.zeros((L, H))
    for t in range(L):
        x = A_bar @ x + B_bar @ u[t]
        y_dense[t] = C @ x + D * u[t]
    Lambda, V, V_inv = s5_init_lambda(P, J, conj_sym=conj_sym)
    log_dt = np.full(len(Lambda), math.log(dt))
    y, _ = s5_recurrent(u, Lambda, V_inv @ B, C @ V, D, log_dt, method, conj_sym=conj_sym)
    np.testing.assert_allclose(y, y_dense, rtol=0, atol=1e-11 * np.abs(y_dense).max())


# --- HiPPO ------------------------------------------------------------------------


def test_hippo_legs_and_its_normal_part_by_hand():
    r3, r5, r15 = math.sqrt(3), math.sqrt(5), math.sqrt(15)
    np.testing.assert_allclose(hippo_legs(3), [[-1, 0, 0], [-r3, -2, 0], [-r5, -r15, -3]])
    np.testing.assert_allclose(hippo_legs_low_rank(2), [math.sqrt(0.5), math.sqrt(1.5)])
    # normal part: −1/2 on the diagonal, ∓sqrt((n+½)(k+½)) below/above it
    a, b, c = math.sqrt(0.75), math.sqrt(1.25), math.sqrt(3.75)
    np.testing.assert_allclose(
        hippo_n(3), [[-0.5, a, b], [-a, -0.5, c], [-b, -c, -0.5]], rtol=1e-15, atol=1e-15
    )


@pytest.mark.parametrize("N", [4, 7, 64])
def test_hippo_n_diagonalisation_reconstructs_it(N):
    Lambda, V, V_inv = s5_init_lambda(N, 1)
    np.testing.assert_allclose(V @ np.diag(Lambda) @ V_inv, hippo_n(N), rtol=0, atol=1e-12 * N)
    np.testing.assert_allclose(V_inv @ V, np.eye(N), rtol=0, atol=1e-13 * N)
    np.testing.assert_allclose(Lambda.real, -0.5, rtol=0, atol=1e-12 * N)
    assert np.all(np.diff(Lambda.imag) > 0)


def test_s5_block_initialisation():
    Lambda, V, V_inv = s5_init_lambda(12, 3)
    block, V_block, _ = s5_init_lambda(4, 1)
    np.testing.assert_array_equal(Lambda, np.tile(block, 3))
    np.testing.assert_array_equal(V[4:8, 4:8], V_block)
    assert np.count_nonzero(V[:4, 4:]) == 0 and np.count_nonzero(V_inv[4:, :4]) == 0
    half, V_half, V_inv_half = s5_init_lambda(12, 3, conj_sym=True)
    assert half.shape == (6,) and V_half.shape == (12, 6) and V_inv_half.shape == (6, 12)
    assert np.all(half.imag < 0)  # one mode of each pair ±ω: the negative half
    np.testing.assert_allclose(np.sort(half[:2].imag), -np.sort(block.imag[2:])[::-1])


# --- S5 ----------------------------------------------------------------------------


@pytest.mark.parametrize("conj_sym", [False, True])
def test_s5_with_identity_b_c_is_h_scalar_recurrences(conj_sym):
    H, L = 4, 30
    Lambda = -rng.uniform(0.1, 1, H) + 1j * rng.uniform(-3, 3, H)
    log_dt, D, u = np.log(rng.uniform(0.01, 0.5, H)), rng.normal(size=H), rng.normal(size=(L, H))
    y, x_final = s5_recurrent(u, Lambda, np.eye(H), np.eye(H), D, log_dt, "zoh", conj_sym)
    for h in range(H):
        dt, x = math.exp(log_dt[h]), 0j
        for t in range(L):
            x = np.exp(Lambda[h] * dt) * x + (np.exp(Lambda[h] * dt) - 1) / Lambda[h] * u[t, h]
            expected = (2 if conj_sym else 1) * x.real + D[h] * u[t, h]
            assert abs(y[t, h] - expected) <= 1e-13 * (1 + abs(expected))
        assert abs(x_final[h] - x) <= 1e-13 * (1 + abs(x))


def test_s5_bilinear_two_steps_by_hand():
    # Λ = −2/3, Δ = 1: Λ̄ = (1 − 1/3)/(1 + 1/3) = 1/2, B̄ = 1/(1 + 1/3) = 3/4.
    # u = (1, 2): x_0 = 3/4, x_1 = 3/8 + 3/2 = 15/8; y = 2·Re(C x) + D u with C = 1, D = 1/2.
    y, x = s5_recurrent(
        np.array([[1.0], [2.0]]), np.array([-2 / 3]), np.ones((1, 1)), np.ones((1, 1)),
        np.array([0.5]), np.zeros(1), "bilinear",
    )  # fmt: skip
    np.testing.assert_allclose(y[:, 0], [2 * 0.75 + 0.5, 2 * 1.875 + 1.0], rtol=1e-15)
    np.testing.assert_allclose(x, [1.875], rtol=1e-15)


def test_s5_variable_steps():
    P, H, L = 6, 2, 12
    Lambda, V, V_inv = s5_init_lambda(P, 1, conj_sym=True)
    B, C = V_inv @ rng.normal(size=(P, H)), rng.normal(size=(H, P)) @ V
    D, u, log_dt = (
        rng.normal(size=H),
        rng.normal(size=(L, H)),
        np.log(rng.uniform(0.05, 0.3, P // 2)),
    )
    args = (Lambda, B, C, D)
    y, _ = s5_recurrent(u, *args, log_dt, "zoh")
    y_ones, _ = s5_recurrent(u, *args, log_dt, "zoh", dt_scale=np.ones(L))
    y_twice, _ = s5_recurrent(u, *args, log_dt, "zoh", dt_scale=np.full(L, 2.0))
    y_log2, _ = s5_recurrent(u, *args, log_dt + math.log(2), "zoh")
    np.testing.assert_allclose(y_ones, y, rtol=1e-14)
    np.testing.assert_allclose(y_twice, y_log2, rtol=1e-12)
    # Unforced ZOH composes exactly: steps of 0.5Δ and 1.5Δ land where 1Δ and 1Δ do.
    h0, silent = complex_normal(P // 2), np.zeros((2, H))
    _, x_a = s5_recurrent(silent, *args, log_dt, "zoh", dt_scale=np.array([0.5, 1.5]), h0=h0)
    _, x_b = s5_recurrent(silent, *args, log_dt, "zoh", h0=h0)
    np.testing.assert_allclose(x_a, x_b, rtol=1e-13)


# --- the selective scan and the Mamba block ----------------------------------------


def test_selective_scan_with_constant_inputs_is_an_lti_recurrence():
    batch, dim, N, L = 2, 3, 4, 25
    A = -rng.uniform(0.5, 2, (dim, N))
    B, C, delta = rng.normal(size=(dim, N)), rng.normal(size=(dim, N)), rng.uniform(0.01, 0.3, dim)
    u = rng.normal(size=(batch, dim, L))
    # the same constants as time-varying (batch, N, L) inputs, one channel at a time
    for d in range(dim):
        Bt = np.broadcast_to(B[d][None, :, None], (batch, N, L))
        Ct = np.broadcast_to(C[d][None, :, None], (batch, N, L))
        out, last = selective_scan_ref(
            u[:, d : d + 1], np.full((batch, 1, L), delta[d]), A[d : d + 1], Bt, Ct
        )
        x = np.zeros((batch, N))
        for t in range(L):
            x = np.exp(delta[d] * A[d]) * x + delta[d] * B[d] * u[:, d, t, None]
            np.testing.assert_allclose(out[:, 0, t], x @ C[d], rtol=1e-13, atol=1e-13)
        np.testing.assert_allclose(last[:, 0], x, rtol=1e-13)
    # and the time-invariant (D, N) form of B, C gives the same
    out_lti, _ = selective_scan_ref(u, np.broadcast_to(delta[None, :, None], u.shape), A, B, C)
    for d in range(dim):
        Bt = np.broadcast_to(B[d][None, :, None], (batch, N, L))
        Ct = np.broadcast_to(C[d][None, :, None], (batch, N, L))
        out_d, _ = selective_scan_ref(
            u[:, d : d + 1], np.full((batch, 1, L), delta[d]), A[d : d + 1], Bt, Ct
        )
        np.testing.assert_allclose(out_lti[:, d : d + 1], out_d, rtol=1e-13, atol=1e-13)


def test_selective_scan_two_steps_by_hand():
    # Δ = 1, A = −ln 2: exp(ΔA) = 1/2; B = C = 1; u = (1, 2): x = 1, then 1/2 + 2 = 5/2.
    # D = 1/2 adds (1/2, 1); the gate z = (0, 1) multiplies by silu = (0, 1/(1 + e⁻¹)).
    u, delta = np.array([[[1.0, 2.0]]]), np.ones((1, 1, 2))
    A, BC = np.array([[-math.log(2)]]), np.ones((1, 1, 2))
    out, last = selective_scan_ref(u, delta, A, BC, BC, D=np.array([0.5]))
    np.testing.assert_allclose(out[0, 0], [1.5, 3.5], rtol=1e-15)
    np.testing.assert_allclose(last, [[[2.5]]], rtol=1e-15)
    gated = selective_scan_ref(
        u, delta, A, BC, BC, D=np.array([0.5]), z=np.array([[[0.0, 1.0]]]), return_last_state=False
    )
    np.testing.assert_allclose(gated[0, 0], [0.0, 3.5 / (1 + math.exp(-1))], rtol=1e-15)


def test_selective_scan_bias_and_softplus_act_on_delta():
    batch, dim, N, L = 2, 3, 4, 10
    u, delta, z = (rng.normal(size=(batch, dim, L)) for _ in range(3))
    A, B, C = (
        -rng.uniform(0.5, 2, (dim, N)),
        rng.normal(size=(batch, N, L)),
        rng.normal(size=(batch, N, L)),
    )
    D, bias = rng.normal(size=dim), rng.normal(size=dim)
    full, last = selective_scan_ref(u, delta, A, B, C, D, z, delta_bias=bias, delta_softplus=True)
    plain, last_plain = selective_scan_ref(u, softplus(delta + bias[:, None]), A, B, C)
    np.testing.assert_allclose(full, (plain + D[:, None] * u) * silu(z), rtol=1e-14, atol=1e-14)
    np.testing.assert_array_equal(last, last_plain)
    assert softplus(1000.0) == 1000.0 and softplus(-1000.0) == 0.0


def _mamba_decode_step(x_t, p, conv_window, ssm_state):
    """One token of Mamba's decode path (``Mamba.step``): roll the conv window, then S6."""
    E, N = p["A_log"].shape
    R = p["dt_proj_W"].shape[0]
    xz = x_t @ p["in_proj_W"]
    conv_window = np.concatenate([conv_window[1:], xz[None, :E]])  # (K, E), newest last
    x_act = silu(np.sum(conv_window * p["conv_W"], axis=0) + p["conv_b"])
    proj = x_act @ p["x_proj_W"]
    dt = softplus(proj[:R] @ p["dt_proj_W"] + p["dt_proj_b"])
    B, C = proj[R : R + N], proj[R + N :]
    ssm_state = (
        np.exp(dt[:, None] * -np.exp(p["A_log"])) * ssm_state + dt[:, None] * B * x_act[:, None]
    )
    y = (ssm_state @ C + p["D"] * x_act) * silu(xz[E:])
    return y @ p["out_proj_W"], conv_window, ssm_state


def test_mamba_block_equals_its_token_by_token_decode():
    d_model, L = 8, 9
    p = mamba_block_params(rng, d_model, d_state=4)
    x = rng.normal(size=(2, L, d_model))
    out, (conv_state, ssm_state) = mamba_block_ref(x, p, return_state=True)
    for b in range(2):
        window, state = np.zeros((4, 2 * d_model)), np.zeros((2 * d_model, 4))
        for t in range(L):
            y, window, state = _mamba_decode_step(x[b, t], p, window, state)
            np.testing.assert_allclose(out[b, t], y, rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(ssm_state[b], state, rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(conv_state[b], window[1:], rtol=1e-13)
    np.testing.assert_allclose(mamba_block_ref(x[1], p), out[1], rtol=1e-14)
    # state carried across a split equals the whole sequence
    head, state = mamba_block_ref(x[:, :2], p, return_state=True)
    tail = mamba_block_ref(x[:, 2:], p, state=state)
    np.testing.assert_allclose(np.concatenate([head, tail], 1), out, rtol=1e-12, atol=1e-13)


def test_mamba_initialisation():
    p = mamba_block_params(rng, 32, d_state=16, dt_min=1e-3, dt_max=0.1)
    assert p["x_proj_W"].shape == (64, 2 + 32) and p["dt_proj_W"].shape == (2, 64)
    np.testing.assert_allclose(-np.exp(p["A_log"][5]), -np.arange(1, 17), rtol=1e-15)
    dt = softplus(p["dt_proj_b"])
    assert np.all((dt >= 1e-3 * (1 - 1e-12)) & (dt <= 0.1 * (1 + 1e-12)))


# --- LinOSS and D-LinOSS -------------------------------------------------------------


def _implicit_step(A, G, dt, method):
    """Solve the paper's step equations as a 2x2 linear system: (M, F) of w_n = M w_{n-1} + F·Bu."""
    # IM:   z_n + Δt A y_n = z_{n-1} + Δt Bu,            y_n − Δt z_n = y_{n-1}
    # IMEX: (1 + Δt G) z_n = z_{n-1} − Δt A y_{n-1} + Δt Bu,  y_n − Δt z_n = y_{n-1}
    if method == "im":
        lhs, rhs = np.array([[1, dt * A], [-dt, 1]]), np.eye(2)
    else:
        lhs, rhs = np.array([[1 + dt * G, 0], [-dt, 1]]), np.array([[1, -dt * A], [0, 1]])
    return np.linalg.solve(lhs, rhs), np.linalg.solve(lhs, [dt, 0.0])


def test_linoss_step_matrices_solve_the_papers_equations():
    A, G, dt = (
        np.array([0.0, 0.3, 2.0, 9.0]),
        np.array([0.0, 0.5, 1.0, 4.0]),
        np.array([0.1, 0.5, 0.9, 1.0]),
    )
    cases = [
        ("im", linoss_im_step_matrices(A, dt), 0 * G),
        ("imex", linoss_imex_step_matrices(A, dt), 0 * G),
        ("imex", dlinoss_step_matrices(A, G, dt), G),
    ]
    for method, (M, F), g in cases:
        for p in range(4):
            M_p, F_p = _implicit_step(A[p], g[p], dt[p], method)
            np.testing.assert_allclose(M[p], M_p, rtol=1e-14, atol=1e-15)
            np.testing.assert_allclose(F[p], F_p, rtol=1e-14, atol=1e-15)


def test_linoss_determinants_and_eigenvalues_are_the_papers():
    A, dt, G = rng.uniform(0, 3.9, 50), rng.uniform(0.05, 1, 50), rng.uniform(0, 2, 50)
    M_im, _ = linoss_im_step_matrices(A, dt)
    M_imex, _ = linoss_imex_step_matrices(A, dt)
    M_d, _ = dlinoss_step_matrices(A, G, dt)
    S = 1 / (1 + dt**2 * A)
    np.testing.assert_allclose(np.linalg.det(M_im), S, rtol=1e-13)  # Prop. 3.1: |λ|² = S
    np.testing.assert_allclose(
        np.abs(np.linalg.eigvals(M_im)), np.sqrt(S)[:, None] * [1, 1], rtol=1e-12
    )
    np.testing.assert_allclose(np.linalg.det(M_imex), 1.0, rtol=1e-13)
    assert np.all(dt**2 * A <= 4)  # then both IMEX eigenvalues lie on the unit circle
    np.testing.assert_allclose(
        np.abs(np.linalg.eigvals(M_imex)), 1.0, rtol=1e-7
    )  # double root at Δt²A≈4
    np.testing.assert_allclose(np.linalg.det(M_d), 1 / (1 + dt * G), rtol=1e-13)
    inside = (G - dt * A) ** 2 <= 4 * A  # D-LinOSS Prop. 3.2
    modulus = np.abs(np.linalg.eigvals(M_d[inside]))
    np.testing.assert_allclose(modulus, np.sqrt(1 / (1 + dt * G))[inside, None] * [1, 1], rtol=1e-7)


def _free_run(M, z, y, steps):
    """States of the unforced recurrence w_n = M w_{n-1}, (steps + 1, P) each."""
    zs, ys = [z], [y]
    for _ in range(steps):
        z, y = M[:, 0, 0] * z + M[:, 0, 1] * y, M[:, 1, 0] * z + M[:, 1, 1] * y
        zs.append(z)
        ys.append(y)
    return np.array(zs), np.array(ys)


def test_linoss_im_dissipates_energy_at_the_papers_rate():
    # E = ½(z² + Ay²): E_n = E_{n-1}/(1 + Δt²A) exactly, every step (det M_IM = |λ|² = S).
    A, dt = np.array([0.2, 1.0, 3.0]), np.array([0.5, 0.1, 0.9])
    M, _ = linoss_im_step_matrices(A, dt)
    z, y = _free_run(M, rng.normal(size=3), rng.normal(size=3), 200)
    E = oscillator_energy(z, y, A)
    np.testing.assert_allclose(
        E[1:] / E[:-1], np.broadcast_to(1 / (1 + dt**2 * A), (200, 3)), rtol=1e-12
    )


def test_linoss_imex_conserves_the_modified_energy():
    # Symplectic Euler conserves Ẽ = ½(z² + Ay² − ΔtA·zy) exactly (to rounding over
    # 10,000 steps); the plain energy E oscillates in [Ẽ/(1 + Δt√A/2), Ẽ/(1 − Δt√A/2)].
    A, dt, steps = np.array([0.2, 1.0, 3.0]), np.array([0.5, 0.1, 0.9]), 10_000
    M, _ = linoss_imex_step_matrices(A, dt)
    z, y = _free_run(M, rng.normal(size=3), rng.normal(size=3), steps)
    modified = imex_modified_energy(z, y, A, dt)
    np.testing.assert_allclose(modified, np.broadcast_to(modified[0], modified.shape), rtol=1e-10)
    E, half = oscillator_energy(z, y, A), dt * np.sqrt(A) / 2
    lower, upper = modified[0] / (1 + half), modified[0] / (1 - half)
    assert np.all((lower * (1 - 1e-10) <= E) & (upper * (1 + 1e-10) >= E))
    assert np.all(E.max(0) - E.min(0) > 1e-3 * E[0])  # E itself is not the invariant
    # ½(z_n² + A y_n y_{n-1}) is the same invariant written on the staggered grid
    np.testing.assert_allclose(0.5 * (z[1:] ** 2 + A * y[1:] * y[:-1]), modified[1:], rtol=1e-10)


def test_dlinoss_dissipates_the_modified_energy_at_its_damping_rate():
    A, G, dt = np.array([0.5, 2.0, 3.0]), np.array([0.1, 0.3, 1.0]), np.array([0.2, 0.5, 0.9])
    M, _ = dlinoss_step_matrices(A, G, dt)
    z, y = _free_run(M, rng.normal(size=3), rng.normal(size=3), 300)
    modified = imex_modified_energy(z, y, A, dt, G)
    ratio = np.broadcast_to(1 / (1 + dt * G), (300, 3))
    np.testing.assert_allclose(modified[1:] / modified[:-1], ratio, rtol=1e-11)


def test_linoss_two_steps_by_hand():
    # A = 1, Δt = 1/2, B = C = 1, D = 0, u = (1, 0), from rest.
    # IMEX: z = 1/2, y = 1/4; then z = 1/2 − 1/8 = 3/8, y = 1/4 + 3/16 = 7/16.
    # IM (S = 4/5): y = S·(1/4) = 1/5, z = (1/2)(1 − 1/5) = 2/5; then y = S(1/5 + 1/5) = 8/25,
    # z = 2/5 − (1/2)(8/25) = 6/25.
    u, one = np.array([[1.0], [0.0]]), np.ones((1, 1))
    out, (z, y) = linoss_recurrent(u, np.ones(1), one, one, np.zeros(1), 0.5, "imex")
    np.testing.assert_allclose(out[:, 0], [0.25, 7 / 16], rtol=1e-15)
    np.testing.assert_allclose([z[0], y[0]], [3 / 8, 7 / 16], rtol=1e-15)
    out, (z, y) = linoss_recurrent(u, np.ones(1), one, one, np.zeros(1), 0.5, "im")
    np.testing.assert_allclose(out[:, 0], [0.2, 0.32], rtol=1e-15)
    np.testing.assert_allclose([z[0], y[0]], [0.24, 0.32], rtol=1e-15)


@pytest.mark.parametrize("method", ["im", "imex"])
def test_linoss_complex_b_runs_two_real_banks(method):
    P, H, L = 5, 3, 40
    A, dt = rng.uniform(0, 1, P), rng.uniform(0.1, 1, P)
    B, C, D, u = (
        complex_normal(P, H),
        complex_normal(H, P),
        rng.normal(size=H),
        rng.normal(size=(L, H)),
    )
    out, (z, y) = linoss_recurrent(u, A, B, C, D, dt, method)
    # Re(C y) = Re(C)·Re(y) − Im(C)·Im(y), the two banks driven by Re(B)u and Im(B)u.
    _, (z_re, y_re) = linoss_recurrent(u, A, B.real, C.real, D, dt, method)
    _, (z_im, y_im) = linoss_recurrent(u, A, B.imag, C.real, D, dt, method)
    np.testing.assert_allclose(z, z_re + 1j * z_im, rtol=1e-13)
    np.testing.assert_allclose(y, y_re + 1j * y_im, rtol=1e-13)
    banks_re, _ = linoss_recurrent(u, A, B.real, C.real, D, dt, method)
    banks_im, _ = linoss_recurrent(u, A, B.imag, C.imag, np.zeros(H), dt, method)
    np.testing.assert_allclose(out, banks_re - banks_im, rtol=1e-12, atol=1e-12)


def test_linoss_carry_and_damping_options():
    P, H, L = 4, 2, 30
    A, dt, B, C = (
        rng.uniform(0, 2, P),
        rng.uniform(0.1, 1, P),
        rng.normal(size=(P, H)),
        rng.normal(size=(H, P)),
    )
    D, u = rng.normal(size=H), rng.normal(size=(L, H))
    out, final = linoss_recurrent(u, A, B, C, D, dt, "imex")
    out0, _ = linoss_recurrent(u, A, B, C, D, dt, "imex", G=np.zeros(P))
    np.testing.assert_array_equal(out0, out)
    head, carry = linoss_recurrent(u[:11], A, B, C, D, dt, "imex")
    tail, final2 = linoss_recurrent(u[11:], A, B, C, D, dt, "imex", h0=carry)
    np.testing.assert_allclose(np.concatenate([head, tail]), out, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(final2, final, rtol=1e-13)
    with pytest.raises(ValueError, match="method"):
        linoss_recurrent(u, A, B, C, D, dt, "im", G=np.zeros(P))
