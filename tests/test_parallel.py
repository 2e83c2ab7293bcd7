"""Parallel-in-time scans (impl="associative", "chunked") against the
sequential scan, and the linear cells against NumPy transcriptions of their
papers' equations.

Tolerances (fp32): values atol 2e-5 + rtol 1e-5, gradients atol 1e-4 +
rtol 1e-4 (the associative scan sums in a different order).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import (
    D,
    assert_trees_close,
    auto_backend_for_plain_cells,
    normal,
    random_carry,
    random_params,
)

import recurrent_jax as rj
from recurrent_jax import parallel

H = 4
LINEAR_CELLS = {
    "mingru": lambda: rj.cells.mingru(H),
    "mingru-log": lambda: rj.cells.mingru(H, log_space=True),
    "minlstm": lambda: rj.cells.minlstm(H),
    "minlstm-log": lambda: rj.cells.minlstm(H, log_space=True),
    "lru": lambda: rj.cells.lru(H, state_size=3),
    "rglru": lambda: rj.cells.rglru(H),
    "s4d": lambda: rj.cells.s4d(H, state_size=4),
    "s5": lambda: rj.cells.s5(H, state_size=4, blocks=1),
    "s5-steps": lambda: rj.cells.s5(
        H, state_size=4, blocks=2, discretization="bilinear", variable_steps=True
    ),
    "linoss-im": lambda: rj.cells.linoss(H, state_size=3),
    "linoss-imex": lambda: rj.cells.linoss(H, state_size=3, discretization="imex"),
    "d-linoss": lambda: rj.cells.linoss(H, state_size=3, damping=True),
    "s6": lambda: rj.cells.s6(H, state_size=3),
    "s6-gate": lambda: rj.cells.s6(H, state_size=2, dt_rank=2, gate=True),
}
BATCH = (2, 3)
T = 7
LENGTHS = np.array([[7, 3, 0], [5, 1, 6]])
VALUES = dict(atol=2e-5, rtol=1e-5)
GRADS = dict(atol=1e-4, rtol=1e-4)


def _setup(name, rng, batch=BATCH, num_steps=T):
    cell = LINEAR_CELLS[name]()
    params = random_params(cell, rng)
    xs = normal(rng, (*batch, num_steps, D))
    h0 = random_carry(cell, rng, batch)
    return cell, params, xs, h0


@functools.lru_cache
def _grads(name, impl, reverse):
    """(grads of a loss over params, xs, h0; (final, ys)), jitted, cached so
    that the scan reference compiles once per (cell, direction)."""
    cell, params, xs, h0 = _setup(name, np.random.default_rng(0))
    rng = np.random.default_rng(1)
    w_y, w_c = normal(rng, (*BATCH, T, H)), normal(rng, h0.shape)
    kw = {"chunk_length": 3} if impl == "chunked" else {}  # T = 7: a ragged last chunk

    @jax.jit
    def run(params, xs, h0):
        def loss(params, xs, h0):
            final, ys = rj.unroll(
                cell,
                params,
                xs,
                initial_carry=h0,
                seq_lengths=jnp.asarray(LENGTHS),
                impl=impl,
                reverse=reverse,
                **kw,
            )
            return jnp.sum(ys * w_y) + jnp.sum(final * w_c), (final, ys)

        return jax.grad(loss, argnums=(0, 1, 2), has_aux=True)(params, xs, h0)

    return run(params, xs, h0), h0


CASES = [(name, "associative", True) for name in LINEAR_CELLS]
CASES += [("mingru", "associative", False)]
CASES += [("mingru-log", "chunked", True), ("lru", "chunked", True)]
CASES += [("s5-steps", "chunked", True), ("d-linoss", "chunked", False)]
CASES += [("s6-gate", "chunked", True), ("s6", "chunked", False)]


@pytest.mark.parametrize(("name", "impl", "reverse"), CASES)
def test_parallel_equals_scan_with_masks_reverse_and_grads(name, impl, reverse):
    (want_g, want_out), _ = _grads(name, "scan", reverse)
    (got_g, (got_c, got_y)), h0 = _grads(name, impl, reverse)
    assert_trees_close((got_c, got_y), want_out, **VALUES)
    assert_trees_close(got_g, want_g, **GRADS)
    assert np.all(np.asarray(got_y)[LENGTHS[..., None] <= np.arange(T)] == 0.0)
    np.testing.assert_array_equal(np.asarray(got_c)[0, 2], np.asarray(h0)[0, 2])  # length 0


def _jit_unroll(cell, **kw):
    return jax.jit(lambda params, xs, h0: rj.unroll(cell, params, xs, initial_carry=h0, **kw))


@pytest.mark.parametrize("name", ["mingru", "lru", "s4d", "linoss-imex", "s6"])
def test_parallel_resets_and_return_carries(name, rng):
    cell, params, xs, h0 = _setup(name, rng)
    kw = dict(
        resets=jnp.asarray(rng.random((*BATCH, T)) < 0.3),
        seq_lengths=jnp.asarray(LENGTHS),
        return_carries=True,
    )
    want = _jit_unroll(cell, impl="scan", **kw)(params, xs, h0)
    got = _jit_unroll(cell, impl="associative", **kw)(params, xs, h0)
    assert_trees_close(got, want, **VALUES)


def test_parallel_zoneout(rng):
    cell, params, xs, h0 = _setup("mingru", rng)
    kw = dict(zoneout=0.4, key=jax.random.PRNGKey(3), reverse=True)  # per-unit keep masks
    want = _jit_unroll(cell, impl="scan", **kw)(params, xs, h0)
    got = _jit_unroll(cell, impl="chunked", chunk_length=2, **kw)(params, xs, h0)
    assert_trees_close(got, want, **VALUES)
    cell, params, xs, h0 = _setup("lru", rng)
    with pytest.raises(ValueError, match="zoneout"):  # a complex state has no per-unit zoneout
        rj.unroll(cell, params, xs, zoneout=0.5, deterministic=True, impl="associative")


def test_block_zoneout_keeps_components(rng):
    """Zoneout on an oscillator cell's (z, y) components: a kept component's
    row of the 2×2 block becomes e_j, which no longer commutes with the
    others, so the blocks' composition order shows."""
    cell, params, xs, h0 = _setup("d-linoss", rng)
    for kw in (
        dict(zoneout=0.4, key=jax.random.PRNGKey(3), reverse=True),
        dict(zoneout=0.3, deterministic=True, seq_lengths=jnp.asarray(LENGTHS)),
    ):
        want = _jit_unroll(cell, impl="scan", **kw)(params, xs, h0)
        got = _jit_unroll(cell, impl="chunked", chunk_length=2, **kw)(params, xs, h0)
        assert_trees_close(got, want, **VALUES)


