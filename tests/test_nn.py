"""Flax modules: params are the core's, outputs equal the core's."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import recurrent_jax as rj

B, T, D, H = 3, 5, 4, 6
LENGTHS = jnp.array([5, 0, 2])


@pytest.fixture
def xs():
    return jax.random.normal(jax.random.PRNGKey(1), (B, T, D))


def test_lstm_module_params_are_the_core_params(xs):
    model = rj.nn.LSTM(H, num_layers=2, bidirectional=True)
    params = model.init(jax.random.PRNGKey(0), xs, seq_lengths=LENGTHS)["params"]
    core = rj.stack([rj.bidirectional(rj.cells.lstm(H))] * 2)
    want = core.init(jax.random.PRNGKey(0), D)
    assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(want)
    assert jax.tree_util.tree_map(jnp.shape, params) == jax.tree_util.tree_map(jnp.shape, want)
    ys = model.apply({"params": params}, xs, seq_lengths=LENGTHS)
    _, core_ys = core.apply(params, xs, seq_lengths=LENGTHS)
    np.testing.assert_allclose(ys, core_ys, atol=0)
    assert ys.shape == (B, T, 2 * H)


@pytest.mark.parametrize(
    "module, cell",
    [
        (rj.nn.GRU(H, reset_after=False), rj.cells.gru(H, reset_after=False)),
        (rj.nn.SimpleRNN(H, activation="relu"), rj.cells.elman(H, activation="relu")),
        (rj.nn.LSTM(H, proj_size=2, bias="single"), rj.cells.lstm(H, proj_size=2, bias="single")),
    ],
)
def test_single_layer_modules_wrap_their_cell(xs, module, cell):
    params = module.init(jax.random.PRNGKey(0), xs)["params"]
    carries, ys = module.clone(return_carry=True).apply({"params": params}, xs, seq_lengths=LENGTHS)
    want_carry, want = rj.unroll(cell, params["layer_0"], xs, seq_lengths=LENGTHS)
    np.testing.assert_allclose(ys, want, atol=0)
    for a, b in zip(
        jax.tree_util.tree_leaves(carries[0]), jax.tree_util.tree_leaves(want_carry), strict=True
    ):
        np.testing.assert_allclose(a, b, atol=0)


def test_rnn_wraps_a_user_cell(xs):
    def init(key, d):
        return {"w": jax.random.normal(key, (d + H, H)) * 0.3}

    def step(p, h, x):
        h = jnp.tanh(jnp.concatenate([x, h], -1) @ p["w"])
        return h, h

    cell = rj.Cell(init=init, step=step, hidden_size=H)
    model = rj.nn.RNN(cell, return_carry=True)
    variables = model.init(jax.random.PRNGKey(0), xs)
    carry, ys = model.apply(variables, xs, seq_lengths=LENGTHS)
    h = np.zeros((B, H), np.float32)
    w = np.asarray(variables["params"]["w"])
    for t in range(T):
        new = np.tanh(np.concatenate([np.asarray(xs[:, t]), h], -1) @ w)
        valid = (t < np.asarray(LENGTHS))[:, None]
        np.testing.assert_allclose(ys[:, t], np.where(valid, new, 0), atol=1e-5)
        h = np.where(valid, new, h)
    np.testing.assert_allclose(carry, h, atol=1e-5)


def test_bidirectional_module(xs):
    model = rj.nn.Bidirectional(rj.cells.gru(H), rj.cells.lstm(H), merge_mode="sum")
    params = model.init(jax.random.PRNGKey(0), xs)["params"]
    _, y_f = rj.unroll(rj.cells.gru(H), params["forward"], xs, seq_lengths=LENGTHS)
    _, y_b = rj.unroll(rj.cells.lstm(H), params["backward"], xs, seq_lengths=LENGTHS, reverse=True)
    ys = model.apply({"params": params}, xs, seq_lengths=LENGTHS)
    np.testing.assert_allclose(ys, y_f + y_b, atol=1e-6)


def test_dropout_needs_mode_and_rng(xs):
    model = rj.nn.LSTM(H, num_layers=2, dropout=0.5, recurrent_dropout=0.3)
    with pytest.raises(ValueError, match="deterministic"):
        model.init(jax.random.PRNGKey(0), xs)
    variables = model.init(jax.random.PRNGKey(0), xs, deterministic=True)
    plain = rj.nn.LSTM(H, num_layers=2).apply(variables, xs)
    np.testing.assert_allclose(model.apply(variables, xs, deterministic=True), plain, atol=0)
    with pytest.raises(ValueError, match="key"):
        model.apply(variables, xs, deterministic=False)
    a = model.apply(variables, xs, deterministic=False, rngs={"dropout": jax.random.PRNGKey(1)})
    b = model.apply(variables, xs, deterministic=False, rngs={"dropout": jax.random.PRNGKey(2)})
    assert float(jnp.abs(a - plain).max()) > 1e-3 and float(jnp.abs(a - b).max()) > 1e-3


def test_two_batch_dims_and_length_zero():
    xs = jax.random.normal(jax.random.PRNGKey(1), (2, 3, T, D))
    lengths = jnp.array([[5, 0, 1], [3, 2, 0]])
    model = rj.nn.GRU(H, return_carry=True, return_sequences=False)
    variables = model.init(jax.random.PRNGKey(0), xs, seq_lengths=lengths)
    (carry,), last = model.apply(variables, xs, seq_lengths=lengths)
    assert last.shape == (2, 3, H) and carry.shape == (2, 3, H)
    np.testing.assert_allclose(carry[0, 1], 0.0, atol=0)
    np.testing.assert_allclose(last[1, 2], 0.0, atol=0)
    np.testing.assert_allclose(last, carry, atol=1e-6)  # GRU: output == state


def test_no_retracing_and_vmap_over_params(xs):
    model = rj.nn.LSTM(H)
    traces = []

    @jax.jit
    def apply(params, x):
        traces.append(1)
        return model.apply({"params": params}, x, seq_lengths=LENGTHS)

    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    stacked = jax.vmap(lambda k: model.init(k, xs)["params"])(keys)
    ys = jax.vmap(apply, in_axes=(0, None))(stacked, xs)
    for i in range(3):
        one = jax.tree_util.tree_map(lambda p, i=i: p[i], stacked)
        np.testing.assert_allclose(ys[i], apply(one, xs), atol=1e-6)
    apply(one, xs + 1.0)
    assert len(traces) == 1  # vmap of jit reuses the per-example trace; no retracing


class Classifier(nn.Module):
    """The README's 2-layer bidirectional LSTM classifier with masks."""

    @nn.compact
    def __call__(self, xs, mask, deterministic=True):
        ys = rj.nn.LSTM(16, num_layers=2, bidirectional=True, dropout=0.1, return_sequences=False)(
            xs, mask=mask, deterministic=deterministic
        )
        return nn.Dense(2)(ys)


def test_readme_classifier_learns():
    key = jax.random.PRNGKey(0)
    xs = jax.random.normal(key, (32, 8, 3))
    lengths = jax.random.randint(jax.random.PRNGKey(1), (32,), 1, 9)
    mask = jnp.arange(8)[None, :] < lengths[:, None]
    labels = (jnp.sum(jnp.where(mask, xs[..., 0], 0.0), -1) > 0).astype(jnp.int32)
    model = Classifier()
    params = model.init(key, xs, mask)["params"]
    opt = optax.adam(1e-2)
    state = opt.init(params)

    def loss_fn(p, k):
        logits = model.apply({"params": p}, xs, mask, False, rngs={"dropout": k})
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    @jax.jit
    def train_step(p, s, k):
        loss, g = jax.value_and_grad(loss_fn)(p, k)
        updates, s = opt.update(g, s)
        return optax.apply_updates(p, updates), s, loss

    losses = []
    for k in jax.random.split(key, 60):
        params, state, loss = train_step(params, state, k)
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0]
