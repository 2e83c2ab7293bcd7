"""Every front door (flax.linen, Flax NNX, Equinox) against the functional
core built by hand from ``rj.layer`` / ``rj.bidirectional`` / ``rj.stack``
(itself checked against a Python loop in test_unroll.py and test_layers.py):
same params and keys give the same outputs, carries and gradients."""

from __future__ import annotations

import os

import flax.linen as flax_linen
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _helpers import assert_trees_close, normal

import recurrent_jax as rj

eqx = pytest.importorskip("equinox")
nnx = pytest.importorskip("flax.nnx")

B, T, D, H = 3, 6, 4, 5
LENGTHS = np.array([6, 0, 3])
EXACT = dict(atol=0.0)  # the doors run the core's own functions: bit for bit
DOORS = ("linen", "nnx", "eqx")


# --- the cases: (door constructor name, args, options) and the core by hand -------


def lstm_stack():
    options = dict(num_layers=2, bidirectional=True, proj_size=3, return_carry=True, residual=True)
    cell = rj.cells.lstm(H, proj_size=3)
    core = rj.stack([rj.bidirectional(cell)] * 2, residual=True)
    return "LSTM", (H,), options, core


def gru_reverse():
    cell = rj.cells.gru(H)
    return "RNN", (cell,), dict(reverse=True, return_carry=True), rj.layer(cell, reverse=True)


def bidirectional_sum():
    cell, other = rj.cells.gru(H), rj.cells.mgu(H)
    core = rj.bidirectional(cell, other, merge_mode="sum")
    return "Bidirectional", (cell, other), dict(merge_mode="sum"), core


def elman_last_output():
    options = dict(num_layers=3, return_sequences=False)
    core = rj.stack([rj.cells.elman(H)] * 3)
    return "SimpleRNN", (H,), options, core


def regularised_gru():
    """Every regulariser on, at training: the same key gives the same masks."""
    rates = dict(input_dropout=0.2, recurrent_dropout=0.3, zoneout=0.1)
    options = dict(num_layers=2, dropout=0.4, **rates)
    one = rj.layer(rj.cells.gru(H), dropout=0.2, recurrent_dropout=0.3, zoneout=0.1)
    return "GRU", (H,), options, rj.stack([one, one], dropout=0.4)


def learned_initial_carry():
    cell = rj.cells.lstm(H)
    options = dict(learn_initial_carry=True, engine=rj.Engine(impl="scan", remat=2))
    core = rj.layer(cell, learn_initial_carry=True, impl="scan", remat=2)
    return "RNN", (cell,), options, core


def state_space_bidirectional():
    """S5 forwards and D-LinOSS backwards, both by the associative scan."""
    cell = rj.cells.s5(H, state_size=4, blocks=2)
    other = rj.cells.linoss(H, state_size=2, damping=True)
    engine = rj.Engine(impl="associative")
    core = rj.bidirectional(cell, other, engine=engine)
    return "Bidirectional", (cell, other), dict(engine=engine, return_carry=True), core


def s6_chunked():
    """The selective SSM by the chunked scan (T = 6: a ragged last chunk)."""
    cell = rj.cells.s6(H, state_size=3, gate=True)
    engine = rj.Engine(impl="chunked", chunk_length=4)
    return "RNN", (cell,), dict(engine=engine, return_carry=True), rj.layer(cell, engine=engine)


def s6_selective():
    """The selective SSM by Mamba's selective scan with its own gradient."""
    cell = rj.cells.s6(H, state_size=3, gate=True)
    engine = rj.Engine(impl="selective")
    return "RNN", (cell,), dict(engine=engine, return_carry=True), rj.layer(cell, engine=engine)


def mamba_bidirectional():
    """Two Mamba blocks given as Layers, the backward one reversed."""
    forward = rj.mamba_block(H, expand=1, state_size=2)
    backward = rj.mamba_block(H, expand=1, state_size=2, reverse=True, impl="associative")
    core = rj.bidirectional(forward, backward)
    return "Bidirectional", (forward, backward), dict(return_carry=True), core


