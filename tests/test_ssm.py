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
import ssm_oracles
from _helpers import assert_trees_close, normal, param_shapes, random_params

import recurrent_jax as rj
from recurrent_jax import parallel

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
    for init, oracle in [("lin", ssm_oracles.s4d_lin_init), ("inv", ssm_oracles.s4d_inv_init)]:
        cell = rj.cells.s4d(H, state_size=16, init=init, dt_min=0.01, dt_max=0.2)
        params = jax.tree_util.tree_map(np.asarray, jax.jit(cell.init, static_argnums=1)(key, H))
        a = -np.exp(params["log_a_real"]) + 1j * params["a_imag"]
        np.testing.assert_allclose(a, oracle(H, 8), rtol=1e-6)
        np.testing.assert_array_equal(params["b"], np.tile(np.repeat([1.0, 0.0], 8), (H, 1)))
        assert np.all((params["log_dt"] >= np.log(0.01)) & (params["log_dt"] <= np.log(0.2)))
        assert "w_ih" not in params and params["d"].shape == (H,)


def test_s5_hippo_n_initialisation_in_blocks(key):
    """Λ: one of each conjugate pair of HiPPO-N's eigenvalues on each of the
    J blocks (the oracle's ``s5_init_lambda``); the steps in their range."""
    cell = rj.cells.s5(H, state_size=12, blocks=2, dt_min=0.01, dt_max=0.05)
    params = jax.tree_util.tree_map(np.asarray, jax.jit(cell.init, static_argnums=1)(key, H))
    want, _, _ = ssm_oracles.s5_init_lambda(12, 2, conj_sym=True)
    got = params["lambda_re"] + 1j * params["lambda_im"]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    steps = params["log_step"]
    assert np.all((steps >= np.log(0.01)) & (steps <= np.log(0.05))) and np.ptp(steps) > 0
    assert params["w_ih"].shape == (H, 12) and params["w_out"].shape == (12, H)


def _step_matrices(cell, params):
    """The oscillators' 2×2 step matrices (2P, 2, 2), from the cell's own
    coefficients at one step."""
    xp = jnp.zeros((1, 2 * params["a_diag"].shape[0] + D))
    return np.asarray(jax.jit(cell.linear)(params, xp).a[0], np.float64)


def test_d_linoss_ring_initialisation(key):
    """D-LinOSS draws the step matrices' eigenvalues on a ring: every one of
    the initial M has its eigenvalues at modulus in [r_min, r_max] and phase
    within [0, max_phase] (so G >= 0 and A inside the clip: nothing
    projected), as conjugate pairs."""
    cell = rj.cells.linoss(H, state_size=64, damping=True, r_min=0.6, r_max=0.8, max_phase=1.0)
    params = jax.jit(cell.init, static_argnums=1)(key, D)
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
        params = jax.jit(cell.init, static_argnums=1)(key, D)
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

        @jax.jit
        def run(params, carry, x):
            xp = cell.project(params, x)[:, 0]
            return cell.step(params, carry, xp), cell.linear(params, xp), xp

        (new, y), coeffs, xp = run(params, carry, x)
        assert new.dtype == y.dtype == jnp.float64
        assert {jnp.finfo(c.dtype).dtype for c in coeffs} == {jnp.dtype(jnp.float64)}
        step32 = jax.jit(CELLS[name]().step)
        new32, _ = step32(params, carry.astype(jnp.float32), xp.astype(jnp.float32))
        assert new32.dtype == jnp.float32
        np.testing.assert_allclose(new32, new, rtol=1e-5, atol=1e-5)
        assert np.abs(np.asarray(new32, np.float64) - np.asarray(new)).max() > 0


# --- against the float64 oracles of the papers' recurrences (ssm_oracles.py) ------


def _planes(carry):
    """Real planes (..., 2M) ``[Re, Im]`` as complex (..., M)."""
    m = carry.shape[-1] // 2
    return carry[..., :m] + 1j * carry[..., m:]