def _loop_solve(a, b, h0):
    """``h_t = a_t @ h_{t-1} + b_t`` one step at a time (lax.scan)."""

    def body(h, ab):
        h = jnp.einsum("...ij,...j->...i", ab[0], h) + ab[1]
        return h, h

    return jax.lax.scan(body, h0, (a, b))[1]


@pytest.mark.parametrize("chunk_length", [None, 3])
def test_block_solve_equals_a_loop_with_gradients(chunk_length):
    """Random, time-varying 2×2 blocks (no two commute) in float64: states
    and the custom VJP's gradients equal a sequential loop and its autodiff
    to rounding (1e-12)."""
    rng = np.random.default_rng(4)
    with jax.enable_x64(True):
        a = jnp.asarray(0.7 * rng.standard_normal((T, 2, 3, 2, 2)))
        b, h0 = jnp.asarray(rng.standard_normal((T, 2, 3, 2))), jnp.asarray(rng.random((2, 3, 2)))
        weights = jnp.asarray(rng.standard_normal((T, 2, 3, 2)))

        def loss(solver):
            return lambda *args: jnp.sum(jnp.sin(solver(*args)) * weights)

        solve = functools.partial(parallel.solve, form="block", chunk_length=chunk_length)
        np.testing.assert_allclose(solve(a, b, h0), _loop_solve(a, b, h0), rtol=1e-12, atol=1e-12)
        got = jax.grad(loss(solve), argnums=(0, 1, 2))(a, b, h0)
        want = jax.grad(loss(_loop_solve), argnums=(0, 1, 2))(a, b, h0)
        assert_trees_close(got, want, atol=1e-12, rtol=1e-12)