CASES = {
    f.__name__: f
    for f in (
        lstm_stack,
        gru_reverse,
        bidirectional_sum,
        elman_last_output,
        regularised_gru,
        learned_initial_carry,
        state_space_bidirectional,
        s6_chunked,
        s6_selective,
        mamba_bidirectional,
    )
}


class Door:
    """One door's module for a case, called like the core: ``door(params, xs,
    key=..., deterministic=..., **data)``."""

    def __init__(self, door, name, args, options, input_size=D):
        self.door, self.name = door, name
        if door == "linen":
            self.module = getattr(rj.nn, name)(*args, **options)
        elif door == "nnx":
            cls = getattr(rj.nnx, name)
            args = _with_input(name, args, input_size)
            self.module = cls(*args, rngs=nnx.Rngs(0), **options)
        else:
            cls = getattr(rj.eqx, name)
            args = _with_input(name, args, input_size)
            self.module = cls(*args, key=jax.random.PRNGKey(0), **options)

    def params(self):
        if self.door == "linen":
            return None
        return rj.nnx.params(self.module) if self.door == "nnx" else self.module.params

    def __call__(self, params, xs, *, key=None, deterministic=True, **data):
        if self.door == "linen":
            rngs = {} if key is None else {"dropout": key}
            return self.module.apply(
                {"params": params}, xs, deterministic=deterministic, rngs=rngs, **data
            )
        if self.door == "nnx":
            model = rj.nnx.load_params(nnx.clone(self.module), params)
            return model(xs, deterministic=deterministic, rngs=key, **data)
        model = rj.eqx.load_params(self.module, params)
        return model(xs, key=key, inference=deterministic, **data)


def _with_input(name, args, input_size):
    """NNX and Equinox constructors take the input size after the cells and
    before the hidden size, as nnx.Linear / eqx.nn.Linear."""
    if name == "Bidirectional":
        return (args[0], input_size, args[1])
    if name == "RNN":
        return (args[0], input_size)
    return (input_size, *args)


def linen_key(key):
    """The key a top-level linen module draws for its masks from
    ``rngs={"dropout": key}`` (its first ``make_rng("dropout")``)."""

    class DrawOne(flax_linen.Module):
        @flax_linen.compact
        def __call__(self):
            return self.make_rng("dropout")

    return DrawOne().apply({}, rngs={"dropout": key})


# --- equality with the core --------------------------------------------------------


@pytest.mark.parametrize("door", DOORS)
@pytest.mark.parametrize("case", CASES)
def test_door_equals_the_core(door, case, rng):
    name, args, options, core = CASES[case]()
    module = Door(door, name, args, options)
    params = core.init(jax.random.PRNGKey(1), D)
    xs = normal(rng, (B, T, D))
    data = dict(seq_lengths=jnp.asarray(LENGTHS))
    key = jax.random.PRNGKey(7)
    training = case == "regularised_gru"
    core_key = (linen_key(key) if door == "linen" else key) if training else None
    return_sequences = options.get("return_sequences", True)

    def core_out(p, x):
        carry, ys = core.apply(
            p,
            x,
            key=core_key,
            deterministic=not training,
            return_sequences=return_sequences,
            **data,
        )
        return (carry, ys) if options.get("return_carry") else ys

    def door_out(p, x):
        return module(p, x, key=key if training else None, deterministic=not training, **data)

    want, got = jax.jit(core_out)(params, xs), jax.jit(door_out)(params, xs)
    assert_trees_close(got, want, **EXACT)

    def loss(out_fn):
        return lambda p, x: sum(
            jnp.sum(jnp.sin(a)) for a in jax.tree_util.tree_leaves(out_fn(p, x))
        )

    want = jax.jit(jax.grad(loss(core_out), argnums=(0, 1)))(params, xs)
    got = jax.jit(jax.grad(loss(door_out), argnums=(0, 1)))(params, xs)
    assert_trees_close(got, want, **EXACT)


