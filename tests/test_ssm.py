"""The state-space cells (S4D, S5, LinOSS and D-LinOSS): parameter counts
against the papers' formulas, the initialisations against the papers'
definitions, dtypes (bf16 params and compute with fp32 state; float64
params with a float64 state).

The engine's contract (padding, reverse, resets, packing, bidirectional,
vmap, the doors) is in the shared tables of test_unroll.py, test_parallel.py,
test_packing.py and test_doors.py.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import assert_trees_close, normal, param_shapes, random_params

import recurrent_jax as rj

H, D = 4, 3


def count(cell, input_size):
    return sum(
        math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(param_shapes(cell, input_size))
    )


# --- parameter counts: the papers' formulas -------------------------------------


@pytest.mark.parametrize(
    "make, formula",
    [
        # S4D: per channel Δ, N/2 complex A, B and C, and D: H(3N + 2)
        (lambda: rj.cells.s4d(8, state_size=16), 8 * (3 * 16 + 2)),
        # S5: P/2 complex Λ, P/2 steps, P/2 x H complex B̃ and H x P/2 C̃, D: 2PH + 3P/2 + H
        (lambda: rj.cells.s5(8, state_size=16, blocks=2), 2 * 16 * 8 + 3 * 16 // 2 + 8),
        # LinOSS: P each of A and Δt, P x H complex B and H x P complex C, D: P(4H + 2) + H
        (lambda: rj.cells.linoss(8, state_size=16), 16 * (4 * 8 + 2) + 8),
        # D-LinOSS: and P of G
        (lambda: rj.cells.linoss(8, state_size=16, damping=True), 16 * (4 * 8 + 3) + 8),
    ],
    ids=["s4d", "s5", "linoss", "d-linoss"],
)
def test_parameter_counts_are_the_papers(make, formula):
    assert count(make(), 8) == formula


def test_other_input_sizes_add_an_input_map():
    """D != H: S4D maps the inputs onto its H channels (D·H more); S5 and
    LinOSS read D features through B and skip through a (D, H) matrix D."""
    assert count(rj.cells.s4d(8, state_size=16), 3) == 8 * 50 + 3 * 8
    assert count(rj.cells.s5(8, state_size=16, blocks=2), 3) == 16 * (3 + 8) + 24 + 3 * 8
    assert count(rj.cells.linoss(8, state_size=16), 3) == 16 * (2 * 3 + 2 * 8 + 2) + 3 * 8
    shapes = param_shapes(rj.cells.s5(8, state_size=16, blocks=2, variable_steps=True), 4)
    assert shapes["w_u"].shape == (3, 16) and shapes["d"].shape == (3, 8)  # the last feature: s_k


# --- initialisations -------------------------------------------------------------


def test_s4d_lin_and_inv_initialisations(key):
    n = np.arange(8)
    for init, imag in [("lin", np.pi * n), ("inv", 16 / np.pi * (16 / (2 * n + 1) - 1))]:
        cell = rj.cells.s4d(H, state_size=16, init=init, dt_min=0.01, dt_max=0.2)
        params = jax.tree_util.tree_map(np.asarray, cell.init(key, H))
        np.testing.assert_allclose(params["a_imag"], np.broadcast_to(imag, (H, 8)), rtol=1e-6)
        np.testing.assert_allclose(-np.exp(params["log_a_real"]), -0.5, rtol=1e-6)
        np.testing.assert_array_equal(params["b"], np.tile(np.repeat([1.0, 0.0], 8), (H, 1)))
        assert np.all((params["log_dt"] >= np.log(0.01)) & (params["log_dt"] <= np.log(0.2)))
        assert "w_ih" not in params and params["d"].shape == (H,)


def _hippo_normal(size):
    """The normal part of HiPPO-LegS, from its definition (S5 §4.1):
    A_nk = −√(2n+1)√(2k+1) below the diagonal, −(n+1) on it; plus p pᵀ,
    p_n = √(n + 1/2)."""
    a = np.zeros((size, size))
    for i in range(size):
        for k in range(size):
            if i > k:
                a[i, k] = -np.sqrt(2 * i + 1) * np.sqrt(2 * k + 1)
            elif i == k:
                a[i, k] = -(i + 1)
    p = np.sqrt(np.arange(size) + 0.5)
    return a + np.outer(p, p)


def test_s5_hippo_n_initialisation_in_blocks(key):
    """Λ: one of each conjugate pair of HiPPO-N's eigenvalues (computed here
    by a general eigensolver from the matrix's definition), repeated on each
    of the J blocks; Re Λ = −1/2."""
    cell = rj.cells.s5(H, state_size=12, blocks=2, dt_min=0.01, dt_max=0.05)
    params = jax.tree_util.tree_map(np.asarray, cell.init(key, H))
    want = np.linalg.eigvals(_hippo_normal(6))
    want = np.sort(want[want.imag < 0].imag)  # Re Λ = −1/2 for all
    got = params["lambda_re"] + 1j * params["lambda_im"]
    np.testing.assert_allclose(np.sort(got[:3].imag), want, rtol=1e-5)
    np.testing.assert_array_equal(got[:3], got[3:])
    np.testing.assert_allclose(params["lambda_re"], -0.5, atol=1e-6)
    steps = params["log_step"]
    assert np.all((steps >= np.log(0.01)) & (steps <= np.log(0.05))) and np.ptp(steps) > 0
    assert params["w_ih"].shape == (H, 12) and params["w_out"].shape == (12, H)


def _step_matrices(cell, params):
    """The oscillators' 2×2 step matrices (2P, 2, 2), from the cell's own
    coefficients at one step."""
    xp = jnp.zeros((1, 2 * params["a_diag"].shape[0] + D))
    return np.asarray(cell.linear(params, xp).a[0], np.float64)


def test_d_linoss_ring_initialisation(key):
    """D-LinOSS draws the step matrices' eigenvalues on a ring: every one of
    the initial M has its eigenvalues at modulus in [r_min, r_max] and phase
    within [0, max_phase] (so G >= 0 and A inside the clip: nothing
    projected), as conjugate pairs."""
    cell = rj.cells.linoss(H, state_size=64, damping=True, r_min=0.6, r_max=0.8, max_phase=1.0)
    params = cell.init(key, D)
    eig = np.linalg.eigvals(_step_matrices(cell, params))
    assert np.all((np.abs(eig) >= 0.6 - 1e-5) & (np.abs(eig) <= 0.8 + 1e-5))
    assert np.all(np.abs(np.angle(eig)) <= 1.0 + 1e-5)
    np.testing.assert_allclose(np.sort(eig.imag, -1)[:, 0], -np.sort(eig.imag, -1)[:, 1], atol=1e-6)
    assert np.all(np.asarray(params["g_diag"]) >= 0)


def test_linoss_im_and_imex_step_spectra(key):
    """LinOSS-IM's step matrix has |λ|² = 1/(1 + Δt²A) (dissipative);
    IMEX's has det 1 (|λ| = 1 while Δt²A <= 4)."""
    for discretization in ("im", "imex"):
        cell = rj.cells.linoss(H, state_size=16, discretization=discretization)
        params = cell.init(key, D)
        a = np.maximum(np.asarray(params["a_diag"], np.float64), 0)
        step = 1 / (1 + np.exp(-np.asarray(params["dt_logit"], np.float64)))
        modulus = np.abs(np.linalg.eigvals(_step_matrices(cell, params)[:16]))
        want = 1 / np.sqrt(1 + step**2 * a) if discretization == "im" else np.ones(16)
        np.testing.assert_allclose(modulus, np.stack([want, want], -1), rtol=1e-5)


