"""float64 end to end: with ``jax_enable_x64`` on, a float64 cell computes
in float64 with float64 carries, through every backend that accepts it (the
others refuse with their reason and ``auto`` passes them over), the three
doors, seq2seq and a training run from a config.

Oracles: the float64 NumPy transcriptions of each cell's equations that the
float32 tests use (test_cells, test_parallel, test_xlstm, test_conv_cells,
test_heads, test_seq2seq_attention), and the plain scan for every other
backend. Tolerance 1e-12: float64 rounding over a few steps is ~1e-15, while
anything computed in float32 on the way is off by ~1e-7.

x64 is on only inside each test of this file (the ``x64`` fixture restores
the previous setting), so the rest of the suite keeps x64 off.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import CELLS, assert_trees_close, leaf_dtypes, random_params
from test_cells import np_elman, np_unroll, to_np_carry
from test_conv_cells import numpy_conv_gru, numpy_conv_lstm
from test_heads import block_diagonal
from test_parallel import _numpy_min, numpy_lru, numpy_rglru
from test_seq2seq_attention import np_attend, np_scores
from test_xlstm import numpy_mlstm, numpy_slstm

import recurrent_jax as rj
from recurrent_jax import pallas

F64 = jnp.dtype(jnp.float64)
EXACT = dict(atol=1e-12, rtol=1e-12)  # float64 against float64 (see the module doc)
B, T, D, H = 2, 5, 3, 4


pytestmark = pytest.mark.usefixtures("x64")  # float64 throughout (conftest)


def data(rng, *shape):
    return jnp.asarray(rng.standard_normal(shape), jnp.float64)


def assert_float64(*trees):
    for tree in trees:
        assert leaf_dtypes(tree) == {F64}, leaf_dtypes(tree)


def scan_jit(cell, **options):
    return jax.jit(lambda p, x: rj.unroll(cell, p, x, impl="scan", **options))


# --- each built-in cell against its NumPy equations ---------------------------------


def zoo_case(name, rng):
    cell = CELLS[name](param_dtype=jnp.float64)
    params = random_params(cell, rng)
    xs, h0 = data(rng, B, T, D), to_np_carry(cell.initial_carry((B,)))
    want_carry, want_ys, _ = np_unroll(name, params, h0, xs)
    return cell, params, xs, (want_carry, want_ys)


def heads_case(family, rng):
    """A multi-head cell against the dense cell's equations with its blocks
    on the diagonal of W_hh."""
    gates = {"lstm": 4, "gru": 3, "elman-tanh": 1}[family]
    cell = CELLS[family](param_dtype=jnp.float64, num_heads=2)
    params = random_params(cell, rng)
    dense = dict(params, w_hh=block_diagonal(np.asarray(params["w_hh"]), gates))
    xs = data(rng, B, T, D)
    h0 = to_np_carry(cell.initial_carry((B,)))
    want_carry, want_ys, _ = np_unroll(family, dense, h0, xs)
    return cell, params, xs, (want_carry, want_ys)


def min_case(name, log_space, rng):
    cell = getattr(rj.cells, name)(H, log_space=log_space, param_dtype=jnp.float64)
    params, xs = random_params(cell, rng), data(rng, B, T, D)
    return cell, params, xs, _numpy_min(name, params, np.asarray(xs), np.zeros((B, H)), log_space)


def lru_case(rng):
    cell = rj.cells.lru(H, state_size=3, param_dtype=jnp.float64)
    params, xs = random_params(cell, rng, input_size=H), data(rng, B, T, H)
    return cell, params, xs, numpy_lru(params, xs)


def rglru_case(rng):
    cell = rj.cells.rglru(H, param_dtype=jnp.float64)
    params, xs = random_params(cell, rng), data(rng, B, T, D)
    return cell, params, xs, numpy_rglru(params, xs)


def xlstm_case(name, rng):
    cell = getattr(rj.cells, name)(6, num_heads=2, param_dtype=jnp.float64)
    params, xs = random_params(cell, rng), data(rng, B, T, D)
    carry, ys = numpy_slstm(params, xs) if name == "slstm" else numpy_mlstm(params, xs, 2)
    return cell, params, xs, (carry, ys)


def conv_case(name, rng):
    cell = getattr(rj.cells, name)(3, (3, 3), param_dtype=jnp.float64)
    params, xs = random_params(cell, rng, input_size=2), data(rng, B, T, 5, 4, 2)
    oracle = numpy_conv_lstm if name == "conv_lstm" else numpy_conv_gru
    return cell, params, xs, oracle(params, np.asarray(xs), np.full(B, T))


CASES = {
    **{name: (lambda rng, name=name: zoo_case(name, rng)) for name in CELLS},
    **{f"{f}-heads": (lambda rng, f=f: heads_case(f, rng)) for f in ("lstm", "gru", "elman-tanh")},
    **{
        f"{name}{'-log' if log else ''}": (lambda rng, n=name, log=log: min_case(n, log, rng))
        for name in ("mingru", "minlstm")
        for log in (False, True)
    },
    "lru": lru_case,
    "rglru": rglru_case,
    "slstm": lambda rng: xlstm_case("slstm", rng),
    "mlstm": lambda rng: xlstm_case("mlstm", rng),
    "conv_lstm": lambda rng: conv_case("conv_lstm", rng),
    "conv_gru": lambda rng: conv_case("conv_gru", rng),
}
# One compile each (~1 s on CPU): the variants of a family under `-m slow`.
SLOW = {n for n in CELLS if n not in ("lstm-all", "gru-before", "elman-relu", "mgu", "gru")}
SLOW |= {"gru-heads", "elman-tanh-heads", "mingru-log", "minlstm"}


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in CASES]
)
def test_each_cell_in_float64_equals_its_numpy_equations(name, rng):
    cell, params, xs, (want_carry, want_ys) = CASES[name](rng)
    assert_float64(params)
    carry, ys = scan_jit(cell)(params, xs)
    assert_float64(carry, ys)
    assert_trees_close(ys, want_ys, **EXACT)
    leaves = jax.tree_util.tree_leaves
    assert_trees_close(leaves(carry), leaves(want_carry), **EXACT)


def test_mlstm_parallel_form_runs_float64(rng):
    cell, params, xs, (want_carry, want_ys) = xlstm_case("mlstm", rng)
    carry, ys = jax.jit(lambda p, x: rj.cells.mlstm_parallel(cell, p, x))(params, xs)
    assert_float64(carry, ys)
    assert_trees_close((tuple(carry), ys), (want_carry, want_ys), **EXACT)


def test_float64_compute_and_params_from_every_source(rng):
    """The compute dtype decides: ``dtype=float64`` with fp32 params, a
    default cell given float64 params (the compute dtype None follows the
    params), and ``initial_carry``'s default all give float64."""
    _, params, xs, (want_carry, want_ys) = zoo_case("lstm-all", rng)
    cell32 = CELLS["lstm-all"]()
    assert leaf_dtypes(cell32.initial_carry((B,))) == {jnp.dtype(jnp.float32)}
    assert_float64(CELLS["lstm-all"](param_dtype=jnp.float64).initial_carry((B,)))
    carry, ys = scan_jit(cell32)(params, xs)  # float64 params, cell of fp32 options
    assert_float64(carry, ys)
    assert_trees_close(ys, want_ys, **EXACT)
    cell = CELLS["lstm-all"](dtype=jnp.float64)  # fp32 params, float64 compute
    params32 = jax.tree_util.tree_map(lambda p: p.astype(jnp.float32), params)
    carry, ys = scan_jit(cell)(params32, xs.astype(jnp.float32))
    assert_float64(carry, ys)
    # the params enter as they are: b_ih + b_hh is a sum of params, in fp32
    merged = dict(params32, b_ih=params32["b_ih"] + params32["b_hh"], b_hh=0 * params32["b_hh"])
    h0 = to_np_carry(cell.initial_carry((B,)))
    _, want32, _ = np_unroll("lstm-all", merged, h0, xs.astype(jnp.float32))
    assert_trees_close(ys, want32, **EXACT)