@pytest.mark.parametrize("door", ["nnx", "eqx"])
@pytest.mark.parametrize("case", ["lstm_stack", "state_space_bidirectional", "mamba_bidirectional"])
def test_params_are_the_core_params(door, case):
    """Names and shapes of ``layer.init``; NNX ⇄ functional ⇄ linen round trip."""
    name, args, options, core = CASES[case]()
    module = Door(door, name, args, options)
    linen = Door("linen", name, args, options).module
    linen_params = linen.init(jax.random.PRNGKey(3), jnp.zeros((B, T, D)))["params"]
    want = jax.eval_shape(lambda: core.init(jax.random.PRNGKey(0), D))
    shape = lambda t: jax.tree_util.tree_map(lambda a: (a.shape, a.dtype), t)  # noqa: E731
    assert shape(module.params()) == shape(want)
    if door == "nnx":
        loaded = rj.nnx.load_params(module.module, linen_params)
        back = rj.nnx.params(loaded)
    else:
        back = rj.eqx.load_params(module.module, linen_params).params
    assert_trees_close(back, linen_params, **EXACT)


@pytest.mark.parametrize("door", ["nnx", "eqx"])
def test_seq2seq_door_equals_the_core(door, rng):
    options = dict(hidden_size=8, attention="additive", bidirectional_encoder=True, bridge="linear")
    options["cell_options"] = {"forget_bias": 2.0}
    if door == "nnx":
        model = rj.nnx.Seq2Seq(11, 13, rngs=nnx.Rngs(0), **options)
        params, build = rj.nnx.params(model), lambda **o: rj.nnx.Seq2Seq(rngs=nnx.Rngs(0), **o)
    else:
        pytest.importorskip("equinox")
        model = rj.eqx.Seq2Seq(11, 13, key=jax.random.PRNGKey(0), **options)
        params, build = model.params, lambda **o: rj.eqx.Seq2Seq(key=jax.random.PRNGKey(0), **o)
    core = rj.seq2seq.make_seq2seq(src_vocab_size=11, tgt_vocab_size=13, **options)
    shape = lambda t: jax.tree_util.tree_map(lambda a: a.shape, t)  # noqa: E731
    assert shape(params) == shape(jax.eval_shape(core.init, jax.random.PRNGKey(0)))
    src = jnp.asarray(rng.integers(3, 11, (B, 5)))
    src_lengths, tgt_in = jnp.array([5, 2, 4]), jnp.asarray(rng.integers(0, 13, (B, 4)))
    key = jax.random.PRNGKey(2)
    got = model(src, src_lengths, tgt_in, sampling_probability=0.5, key=key)
    want = core.apply(params, src, src_lengths, tgt_in, sampling_probability=0.5, key=key).logits
    assert_trees_close(got, want, **EXACT)
    decode = dict(bos_id=1, eos_id=2, max_len=6)
    got = model.decode(src, src_lengths, method="beam", beam_size=3, **decode)
    want = rj.seq2seq.decode(core, params, src, src_lengths, method="beam", beam_size=3, **decode)
    assert_trees_close(got, want, **EXACT)
    with pytest.raises(TypeError, match=r"Seq2Seq: unknown option\(s\) \['hidden'\]"):
        build(src_vocab_size=11, tgt_vocab_size=13, hidden=8)


def test_linen_layer_with_options_set_is_an_error(rng):
    layer = rj.layer(rj.cells.gru(H))
    with pytest.raises(ValueError, match=r"cell: a Layer carries its own options; got a Layer"):
        rj.nn.RNN(layer, zoneout=0.1)  # at construction, as rj.nnx and rj.eqx