def _to_planes(h):
    return np.concatenate([h.real, h.imag], axis=-1)


def s4d_oracle(params, xs, carry0, method):
    """The oracle's outputs and final states per sequence, in the cell's layout."""
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    m = p["a_imag"].shape[1]
    u = xs @ p["w_ih"] if "w_ih" in p else xs
    args = dict(
        log_dt=p["log_dt"],
        A=-np.exp(p["log_a_real"]) + 1j * p["a_imag"],
        B=_planes(p["b"]),
        C=_planes(p["c"]),
        D=p["d"],
        method=method,
    )
    runs = [
        ssm_oracles.s4d_recurrent(u[i], h0=_planes(carry0[i]).reshape(-1, m), **args)
        for i in range(len(xs))
    ]
    return np.stack([y for y, _ in runs]), np.stack([_to_planes(h.reshape(-1)) for _, h in runs])


def s5_oracle(params, xs, carry0, method, variable_steps=False):
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    w_in, U = p["w_u"] if variable_steps else p["w_ih"], len(p["lambda_re"])
    u = xs[..., :-1] if variable_steps else xs
    args = dict(
        Lambda=p["lambda_re"] + 1j * p["lambda_im"],
        B_tilde=_planes(w_in).T,
        C_tilde=(p["w_out"][:U] - 1j * p["w_out"][U:]).T,  # Re(C̃x) = [Re x, Im x] @ w_out
        D=p["d"],
        log_dt=p["log_step"],
        method=method,
    )
    runs = [
        ssm_oracles.s5_recurrent(
            u[i],
            h0=_planes(carry0[i]),
            dt_scale=xs[i, :, -1] if variable_steps else None,
            **args,
        )
        for i in range(len(xs))
    ]
    return np.stack([y for y, _ in runs]), np.stack([_to_planes(x) for _, x in runs])


def _oscillatory_region(g, step):
    """The A for which (G − Δt A)² <= 4A (D-LinOSS's complex-eigenvalue
    condition), as the roots of Δt²A² − (2ΔtG + 4)A + G² = 0."""
    b, disc = 2 * step * g + 4, np.sqrt((2 * step * g + 4) ** 2 - 4 * step**2 * g**2)
    return (b - disc) / (2 * step**2), (b + disc) / (2 * step**2)


def linoss_parameters(params):
    """(A, G or None, Δt) of the papers from the cell's params: A = ReLU(Â),
    Δt = sigmoid(Δ̂); with damping G = ReLU(Ĝ) and A clipped to the
    oscillatory region."""
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    step = 1 / (1 + np.exp(-p["dt_logit"]))
    if "g_diag" not in p:
        return np.maximum(p["a_diag"], 0), None, step
    g = np.maximum(p["g_diag"], 0)
    return np.clip(p["a_diag"], *_oscillatory_region(g, step)), g, step


def linoss_oracle(params, xs, carry0, method):
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    A, G, step = linoss_parameters(params)
    P = len(A)
    args = dict(
        A_diag=A,
        B=_planes(p["w_ih"]).T,  # (P, H) complex
        C=(p["w_out"][:P] - 1j * p["w_out"][P:]).T,  # Re(C y) = [Re y, Im y] @ w_out
        D=p["d"],
        dt=step,
        method=method,
        G=G,
    )
    runs = [
        ssm_oracles.linoss_recurrent(
            xs[i], h0=(_planes(carry0[i, : 2 * P]), _planes(carry0[i, 2 * P :])), **args
        )
        for i in range(len(xs))
    ]
    finals = [np.concatenate([_to_planes(z), _to_planes(y)]) for _, (z, y) in runs]
    return np.stack([out for out, _ in runs]), np.stack(finals)


