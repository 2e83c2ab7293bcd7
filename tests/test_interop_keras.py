"""Keras 3 interop (JAX backend): LSTM, GRU (reset_after True / False),
SimpleRNN and Bidirectional wrappers match rj within 1e-5 on masked batches
(valid steps, final states, gradients); round trips are exact."""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

keras = pytest.importorskip("keras")
if keras.backend.backend() != "jax":
    pytest.skip("Keras runs on another backend in this process", allow_module_level=True)

import recurrent_jax as rj  # noqa: E402
from recurrent_jax import interop  # noqa: E402

ATOL = 1e-5
D, H, T = 3, 4, 5
LENGTHS = np.array([5, 2, 4, 1])
MASK = np.arange(T)[None] < LENGTHS[:, None]


@pytest.fixture(autouse=True)
def keras_rank_promotion():
    """Keras's own code (initialisers, cells) broadcasts implicitly, which the
    suite's strict jax_numpy_rank_promotion="raise" rejects."""
    with jax.numpy_rank_promotion("allow"):
        yield


FAST_INIT = dict(
    kernel_initializer="zeros", recurrent_initializer="zeros", bias_initializer="zeros"
)


def make(kind, seed=0, **options):
    """A Keras layer; zeros initialisers because Keras's orthogonal one costs
    seconds of compile on CPU, and ``randomize`` overwrites them anyway."""
    options = FAST_INIT | options
    build = {
        "lstm": lambda: keras.layers.LSTM(H, **options),
        "gru": lambda: keras.layers.GRU(H, **options),
        "gru_rb": lambda: keras.layers.GRU(H, reset_after=False, **options),
        "tanh": lambda: keras.layers.SimpleRNN(H, **options),
        "relu": lambda: keras.layers.SimpleRNN(H, activation="relu", **options),
    }
    return build[kind]()


def bidirectional(kind, merge_mode, seed=0, **options):
    return keras.layers.Bidirectional(make(kind, **options), merge_mode=merge_mode)


def randomize(keras_layer, seed):
    keras_layer.build((None, T, D))
    rng = np.random.default_rng(seed)
    for v in keras_layer.trainable_variables:
        v.assign(0.5 * rng.standard_normal(v.shape).astype("float32"))
    return keras_layer


def keras_grads(keras_layer, x, r, grads):
    """Outputs and d<out ⊙ mask, r>/d(x, weights) through stateless_call."""
    weights = [v.value for v in keras_layer.trainable_variables]
    state = [v.value for v in keras_layer.non_trainable_variables]  # seed generators

    def loss(weights, x):
        out, _ = keras_layer.stateless_call(weights, state, x, mask=jnp.asarray(MASK))
        seq = out[0] if isinstance(out, (list, tuple)) else out
        seq = seq if keras_layer.return_sequences else seq[:, None]
        return (seq * r).sum(), out

    return evaluate(loss, weights, x, grads)


def rj_grads(layer, params, x, r, grads):
    def loss(params, x):
        out = layer.apply({"params": params}, x, seq_lengths=jnp.asarray(LENGTHS))
        seq = out[1] if isinstance(out, tuple) and layer.return_carry else out
        seq = seq if layer.return_sequences else seq[:, None]
        return (seq * r).sum(), out

    return evaluate(loss, params, x, grads)


def evaluate(loss, weights, x, grads):
    """(outputs, d loss/d weights, d loss/d x); the gradients only when ``grads``."""
    if grads:
        fn = jax.grad(loss, argnums=(0, 1), has_aux=True)
        (g_w, g_x), out = compile_quickly(fn, weights, x)(weights, x)
        return out, g_w, g_x
    out = compile_quickly(lambda w, x: loss(w, x)[1], weights, x)(weights, x)
    return out, None, None


def compile_quickly(fn, *args):
    """``jax.jit(fn)`` compiled at XLA's backend optimisation level 0 (30%
    less compile time on CPU for these tiny programs)."""
    lowered = jax.jit(fn).lower(*args)
    try:
        return lowered.compile({"xla_backend_optimization_level": 0})
    except Exception:  # an XLA without that option
        return lowered.compile()