def test_nnx_draws_its_own_masks_once_per_call(rng):
    """Without ``rngs=``, a call draws one key from the module's "dropout"
    stream; the masks are the core's with that key, and the next call's differ."""
    model = rj.nnx.GRU(D, H, input_dropout=0.3, recurrent_dropout=0.3, rngs=nnx.Rngs(0, dropout=5))
    xs = normal(rng, (B, T, D))
    layer = rj.layer(rj.cells.gru(H), dropout=0.3, recurrent_dropout=0.3)
    core = rj.stack([layer])
    expected_key = nnx.clone(model).rngs()
    want = core.apply(rj.nnx.params(model), xs, key=expected_key)[1]
    first, second = model(xs), model(xs)
    assert_trees_close(first, want, **EXACT)
    assert np.abs(np.asarray(first) - np.asarray(second)).max() > 1e-3
    model.eval()
    assert model.deterministic
    assert_trees_close(
        model(xs), core.apply(rj.nnx.params(model), xs, deterministic=True)[1], **EXACT
    )
    view = nnx.view(model, deterministic=False)
    assert not view.deterministic and model.deterministic


def test_eqx_inference_mode_switches_dropout_off(rng):
    model = rj.eqx.LSTM(D, H, num_layers=2, dropout=0.5, key=jax.random.PRNGKey(0))
    xs = normal(rng, (2, B, T, D))  # two batch dims
    with pytest.raises(ValueError, match="key: a PRNG key is required"):
        model(xs)
    inference = eqx.nn.inference_mode(model)
    core = rj.stack([rj.cells.lstm(H)] * 2, dropout=0.5)
    want = core.apply(model.params, xs, deterministic=True)[1]
    assert_trees_close(inference(xs), want, **EXACT)
    assert_trees_close(model(xs, inference=True), want, **EXACT)


# --- training loops ----------------------------------------------------------------


def _regression(rng):
    xs = normal(rng, (8, T, D))
    targets = normal(rng, (8, H))
    return xs, targets


def _functional_steps(params, xs, targets, steps):
    core = rj.stack([rj.bidirectional(rj.cells.lstm(H), merge_mode="sum")])
    tx = optax.adam(1e-2)
    state = tx.init(params)

    def loss(p):
        _, ys = core.apply(p, xs, seq_lengths=jnp.full((8,), T), return_sequences=False)
        return jnp.mean((ys - targets) ** 2)

    history = []
    for _ in range(steps):
        value, grads = jax.value_and_grad(loss)(params)
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        history.append((value, params))
    return history


def test_nnx_training_loop_matches_the_functional_one(rng):
    xs, targets = _regression(rng)
    model = rj.nnx.LSTM(
        D, H, bidirectional=True, merge_mode="sum", return_sequences=False, rngs=nnx.Rngs(0)
    )
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer):
        def loss(model):
            ys = model(xs, seq_lengths=jnp.full((8,), T))
            return jnp.mean((ys - targets) ** 2)

        value, grads = nnx.value_and_grad(loss)(model)
        optimizer.update(model, grads)
        return value

    history = _functional_steps(rj.nnx.params(model), xs, targets, 5)
    for want_loss, want_params in history:
        np.testing.assert_allclose(step(model, optimizer), want_loss, rtol=1e-5)
        assert_trees_close(rj.nnx.params(model), want_params, atol=1e-6, rtol=1e-5)


def test_eqx_training_loop_matches_the_functional_one(rng):
    xs, targets = _regression(rng)
    model = rj.eqx.LSTM(
        D, H, bidirectional=True, merge_mode="sum", return_sequences=False,
        key=jax.random.PRNGKey(0),
    )  # fmt: skip
    tx = optax.adam(1e-2)
    state = tx.init(eqx.filter(model, eqx.is_array))

    @eqx.filter_jit
    def step(model, state):
        def loss(model):
            ys = model(xs, seq_lengths=jnp.full((8,), T))
            return jnp.mean((ys - targets) ** 2)

        value, grads = eqx.filter_value_and_grad(loss)(model)
        updates, state = tx.update(grads, state, eqx.filter(model, eqx.is_array))
        return value, eqx.apply_updates(model, updates), state

    history = _functional_steps(model.params, xs, targets, 5)
    for want_loss, want_params in history:
        value, model, state = step(model, state)
        np.testing.assert_allclose(value, want_loss, rtol=1e-5)
        assert_trees_close(model.params, want_params, atol=1e-6, rtol=1e-5)


