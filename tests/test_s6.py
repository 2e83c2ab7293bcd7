"""The selective SSM (``rj.cells.s6``) against the float64 oracle of
Mamba's reference scan (``ssm_oracles.selective_scan_ref``, written from
the paper apart from this package), parameters and initialisation as
Mamba's, the three backends against each other with gradients, dtypes and
bad input. The contract tests (padding, reverse, resets, packing, vmap, the
doors) run it from the shared tables (``_helpers.STATE_SPACE_CELLS``,
``test_parallel.LINEAR_CELLS``, ``cells.REGISTRY`` in test_packing.py).

Tolerances: float64 1e-10 (rounding over T steps of O(1) values is
~1e-15); against the oracle in fp32 and bf16, those of Mamba's own tests
(tests/ops/test_selective_scan.py: rtol 6e-4, atol 2e-3; bf16 3e-2, 5e-2);
backends fp32 ≤ 1e-5 (the associative scan sums in another order; values
are O(1), so 1e-5 is ~100 ulps), gradients 1e-4 + 1e-4 relative (their
adjoint recurrences too).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import assert_trees_close, leaf_dtypes, normal, param_shapes, random_params
from ssm_oracles import selective_scan_ref

import recurrent_jax as rj
from recurrent_jax import parallel

H, N, D = 6, 4, 3
B, T = 3, 9
LENGTHS = np.array([9, 4, 0])
FP32 = dict(rtol=6e-4, atol=2e-3)  # Mamba's tests, fp32
BF16 = dict(rtol=3e-2, atol=5e-2)  # Mamba's tests, bf16
BACKENDS = dict(atol=1e-5, rtol=1e-5)
GRADS = dict(atol=1e-4, rtol=1e-4)


# (gate, use_d, dt_bias, dt_softplus): each option on and off, together and apart
OPTION_SETS = [
    (True, True, True, True),
    (False, False, False, False),
    (True, False, True, False),
    (False, True, False, True),
]


def options_of(option_set):
    gate, use_d, dt_bias, dt_softplus = option_set
    return dict(gate=gate, use_d=use_d, dt_bias=dt_bias, dt_softplus=dt_softplus)


def oracle_case(option_set, rng, dtype=np.float32):
    """An s6 cell fed [u, z] directly (``input_proj=False``, the reference's
    arguments), random params (W_dt small and b_dt positive, so Δ stays
    O(0.1) and mostly positive without softplus), inputs and a nonzero
    initial state, all of ``dtype``."""
    cell = rj.cells.s6(H, state_size=N, dt_rank=2, input_proj=False, **options_of(option_set))
    features = 2 * H if option_set[0] else H
    params = random_params(cell, rng, features)
    params["w_dt"] = 0.2 * params["w_dt"]
    if "dt_bias" in params:  # Δ mostly positive without softplus: the state decays
        params["dt_bias"] = jnp.abs(params["dt_bias"])
    cast = lambda a: np.asarray(a).astype(dtype)  # noqa: E731
    params = {k: cast(v) for k, v in params.items()}
    xs = cast(rng.standard_normal((B, T, features)))
    h0 = cast(0.5 * rng.standard_normal((B, H * N)))
    return cell, params, xs, h0


def reference(params, xs, h0, option_set):
    """``selective_scan_ref`` (float64) on the cell's params, in Mamba's
    layout: u, Δ, z (B, H, T); B_t, C_t (B, N, T) from x_proj; A = −exp(A_log)."""
    gate, _, _, dt_softplus = option_set
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    xs = np.asarray(xs, np.float64)
    u, z = (xs[..., :H], xs[..., H:]) if gate else (xs, None)
    rank = p["w_dt"].shape[0]
    dt_low, b_t, c_t = np.split(u @ p["w_x"], [rank, rank + N], axis=-1)
    channels_first = lambda a: None if a is None else a.transpose(0, 2, 1)  # noqa: E731
    out, last = selective_scan_ref(
        channels_first(u),
        channels_first(dt_low @ p["w_dt"]),
        -np.exp(p["a_log"]),
        channels_first(b_t),
        channels_first(c_t),
        D=p.get("d"),
        z=channels_first(z),
        delta_bias=p.get("dt_bias"),
        delta_softplus=dt_softplus,
        h0=np.asarray(h0, np.float64).reshape(B, H, N),
    )
    return out.transpose(0, 2, 1), last.reshape(B, H * N)


@pytest.mark.parametrize("option_set", OPTION_SETS, ids=str)
def test_float64_steps_equal_the_reference_scan(option_set):
    """In float64 the cell's step, driven by hand with the projected inputs
    ``[u, Δ, B, C (, z)]``, is the reference scan to 1e-10: outputs and the
    final state."""
    rng = np.random.default_rng(1)
    cell, params, xs, h0 = oracle_case(option_set, rng, np.float64)
    want_ys, want_last = reference(params, xs, h0, option_set)
    gate, _, _, dt_softplus = option_set
    u, z = (xs[..., :H], xs[..., H:]) if gate else (xs, xs[..., :0])
    rank = params["w_dt"].shape[0]
    x_dbl = u @ params["w_x"]
    delta = x_dbl[..., :rank] @ params["w_dt"] + params.get("dt_bias", 0.0)
    delta = np.logaddexp(0.0, delta) if dt_softplus else delta
    xp = np.concatenate([u, delta, x_dbl[..., rank:], z], axis=-1)
    with jax.enable_x64(True):
        step = jax.jit(cell.step)
        carry, ys = jnp.asarray(h0), []
        for t in range(T):
            carry, y = step(params, carry, jnp.asarray(xp[:, t]))
            ys.append(y)
        assert carry.dtype == jnp.float64
        np.testing.assert_allclose(np.stack(ys, 1), want_ys, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(carry, want_last, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("impl", ["scan", "associative", "chunked"])
@pytest.mark.parametrize("option_set", OPTION_SETS, ids=str)
def test_fp32_unroll_equals_the_reference_scan(option_set, impl):
    """rj.unroll in fp32, every backend, at Mamba's fp32 tolerances."""
    cell, params, xs, h0 = oracle_case(option_set, np.random.default_rng(2))
    run = jax.jit(lambda p, x, h: rj.unroll(cell, p, x, initial_carry=h, impl=impl, chunk_length=4))
    carry, ys = run(params, xs, h0)
    want_ys, want_last = reference(params, xs, h0, option_set)
    np.testing.assert_allclose(ys, want_ys, **FP32)
    np.testing.assert_allclose(carry, want_last, **FP32)