@pytest.mark.parametrize("param_dtype", [jnp.bfloat16, jnp.float64])
def test_bf16_compute_keeps_float32_carries_with_x64_on(param_dtype, rng):
    """The carry is the wider of float32 and the compute dtype, whatever
    the params: bf16 compute keeps fp32 carries with x64 on, as with it off."""
    cell = CELLS["lstm"](dtype=jnp.bfloat16, param_dtype=param_dtype)
    params = cell.init(jax.random.key(0), D)
    assert leaf_dtypes(params) == {jnp.dtype(param_dtype)}
    assert leaf_dtypes(cell.initial_carry((B,))) == {jnp.dtype(jnp.float32)}
    carry, ys = scan_jit(cell)(params, data(rng, B, T, D))
    assert leaf_dtypes((carry, ys)) == {jnp.dtype(jnp.float32)}


def test_a_user_cell_runs_in_the_dtype_its_params_ask_for(rng):
    """A cell of one's own (``init`` and ``step``): the engine asks its
    ``initial_carry`` for ``carry_dtype_of(cell, params)``."""

    def step(p, h, x):
        h = jnp.tanh(x @ p["w_ih"] + h @ p["w_hh"])
        return h, h

    def init(key, d):
        return {"w_ih": jnp.zeros((d, H), jnp.float64), "w_hh": jnp.zeros((H, H), jnp.float64)}

    cell = rj.Cell(init=init, step=step, hidden_size=H)
    params = {"w_ih": data(rng, D, H), "w_hh": data(rng, H, H)}
    xs = data(rng, B, T, D)
    carry, ys = rj.unroll(cell, params, xs, impl="scan")
    assert_float64(carry, ys)
    p = {k: np.asarray(v) for k, v in params.items()}
    _, want, _ = np_unroll("elman-tanh", p, np.zeros((B, H)), xs)
    assert_trees_close(ys, want, **EXACT)