def test_log_space_zoneout_and_reset_error(rng):
    cell, params, xs, h0 = _setup("minlstm-log", rng)
    zk = dict(zoneout=0.3, deterministic=True, initial_carry=h0)
    want = rj.unroll(cell, params, xs, impl="scan", **zk)
    assert_trees_close(rj.unroll(cell, params, xs, impl="associative", **zk), want, **VALUES)
    resets = jnp.zeros((*BATCH, T), bool)
    with pytest.raises(ValueError, match="resets"):
        rj.unroll(cell, params, xs, resets=resets, impl="associative")


def test_time_major_keep_order_and_length_zero(rng):
    cell, params, xs, h0 = _setup("minlstm", rng)
    xs_tm = jnp.moveaxis(xs, -2, 0)
    kw = dict(seq_lengths=jnp.asarray(LENGTHS), reverse=True, keep_order=False, time_major=True)
    want = rj.unroll(cell, params, xs_tm, impl="scan", **kw)
    assert_trees_close(rj.unroll(cell, params, xs_tm, impl="associative", **kw), want, **VALUES)
    empty = xs[..., :0, :]
    final, ys = rj.unroll(cell, params, empty, initial_carry=h0, impl="associative")
    assert ys.shape == (*BATCH, 0, H)
    np.testing.assert_array_equal(final, h0)


def auto_choice(cell, num_steps):
    """The backend ``impl="auto"`` takes for ``cell`` over ``num_steps`` steps."""
    xs = jax.ShapeDtypeStruct((num_steps, 2, D), jnp.float32)
    cell = rj.cells.with_defaults(cell)
    return rj.backends.choose(rj.backends.Call(cell, {}, xs, rj.Engine(), frozenset())).name


def test_auto_uses_the_measured_crossover(monkeypatch):
    cell = rj.cells.mingru(H)
    backend = jax.default_backend()
    if parallel.CROSSOVER_T.get(backend) is None:  # CPU: no crossover, scan always
        assert auto_choice(cell, 10**6) == "scan"
    monkeypatch.setitem(parallel.CROSSOVER_T, backend, 100)
    assert auto_choice(cell, 100) == "associative"
    assert auto_choice(cell, 99) == "scan"
    assert auto_choice(rj.cells.gru(H), 10**6) == auto_backend_for_plain_cells()


def test_nonlinear_cell_is_rejected(rng):
    cell = rj.cells.lstm(H)
    params = random_params(cell, rng)
    for impl in ("associative", "chunked"):
        with pytest.raises(ValueError, match="linear"):
            rj.unroll(cell, params, normal(rng, (2, 5, D)), impl=impl)


# --- the cells against NumPy transcriptions of the papers -------------------


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _g(x):
    return np.where(x >= 0, x + 0.5, _sigmoid(x))


def _numpy_min(name, params, xs, h0, log_space):
    """The papers' sequential equations, step by step in float64."""
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    xp = xs.astype(np.float64) @ p["w_ih"] + p["b_ih"] + p["b_hh"]
    h, ys = h0.astype(np.float64), []
    for t in range(xs.shape[-2]):
        gates = np.split(xp[..., t, :], 3 if name == "minlstm" else 2, axis=-1)
        cand = _g(gates[-1]) if log_space else gates[-1]
        if name == "mingru":
            z = _sigmoid(gates[0])
            h = (1 - z) * h + z * cand
        else:
            f, i = _sigmoid(gates[0]), _sigmoid(gates[1])
            h = f / (f + i) * h + i / (f + i) * cand
        ys.append(h)
    return h, np.stack(ys, axis=-2)