ORACLE_CASES = {  # cell, input size, oracle
    "s4d-lin-zoh": (
        lambda **o: rj.cells.s4d(H, state_size=6, dt_min=0.05, dt_max=0.5, **o),
        D,
        lambda *a: s4d_oracle(*a, "zoh"),
    ),
    "s4d-inv-bilinear": (
        lambda **o: rj.cells.s4d(
            H, state_size=6, init="inv", discretization="bilinear", dt_min=0.05, **o
        ),
        H,
        lambda *a: s4d_oracle(*a, "bilinear"),
    ),
    "s5-zoh": (
        lambda **o: rj.cells.s5(H, state_size=8, blocks=2, dt_min=0.05, dt_max=0.5, **o),
        H,
        lambda *a: s5_oracle(*a, "zoh"),
    ),
    "s5-bilinear-steps": (
        lambda **o: rj.cells.s5(
            H, state_size=8, blocks=1, discretization="bilinear", variable_steps=True, **o
        ),
        H + 1,
        lambda *a: s5_oracle(*a, "bilinear", variable_steps=True),
    ),
    "linoss-im": (
        lambda **o: rj.cells.linoss(H, state_size=3, **o),
        H,
        lambda *a: linoss_oracle(*a, "im"),
    ),
    "linoss-imex": (
        lambda **o: rj.cells.linoss(H, state_size=3, discretization="imex", **o),
        H,
        lambda *a: linoss_oracle(*a, "imex"),
    ),
    "d-linoss": (
        # phases up to 2 (not π): eigenvalues near −1 make a near-double
        # eigenvalue, whose conditioning float32 would feel over 20 steps
        lambda **o: rj.cells.linoss(H, state_size=3, damping=True, max_phase=2.0, **o),
        H,
        lambda *a: linoss_oracle(*a, "imex"),
    ),
}


def oracle_setup(name, num_steps=20, batch=2, edges=True):
    """The cell's own initialisation moved off its defaults (N(0, 0.1²)
    added to every param), inputs, and a nonzero initial carry, in float64
    NumPy. With ``edges``, D-LinOSS gets A below and above the oscillatory
    region and a negative Ĝ, so that its projection acts (A on the region's
    edge: a double eigenvalue, whose Jordan block amplifies rounding)."""
    make, input_size, oracle = ORACLE_CASES[name]
    rng = np.random.default_rng(7)
    params = make().init(jax.random.PRNGKey(1), input_size)
    params = {
        k: np.asarray(v, np.float64) + 0.1 * rng.standard_normal(v.shape) for k, v in params.items()
    }
    if "g_diag" in params and edges:
        params["a_diag"][:2], params["g_diag"][2] = [-1.0, 1e3], -0.5
    xs = rng.standard_normal((batch, num_steps, input_size))
    if name.endswith("steps"):
        xs[..., -1] = rng.uniform(0.2, 3.0, (batch, num_steps))  # per-step Δ scales
    carry0 = 0.5 * rng.standard_normal(make().initial_carry((batch,)).shape)
    return make, params, xs, carry0, oracle


def _state(carry, form):
    """The parallel scan's state of a carry: complex (…, M), or 2-vectors (…, N, 2)."""
    if form == "block":
        return jnp.stack(jnp.split(carry, 2, axis=-1), axis=-1)
    return jax.lax.complex(*jnp.split(carry, 2, axis=-1))


def _carry(state, form):
    if form == "block":
        return jnp.concatenate([state[..., 0], state[..., 1]], axis=-1)
    return jnp.concatenate([jnp.real(state), jnp.imag(state)], axis=-1)