# --- backends -----------------------------------------------------------------------

LENGTHS = np.array([T, 2])


def run_and_grads(cell, params, xs, **options):
    """(unroll's outputs, gradients of their sum of squares), one compile."""

    def run(p):
        out = rj.unroll(cell, p, xs, seq_lengths=LENGTHS, **options)
        return sum(jnp.sum(a**2) for a in jax.tree_util.tree_leaves(out)), out

    (_, out), grads = jax.jit(jax.value_and_grad(run, has_aux=True))(params)
    return out, grads


@functools.cache
def backend_case(family):
    """(float64 cell, params, xs) shared by the backend tests."""
    rng = np.random.default_rng(7)
    cell = getattr(rj.cells, family)(H, param_dtype=jnp.float64)
    return cell, random_params(cell, rng), data(rng, B, T, D)


@functools.cache
def scan_reference(family, reverse=False):
    return run_and_grads(*backend_case(family), impl="scan", reverse=reverse)


def assert_equals_the_scan(got, family, reverse=False):
    want = scan_reference(family, reverse)
    assert_float64(got)
    assert_trees_close(got[0], want[0], **EXACT)
    assert_trees_close(got[1], want[1], atol=1e-11, rtol=1e-11)  # gradients: sums over T·B


@pytest.mark.parametrize(
    "options",
    [
        dict(impl="fused", reverse=True),
        dict(impl="auto"),
        pytest.param(dict(impl="pallas"), marks=pytest.mark.slow),  # interpret mode off GPUs
        pytest.param(dict(impl="deer", deer_tol=1e-14), marks=pytest.mark.slow),
        pytest.param(dict(impl="scan", remat=2), marks=pytest.mark.slow),
    ],
    ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()),
)
def test_backends_that_take_float64_equal_the_scan(options):
    got = run_and_grads(*backend_case("lstm"), **options)
    assert_equals_the_scan(got, "lstm", reverse=options.get("reverse", False))


@pytest.mark.parametrize("impl", ["associative", pytest.param("chunked", marks=pytest.mark.slow)])
def test_parallel_in_time_backends_run_float64(impl):
    chunks = dict(chunk_length=2) if impl == "chunked" else {}
    got = run_and_grads(*backend_case("rglru"), impl=impl, **chunks)
    assert_equals_the_scan(got, "rglru")


def test_truncated_unroll_runs_float64():
    cell, params, xs = backend_case("lstm")
    carry, ys = rj.truncated_unroll(cell, params, xs, truncation_length=2)
    assert_float64(carry, ys)
    assert_trees_close((carry, ys), rj.unroll(cell, params, xs, impl="scan"), **EXACT)


def test_float32_kernels_refuse_float64_with_their_reason_and_auto_passes_them_over():
    cell, params, xs = backend_case("lstm")
    for impl in ("cpu", "cudnn"):
        reason = rf"impl: '{impl}' cannot be used here: .*float32 only"
        with pytest.raises(ValueError, match=reason):
            rj.unroll(cell, params, xs, impl=impl)
    assert "float64" in " ".join(pallas.gpu_blockers(params, jnp.float64))
    cell = rj.cells.with_defaults(cell)
    call = rj.backends.Call(cell, params, jnp.moveaxis(xs, 1, 0), rj.Engine(), frozenset())
    assert rj.backends.choose(call).name not in ("cpu", "cudnn", "pallas")


