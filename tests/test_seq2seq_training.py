"""Teacher forcing, scheduled sampling, schedules and the masked losses."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from recurrent_jax import seq2seq as s2s

V, T = 9, 5
SRC = jnp.array([[1, 2, 3, 4], [5, 6, 0, 0], [7, 0, 0, 0]], jnp.int32)
SRC_LENGTHS = jnp.array([4, 2, 1], jnp.int32)
TGT_IN = jnp.array([[1, 3, 4, 5, 6], [1, 8, 2, 0, 0], [1, 4, 4, 4, 2]], jnp.int32)
MODEL = s2s.make_seq2seq(
    src_vocab_size=8, tgt_vocab_size=V, cell="gru", hidden_size=6, embedding_size=4
)


@pytest.fixture(scope="module")
def params():
    shapes = jax.eval_shape(MODEL.init, jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    draw = lambda s: jnp.asarray(rng.standard_normal(s.shape), jnp.float32)
    return jax.tree_util.tree_map(draw, shapes)


@functools.partial(jax.jit, static_argnames="feedback")
def run(params, p, key, feedback="sample"):
    return MODEL.apply(
        params, SRC, SRC_LENGTHS, TGT_IN, sampling_probability=p, key=key, feedback=feedback
    )


KEY = jax.random.PRNGKey(7)


@pytest.fixture(scope="module")
def swept(params):
    """Scheduled sampling vmapped over p = 0, 1, 0.5 under one jit."""
    ps = jnp.array([0.0, 1.0, 0.5], jnp.float32)
    return jax.jit(jax.vmap(run, in_axes=(None, 0, None)))(params, ps, KEY)


def test_probability_zero_is_teacher_forcing(params, swept):
    forced = jax.jit(MODEL.apply)(params, SRC, SRC_LENGTHS, TGT_IN)
    np.testing.assert_array_equal(np.asarray(swept.inputs[0]), np.asarray(TGT_IN))
    np.testing.assert_allclose(np.asarray(swept.logits[0]), np.asarray(forced.logits), atol=1e-6)
    np.testing.assert_allclose(np.asarray(swept.aux[0]), np.asarray(forced.aux), atol=1e-6)
    # p = 0.5 mixes: step 0 reads BOS, later steps the truth or the prediction
    mixed = np.asarray(swept.inputs[2])
    assert np.all(mixed[:, 0] == 1)
    own = np.asarray(swept.inputs[1])
    assert not np.array_equal(mixed, own) and not np.array_equal(mixed, np.asarray(TGT_IN))


@pytest.mark.parametrize("feedback", ["sample", "argmax"])
def test_probability_one_feeds_back_own_predictions(params, swept, feedback):
    if feedback == "sample":
        got = jax.tree_util.tree_map(lambda a: a[1], swept)
    else:
        got = run(params, jnp.float32(1.0), KEY, feedback)
    _, k_sample = jax.random.split(KEY)
    step_keys = jax.random.split(k_sample, T)
    state = jax.jit(MODEL.initial_decoder_state)(params, SRC, SRC_LENGTHS)
    step = jax.jit(functools.partial(MODEL.decode_step, params))
    tokens, fed, logits_all = TGT_IN[:, 0], [], []
    for t in range(T):
        fed.append(tokens)
        logits, state, _ = step(state, tokens)
        logits_all.append(logits)
        if feedback == "argmax":
            tokens = jnp.argmax(logits, -1).astype(jnp.int32)
        else:
            tokens = jax.random.categorical(step_keys[t], logits).astype(jnp.int32)
    np.testing.assert_array_equal(np.asarray(got.inputs), np.stack(fed, 1))
    np.testing.assert_allclose(np.asarray(got.logits), np.stack(logits_all, 1), atol=1e-5)
    assert not np.array_equal(np.asarray(got.inputs), np.asarray(TGT_IN))


def test_scheduled_sampling_argument_errors(params):
    with pytest.raises(ValueError, match="sampling_probability"):
        MODEL.apply(params, SRC, SRC_LENGTHS, TGT_IN, sampling_probability=1.5, key=None)
    with pytest.raises(ValueError, match="key"):
        MODEL.apply(params, SRC, SRC_LENGTHS, TGT_IN, sampling_probability=0.5)
    with pytest.raises(ValueError, match="feedback"):
        MODEL.apply(
            params, SRC, SRC_LENGTHS, TGT_IN, sampling_probability=0.5, key=1, feedback="top"
        )


def test_schedules_match_closed_forms():
    steps = np.arange(0, 3000, 250)
    lin = s2s.sampling_schedule("linear", k=1.0, c=1e-3, epsilon=0.2)(steps)
    np.testing.assert_allclose(lin, 1 - np.maximum(0.2, 1.0 - 1e-3 * steps), rtol=1e-6)
    exp = s2s.sampling_schedule("exponential", k=0.999)(steps)
    np.testing.assert_allclose(exp, 1 - 0.999**steps, rtol=1e-5, atol=1e-6)
    sig = jax.jit(s2s.sampling_schedule("inverse_sigmoid", k=500.0))(steps)
    np.testing.assert_allclose(sig, 1 - 500.0 / (500.0 + np.exp(steps / 500.0)), atol=1e-6)
    np.testing.assert_allclose(s2s.inverse_sigmoid_decay(0, k=500.0), 500 / 501, rtol=1e-6)
    np.testing.assert_allclose(s2s.linear_decay(100, k=0.9, c=0.01), 0.0, atol=1e-7)
    assert float(s2s.sampling_schedule("constant", p=0.25)(7)) == 0.25
    with pytest.raises(ValueError, match="schedule"):
        s2s.sampling_schedule("cosine")


# --- losses ------------------------------------------------------------------


def np_loss(logits, targets, valid, alpha):
    logits = np.asarray(logits, np.float64)
    logp = logits - logits.max(-1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
    labels = (1 - alpha) * np.eye(logits.shape[-1])[targets] + alpha / logits.shape[-1]
    per = -(labels * logp).sum(-1)
    return (per * valid).sum() / valid.sum()


@pytest.mark.parametrize("alpha", [0.0, 0.1])
def test_cross_entropy_equals_numpy_and_ignores_padding(alpha, rng):
    logits = rng.standard_normal((3, 4, 6)).astype(np.float32)
    targets = rng.integers(0, 6, (3, 4)).astype(np.int32)
    lengths = np.array([4, 1, 2], np.int32)
    valid = np.arange(4)[None, :] < lengths[:, None]
    got = s2s.sequence_cross_entropy(logits, targets, lengths=lengths, label_smoothing=alpha)
    np.testing.assert_allclose(float(got), np_loss(logits, targets, valid, alpha), rtol=1e-5)
    if alpha == 0.0:
        plain = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
        np.testing.assert_allclose(float(got), float(plain[valid].mean()), rtol=1e-5)
    padded_logits = np.where(valid[..., None], logits, 100.0 * rng.standard_normal(logits.shape))
    padded_targets = np.where(valid, targets, 5).astype(np.int32)
    same = s2s.sequence_cross_entropy(
        padded_logits, padded_targets, mask=jnp.asarray(valid), label_smoothing=alpha
    )
    np.testing.assert_allclose(float(same), float(got), rtol=1e-6)
    summed = s2s.sequence_cross_entropy(logits, targets, lengths=lengths, reduction="sum")
    per = s2s.sequence_cross_entropy(logits, targets, lengths=lengths, reduction="none")
    assert per.shape == (3, 4) and np.all(np.asarray(per)[~valid] == 0.0)
    np.testing.assert_allclose(float(summed), float(per.sum()), rtol=1e-6)


def test_accuracies_by_hand():
    targets = jnp.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]], jnp.int32)
    predicted = jnp.array([[1, 2, 0], [4, 0, 6], [7, 8, 9]], jnp.int32)
    lengths = jnp.array([2, 3, 1], jnp.int32)
    # valid tokens: 2 + 3 + 1 = 6, wrong among them: row 1 step 1 -> 5/6
    np.testing.assert_allclose(
        float(s2s.token_accuracy(predicted, targets, lengths=lengths)), 5 / 6
    )
    np.testing.assert_allclose(
        float(s2s.sequence_accuracy(predicted, targets, lengths=lengths)), 2 / 3
    )
    np.testing.assert_allclose(float(s2s.sequence_accuracy(predicted, targets)), 1 / 3)
    logits = jax.nn.one_hot(predicted, 10)
    np.testing.assert_allclose(float(s2s.token_accuracy(logits, targets)), 7 / 9, rtol=1e-6)


def test_loss_argument_errors():
    logits = jnp.zeros((2, 3, 4))
    with pytest.raises(TypeError, match="targets: expected integer"):
        s2s.sequence_cross_entropy(logits, jnp.zeros((2, 3)))
    with pytest.raises(ValueError, match="logits: expected shape"):
        s2s.sequence_cross_entropy(logits, jnp.zeros((2, 4), jnp.int32))
    with pytest.raises(ValueError, match="seq_lengths"):
        s2s.sequence_cross_entropy(logits, jnp.zeros((2, 3), jnp.int32), lengths=jnp.array([1, 4]))
    with pytest.raises(ValueError, match="label_smoothing"):
        s2s.sequence_cross_entropy(logits, jnp.zeros((2, 3), jnp.int32), label_smoothing=1.0)