@pytest.mark.parametrize("name", ["mingru", "minlstm"])
@pytest.mark.parametrize("log_space", [False, True])
def test_min_cells_match_numpy_paper_equations(name, log_space, rng):
    cell = getattr(rj.cells, name)(H, log_space=log_space)
    params = random_params(cell, rng)
    xs, h0 = normal(rng, (2, 9, D)), normal(rng, (2, H))
    want = _numpy_min(name, params, np.asarray(xs), np.asarray(h0), log_space)
    for impl in ("scan", "associative"):
        got = rj.unroll(cell, params, xs, initial_carry=h0, impl=impl)
        assert_trees_close(got, want, atol=2e-5, rtol=1e-5)


def numpy_lru(params, xs):
    """The paper's complex recurrence from h = 0, in float64, with the
    diagonal skip (D == H): (final [Re h, Im h], ys)."""
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    n = p["nu_log"].shape[0]
    lam = np.exp(-np.exp(p["nu_log"]) + 1j * np.exp(p["theta_log"]))
    b = p["w_ih"][:, :n] + 1j * p["w_ih"][:, n:]
    c = p["w_out"][:n].T - 1j * p["w_out"][n:].T  # (H, N)
    h, ys = np.zeros((*xs.shape[:-2], n), complex), []
    for t in range(xs.shape[-2]):
        x = np.asarray(xs[..., t, :], np.float64)
        h = lam * h + np.exp(p["gamma_log"]) * (x @ b)
        ys.append((h @ c.T).real + p["d"] * x)
    return np.concatenate([h.real, h.imag], -1), np.stack(ys, -2)


def test_lru_matches_numpy_complex_recurrence(rng):
    cell = rj.cells.lru(H, state_size=3)
    params = random_params(cell, rng, input_size=H)  # D == H: diagonal skip
    assert params["d"].shape == (H,)
    xs = normal(rng, (2, 6, H))
    want_final, want_ys = numpy_lru(params, xs)
    for impl in ("scan", "associative"):
        final, got = rj.unroll(cell, params, xs, impl=impl)
        np.testing.assert_allclose(got, want_ys, atol=2e-5, rtol=1e-5)
        np.testing.assert_allclose(final, want_final, atol=2e-5)


def test_lru_ring_init_and_rglru_init(key):
    params = jax.jit(
        rj.cells.lru(64, r_min=0.4, r_max=0.9, max_phase=np.pi / 4).init, static_argnums=1
    )(key, 5)
    radius = np.exp(-np.exp(np.asarray(params["nu_log"])))
    phase = np.exp(np.asarray(params["theta_log"]))
    assert np.all((radius >= 0.4 - 1e-6) & (radius <= 0.9 + 1e-6))
    assert np.all((phase >= 0) & (phase <= np.pi / 4))
    gamma = np.exp(np.asarray(params["gamma_log"]))
    np.testing.assert_allclose(gamma, np.sqrt(1 - radius**2), rtol=1e-5)
    assert params["d"].shape == (5, 64) and params["w_out"].shape == (128, 64)
    a_param = np.asarray(jax.jit(rj.cells.rglru(32).init, static_argnums=1)(key, 5)["a_param"])
    a_c = _sigmoid(a_param) ** 8
    assert np.all((a_c >= 0.9 - 1e-5) & (a_c <= 0.999 + 1e-5))