@pytest.mark.parametrize(
    "name",
    [  # every cell and option by default; the remaining combinations under -m slow
        pytest.param(n, marks=pytest.mark.slow) if n in ("s4d-lin-zoh", "s5-zoh") else n
        for n in ORACLE_CASES
    ],
)
def test_cells_equal_the_oracles_in_float64(name):
    """The cell's step scanned in float64, and its coefficients solved by the
    associative and the chunked scans in float64, give the oracle's outputs
    and final states to 1e-10 (relative to their scale; float64 rounding
    over 20 steps is ~1e-14)."""
    make, params, xs, carry0, oracle = oracle_setup(name)
    want_ys, want_final = oracle(params, xs, carry0)
    with jax.enable_x64(True):
        cell = make(param_dtype=jnp.float64)

        @jax.jit
        def run(p, xs, carry0):
            xp = jnp.moveaxis(cell.project(p, xs), -2, 0)
            final, ys = jax.lax.scan(lambda c, x: cell.step(p, c, x), carry0, xp)
            coeffs = cell.linear(p, xp)
            form = "block" if isinstance(coeffs, parallel.BlockCoefficients) else "complex"
            h0 = _state(carry0, form)
            solved = [parallel.solve(*coeffs, h0, form, chunk)[-1] for chunk in (None, 6)]
            return ys, [final, *(_carry(h, form) for h in solved)]

        ys, finals = run(*jax.tree_util.tree_map(jnp.asarray, (params, xs, carry0)))
    scale = max(np.abs(want_ys).max(), np.abs(want_final).max())
    assert ys.dtype == jnp.float64
    np.testing.assert_allclose(
        np.moveaxis(np.asarray(ys), 0, 1), want_ys, rtol=0, atol=1e-10 * scale
    )
    for got in finals:
        np.testing.assert_allclose(np.asarray(got), want_final, rtol=0, atol=1e-10 * scale)


@pytest.mark.parametrize(
    "name",
    [  # test_parallel.py runs every cell's backends against the scan by default
        n if n == "d-linoss" else pytest.param(n, marks=pytest.mark.slow) for n in ORACLE_CASES
    ],
)
def test_backends_agree_with_each_other_and_the_oracles_in_float32(name):
    """``rj.unroll`` in float32 by ``scan``, ``associative`` and ``chunked``:
    outputs and final carries within 1e-5 of each other and of the float64
    oracle (relative to their scale: float32 rounding over 20 steps), and
    the gradients of a loss through all three within 1e-4."""
    make, params, xs, carry0, oracle = oracle_setup(name, edges=False)
    want = oracle(params, xs, carry0)
    cell = make()
    p32 = jax.tree_util.tree_map(lambda v: jnp.asarray(v, jnp.float32), params)
    xs32, carry32 = jnp.asarray(xs, jnp.float32), jnp.asarray(carry0, jnp.float32)
    probe = jnp.asarray(np.random.default_rng(3).standard_normal(want[0].shape), jnp.float32)

    def loss(impl):
        def f(p, c):
            final, ys = rj.unroll(cell, p, xs32, initial_carry=c, impl=impl, chunk_length=6)
            return jnp.sum(jnp.sin(ys) * probe) + jnp.sum(final**2), (ys, final)

        return jax.jit(jax.grad(f, argnums=(0, 1), has_aux=True))

    results = {impl: loss(impl)(p32, carry32) for impl in ("scan", "associative", "chunked")}
    scale = max(np.abs(w).max() for w in want)
    for _, outputs in results.values():
        assert_trees_close(outputs, want, atol=1e-5 * scale)
    grad_scale = max(np.abs(g).max() for g in jax.tree_util.tree_leaves(results["scan"][0]))
    for impl in ("associative", "chunked"):
        assert_trees_close(results[impl][0], results["scan"][0], atol=1e-4 * grad_scale)