def test_bf16_unroll_equals_the_reference_scan():
    """bf16 params and compute against the reference on the same (bf16)
    params and inputs, at Mamba's bf16 tolerances."""
    option_set = OPTION_SETS[0]
    rng = np.random.default_rng(3)
    _, params, xs, h0 = oracle_case(option_set, rng)
    bf16 = dict(param_dtype=jnp.bfloat16, dtype=jnp.bfloat16)
    cell = rj.cells.s6(
        H, state_size=N, dt_rank=2, input_proj=False, **options_of(option_set), **bf16
    )
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.bfloat16), params)
    xs = jnp.asarray(xs, jnp.bfloat16)
    carry, ys = jax.jit(lambda p, x, h: rj.unroll(cell, p, x, initial_carry=h))(params, xs, h0)
    want_ys, want_last = reference(params, xs, h0, option_set)
    np.testing.assert_allclose(ys, want_ys, **BF16)
    np.testing.assert_allclose(carry, want_last, **BF16)


def count(shapes):
    return sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(shapes))


@pytest.mark.parametrize(
    "options",
    [
        {},
        dict(gate=True),
        dict(dt_bias=False, use_d=False),
        dict(input_proj=False),
        dict(input_proj=False, gate=True, dt_rank=3),
    ],
    ids=str,
)
def test_param_names_shapes_and_count(options):
    """Mamba's S6 parameters: x_proj (H, R + 2N), dt_proj (R, H) and its
    bias, A_log (H, N), D (H,); our input map only with ``input_proj``."""
    cell = rj.cells.s6(H, state_size=N, **options)
    gate, proj = options.get("gate", False), options.get("input_proj", True)
    R = options.get("dt_rank", math.ceil(H / 16))
    features = D if proj else (2 * H if gate else H)
    shapes = {k: v.shape for k, v in param_shapes(cell, features).items()}
    want = {"w_x": (H, R + 2 * N), "w_dt": (R, H), "a_log": (H, N)}
    want |= {"w_ih": (D, 2 * H if gate else H)} if proj else {}
    want |= {"dt_bias": (H,)} if options.get("dt_bias", True) else {}
    want |= {"d": (H,)} if options.get("use_d", True) else {}
    assert shapes == want
    n_in = (D * H * (2 if gate else 1)) if proj else 0
    n_bias = H * options.get("dt_bias", True) + H * options.get("use_d", True)
    assert count(param_shapes(cell, features)) == n_in + H * (R + 2 * N) + R * H + H * N + n_bias
    carry = cell.initial_carry((2, 5))
    assert carry.shape == (2, 5, H * N) and carry.dtype == jnp.float32
    assert cell.hidden_size == H and cell.linear is not None