def numpy_rglru(params, xs, c=8.0):
    """The RG-LRU's equations from h = 0, in float64: (final h, ys)."""
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    xp = np.asarray(xs, np.float64) @ p["w_ih"] + p["b_ih"] + p["b_hh"]
    a = _sigmoid(p["a_param"])
    h, ys = np.zeros((*xs.shape[:-2], a.shape[0])), []
    for t in range(xs.shape[-2]):
        r, i, x = np.split(xp[..., t, :], 3, axis=-1)
        a_t = a ** (c * _sigmoid(r))
        h = a_t * h + np.sqrt(1 - a_t**2) * (_sigmoid(i) * x)
        ys.append(h)
    return h, np.stack(ys, -2)


def test_rglru_matches_numpy(rng):
    cell = rj.cells.rglru(H)
    params = random_params(cell, rng)
    xs = normal(rng, (2, 5, D))
    _, want = numpy_rglru(params, xs)
    for impl in ("scan", "associative"):
        _, got = rj.unroll(cell, params, xs, impl=impl)
        np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-5)


# --- everywhere a cell goes ----------------------------------------------------


def test_linear_cells_in_layers_and_flax(rng):
    xs = normal(rng, (2, 6, D))
    lens = jnp.array([6, 2])

    def net(impl):
        bi = rj.bidirectional(rj.cells.minlstm(H), impl=impl, merge_mode="concat")
        return rj.stack([bi, rj.layer(rj.cells.lru(3), impl=impl)])

    params = jax.tree_util.tree_map(
        lambda s: normal(rng, s.shape, 0.5),
        jax.eval_shape(lambda k: net("scan").init(k, D), jax.random.PRNGKey(0)),
    )
    want = jax.jit(lambda p: net("scan").apply(p, xs, seq_lengths=lens))(params)
    got = jax.jit(lambda p: net("associative").apply(p, xs, seq_lengths=lens))(params)
    assert_trees_close(got, want, **VALUES)
    module = rj.nn.RNN(rj.cells.mingru(H, log_space=True), engine=rj.Engine(impl="associative"))
    ys = jax.jit(lambda xs: module.init_with_output(jax.random.PRNGKey(1), xs)[0])(xs)
    assert ys.shape == (2, 6, H) and np.all(np.isfinite(ys))


@functools.lru_cache
def _long_run(impl):
    cell = rj.cells.mingru(2, log_space=True)
    params = random_params(cell, np.random.default_rng(5))
    xs = normal(np.random.default_rng(6), (1, 65_536, D), scale=3.0)

    @jax.jit
    def run(params, xs):
        def loss(params):
            final, ys = rj.unroll(cell, params, xs, impl=impl, chunk_length=1024)
            return jnp.mean(ys[..., -1000:, :]), (final, ys)

        return jax.grad(loss, has_aux=True)(params)

    return run(params, xs)


@pytest.mark.slow  # about 10 s on 2 shared cores, mostly compiling
@pytest.mark.parametrize("impl", ["chunked", "associative"])
def test_log_space_mingru_stable_at_65536(impl):
    got_g, (got_c, got_y) = _long_run(impl)
    want_g, (want_c, want_y) = _long_run("scan")
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves((got_g, got_y)))
    assert_trees_close((got_c, got_y), (want_c, want_y), atol=1e-4, rtol=1e-4)
    assert_trees_close(got_g, want_g, atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize(
    "make_cell",
    [rj.cells.mingru, rj.cells.minlstm, rj.cells.rglru, rj.cells.slstm],
    ids=["mingru", "minlstm", "rglru", "slstm"],
)
def test_bf16_param_init_on_cpu(make_cell):
    """Initialisers draw in fp32 then cast (bf16 QR has no CPU kernel)."""
    params = make_cell(4, param_dtype=jnp.bfloat16).init(jax.random.PRNGKey(0), 3)
    weights = {k: v.dtype for k, v in params.items() if k.startswith("w_")}
    assert weights and set(weights.values()) == {jnp.dtype(jnp.bfloat16)}