# --- the doors ----------------------------------------------------------------------


def door_lstm(door, **options):
    """(params, outputs) of a door's one-layer LSTM with ``options``."""
    xs = jnp.asarray(np.random.default_rng(1).standard_normal((B, T, D)), jnp.float64)
    if door == "linen":
        module = rj.nn.LSTM(H, **options)
        params = module.init(jax.random.key(0), xs)["params"]
        return params["layer_0"], module.apply({"params": params}, xs), xs
    if door == "nnx":
        from flax import nnx

        module = rj.nnx.LSTM(D, H, rngs=nnx.Rngs(0), **options)
        return module.params["layer_0"], module(xs), xs
    module = rj.eqx.LSTM(D, H, key=jax.random.key(0), **options)
    return module.params["layer_0"], module(xs), xs


@pytest.mark.parametrize("door", ["linen", "nnx", "eqx"])
def test_doors_take_float64(door):
    pytest.importorskip("equinox" if door == "eqx" else "flax")
    params, ys, xs = door_lstm(door, param_dtype=jnp.float64, dtype=jnp.float64)
    params = jax.tree_util.tree_map(jnp.asarray, params)  # nnx.Param leaves to arrays
    assert_float64(params, ys)
    _, want, _ = np_unroll("lstm", params, (np.zeros((B, H)), np.zeros((B, H))), xs)
    assert_trees_close(ys, want, **EXACT)


# --- seq2seq ------------------------------------------------------------------------


def np_seq2seq(params, src, tgt_in):
    """Teacher-forced logits of an Elman encoder–decoder with additive
    attention, input feeding and an attention layer, full-length sources."""
    p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params)
    cell_p = p["encoder"]["layer_0"]
    xs = p["src_embedding"][src]
    h_enc, values, _ = np_unroll("elman-tanh", cell_p, np.zeros((src.shape[0], 4)), xs)
    dec = p["decoder"]
    h, a = h_enc, np.zeros((src.shape[0], dec["attention_layer"]["w"].shape[1]))
    logits = []
    for t in range(tgt_in.shape[1]):
        x = np.concatenate([p["tgt_embedding"][tgt_in[:, t]], a], -1)
        h = np_elman(dec["cells"]["layer_0"], h, x, np.tanh)
        scores = np_scores("additive", dec["attention"], h, values)
        context, _ = np_attend(scores, values, np.full(src.shape[0], src.shape[1]))
        a = np.tanh(np.concatenate([h, context], -1) @ dec["attention_layer"]["w"])
        logits.append(a @ p["output"]["w"] + p["output"]["b"])
    return np.stack(logits, 1)


@functools.cache
def seq2seq_case():
    """(model, float64 params, src, src_lengths) of an Elman encoder–decoder."""
    rng = np.random.default_rng(3)
    model = rj.seq2seq.make_seq2seq(
        src_vocab_size=7,
        tgt_vocab_size=7,
        cell="elman",
        hidden_size=4,
        attention="additive",
        attention_size=3,
        attention_layer_size=5,
        embedding_size=3,
        param_dtype=jnp.float64,
    )
    shapes = jax.eval_shape(model.init, jax.random.key(0))
    params = jax.tree_util.tree_map(lambda s: 0.5 * data(rng, *s.shape), shapes)
    src = jnp.asarray(rng.integers(3, 7, (B, 6)), jnp.int32)
    return model, params, src, jnp.full((B,), 6, jnp.int32)


def test_seq2seq_forward_in_float64_equals_numpy(rng):
    model, params, src, lengths = seq2seq_case()
    assert_float64(jax.eval_shape(model.init, jax.random.key(0)))  # init gives float64
    tgt_in = jnp.asarray(rng.integers(3, 7, (B, 4)), jnp.int32)
    out = jax.jit(model.apply)(params, src, lengths, tgt_in)
    assert_float64(out.logits, out.aux)
    assert_trees_close(out.logits, np_seq2seq(params, np.asarray(src), np.asarray(tgt_in)), **EXACT)