def test_nnx_vmap_over_a_stack_of_models_is_a_sweep(rng):
    """``nnx.vmap`` over models with their own params: run i equals model i."""
    xs = normal(rng, (B, T, D))

    @nnx.split_rngs(splits=4)
    @nnx.vmap(in_axes=(0,), out_axes=0)
    def create(rngs):
        return rj.nnx.GRU(D, H, rngs=rngs)

    models = create(nnx.Rngs(0))
    ys = nnx.vmap(lambda m, x: m(x), in_axes=(0, None))(models, xs)
    stacked = rj.nnx.params(models)
    core = rj.stack([rj.cells.gru(H)])
    for i in range(4):
        one = jax.tree_util.tree_map(lambda a, i=i: a[i], stacked)
        assert_trees_close(ys[i], core.apply(one, xs)[1], atol=1e-6)


def test_eqx_filter_vmap_over_models(rng):
    xs = normal(rng, (B, T, D))
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    models = eqx.filter_vmap(lambda k: rj.eqx.GRU(D, H, key=k))(keys)
    ys = eqx.filter_vmap(lambda m: m(xs))(models)
    core = rj.stack([rj.cells.gru(H)])
    for i in range(3):
        one = jax.tree_util.tree_map(lambda a, i=i: a[i], models.params)
        assert_trees_close(ys[i], core.apply(one, xs)[1], atol=1e-6)


# --- engine options reach every door -----------------------------------------------


@pytest.mark.parametrize("door", DOORS)
def test_engine_reaches_every_door(door, rng):
    """``remat`` bounds a door's training memory as it bounds the core's
    (T = 1024, √T segments of the XLA scan: expect ≈ 16×, asserted ≥ 4×;
    the C++ backend ``auto`` picks on CPUs keeps less per step to begin
    with), and ``impl`` / ``hoist`` pick the backend named in the profile
    scopes."""
    xs = normal(rng, (4, 1024, 16))

    def lowered(engine):
        module = Door(door, "LSTM", (32,), dict(engine=engine), input_size=16)
        params = rj.stack([rj.cells.lstm(32)]).init(jax.random.PRNGKey(0), 16)
        loss = lambda p, x: jnp.sum(module(p, x) ** 2)  # noqa: E731
        return jax.jit(jax.grad(loss, argnums=(0, 1))).lower(params, xs)

    def temp(engine):
        return lowered(engine).compile().memory_analysis().temp_size_in_bytes

    assert temp(rj.Engine(impl="scan", remat=32)) * 4 < temp(rj.Engine(impl="scan"))
    text = lowered(rj.Engine(impl="scan", hoist=False)).as_text(debug_info=True)
    assert "recurrent_jax.scan" in text and "recurrent_jax.fused" not in text


# --- PyTorch parity through every door ---------------------------------------------


@pytest.mark.parametrize("api", DOORS)
@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_from_torch_through_every_door(api, kind):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    options = dict(num_layers=2, bidirectional=True, batch_first=True)
    if kind == "LSTM":
        options["proj_size"] = 3
    source = getattr(torch.nn, kind)(D, H, **options).eval()
    x = torch.randn(B, T, D)
    lengths = torch.tensor([6, 1, 3])
    packed = torch.nn.utils.rnn.pack_padded_sequence(
        x, lengths, batch_first=True, enforce_sorted=False
    )
    out, _ = source(packed)
    out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=T)
    xs, lens = jnp.asarray(x.numpy()), jnp.asarray(lengths.numpy())
    if api == "linen":
        module, params = rj.interop.from_torch(source)
        ys = module.apply({"params": params}, xs, seq_lengths=lens)
    else:
        ys = rj.interop.from_torch(source, api=api)(xs, seq_lengths=lens)
    np.testing.assert_allclose(np.asarray(ys), out.detach().numpy(), atol=1e-5)


