"""The conversion engine and the tables, without any peer installed: exact
round trips through every layout, clear errors, the cuDNN flat layout
against jax.experimental.rnn, and Keras parameter-count parity."""

import flax.linen as fnn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import recurrent_jax as rj
from recurrent_jax import interop
from recurrent_jax.interop import _tables

D, H, T = 3, 4, 5


def random_cell(family, rng, bias="double", proj=None, **options):
    make = {"lstm": rj.cells.lstm, "gru": rj.cells.gru, "elman": rj.cells.elman}[family]
    if proj:
        options["proj_size"] = proj
    cell = make(H, bias=bias, **options)
    shapes = jax.eval_shape(lambda: cell.init(jax.random.PRNGKey(0), D))
    return {k: (0.5 * rng.standard_normal(s.shape)).astype(np.float32) for k, s in shapes.items()}


def all_layouts():
    out = []
    for family in ("lstm", "gru", "elman"):
        out += [_tables.torch_layout(family), _tables.torch_layout(family, bias=False)]
        out += [_tables.keras_layout(family), _tables.keras_layout(family, use_bias=False)]
        out.append(_tables.FLAX_LINEN[family])
    out += [_tables.torch_layout("lstm", proj=True), _tables.keras_layout("gru", reset_after=False)]
    out += (
        list(_tables.FLAX_NNX.values())
        + list(_tables.EQUINOX.values())
        + list(_tables.HAIKU.values())
    )
    return out


@pytest.mark.parametrize("layout", all_layouts(), ids=lambda lay: f"{lay.name}-{len(lay.slots)}")
def test_peer_round_trip_is_exact(layout):
    """peer -> rj -> peer returns the very same arrays, for every table."""
    rng = np.random.default_rng(0)
    core = random_cell(
        layout.family, rng, proj=2 if any(s.kind == "proj" for s in layout.slots) else None
    )
    if layout.reset_after is False:
        reset_after = False
    else:
        reset_after = None
        core["b_hh"][2 * H :] = 0.0 if layout.family == "gru" else core["b_hh"][2 * H :]
    if not any(s.kind == "bias" for s in layout.slots):
        core = {k: v for k, v in core.items() if not k.startswith("b")}
    shapes = interop.to_peer(layout, core, reset_after=reset_after)
    peer = {k: (0.5 * rng.standard_normal(v.shape)).astype(np.float32) for k, v in shapes.items()}
    back = interop.to_peer(layout, interop.from_peer(layout, peer), reset_after=reset_after)
    assert set(back) == set(peer)
    for k in peer:
        np.testing.assert_array_equal(back[k], peer[k], err_msg=k)


def test_torch_layout_is_transposition():
    rng = np.random.default_rng(1)
    core = random_cell("gru", rng)
    peer = interop.to_peer(_tables.torch_layout("gru"), core, suffix="_l0")
    np.testing.assert_array_equal(peer["weight_ih_l0"], core["w_ih"].T)
    np.testing.assert_array_equal(peer["bias_hh_l0"], core["b_hh"])
    again = interop.from_peer(_tables.torch_layout("gru"), peer, suffix="_l0")
    jax.tree_util.tree_map(np.testing.assert_array_equal, again, core)


def test_keras_gru_blocks_and_single_bias():
    rng = np.random.default_rng(2)
    core = random_cell("gru", rng)
    peer = interop.to_peer(_tables.keras_layout("gru"), core)
    z, r, n = np.split(peer["kernel"], 3, axis=-1)  # Keras order z, r, h
    np.testing.assert_array_equal(np.concatenate([r, z, n], -1), core["w_ih"])
    np.testing.assert_array_equal(
        peer["bias"],
        np.stack(
            [
                core["b_ih"][[*range(4, 8), *range(4), *range(8, 12)]],
                core["b_hh"][[*range(4, 8), *range(4), *range(8, 12)]],
            ]
        ),
    )
    single = interop.from_peer(_tables.keras_layout("gru"), peer, bias="double")
    assert set(single) == {"w_ih", "w_hh", "b_ih", "b_hh"}
    with pytest.raises(ValueError, match="single bias cannot hold .* b_hn"):
        interop.from_peer(_tables.keras_layout("gru"), peer, bias="single")