def test_initialisation_is_mambas():
    """A = −(1..N) per channel (S4D-Real), D = 1, W_dt in ±dt_scale/√R,
    softplus(b_dt) log-uniform in [dt_min, dt_max] and floored, W_x
    PyTorch's Linear init U(±1/√H)."""
    width, rank = 512, 8
    cell = rj.cells.s6(width, state_size=N, dt_rank=rank, dt_min=1e-3, dt_max=0.1, dt_scale=2.0)
    params = jax.jit(cell.init, static_argnums=1)(jax.random.PRNGKey(0), width)
    np.testing.assert_allclose(-np.exp(params["a_log"]), -np.tile(np.arange(1, N + 1), (width, 1)))
    np.testing.assert_array_equal(params["d"], 1.0)
    w_dt = np.abs(np.asarray(params["w_dt"]))
    assert w_dt.max() <= 2.0 / math.sqrt(rank) and w_dt.max() > 0.95 * 2.0 / math.sqrt(rank)
    log_dt = np.log(np.log1p(np.exp(np.asarray(params["dt_bias"], np.float64))))
    lo, hi = math.log(1e-3), math.log(0.1)
    assert lo - 1e-5 <= log_dt.min() and log_dt.max() <= hi + 1e-5
    # log-uniform: each fifth of [log dt_min, log dt_max] holds ~1/5 of 512
    counts = np.histogram(log_dt, bins=5, range=(lo, hi))[0]
    assert counts.min() > 512 / 5 * 0.6
    w_x = np.abs(np.asarray(params["w_x"]))
    assert w_x.max() <= 1 / math.sqrt(width) and w_x.max() > 0.95 / math.sqrt(width)
    floored = rj.cells.s6(64, dt_min=1e-6, dt_max=1e-5, dt_init_floor=1e-4)
    bias = jax.jit(floored.init, static_argnums=1)(jax.random.PRNGKey(1), 3)["dt_bias"]
    np.testing.assert_allclose(jax.nn.softplus(bias), 1e-4, rtol=1e-5)


@functools.lru_cache
def _run(impl, reverse, gate):
    """(grads over params, xs, h0; final, ys) of a masked s6 from a nonzero
    carry, jitted and cached per (impl, direction, gate)."""
    cell = rj.cells.s6(H, state_size=N, dt_rank=2, gate=gate)
    rng = np.random.default_rng(0)
    params = random_params(cell, rng)
    xs, h0 = normal(rng, (B, T, D)), normal(rng, (B, H * N), 0.5)
    w_y, w_c = normal(rng, (B, T, H)), normal(rng, (B, H * N))
    options = dict(impl=impl, chunk_length=4, reverse=reverse, seq_lengths=jnp.asarray(LENGTHS))

    def loss(params, xs, h0):
        final, ys = rj.unroll(cell, params, xs, initial_carry=h0, **options)
        return jnp.sum(ys * w_y) + jnp.sum(final * w_c), (final, ys)

    grad = jax.jit(jax.grad(loss, argnums=(0, 1, 2), has_aux=True))
    return grad(params, xs, h0)