@pytest.mark.slow
def test_seq2seq_decodes_in_float64():
    """Greedy and beam scores are float64; the greedy score is the
    teacher-forced log-probability of its tokens."""
    model, params, src, lengths = seq2seq_case()
    decode = rj.seq2seq.model.decode
    ids = dict(bos_id=1, eos_id=2, max_len=4)
    greedy = decode(model, params, src, lengths, **ids)
    beams = decode(model, params, src, lengths, method="beam", beam_size=2, **ids)
    assert_float64(greedy.scores, greedy.aux, beams.scores, beams.log_probs)
    tokens = greedy.sequences
    tgt_in = jnp.concatenate([jnp.ones((B, 1), jnp.int32), tokens[:, :-1]], 1)  # BOS first
    log_probs = jax.nn.log_softmax(model.apply(params, src, lengths, tgt_in).logits, -1)
    picked = jnp.take_along_axis(log_probs, tokens[..., None], -1)[..., 0]
    valid = jnp.arange(4)[None, :] < greedy.lengths[:, None]
    assert_trees_close(greedy.scores, jnp.where(valid, picked, 0.0).sum(1), **EXACT)


def test_seq2seq_param_dtype_is_its_own_argument():
    with pytest.raises(ValueError, match="cell_options: param_dtype is make_seq2seq's own"):
        rj.seq2seq.make_seq2seq(
            src_vocab_size=3, tgt_vocab_size=3, cell_options={"param_dtype": jnp.float64}
        )


# --- a training run from its config ---------------------------------------------------


def float64_experiment(**overrides):
    from recurrent_jax.train import config_files, from_config_dict

    config = config_files.load_config("adding:smoke")
    small = dict(model__hidden_size=4, training__num_steps=4, training__steps_per_call=2)
    small |= dict(training__eval_every=2, data__batch_size=4, data__eval_size=8)
    settings = {"model.dtype": "float64"} | {k.replace("__", "."): str(v) for k, v in small.items()}
    config_files.apply_overrides(config, list((settings | overrides).items()))
    return from_config_dict(config)


@pytest.mark.slow
def test_a_float64_run_from_its_config(tmp_path):
    """``model.dtype="float64"``: the run turns x64 on itself, its params
    are float64, and its logged held-out MSE is the float64 NumPy LSTM's
    on the run's held-out batch with the saved params."""
    pytest.importorskip("orbax.checkpoint")
    from recurrent_jax.train.eval_run import restore_run
    from recurrent_jax.train.loop import train_and_evaluate
    from recurrent_jax.train.metrics import read_metrics

    jax.config.update("jax_enable_x64", False)  # the run turns it on; the fixture restores it
    summary = train_and_evaluate(float64_experiment(), tmp_path, progress=False)
    assert summary["status"] == "completed" and jax.config.read("jax_enable_x64")
    run = restore_run(tmp_path, step="latest")
    params = run.params
    assert_float64(params)
    batch = run.program.eval_batch(run.keys[0])
    xs, targets = np.asarray(batch.xs, np.float64), np.asarray(batch.targets, np.float64)
    zeros = (np.zeros((xs.shape[0], 4)),) * 2
    _, ys, _ = np_unroll("lstm", params["rnn"]["layer_0"], zeros, xs)
    readout = jax.tree_util.tree_map(np.asarray, params["readout"])
    want = np.mean((ys[:, -1] @ readout["w"] + readout["b"] - targets) ** 2)
    logged = [r for r in read_metrics(tmp_path) if r["split"] == "eval" and r["step"] == 4]
    np.testing.assert_allclose(logged[0]["mse"], want, rtol=1e-12)


def test_model_dtype_is_checked_and_float64_is_refused_on_tpus(monkeypatch):
    from recurrent_jax.train import ConfigError
    from recurrent_jax.train.models import use_dtype

    with pytest.raises(ConfigError, match=r"dtype: expected one of \['float32', 'float64'\]"):
        float64_experiment(**{"model.dtype": "float16"})
    monkeypatch.setattr(jax, "default_backend", lambda: "tpu")
    with pytest.raises(ConfigError, match="config.model.dtype: expected 'float32' on TPUs"):
        use_dtype(float64_experiment().model)


# --- options that cannot be honoured --------------------------------------------------


def test_float64_without_x64_is_an_error_not_float32():
    jax.config.update("jax_enable_x64", False)  # the fixture restores it
    with pytest.raises(ValueError, match=r"param_dtype: float64 needs jax_enable_x64"):
        rj.cells.lstm(H, param_dtype=jnp.float64)
    with pytest.raises(ValueError, match=r"dtype: float64 needs jax_enable_x64"):
        rj.cells.gru(H, dtype=jnp.float64)
    with pytest.raises(ValueError, match=r"dtype: expected a floating dtype"):
        rj.cells.gru(H, dtype=jnp.int32)