def test_errors_name_what_cannot_be_stored():
    rng = np.random.default_rng(3)
    peephole = random_cell("lstm", rng, peephole=True)
    with pytest.raises(ValueError, match=r"no place for the rj params \['w_peephole'\]"):
        interop.to_peer(_tables.torch_layout("lstm"), peephole)
    gru = random_cell("gru", rng)
    with pytest.raises(ValueError, match="no slot for b_hh of the candidate n.*5594"):
        interop.to_peer(_tables.FLAX_NNX["GRUCell"], gru)
    with pytest.raises(
        ValueError, match="keras GRU\\(reset_after=False\\) applies the GRU reset gate before"
    ):
        interop.to_peer(_tables.keras_layout("gru", reset_after=False), gru, reset_after=True)
    with pytest.raises(ValueError, match="no projection"):
        interop.to_peer(_tables.EQUINOX["lstm"], random_cell("lstm", rng, proj=2))


def test_haiku_offset_and_sign_are_exact():
    rng = np.random.default_rng(4)
    lstm = random_cell("lstm", rng, bias="single")
    peer = interop.to_peer(_tables.HAIKU["lstm"], lstm)
    i, g, f, o = np.split(peer["linear/b"], 4)
    np.testing.assert_allclose(f, lstm["b"][H : 2 * H] - 1.0)
    gru = random_cell("gru", rng, bias="single", reset_after=False)
    peer = interop.to_peer(_tables.HAIKU["gru"], gru, reset_after=False)
    np.testing.assert_array_equal(peer["w_i"][:, :H], -gru["w_ih"][:, H : 2 * H])  # z flipped


def test_count_params_matches_keras_for_the_classic_model():
    """nn.Embed(1000, 64) -> rj LSTM(128, single bias) -> nn.Dense(10): 164,106."""

    class Model(fnn.Module):
        @fnn.compact
        def __call__(self, tokens):
            x = fnn.Embed(1000, 64)(tokens)
            x = rj.nn.LSTM(128, bias="single", return_sequences=False)(x)
            return fnn.Dense(10)(x)

    shapes = jax.eval_shape(Model().init, jax.random.PRNGKey(0), jnp.zeros((2, 7), jnp.int32))
    assert interop.count_params(shapes) == 64_000 + 98_816 + 1_290 == 164_106


# --- cuDNN flat vector of jax.experimental.rnn ---------------------------


def experimental_rnn():
    return pytest.importorskip("jax.experimental.rnn")


@pytest.mark.parametrize("num_layers,bidirectional", [(2, True)])
def test_cudnn_layout_matches_jax_experimental_rnn(num_layers, bidirectional):
    rnn = experimental_rnn()
    size = rnn.get_num_params_in_lstm(D, H, num_layers, bidirectional)
    weights = jnp.asarray(np.random.default_rng(8).uniform(-0.5, 0.5, size), jnp.float32)
    layer, params = interop.from_cudnn(weights, D, H, num_layers, bidirectional)
    np.testing.assert_array_equal(interop.to_cudnn(params), weights)  # exact round trip
    W_ih, W_hh, b_ih, b_hh = rnn.unpack_lstm_weights(weights, D, H, num_layers, bidirectional)
    cells = [
        params[f"layer_{i}"][d] if bidirectional else params[f"layer_{i}"]
        for i in range(num_layers)
        for d in (("forward", "backward") if bidirectional else (None,))
    ]
    for k, cell in enumerate(cells):  # pseudo-layers l0 fwd, l0 bwd, l1 fwd, ...
        np.testing.assert_array_equal(cell["w_ih"], W_ih[k].T)
        np.testing.assert_array_equal(cell["w_hh"], W_hh[k].T)
        np.testing.assert_array_equal(cell["b_ih"], b_ih[k])
        np.testing.assert_array_equal(cell["b_hh"], b_hh[k])
    rng = np.random.default_rng(5)
    lengths = jnp.array([5, 2, 4], jnp.int32)
    x = jnp.asarray(rng.standard_normal((3, T, D)), jnp.float32)
    zeros = jnp.zeros(((1 + bidirectional) * num_layers, 3, H))
    y, h_n, c_n = rnn.lstm_ref(
        x, zeros, zeros, W_ih, W_hh, b_ih, b_hh, lengths, D, H, num_layers, 0.0, bidirectional
    )
    carries, ys = jax.jit(layer.clone(return_carry=True).apply)(
        {"params": params}, x, seq_lengths=lengths
    )
    valid = (np.arange(T)[None] < np.asarray(lengths)[:, None])[..., None]
    np.testing.assert_allclose(np.where(valid, ys, 0), np.where(valid, y, 0), rtol=0, atol=1e-5)
    ours_h, ours_c = interop.to_torch_state(carries)
    np.testing.assert_allclose(ours_h, h_n, rtol=0, atol=1e-5)
    np.testing.assert_allclose(ours_c, c_n, rtol=0, atol=1e-5)