def close(actual, expected):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=0, atol=ATOL)


# (kind, merge_mode, options, check gradients): every case checks gradients.
CASES = [
    ("lstm", None, dict(return_sequences=True, return_state=True), True),
    ("gru", None, dict(return_sequences=True, return_state=True), True),
    ("gru_rb", None, dict(return_sequences=True, return_state=True), True),
    ("lstm", "concat", dict(return_sequences=True, return_state=True), True),
    ("lstm", None, dict(use_bias=False, return_sequences=False), True),
    ("gru_rb", "sum", dict(return_sequences=True), True),
    ("relu", "ave", dict(return_sequences=False), True),
]


def _case_id(c):
    return "-".join(f"{k}={v}" for k, v in c.items()) if isinstance(c, dict) else str(c)


@pytest.mark.parametrize("kind,merge_mode,options,grads", CASES, ids=_case_id)
def test_layer_matches_keras(kind, merge_mode, options, grads):
    if merge_mode is None:
        source = randomize(make(kind, **options), 1)
    else:
        source = randomize(bidirectional(kind, merge_mode, **options), 1)
    layer, params = interop.from_keras(source)
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.standard_normal((len(LENGTHS), T, D)), jnp.float32)
    width = (2 if merge_mode == "concat" else 1) * H
    r = rng.standard_normal(
        (len(LENGTHS), T if options.get("return_sequences") else 1, width)
    ).astype("float32")
    r = jnp.asarray(r * (MASK[..., None] if options.get("return_sequences") else 1))
    k_out, k_gw, k_gx = keras_grads(source, x, r, grads)
    out, g_p, g_x = rj_grads(layer, params, x, r, grads)
    k_list = list(k_out) if isinstance(k_out, (list, tuple)) else [k_out]
    carries, ys = out if layer.return_carry else (None, out)
    valid = MASK[..., None] if options.get("return_sequences") else True
    close(np.where(valid, ys, 0), np.where(valid, k_list[0], 0))  # Keras repeats outputs at padding
    if carries is not None:
        for ours, theirs in zip(jax.tree_util.tree_leaves(carries), k_list[1:], strict=True):
            close(ours, theirs)
    if not grads:
        return
    close(g_x, k_gx)
    grads_as_keras = interop.to_keras(
        g_p, randomize(type(source).from_config(source.get_config()), 0), layer=layer
    )
    for ours, theirs in zip(grads_as_keras.trainable_variables, k_gw, strict=True):
        close(ours.value, theirs)


@pytest.mark.parametrize(
    "kind,merge_mode,options",
    [c[:3] for c in CASES] + [("tanh", "mul", {}), ("lstm", None, dict(go_backwards=True))],
)
def test_round_trip_is_exact(kind, merge_mode, options):
    def fresh(seed):
        if merge_mode is None:
            return randomize(make(kind, **options), seed)
        return randomize(bidirectional(kind, merge_mode, **options), seed)

    source, target = fresh(3), fresh(4)
    layer, params = interop.from_keras(source)
    assert interop.to_keras(params, target, layer=layer) is target
    for a, b in zip(source.trainable_variables, target.trainable_variables, strict=True):
        np.testing.assert_array_equal(np.asarray(a.value), np.asarray(b.value))


def test_go_backwards_keeps_outputs_aligned():
    source = randomize(make("lstm", go_backwards=True, return_sequences=True), 5)
    layer, params = interop.from_keras(source)
    assert isinstance(layer, rj.nn.RNN) and layer.reverse
    x = jnp.asarray(np.random.default_rng(6).standard_normal((2, T, D)), jnp.float32)
    close(
        jax.jit(layer.apply)({"params": params}, x)[:, ::-1], source(x)
    )  # Keras: processing order


