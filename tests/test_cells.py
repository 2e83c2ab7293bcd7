"""Each built-in cell against an independent NumPy (float64) implementation
of its published equations, plus init shapes, counts, dtypes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import (
    CELLS,
    H,
    P,
    assert_trees_close,
    leaf_dtypes,
    make,
    normal,
    param_shapes,
    random_carry,
)

import recurrent_jax as rj

T, B, D = 5, 2, 3
ATOL = RTOL = 1e-5  # fp32 library vs float64 NumPy

# --- the NumPy oracle --------------------------------------------------------


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def relu(x):
    return np.maximum(x, 0.0)


def np_layer_norm(x, groups, eps=1e-5):
    """Normalises each of ``groups`` equal slices of the last axis (no affine)."""
    shape = x.shape
    x = x.reshape(*shape[:-1], groups, shape[-1] // groups)
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return ((x - mean) / np.sqrt(var + eps)).reshape(shape)


def np_biases(p, size):
    """(input-side, recurrent-side) bias of size G*H for any bias mode."""
    zero = np.zeros(size)
    if "b" in p:
        return p["b"], zero
    return p.get("b_ih", zero), p.get("b_hh", zero)


def np_elman(p, h, x, act):
    b_i, b_h = np_biases(p, p["w_hh"].shape[1])
    return act(x @ p["w_ih"] + b_i + h @ p["w_hh"] + b_h)


def np_lstm(p, carry, x, *, peephole=False, layer_norm=False, proj=False):
    """PyTorch LSTM (i, f, g, o), optional peepholes (Gers & Schmidhuber),
    per-gate LayerNorm (TF Addons LayerNormLSTMCell form) and projection."""
    h, c = carry
    hid = c.shape[-1]
    b_i, b_h = np_biases(p, 4 * hid)
    x_part, h_part = x @ p["w_ih"], h @ p["w_hh"]
    if layer_norm:
        x_part = np_layer_norm(x_part, 4) * p["ln_ih_scale"]
        h_part = np_layer_norm(h_part, 4) * p["ln_hh_scale"]
    gates = x_part + h_part + b_i + b_h
    i, f, g, o = (gates[..., k * hid : (k + 1) * hid] for k in range(4))
    if peephole:
        i = i + p["w_peephole"][0] * c
        f = f + p["w_peephole"][1] * c
    c_new = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
    if peephole:
        o = o + p["w_peephole"][2] * c_new
    c_act = c_new
    if layer_norm:
        c_act = np_layer_norm(c_new, 1) * p["ln_c_scale"] + p["ln_c_bias"]
    h_new = sigmoid(o) * np.tanh(c_act)
    if proj:
        h_new = h_new @ p["w_hr"]
    return h_new, c_new


def np_gru(p, h, x, *, reset_after=True):
    hid = h.shape[-1]
    b_i, b_h = np_biases(p, 3 * hid)
    split = lambda a: [a[..., k * hid : (k + 1) * hid] for k in range(3)]  # noqa: E731
    x_r, x_z, x_n = split(x @ p["w_ih"] + b_i)
    w_r, w_z, w_n = split(p["w_hh"])
    b_r, b_z, b_n = split(b_h)
    r = sigmoid(x_r + h @ w_r + b_r)
    z = sigmoid(x_z + h @ w_z + b_z)
    # reset after (PyTorch, cuDNN) or before (Cho et al.) the recurrent matmul
    h_n = r * (h @ w_n + b_n) if reset_after else (r * h) @ w_n + b_n
    n = np.tanh(x_n + h_n)
    return (1.0 - z) * n + z * h


def np_mgu(p, h, x):
    hid = h.shape[-1]
    b_i, b_h = np_biases(p, 2 * hid)
    xp = x @ p["w_ih"] + b_i + b_h
    x_f, x_h = xp[..., :hid], xp[..., hid:]
    w_f, w_h = p["w_hh"][:, :hid], p["w_hh"][:, hid:]
    f = sigmoid(x_f + h @ w_f)
    candidate = np.tanh(x_h + (f * h) @ w_h)
    return (1.0 - f) * h + f * candidate


def np_step(name):
    """step(p, carry, x) -> (carry, y) in float64 for a zoo entry."""
    if name.startswith("elman"):
        act = relu if name == "elman-relu" else np.tanh

        def step(p, h, x):
            h = np_elman(p, h, x, act)
            return h, h

    elif name.startswith("lstm"):
        opts = dict(
            peephole=name in ("lstm-peephole", "lstm-all"),
            layer_norm=name in ("lstm-ln", "lstm-all"),
            proj=name in ("lstm-proj", "lstm-all"),
        )

        def step(p, carry, x):
            h, c = np_lstm(p, carry, x, **opts)
            return (h, c), h

    elif name.startswith("gru"):
        reset_after = "before" not in name

        def step(p, h, x):
            h = np_gru(p, h, x, reset_after=reset_after)
            return h, h

    else:
        assert name == "mgu"

        def step(p, h, x):
            h = np_mgu(p, h, x)
            return h, h

    return step


def np_unroll(name, params, carry, xs):
    """carry (tuple or array, float64), xs (B, T, D) -> (carry, ys, carries)."""
    step = np_step(name)
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    xs = np.asarray(xs, np.float64)
    ys, carries = [], []
    for t in range(xs.shape[-2]):
        carry, y = step(p, carry, xs[..., t, :])
        ys.append(y)
        carries.append(carry)
    return carry, np.stack(ys, -2), carries


def to_np_carry(carry):
    if isinstance(carry, rj.LSTMCarry):
        return tuple(np.asarray(a, np.float64) for a in carry)
    return np.asarray(carry, np.float64)


# --- equations ---------------------------------------------------------------


def numpy_case(name, rng):
    cell, params = make(name, rng)
    xs = normal(rng, (B, T, D))
    carry0 = random_carry(cell, rng, (B,))
    return cell, params, xs, carry0, np_unroll(name, params, to_np_carry(carry0), xs)


@pytest.mark.parametrize("name", list(CELLS))
def test_step_matches_numpy(name, rng):
    """project + step driven by hand against the float64 NumPy equations,
    from a nonzero initial carry."""
    cell, params, xs, carry0, (_, want_ys, want_carries) = numpy_case(name, rng)
    # Eagerly: op-by-op compiles are shared between tests, one jit per test is not.
    xp = cell.project(params, xs)
    assert xp.shape[:-1] == (B, T) and xp.dtype == jnp.float32
    carry = carry0
    for t in range(T):
        carry, y = cell.step(params, carry, xp[..., t, :])
        assert y.dtype == jnp.float32
        assert_trees_close(y, want_ys[:, t], atol=ATOL, rtol=RTOL)
        assert_trees_close(to_np_carry(carry), want_carries[t], atol=ATOL, rtol=RTOL)


# Each unroll compiles a scan (~0.3 s on CPU): all cells under `-m slow`.
UNROLL_FAST = ("lstm-all", "lstm-none", "gru-single", "gru-before", "elman-relu", "mgu")


@pytest.mark.parametrize(
    "name",
    [n if n in UNROLL_FAST else pytest.param(n, marks=pytest.mark.slow) for n in CELLS],
)
def test_unroll_matches_numpy(name, rng):
    """unroll's default impl (the fused path where the cell has one, else
    scan; test_fused.py checks fused against scan) against NumPy."""
    cell, params, xs, carry0, (want_carry, want_ys, _) = numpy_case(name, rng)
    carry, ys = rj.unroll(cell, params, xs, initial_carry=carry0)
    assert ys.shape == (B, T, cell.hidden_size)
    assert_trees_close(ys, want_ys, atol=ATOL, rtol=RTOL)
    assert_trees_close(to_np_carry(carry), want_carry, atol=ATOL, rtol=RTOL)


def one_step(cell, params, carry, x):
    return cell.step(params, carry, cell.project(params, x[:, None])[:, 0])


def test_elman_activation_option(rng):
    _, params = make("elman-tanh", rng)
    h, x = normal(rng, (B, H)), normal(rng, (B, D))
    ys = {
        act: one_step(rj.cells.elman(H, **kw), params, h, x)[1]
        for act, kw in [
            ("default", {}),
            ("tanh", {"activation": "tanh"}),
            ("callable", {"activation": jnp.tanh}),
        ]
    }
    np.testing.assert_array_equal(np.asarray(ys["default"]), np.asarray(ys["tanh"]))
    np.testing.assert_allclose(ys["callable"], ys["tanh"], atol=1e-6)


def test_mgu_bias_modes_compute_the_same_function(rng):
    _, params = make("mgu", rng)
    single = {k: v for k, v in params.items() if k not in ("b_ih", "b_hh")}
    single["b"] = params["b_ih"] + params["b_hh"]
    h, x = normal(rng, (B, H)), normal(rng, (B, D))
    _, y_double = one_step(rj.cells.mgu(H), params, h, x)
    _, y_single = one_step(rj.cells.mgu(H, bias="single"), single, h, x)
    np.testing.assert_allclose(y_double, y_single, atol=1e-6)


# --- init: shapes, counts, defaults ----------------------------------------------


def n_params(shapes):
    return sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(shapes))


@pytest.mark.parametrize(
    "cell, expected",
    [
        (rj.cells.lstm(4), 176),  # PyTorch nn.LSTM(5, 4)
        (rj.cells.lstm(4, bias="single"), 160),  # Keras LSTM(4) on 5 features
        (rj.cells.lstm(4, bias="none"), 144),
        (rj.cells.lstm(4, proj_size=3), 172),  # PyTorch nn.LSTM(5, 4, proj_size=3)
        (rj.cells.gru(4), 132),  # PyTorch nn.GRU; Keras GRU(reset_after=True)
        (rj.cells.gru(4, reset_after=False, bias="single"), 120),  # Keras, reset before
        (rj.cells.elman(4), 44),  # PyTorch nn.RNN
        (rj.cells.elman(4, bias="single"), 40),  # Keras SimpleRNN
        (rj.cells.mgu(4), 2 * 4 * (5 + 4) + 2 * 2 * 4),
    ],
)
def test_param_counts(cell, expected):
    assert n_params(param_shapes(cell, 5)) == expected


def expected_shapes(name, d):
    gates = {"elman": 1, "lstm": 4, "gru": 3, "mgu": 2}[name.split("-")[0]]
    k = P if name in ("lstm-proj", "lstm-all") else H
    shapes = {"w_ih": (d, gates * H), "w_hh": (k, gates * H)}
    if name.endswith("single"):
        shapes["b"] = (gates * H,)
    elif not name.endswith("none"):
        shapes |= {"b_ih": (gates * H,), "b_hh": (gates * H,)}
    if name in ("lstm-proj", "lstm-all"):
        shapes["w_hr"] = (H, P)
    if name in ("lstm-peephole", "lstm-all"):
        shapes["w_peephole"] = (3, H)
    if name in ("lstm-ln", "lstm-all"):
        shapes |= {"ln_ih_scale": (4 * H,), "ln_hh_scale": (4 * H,)}
        shapes |= {"ln_c_scale": (H,), "ln_c_bias": (H,)}
    return shapes


@pytest.mark.parametrize("name", list(CELLS))
def test_param_names_shapes_and_zero_carry(name):
    cell = CELLS[name]()
    shapes = param_shapes(cell, 5)
    assert isinstance(shapes, dict)
    assert {k: v.shape for k, v in shapes.items()} == expected_shapes(name, 5)
    assert leaf_dtypes(shapes) == {jnp.dtype(jnp.float32)}
    assert cell.hidden_size == (P if name in ("lstm-proj", "lstm-all") else H)
    carry = cell.initial_carry((2, 3))
    assert leaf_dtypes(carry) == {jnp.dtype(jnp.float32)}
    for leaf in jax.tree_util.tree_leaves(carry):
        np.testing.assert_array_equal(leaf, 0.0)
    if name.startswith("lstm"):
        assert isinstance(carry, rj.LSTMCarry)
        assert carry.h.shape == (2, 3, cell.hidden_size) and carry.c.shape == (2, 3, H)
    else:
        assert carry.shape == (2, 3, H)


def test_init_values_of_option_params(key):
    zeros = jax.nn.initializers.zeros  # the weights' initialisers are not under test here
    params = CELLS["lstm-all"](kernel_init=zeros, recurrent_init=zeros).init(key, D)
    assert {k: v.shape for k, v in params.items()} == expected_shapes("lstm-all", D)
    np.testing.assert_array_equal(params["w_peephole"], 0.0)
    for k in ("ln_ih_scale", "ln_hh_scale", "ln_c_scale"):
        np.testing.assert_array_equal(params[k], 1.0)
    np.testing.assert_array_equal(params["ln_c_bias"], 0.0)


def test_init_is_deterministic_and_key_dependent(getkey):
    cell = rj.cells.lstm(H)
    k1, k2 = getkey(), getkey()
    a, b, c = cell.init(k1, D), cell.init(k1, D), cell.init(k2, D)
    assert_trees_close(a, b, atol=0.0)
    assert np.abs(np.asarray(a["w_hh"]) - np.asarray(c["w_hh"])).max() > 1e-3
    assert np.abs(np.asarray(a["w_ih"]) - np.asarray(c["w_ih"])).max() > 1e-3


@pytest.mark.parametrize("bias", ["double", "single"])
@pytest.mark.parametrize("forget_bias", [1.0, 0.5])
def test_forget_bias_lands_in_f_block(bias, forget_bias, key):
    params = rj.cells.lstm(H, bias=bias, forget_bias=forget_bias).init(key, D)
    first = params["b"] if bias == "single" else params["b_ih"]
    want = np.zeros(4 * H)
    want[H : 2 * H] = forget_bias  # blocks i, f, g, o
    np.testing.assert_array_equal(first, want)
    if bias == "double":
        np.testing.assert_array_equal(params["b_hh"], 0.0)


def test_forget_bias_ignored_without_bias(key):
    params = rj.cells.lstm(H, bias="none").init(key, D)
    assert not {"b", "b_ih", "b_hh"} & set(params)


@pytest.mark.parametrize(
    "name, gates",
    [
        ("lstm", 4),
        ("gru", 3),
        pytest.param("elman-tanh", 1, marks=pytest.mark.slow),
        pytest.param("mgu", 2, marks=pytest.mark.slow),
    ],
)
def test_recurrent_blocks_orthogonal(name, gates, key):
    w_hh = np.asarray(CELLS[name]().init(key, D)["w_hh"], np.float64)
    for g in range(gates):
        block = w_hh[:, g * H : (g + 1) * H]
        np.testing.assert_allclose(block.T @ block, np.eye(H), atol=1e-5)
    if gates > 1:  # blocks are drawn one at a time, not as one (H, G*H) matrix
        assert np.abs(w_hh[:, :H] - w_hh[:, H : 2 * H]).max() > 1e-3


@pytest.mark.slow
def test_projected_recurrent_blocks_have_orthonormal_rows(key):
    w_hh = np.asarray(rj.cells.lstm(H, proj_size=P).init(key, D)["w_hh"], np.float64)
    for g in range(4):
        block = w_hh[:, g * H : (g + 1) * H]  # (P, H) with P < H
        np.testing.assert_allclose(block @ block.T, np.eye(P), atol=1e-5)


def test_custom_initialisers_are_used(key):
    cell = rj.cells.gru(
        H,
        kernel_init=jax.nn.initializers.ones,
        recurrent_init=jax.nn.initializers.zeros,
        bias_init=jax.nn.initializers.constant(0.25),
    )
    params = cell.init(key, D)
    np.testing.assert_array_equal(params["w_ih"], 1.0)
    np.testing.assert_array_equal(params["w_hh"], 0.0)
    np.testing.assert_array_equal(params["b_ih"], 0.25)
    np.testing.assert_array_equal(params["b_hh"], 0.25)


# --- dtypes ------------------------------------------------------------------------


def test_param_dtype_bf16_gives_bf16_params(key):
    params = rj.cells.lstm(H, param_dtype=jnp.bfloat16).init(key, D)
    assert leaf_dtypes(params) == {jnp.dtype(jnp.bfloat16)}


def test_param_dtype_bf16_shapes():
    for name in ("lstm-all", "gru", "elman-tanh", "mgu"):
        shapes = param_shapes(CELLS[name](param_dtype=jnp.bfloat16))
        weights = {k: v.dtype for k, v in shapes.items() if k != "ln_c_bias"}
        assert set(weights.values()) == {jnp.dtype(jnp.bfloat16)}, (name, weights)


def test_layer_norm_bias_follows_param_dtype():
    shapes = param_shapes(CELLS["lstm-ln"](param_dtype=jnp.bfloat16))
    assert shapes["ln_c_bias"].dtype == jnp.bfloat16


@pytest.mark.parametrize(
    "name", ["lstm", *(pytest.param(n, marks=pytest.mark.slow) for n in ("lstm-all", "gru", "mgu"))]
)
def test_bf16_compute_keeps_fp32_carries(name, rng):
    cell32, params = make(name, rng)
    cell16 = CELLS[name](dtype=jnp.bfloat16)
    xs = normal(rng, (B, T, D))
    run = jax.jit(lambda p, x: (rj.unroll(cell32, p, x), rj.unroll(cell16, p, x)))
    (carry32, ys32), (carry16, ys16) = run(params, xs)
    assert ys16.dtype == jnp.float32
    assert leaf_dtypes(carry16) == {jnp.dtype(jnp.float32)}
    assert_trees_close(ys16, ys32, atol=2e-2)
    assert_trees_close(carry16, carry32, atol=2e-2)
    # ... and the matmuls really ran in bf16.
    assert np.abs(np.asarray(ys16) - np.asarray(ys32)).max() > 1e-6


def bf16_params_case(name, rng):
    """(fp32 cell, params rounded to bf16, the same values in fp32, xs)."""
    cell, params = make(name, rng)
    params16 = jax.tree_util.tree_map(lambda a: a.astype(jnp.bfloat16), params)
    params32 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), params16)
    return cell, params16, params32, normal(rng, (B, T, D))


@pytest.mark.parametrize("name", ["gru", pytest.param("lstm-all", marks=pytest.mark.slow)])
def test_bf16_params_run_with_fp32_carries(name, rng):
    cell32, params16, params32, xs = bf16_params_case(name, rng)
    cell16 = CELLS[name](param_dtype=jnp.bfloat16)
    run = jax.jit(lambda p16, p32, x: (rj.unroll(cell16, p16, x), rj.unroll(cell32, p32, x)))
    (carry16, ys16), (carry32, ys32) = run(params16, params32, xs)
    assert ys16.dtype == jnp.float32
    assert leaf_dtypes(carry16) == {jnp.dtype(jnp.float32)}
    assert_trees_close(ys16, ys32, atol=2e-2)
    assert_trees_close(carry16, carry32, atol=2e-2)


@pytest.mark.parametrize("name", ["lstm-all", "elman-tanh"])
def test_bf16_params_under_strict_promotion(name, rng):
    """No implicit mixing of bf16 and fp32 anywhere; same values as fp32
    params holding the bf16-rounded numbers (bf16 matmuls: atol 2e-2)."""
    cell32, params16, params32, xs = bf16_params_case(name, rng)
    cell16 = CELLS[name](param_dtype=jnp.bfloat16)
    with jax.numpy_dtype_promotion("strict"):
        _, ys16 = jax.jit(lambda p, x: rj.unroll(cell16, p, x))(params16, xs)
    _, ys32 = rj.unroll(cell32, params32, xs)
    assert_trees_close(ys16, ys32, atol=2e-2)