def test_cudnn_single_bias_and_errors():
    rng = np.random.default_rng(6)
    single = random_cell("lstm", rng, bias="single")
    flat = interop.to_cudnn({"layer_0": single})
    _, params = interop.from_cudnn(flat, D, H)
    np.testing.assert_array_equal(params["layer_0"]["b_ih"], single["b"])
    np.testing.assert_array_equal(params["layer_0"]["b_hh"], 0.0)
    with pytest.raises(ValueError, match="no projection"):
        interop.to_cudnn({"layer_0": random_cell("lstm", rng, proj=2)})
    with pytest.raises(ValueError, match="has 144 weights, got 143"):
        interop.from_cudnn(flat[:-1], D, H)


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="cuDNN LSTM needs a GPU")
def test_cudnn_kernel_matches_rj_on_gpu():
    rnn = experimental_rnn()
    weights = rnn.init_lstm_weight(jax.random.PRNGKey(1), D, H, 2, True)
    layer, params = interop.from_cudnn(weights, D, H, 2, True)
    x = jnp.asarray(np.random.default_rng(7).standard_normal((3, T, D)), jnp.float32)
    lengths = jnp.array([5, 5, 5], jnp.int32)
    zeros = jnp.zeros((4, 3, H))
    y, _, _ = rnn.lstm(
        x, zeros, zeros, weights, lengths, D, H, 2, 0.0, True, precision=jax.lax.Precision.HIGHEST
    )
    with jax.default_matmul_precision("highest"):
        ys = layer.apply({"params": params}, x, seq_lengths=lengths)
    np.testing.assert_allclose(ys, y, rtol=0, atol=1e-5)


def test_a_custom_layout_is_a_table():
    """A peer of one's own: one fused (D+H, 3H) GRU kernel, blocks z, r, n."""
    layout = interop.Layout(
        "my GRU",
        "gru",
        (
            interop.Slot("w", "kernel", (("z", "ih|hh"), ("r", "ih|hh"), ("n", "ih|hh"))),
            interop.Slot("b", "bias", (("z", "sum"), ("r", "sum"), ("n", "ih"))),
            interop.Slot("b_n", "bias", (("n", "hh"),)),
        ),
        reset_after=True,
    )
    core = random_cell("gru", np.random.default_rng(9))
    peer = interop.to_peer(layout, core)
    assert peer["w"].shape == (D + H, 3 * H)
    back = interop.from_peer(layout, peer)
    np.testing.assert_array_equal(back["w_ih"], core["w_ih"])
    np.testing.assert_array_equal(back["w_hh"], core["w_hh"])
    np.testing.assert_allclose(back["b_ih"] + back["b_hh"], core["b_ih"] + core["b_hh"], atol=1e-6)
    broken = layout._replace(slots=layout.slots[1:])
    with pytest.raises(ValueError, match="one w_ih block, gives \\[\\]"):
        interop.to_peer(broken, core)
    with pytest.raises(ValueError, match="invalid slot"):
        interop.to_peer(layout._replace(slots=(interop.Slot("w", "kernel", (("x", "ih"),)),)), core)