def test_bidirectional_of_two_kinds():
    """A backward layer of another kind gives rj.nn.Bidirectional(cell, cell)."""
    backward = make("gru", go_backwards=True, return_sequences=True)
    source = randomize(
        keras.layers.Bidirectional(make("lstm", return_sequences=True), backward_layer=backward), 9
    )
    layer, params = interop.from_keras(source)
    assert isinstance(layer, rj.nn.Bidirectional) and set(params) == {"forward", "backward"}
    x = jnp.asarray(np.random.default_rng(9).standard_normal((len(LENGTHS), T, D)), jnp.float32)
    ys = jax.jit(layer.apply)({"params": params}, x, seq_lengths=jnp.asarray(LENGTHS))
    valid = MASK[..., None]
    close(np.where(valid, ys, 0), np.where(valid, source(x, mask=jnp.asarray(MASK)), 0))
    backward2 = make("gru", go_backwards=True, return_sequences=True)
    target = randomize(
        keras.layers.Bidirectional(make("lstm", return_sequences=True), backward_layer=backward2),
        10,
    )
    interop.to_keras(params, target, layer=layer)
    for a, b in zip(source.trainable_variables, target.trainable_variables, strict=True):
        np.testing.assert_array_equal(np.asarray(a.value), np.asarray(b.value))


def test_merge_modes_are_copied():
    for merge_mode in ("concat", "sum", "mul", "ave", None):
        layer, params = interop.from_keras(randomize(bidirectional("gru", merge_mode), 0))
        assert layer.bidirectional and layer.merge_mode == merge_mode
        assert set(params["layer_0"]) == {"forward", "backward"}


def test_bias_modes_and_counts():
    layer, params = interop.from_keras(randomize(make("lstm"), 7))
    assert layer.bias == "single" and set(params["layer_0"]) == {"w_ih", "w_hh", "b"}
    assert interop.count_params(params) == 4 * H * (D + H) + 4 * H
    layer, params = interop.from_keras(randomize(make("gru"), 7))
    assert (
        layer.bias == "double"
        and layer.reset_after
        and interop.count_params(params) == 3 * H * (D + H) + 6 * H
    )
    layer, params = interop.from_keras(randomize(make("gru_rb"), 7))
    assert (
        layer.bias == "single"
        and not layer.reset_after
        and interop.count_params(params) == 3 * H * (D + H) + 3 * H
    )


def test_keras_parameter_count_parity():
    """Embedding(1000, 64) -> LSTM(128) -> Dense(10): 164,106 in both."""
    zeros = dict(embeddings_initializer="zeros")
    lstm = keras.layers.LSTM(128, **FAST_INIT)
    dense = keras.layers.Dense(10, kernel_initializer="zeros")
    model = keras.Sequential(
        [keras.Input((7,)), keras.layers.Embedding(1000, 64, **zeros), lstm, dense]
    )
    assert model.count_params() == 164_106
    layer, params = interop.from_keras(lstm)
    assert layer.bias == "single" and interop.count_params(params) == 98_816


def test_unrepresentable_params_raise():
    _, gru_params = interop.from_keras(randomize(make("gru"), 8))
    with pytest.raises(ValueError, match="reset_after=True.*cannot reproduce"):
        interop.to_keras(gru_params, randomize(make("gru_rb"), 0))  # rj default: reset-after
    _, lstm_params = interop.from_keras(randomize(make("lstm"), 8))
    with pytest.raises(ValueError, match="no bias at all.*use_bias=True"):
        interop.to_keras(lstm_params, randomize(make("lstm", use_bias=False), 0))
    with pytest.raises(ValueError, match="one bidirectional layer"):
        interop.to_keras(lstm_params, randomize(bidirectional("lstm", "concat"), 0))
    with pytest.raises(ValueError, match="recurrent_activation='hard_sigmoid'"):
        interop.from_keras(
            randomize(keras.layers.LSTM(H, recurrent_activation="hard_sigmoid", **FAST_INIT), 0)
        )
    with pytest.raises(TypeError, match="expected keras.layers.LSTM, GRU, SimpleRNN.*got Dense"):
        interop.from_keras(keras.layers.Dense(3))
    with pytest.raises(ValueError, match="not built"):
        interop.from_keras(keras.layers.LSTM(H))
