"""Bad values at every public entry point: a ValueError or TypeError raised
by the library itself (not from deep inside JAX, Flax or Equinox), whose
message names the argument. Calls that would trace run under
``jax.eval_shape``: nothing compiles.

``test_errors.py`` covers ``rj.unroll``'s data arguments in depth; the
config layer's keys are covered in ``test_configs.py``.
"""

from __future__ import annotations

import traceback

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import recurrent_jax as rj

KEY = jax.random.PRNGKey(0)
XS = np.ones((2, 5, 3), np.float32)
LSTM = rj.cells.lstm(4)
GRU = rj.cells.gru(4)


def lstm_params():
    return jax.eval_shape(lambda: LSTM.init(KEY, 3))


def shaped(params):
    return jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype), params)


def traced(f):
    return lambda: jax.eval_shape(f)


SEQS = [np.ones((n, 3), np.float32) for n in (2, 4)]

CASES = {
    # cells
    "lstm proj_size == hidden": (lambda: rj.cells.lstm(8, proj_size=8), "proj_size"),
    "lstm proj_size > hidden": (lambda: rj.cells.lstm(8, proj_size=9), "proj_size"),
    "lstm forget_bias str": (lambda: rj.cells.lstm(8, forget_bias="1"), "forget_bias"),
    "lstm peephole str": (lambda: rj.cells.lstm(8, peephole="yes"), "peephole"),
    "gru reset_after str": (lambda: rj.cells.gru(8, reset_after="yes"), "reset_after"),
    "mingru log_space str": (lambda: rj.cells.mingru(8, log_space=1), "log_space"),
    "unknown cell option": (lambda: rj.cells.gru(8, bogus=1), "options"),
    "initialiser not callable": (lambda: rj.cells.lstm(8, kernel_init=0.1), "kernel_init"),
    "init key str": (lambda: LSTM.init("seed0", 3), "key"),
    "init key int": (lambda: rj.cells.elman(4).init(0, 3), "key"),
    "init input_size 0": (lambda: rj.cells.mgu(4).init(KEY, 0), "input_size"),
    "initial_carry int": (lambda: LSTM.initial_carry(3), "batch_shape"),
    "initial_carry floats": (lambda: rj.cells.gru(4).initial_carry((2.5,)), "batch_shape"),
    "conv even kernel": (lambda: rj.cells.conv_lstm(4, kernel_size=(2, 2)), "kernel_size"),
    "s4d odd state_size": (lambda: rj.cells.s4d(8, state_size=5), "^state_size: expected an even"),
    "s4d init": (lambda: rj.cells.s4d(8, init="legs"), "^init: expected one of"),
    "s4d steps reversed": (lambda: rj.cells.s4d(8, dt_min=0.1, dt_max=0.01), "^dt_max: "),
    "s4d dt_min 0": (lambda: rj.cells.s4d(8, dt_min=0.0), "^dt_min: "),
    "s5 blocks": (lambda: rj.cells.s5(8, state_size=20, blocks=3), "^state_size: .* 2 \\* blocks"),
    "s5 discretization": (lambda: rj.cells.s5(8, discretization="euler"), "^discretization: "),
    "s5 variable_steps int": (lambda: rj.cells.s5(8, variable_steps=1), "^variable_steps: "),
    "s5 variable_steps alone": (
        lambda: rj.cells.s5(8, variable_steps=True).init(KEY, 1),
        "^input_size: expected at least 2",
    ),
    "state-space bias": (lambda: rj.cells.s5(8, bias="none"), "^options: unknown .*'bias'"),
    "linoss discretization": (lambda: rj.cells.linoss(8, discretization="rk4"), "^discretization"),
    "d-linoss im": (
        lambda: rj.cells.linoss(8, damping=True, discretization="im"),
        "^discretization: expected 'imex' with damping",
    ),
    "linoss ring without damping": (lambda: rj.cells.linoss(8, r_min=0.5), "^r_min: expected None"),
    "d-linoss r_max > 1": (lambda: rj.cells.linoss(8, damping=True, r_max=1.5), "^r_min, r_max"),
    "linoss damping str": (lambda: rj.cells.linoss(8, damping="yes"), "^damping: "),
    # the engine
    "unroll cell str": (lambda: rj.unroll("lstm", lstm_params(), XS), "cell"),
    "unroll params of gru": (
        traced(lambda: rj.unroll(LSTM, GRU.init(KEY, 3), XS)),
        r"params\['b_hh'\]",
    ),
    "unroll params of H=8": (
        traced(lambda: rj.unroll(LSTM, rj.cells.lstm(8).init(KEY, 3), XS)),
        r"params\['b_hh'\]",
    ),
    "unroll params missing": (
        traced(lambda: rj.unroll(LSTM, {"w_ih": jnp.zeros((3, 16))}, XS)),
        "params: expected the lstm cell's params",
    ),
    "unroll conv channels": (
        traced(
            lambda: rj.unroll(
                rj.cells.conv_lstm(4, kernel_size=(3, 3)),
                rj.cells.conv_lstm(4, kernel_size=(3, 3)).init(KEY, 1),
                jnp.ones((2, 3, 8, 8, 2)),
            )
        ),
        "xs: expected 1 features",
    ),
    "unroll key str": (
        traced(lambda: rj.unroll(LSTM, shaped(lstm_params()), XS, dropout=0.1, key="k")),
        "key",
    ),
    "unroll reverse str": (lambda: rj.unroll(LSTM, lstm_params(), XS, reverse="yes"), "reverse"),
    "unroll time_major float": (
        lambda: rj.unroll(LSTM, lstm_params(), XS, time_major=1.5),
        "time_major",
    ),
    "unroll engine str": (lambda: rj.unroll(LSTM, lstm_params(), XS, engine="scan"), "engine"),
    # layers
    "layer cell str": (lambda: rj.layer("lstm"), "cell"),
    "layer dropout 2": (lambda: rj.layer(LSTM, dropout=2.0), "dropout"),
    "layer zoneout -1": (lambda: rj.layer(LSTM, zoneout=-1.0), "zoneout"),
    "layer learn_initial_carry str": (
        lambda: rj.layer(LSTM, learn_initial_carry="x"),
        "learn_initial_carry",
    ),
    "stack dropout 2": (lambda: rj.stack([LSTM, LSTM], dropout=2.0), "dropout"),
    "stack of a cell": (lambda: rj.stack(LSTM), "layers"),
    "stack entry str": (lambda: rj.stack([LSTM, "gru"]), r"layers\[1\]"),
    "stack residual str": (lambda: rj.stack([LSTM], residual="x"), "residual"),
    "stack params missing a layer": (
        traced(lambda: rj.stack([LSTM, LSTM]).apply({"layer_0": shaped(lstm_params())}, XS)),
        "params",
    ),
    "bidirectional merge_mode": (lambda: rj.bidirectional(LSTM, merge_mode="cat"), "merge_mode"),
    "bidirectional backward str": (lambda: rj.bidirectional(LSTM, "gru"), "backward"),
    "layer init key str": (lambda: rj.layer(LSTM).init("seed", 3), "key"),
    # packing
    "pack float lengths": (
        lambda: rj.pack(np.ones((2, 4, 3)), seq_lengths=[1.5, 2.0]),
        "seq_lengths",
    ),
    "pack row_length short": (lambda: rj.pack(SEQS, row_length=3), "row_length"),
    "unpack not Packed": (lambda: rj.unpack(np.ones(3)), "packed"),
    "bucket sequences for lengths": (lambda: rj.bucket_by_length(SEQS, batch_size=2), "lengths"),
    "bucket float lengths": (lambda: rj.bucket_by_length([2.5, 4], batch_size=2), "lengths"),
    "bucket seed str": (lambda: rj.bucket_by_length([2, 4], batch_size=2, seed="x"), "seed"),
    # the front doors
    "nn.LSTM hidden 0": (lambda: rj.nn.LSTM(0), "hidden_size"),
    "nn.LSTM dropout 2": (lambda: rj.nn.LSTM(4, dropout=2.0), "dropout"),
    "nn.LSTM proj_size": (lambda: rj.nn.LSTM(4, proj_size=4), "proj_size"),
    "nn.LSTM merge_mode unused": (lambda: rj.nn.LSTM(4, merge_mode="sum"), "merge_mode"),
    "nn.LSTM return_carry str": (lambda: rj.nn.LSTM(4, return_carry="yes"), "return_carry"),
    "nn.RNN cell str": (lambda: rj.nn.RNN("lstm"), "cell"),
    "nn.Bidirectional forward str": (lambda: rj.nn.Bidirectional("lstm"), "forward"),
    "nnx.RNN cell str": (lambda: rj.nnx.RNN("lstm", 3, rngs=_rngs()), "cell"),
    "nnx.LSTM rngs int": (lambda: rj.nnx.LSTM(3, 4, rngs=0), "rngs"),
    "nnx.LSTM in_features 0": (lambda: rj.nnx.LSTM(0, 4, rngs=_rngs()), "input_size"),
    "nnx.LSTM num_layers 0": (lambda: rj.nnx.LSTM(3, 4, num_layers=0, rngs=_rngs()), "num_layers"),
    "nnx.LSTM dropout 2": (lambda: rj.nnx.LSTM(3, 4, dropout=2.0, rngs=_rngs()), "dropout"),
    "nnx.LSTM bidirectional str": (
        lambda: rj.nnx.LSTM(3, 4, bidirectional="yes", rngs=_rngs()),
        "bidirectional",
    ),
    "eqx.LSTM key str": (lambda: _eqx().LSTM(3, 4, key="seed0"), "key"),
    "eqx.LSTM key missing": (lambda: _eqx().LSTM(3, 4), "key"),
    "eqx.RNN cell str": (lambda: _eqx().RNN("lstm", 3, key=KEY), "cell"),
    "eqx.LSTM dropout 2": (lambda: _eqx().LSTM(3, 4, key=KEY, dropout=2.0), "dropout"),
    # seq2seq
    "seq2seq vocab 0": (
        lambda: rj.seq2seq.make_seq2seq(src_vocab_size=0, tgt_vocab_size=5),
        "src_vocab_size",
    ),
    "seq2seq attention_size 0": (
        lambda: rj.seq2seq.make_seq2seq(src_vocab_size=5, tgt_vocab_size=5, attention_size=0),
        "attention_size",
    ),
    "seq2seq input_feeding str": (
        lambda: rj.seq2seq.make_seq2seq(src_vocab_size=5, tgt_vocab_size=5, input_feeding="x"),
        "input_feeding",
    ),
    "seq2seq bidirectional str": (
        lambda: rj.seq2seq.make_seq2seq(
            src_vocab_size=5, tgt_vocab_size=5, bidirectional_encoder="x"
        ),
        "bidirectional_encoder",
    ),
    # interop and data
    "from_torch_state module": (
        lambda: rj.interop.from_torch_state({}, np.zeros((1, 2, 4))),
        "module",
    ),
    "get_task unknown": (lambda: rj.data.get_task("nope"), "data.task: expected a task"),
    "losses_and_metrics task": (lambda: rj.data.losses_and_metrics(None, None, None), "task"),
}


def _rngs():
    from flax import nnx

    return nnx.Rngs(0)


def _eqx():
    pytest.importorskip("equinox")
    return rj.eqx


@pytest.mark.parametrize("name", list(CASES))
def test_bad_value_is_a_clear_library_error(name):
    call, pattern = CASES[name]
    with pytest.raises((ValueError, TypeError), match=pattern) as error:
        call()
    raised_in = traceback.extract_tb(error.value.__traceback__)[-1].filename
    assert "recurrent_jax" in raised_in, f"raised in {raised_in}: {error.value}"
    message = str(error.value)
    assert "\n" not in message.strip() and ": " in message, message