@pytest.mark.parametrize("impl", ["associative", "chunked"])
@pytest.mark.parametrize(
    "reverse, gate", [(False, True), pytest.param(True, False, marks=pytest.mark.slow)]
)
def test_backends_agree_with_gradients(impl, reverse, gate):
    """associative and chunked (T = 9 in chunks of 4: a ragged last one)
    equal the sequential scan, values and gradients, with padding, an
    empty sequence and a nonzero initial carry."""
    want_grads, want = _run("scan", reverse, gate)
    got_grads, got = _run(impl, reverse, gate)
    assert_trees_close(got, want, **BACKENDS)
    assert_trees_close(got_grads, want_grads, **GRADS)
    assert np.abs(np.asarray(want[1])).max() > 0.05  # the comparison is not of zeros


def test_auto_follows_the_crossover_table():
    """s6 is linear in its carry: "auto" runs the associative scan from the
    measured crossover length, as for the LRU; below it, Mamba's selective
    scan on CPUs (``impl="selective"``) and the sequential scan elsewhere."""
    cell = rj.cells.with_defaults(rj.cells.s6(H))
    below = "selective" if jax.default_backend() == "cpu" else "scan"
    for steps in (16, 4096):
        xs = jax.ShapeDtypeStruct((steps, B, D), jnp.float32)
        call = rj.backends.Call(cell, {}, xs, rj.Engine(), frozenset())
        expected = "associative" if parallel.prefers_associative(cell, steps) else below
        assert rj.backends.choose(call).name == expected


def test_bf16_params_and_compute_keep_an_fp32_state(rng):
    """bf16 params and GEMMs; Δ, the state and y in fp32; close to fp32 (the
    projections round to bf16's 8 bits: 3e-2 as Mamba's bf16 tests)."""
    cell32 = rj.cells.s6(H, state_size=N, gate=True)
    cell16 = rj.cells.s6(H, state_size=N, gate=True, param_dtype=jnp.bfloat16, dtype=jnp.bfloat16)
    assert leaf_dtypes(param_shapes(cell16)) == {jnp.dtype(jnp.bfloat16)}
    params = random_params(cell32, rng)
    params16 = jax.tree_util.tree_map(lambda p: p.astype(jnp.bfloat16), params)
    params32 = jax.tree_util.tree_map(lambda p: p.astype(jnp.float32), params16)
    xs = normal(rng, (B, T, D))
    carry16, ys16 = jax.jit(lambda p, x: rj.unroll(cell16, p, x))(params16, xs)
    carry32, ys32 = jax.jit(lambda p, x: rj.unroll(cell32, p, x))(params32, xs)
    assert carry16.dtype == ys16.dtype == jnp.float32
    assert_trees_close((carry16, ys16), (carry32, ys32), atol=5e-2, rtol=3e-2)
    assert not np.allclose(ys16, ys32, atol=1e-6)  # bf16 compute did round


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(hidden_size=0), ValueError, "hidden_size: expected a positive int, got 0"),
        (dict(state_size=2.0), ValueError, "state_size: expected a positive int, got 2.0"),
        (dict(dt_rank="full"), ValueError, "dt_rank: expected a positive int, got 'full'"),
        (dict(dt_min=0.0), ValueError, "dt_min: expected a positive number, got 0.0"),
        (dict(dt_min=0.2), ValueError, r"dt_min, dt_max: expected dt_min <= dt_max, got \(0.2"),
        (dict(dt_init_floor=-1.0), ValueError, "dt_init_floor: expected a non-negative"),
        (dict(gate=1), TypeError, "gate: expected a bool, got 1"),
        (dict(bias="single"), ValueError, "bias: expected no value .S6 has no such weights"),
        (dict(recurrent_init=None), ValueError, "recurrent_init: expected no value"),
        (dict(dropout=0.1), TypeError, r"options: unknown option\(s\) \['dropout'\]"),
    ],
)
def test_bad_options_name_the_argument(kwargs, error, message):
    kwargs = dict(dict(hidden_size=H), **kwargs)
    with pytest.raises(error, match=message):
        rj.cells.s6(**kwargs)


def test_input_size_without_projection_is_checked():
    cell = rj.cells.s6(H, gate=True, input_proj=False)
    with pytest.raises(ValueError, match=r"input_size: expected 2 \* hidden_size .* = 12"):
        param_shapes(cell, H)
    params = random_params(cell, np.random.default_rng(0), 2 * H)
    with pytest.raises(ValueError, match="params"):
        rj.unroll(rj.cells.s6(H), params, jnp.zeros((1, 2, 2 * H)))
