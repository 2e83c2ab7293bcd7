"""Bridges, the assembled model, ``rj.nn.Seq2Seq`` and argument errors."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import assert_trees_close

import recurrent_jax as rj
from recurrent_jax import seq2seq as s2s
from recurrent_jax.cells import LSTMCarry

B = 2
SRC = jnp.array([[1, 2, 3, 4], [5, 6, 0, 0]], jnp.int32)
SRC_LENGTHS = jnp.array([4, 0], jnp.int32)  # a length-0 source: zero context
TGT_IN = jnp.array([[1, 3, 4], [1, 8, 2]], jnp.int32)
TGT_OUT = jnp.array([[3, 4, 2], [8, 2, 0]], jnp.int32)
TGT_LENGTHS = jnp.array([3, 2], jnp.int32)


def random_params(model, seed=0):
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0))
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(
        lambda s: jnp.asarray(0.5 * rng.standard_normal(s.shape), jnp.float32), shapes
    )


def lstm_carry(rng, size):
    return LSTMCarry(*(jnp.asarray(rng.standard_normal((B, size)), jnp.float32) for _ in "hc"))


# --- bridges -----------------------------------------------------------------


def test_layer_rule_aligns_the_top_layers():
    assert s2s.layer_pairs(2, 2) == [0, 1]
    assert s2s.layer_pairs(3, 2) == [1, 2]
    assert s2s.layer_pairs(1, 3) == [None, None, 0]


def test_copy_bridge_layer_counts_and_directions(rng):
    enc = tuple(lstm_carry(rng, 4) for _ in range(3))
    bridge = s2s.make_bridge("copy", [rj.cells.lstm(4)] * 2, bidirectional_encoder=False)
    out = bridge.apply(bridge.init(None, enc), enc)
    assert_trees_close(out, enc[1:], atol=0)

    deeper = s2s.make_bridge("copy", [rj.cells.lstm(4)] * 2, bidirectional_encoder=False)
    out = deeper.apply({}, enc[:1])
    assert_trees_close(out, (LSTMCarry(jnp.zeros((B, 4)), jnp.zeros((B, 4))), enc[0]), atol=0)

    pairs = ((lstm_carry(rng, 3), lstm_carry(rng, 3)),)
    bi = s2s.make_bridge("copy", [rj.cells.lstm(6)], bidirectional_encoder=True)
    (got,) = bi.apply({}, pairs)
    fwd, bwd = pairs[0]
    np.testing.assert_array_equal(np.asarray(got.h), np.concatenate([fwd.h, bwd.h], -1))
    np.testing.assert_array_equal(np.asarray(got.c), np.concatenate([fwd.c, bwd.c], -1))

    wrong = s2s.make_bridge("copy", [rj.cells.lstm(3)], bidirectional_encoder=True)
    with pytest.raises(ValueError, match="bridge: 'copy' needs encoder layer 0"):
        wrong.init(None, jax.eval_shape(lambda: pairs))
    to_gru = s2s.make_bridge("copy", [rj.cells.gru(4)], bidirectional_encoder=False)
    with pytest.raises(ValueError, match="use bridge='linear'"):
        to_gru.apply({}, enc)


def test_linear_bridge_projects_concatenated_leaves(rng):
    pairs = tuple((lstm_carry(rng, 3), lstm_carry(rng, 3)) for _ in range(2))
    bridge = s2s.make_bridge("linear", [rj.cells.gru(5)] * 3, bidirectional_encoder=True)
    params = bridge.init(jax.random.PRNGKey(0), jax.eval_shape(lambda: pairs))
    assert sorted(params) == ["layer_1", "layer_2"]
    assert params["layer_1"]["w"].shape == (12, 5)
    out = jax.jit(bridge.apply)(params, pairs)
    assert np.all(np.asarray(out[0]) == 0.0)
    for j, (fwd, bwd) in zip((1, 2), pairs, strict=True):
        x = np.concatenate([fwd.h, bwd.h, fwd.c, bwd.c], -1).astype(np.float64)
        want = x @ np.asarray(params[f"layer_{j}"]["w"], np.float64) + np.asarray(
            params[f"layer_{j}"]["b"]
        )
        np.testing.assert_allclose(np.asarray(out[j]), want, atol=1e-5)


def test_zeros_bridge_and_unknown_mode(rng):
    enc = (lstm_carry(rng, 4),)
    bridge = s2s.make_bridge("zeros", [rj.cells.lstm(7)], bidirectional_encoder=False)
    assert bridge.init(None, enc) == {}
    (out,) = bridge.apply({}, enc)
    assert out.h.shape == (B, 7) and np.all(np.asarray(out.c) == 0.0)
    with pytest.raises(ValueError, match="bridge: expected one of"):
        s2s.make_bridge("mean", [rj.cells.lstm(4)], bidirectional_encoder=False)


def test_model_copy_bridge_starts_from_encoder_final_state():
    model = s2s.make_seq2seq(
        src_vocab_size=8, tgt_vocab_size=9, hidden_size=4, num_layers=2, embedding_size=3
    )
    params = random_params(model)
    encoded, state = jax.jit(
        lambda p: (
            model.encode(p, SRC, SRC_LENGTHS),
            model.initial_decoder_state(p, SRC, SRC_LENGTHS),
        )
    )(params)
    assert_trees_close(state.carries, encoded.carries, atol=0)
    np.testing.assert_array_equal(np.asarray(state.memory.values), np.asarray(encoded.outputs))
    # a length-0 source keeps the initial carry
    assert np.all(np.asarray(encoded.carries[0].h[1]) == 0.0)


# --- the module --------------------------------------------------------------

CONFIG = dict(
    src_vocab_size=8,
    tgt_vocab_size=9,
    cell="gru",
    hidden_size=6,
    encoder_hidden_size=4,
    num_layers=1,
    decoder_layers=2,
    bidirectional_encoder=True,
    attention="additive",
    attention_size=5,
    attention_normalize=True,
    attention_layer_size=7,
    embedding_size=3,
    bridge="linear",
)


@pytest.fixture(scope="module")
def setup():
    module = rj.nn.Seq2Seq(**CONFIG)
    core = s2s.make_seq2seq(**CONFIG)
    return module, core, random_params(core, seed=1)


def test_module_params_are_the_core_params_and_outputs_match(setup):
    module, core, params = setup
    variables = jax.eval_shape(module.init, jax.random.PRNGKey(0), SRC, SRC_LENGTHS, TGT_IN)
    want = jax.eval_shape(core.init, jax.random.PRNGKey(0))
    assert jax.tree_util.tree_structure(variables["params"]) == jax.tree_util.tree_structure(want)
    assert jax.tree_util.tree_leaves(variables["params"]) == jax.tree_util.tree_leaves(want)
    apply = jax.jit(functools.partial(module.apply, return_alignments=True))
    logits, alignments = apply({"params": params}, SRC, SRC_LENGTHS, TGT_IN)
    out = jax.jit(core.apply)(params, SRC, SRC_LENGTHS, TGT_IN)
    assert_trees_close((logits, alignments), (out.logits, out.aux), atol=1e-6)
    assert logits.shape == (B, 3, 9) and alignments.shape == (B, 3, 4)
    assert np.all(np.asarray(alignments[1]) == 0.0)  # length-0 source


def test_gradients_are_finite(setup):
    _, core, params = setup

    def loss(p):
        logits = core.apply(p, SRC, SRC_LENGTHS, TGT_IN).logits
        return s2s.sequence_cross_entropy(logits, TGT_OUT, lengths=TGT_LENGTHS, label_smoothing=0.1)

    grads = jax.jit(jax.grad(loss))(params)
    for leaf in jax.tree_util.tree_leaves(grads):
        assert np.all(np.isfinite(np.asarray(leaf)))
    assert float(jnp.abs(grads["decoder"]["attention"]["g"])) > 0


def test_module_decode_uses_the_decoding_functions(setup):
    from recurrent_jax.seq2seq import decoding

    module, core, params = setup
    bound = module.bind({"params": params})
    ids = dict(bos_id=1, eos_id=2, max_len=4)
    got = jax.jit(lambda: bound.decode(SRC, SRC_LENGTHS, method="greedy", **ids))()
    state = core.initial_decoder_state(params, SRC, SRC_LENGTHS)
    step_fn = functools.partial(core.decode_step, params)
    want = jax.jit(lambda s: decoding.greedy_decode(step_fn, s, **ids))(state)
    assert_trees_close(got, want, atol=1e-6)
    assert got.aux.shape == (B, 4, 4)
    beams = jax.jit(
        lambda: bound.decode(
            SRC, SRC_LENGTHS, method="beam", beam_size=2, coverage_penalty=0.2, **ids
        )
    )()
    assert beams.sequences.shape == (B, 4) and beams.aux.shape == (B, 4, 4)
    with pytest.raises(ValueError, match="method: expected one of"):
        bound.decode(SRC, SRC_LENGTHS, method="nucleus", **ids)


def test_bad_inputs_name_the_argument(setup):
    _, core, params = setup
    with pytest.raises(TypeError, match="src: expected integer token ids"):
        core.apply(params, SRC.astype(jnp.float32), SRC_LENGTHS, TGT_IN)
    with pytest.raises(ValueError, match=r"src_lengths: expected shape \(2,\)"):
        core.apply(params, SRC, SRC_LENGTHS[:1], TGT_IN)
    with pytest.raises(ValueError, match=r"src_lengths: expected values in \[0, 4\]"):
        core.apply(params, SRC, SRC_LENGTHS + 5, TGT_IN)
    with pytest.raises(TypeError, match="src_lengths: expected integers"):
        core.apply(params, SRC, SRC_LENGTHS.astype(jnp.float32), TGT_IN)
    with pytest.raises(ValueError, match="tgt_in: expected batch size 2"):
        core.apply(params, SRC, SRC_LENGTHS, TGT_IN[:1])
    with pytest.raises(ValueError, match=r"tgt_in: expected ids in \[0, 9\)"):
        core.apply(params, SRC, SRC_LENGTHS, TGT_IN + 8)
    with pytest.raises(ValueError, match="tokens: expected token ids of shape"):
        core.decode_step(params, None, TGT_IN)
    for name, value in [("attention", "luong"), ("bridge", "mean"), ("cell", "tcn")]:
        with pytest.raises(ValueError, match=f"{name}: expected one of"):
            s2s.make_seq2seq(**(CONFIG | {name: value}))
    with pytest.raises(ValueError, match="decoder_layers: expected a positive int"):
        s2s.make_seq2seq(**(CONFIG | {"decoder_layers": 0}))
    with pytest.raises(ValueError, match="bridge: 'copy' needs"):
        rj.nn.Seq2Seq(**(CONFIG | {"bridge": "copy"})).init(
            jax.random.PRNGKey(0), SRC, SRC_LENGTHS, TGT_IN
        )