def test_from_keras_through_nnx_and_eqx():
    os.environ.setdefault("KERAS_BACKEND", "jax")
    keras = pytest.importorskip("keras")
    layer = keras.layers.LSTM(H, return_sequences=True)
    x = np.random.default_rng(0).standard_normal((B, T, D)).astype(np.float32)
    with jax.numpy_rank_promotion("allow"):  # keras's own ops broadcast implicitly
        want = np.asarray(layer(x))
    for api in ("nnx", "eqx"):
        model = rj.interop.from_keras(layer, api=api)
        np.testing.assert_allclose(np.asarray(model(jnp.asarray(x))), want, atol=1e-5)


# --- bad input at every door ---------------------------------------------------------


@pytest.mark.parametrize("door", ["nnx", "eqx"])
def test_bad_input_names_the_argument(door, rng):
    build = (
        (lambda **o: rj.nnx.LSTM(D, H, rngs=nnx.Rngs(0), **o))
        if door == "nnx"
        else (lambda **o: rj.eqx.LSTM(D, H, key=jax.random.PRNGKey(0), **o))
    )
    with pytest.raises(TypeError, match=r"LSTM: unknown option\(s\) \['dropuot'\]"):
        build(dropuot=0.1)
    with pytest.raises(ValueError, match=r"impl: expected one of"):
        build(engine=rj.Engine(impl="turbo"))
    with pytest.raises(ValueError, match="num_layers: expected a positive int, got 0"):
        build(num_layers=0)
    with pytest.raises(ValueError, match="dropout: expected a rate in"):
        build(dropout=1.5, num_layers=2)  # at construction, before any call
    model = build()
    with pytest.raises(ValueError, match="xs: expected"):
        model(normal(rng, (D,)))
    with pytest.raises(ValueError, match="xs: expected"):
        model(normal(rng, (B, T, D + 1)))
    load = rj.nnx.load_params if door == "nnx" else rj.eqx.load_params
    wrong = rj.stack([rj.cells.gru(H)]).init(jax.random.PRNGKey(0), D)
    with pytest.raises(ValueError, match="params: expected the module's params"):
        load(model, wrong)
    with pytest.raises(ValueError, match=r"api: expected one of \['linen', 'nnx', 'eqx'\]"):
        rj.interop._api.with_api("haiku", None, None)


def test_nnx_needs_rngs_and_eqx_a_key():
    with pytest.raises(ValueError, match="rngs: expected an nnx.Rngs, got 0"):
        rj.nnx.GRU(D, H, rngs=0)
    with pytest.raises(ValueError, match="key: a PRNG key is required to initialise"):
        rj.eqx.GRU(D, H, key=None)


@pytest.mark.parametrize("door", ["linen", "nnx"])
def test_layers_given_as_cells_keep_their_own_options(door, rng):
    """An RNN of a Layer with its own dropout draws a key when training, and a
    Bidirectional of two Layers runs them as built (no door options needed)."""
    xs = normal(rng, (B, T, D))
    key = jax.random.PRNGKey(4)
    lyr = rj.layer(rj.cells.gru(H), dropout=0.5, recurrent_dropout=0.3)
    params = lyr.init(jax.random.PRNGKey(0), D)
    want = lyr.apply(params, xs, key=linen_key(key) if door == "linen" else key)[1]
    got = Door(door, "RNN", (lyr,), {})(params, xs, key=key, deterministic=False)
    assert_trees_close(got, want, **EXACT)

    fwd, bwd = rj.layer(rj.cells.gru(H)), rj.layer(rj.cells.mgu(H), reverse=True)
    core = rj.bidirectional(fwd, bwd, merge_mode="sum")
    params = core.init(jax.random.PRNGKey(1), D)
    got = Door(door, "Bidirectional", (fwd, bwd), dict(merge_mode="sum"))(params, xs)
    assert_trees_close(got, core.apply(params, xs)[1], **EXACT)
    with pytest.raises(ValueError, match=r"layer_options: \['zoneout'\] apply to Cells only"):
        Door(door, "Bidirectional", (fwd, bwd), dict(zoneout=0.1))(params, xs)