@pytest.mark.parametrize("method", ["zoh", "bilinear"])
def test_s4d_recurrence_equals_the_convolution_view_at_1000_steps(method):
    """S4D's two views (§3.1): the cell's recurrence (its step scanned in
    float64; and ``rj.unroll``'s associative scan in float32) against the
    oracle's convolution y = K ∗ u + Du, K by the Vandermonde product and
    applied by FFT, over L = 1,000 steps from a zero state. Float64 to 1e-10
    of the scale; float32 to 1e-4 (rounding of Ā^l over 1,000 steps)."""
    cell_f32 = rj.cells.s4d(H, state_size=8, init="inv", discretization=method)
    params = {
        k: np.asarray(v, np.float64) for k, v in cell_f32.init(jax.random.PRNGKey(2), H).items()
    }
    params["c"] = params["c"] + 0.1  # B = 1 and C's mean off zero: nothing cancels by symmetry
    u = np.random.default_rng(5).standard_normal((1000, H))
    want = ssm_oracles.s4d_convolution(
        u,
        params["log_dt"],
        -np.exp(params["log_a_real"]) + 1j * params["a_imag"],
        _planes(params["b"]),
        _planes(params["c"]),
        params["d"],
        method,
    )
    scale = np.abs(want).max()
    with jax.enable_x64(True):
        cell = rj.cells.s4d(
            H, state_size=8, init="inv", discretization=method, param_dtype=jnp.float64
        )
        p = jax.tree_util.tree_map(jnp.asarray, params)
        step = jax.jit(lambda c, x: cell.step(p, c, x))
        _, ys = jax.lax.scan(
            step, jnp.zeros(cell.initial_carry(()).shape), cell.project(p, jnp.asarray(u))
        )
    np.testing.assert_allclose(np.asarray(ys), want, rtol=0, atol=1e-10 * scale)
    p32 = jax.tree_util.tree_map(lambda v: jnp.asarray(v, jnp.float32), params)
    _, ys32 = jax.jit(lambda p, x: rj.unroll(cell_f32, p, x, impl="associative"))(
        p32, jnp.asarray(u, jnp.float32)
    )
    np.testing.assert_allclose(np.asarray(ys32), want, rtol=0, atol=1e-4 * scale)


def _oscillator_states(cell, params, carry0, num_steps):
    """All carries of the unforced cell (inputs zero) from ``carry0``, by its
    step scanned in float64, as complex (z, y) each (T + 1, P)."""
    p = jax.tree_util.tree_map(jnp.asarray, params)
    xp = cell.project(p, jnp.zeros((num_steps, p["w_ih"].shape[0])))
    _, carries = jax.lax.scan(lambda c, x: (cell.step(p, c, x)[0],) * 2, jnp.asarray(carry0), xp)
    carries = np.concatenate([carry0[None], np.asarray(carries)])
    z, y = np.split(carries, 2, axis=-1)
    return _planes(z), _planes(y)


@pytest.mark.parametrize("name", ["linoss-im", "linoss-imex", "d-linoss"])
def test_oscillator_energy_with_b_zero(name):
    """With B = 0 the oscillators run free (LinOSS §3, D-LinOSS §3). IM
    dissipates the energy E = ½(|z|² + A|y|²) at exactly 1/(1 + Δt²A) a
    step; IMEX conserves the modified energy Ẽ = E − ½ΔtA Re(z̄y) while E
    itself moves; D-LinOSS dissipates Ẽ at exactly 1/(1 + ΔtG) a step. Over
    200 float64 steps to 1e-10 relative; the signs (E falls under IM, Ẽ
    stays under IMEX) are asserted separately."""
    make, params, _, carry0, _ = oracle_setup(name, batch=1, edges=False)
    params["w_ih"] = np.zeros_like(params["w_ih"])
    A, G, step = linoss_parameters(params)
    with jax.enable_x64(True):
        z, y = _oscillator_states(make(param_dtype=jnp.float64), params, carry0[0], 200)
    if name == "linoss-im":
        energy = ssm_oracles.oscillator_energy(z, y, A)
        np.testing.assert_allclose(
            energy[1:] / energy[:-1],
            np.broadcast_to(1 / (1 + step**2 * A), energy[1:].shape),
            rtol=1e-10,
        )
        assert np.all(energy[-1] < energy[0])
    else:
        modified = ssm_oracles.imex_modified_energy(z, y, A, step, G)
        rate = 1 / (1 + step * (0.0 if G is None else G))
        np.testing.assert_allclose(
            modified[1:] / modified[:-1], np.broadcast_to(rate, modified[1:].shape), rtol=1e-10
        )
        if G is None:
            assert np.ptp(ssm_oracles.oscillator_energy(z, y, A), axis=0).max() > 1e-3