# --- dtypes -----------------------------------------------------------------------


CELLS = {
    "s4d": lambda **o: rj.cells.s4d(H, state_size=4, **o),
    "s5": lambda **o: rj.cells.s5(H, state_size=4, blocks=2, **o),
    "d-linoss": lambda **o: rj.cells.linoss(H, state_size=2, damping=True, **o),
}


@pytest.mark.parametrize("name", CELLS)
def test_bf16_params_and_compute_keep_an_fp32_state(name, rng):
    """bf16 params and GEMMs, fp32 carry: the outputs follow the fp32 run of
    the same (bf16-rounded) params to bf16's rounding of the GEMM operands
    (2e-2 relative)."""
    cell16 = CELLS[name](param_dtype=jnp.bfloat16, dtype=jnp.bfloat16)
    params16 = random_params(cell16, rng)
    assert {p.dtype for p in jax.tree_util.tree_leaves(params16)} == {jnp.dtype(jnp.bfloat16)}
    params32 = jax.tree_util.tree_map(lambda p: p.astype(jnp.float32), params16)
    xs = normal(rng, (2, 6, D))
    final, ys = jax.jit(lambda p: rj.unroll(cell16, p, xs))(params16)
    want_final, want_ys = jax.jit(lambda p: rj.unroll(CELLS[name](), p, xs))(params32)
    assert final.dtype == jnp.float32 and ys.dtype == jnp.float32
    scale = float(np.abs(np.asarray(want_ys)).max())
    assert_trees_close((final, ys), (want_final, want_ys), atol=2e-2 * scale)


@pytest.mark.parametrize("name", CELLS)
def test_float64_params_give_a_float64_state(name, rng):
    """With float64 params the step and the coefficients compute in float64
    (``cells.base.carry_dtype``): a float64 carry stays float64 and a step
    agrees with the float32 step only to float32 rounding, not bit for bit."""
    with jax.enable_x64(True):
        cell = CELLS[name](param_dtype=jnp.float64)
        params = jax.tree_util.tree_map(
            lambda p: jnp.asarray(p, jnp.float64), random_params(CELLS[name](), rng)
        )
        carry = jnp.asarray(rng.standard_normal(cell.initial_carry((2,)).shape))
        x = jnp.asarray(rng.standard_normal((2, 1, D)))
        xp = cell.project(params, x)[:, 0]
        new, y = cell.step(params, carry, xp)
        assert new.dtype == y.dtype == jnp.float64
        coeffs = cell.linear(params, xp)
        assert {jnp.finfo(c.dtype).dtype for c in coeffs} == {jnp.dtype(jnp.float64)}
        new32, y32 = CELLS[name]().step(params, carry.astype(jnp.float32), xp.astype(jnp.float32))
        assert new32.dtype == jnp.float32
        np.testing.assert_allclose(new32, new, rtol=1e-5, atol=1e-5)
        assert np.abs(np.asarray(new32, np.float64) - np.asarray(new)).max() > 0
