"""Training on a stream (``training.gradient``, ``train.online_loop``)
against independent oracles.

- One recurrent layer, "rtrl": the gradient of two updates' windows, read
  on at fixed params, equals ``jax.grad`` of the model's BPTT loss over the
  two sequences end to end (float64, 1e-10); one update with
  ``update_every`` = the sequence length gives the params of one BPTT step
  on that sequence. "truncated" over the same two windows equals
  ``rj.truncated_unroll``'s gradient and differs from BPTT.
- Two layers, "rtrl": equals a brute-force "truncated in depth" gradient
  (each step's loss with the upper layer's past carry computed from the
  lower layer's outputs held constant), and differs from BPTT in the lower
  layer only.
- Token inputs: the embedding's gradient equals a brute force with the
  past carries computed from the embedding held constant; the cell's
  gradient stays BPTT's.
- A run stopped and resumed writes the records and checkpoint of an
  uninterrupted one, bit for bit; run i of a vmapped sweep equals the run
  trained alone.
- Options the stream cannot honour are one-line errors.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import one_line

pytest.importorskip("ml_collections")
pytest.importorskip("orbax.checkpoint")

import recurrent_jax as rj  # noqa: E402
from recurrent_jax.train import config_files, core, from_config_dict, online_loop  # noqa: E402
from recurrent_jax.train.config import ConfigError  # noqa: E402
from recurrent_jax.train.eval_run import restore_run  # noqa: E402
from recurrent_jax.train.loop import train_and_evaluate  # noqa: E402
from recurrent_jax.train.runs import compile_runs, stack_hparams, stack_keys  # noqa: E402

EXACT = dict(atol=1e-10, rtol=1e-10)  # float64 sums over 16 steps: rounding ~1e-15
T = 8  # copy:smoke: length 3, delay 2 -> 2·3 + 2 steps per sequence


def experiment(spec="copy:smoke", **overrides):
    config = config_files.load_config(spec)
    config_files.apply_overrides(
        config, [(k.replace("__", "."), str(v)) for k, v in overrides.items()]
    )
    return from_config_dict(config)


def stream_config(gradient="rtrl", spec="copy:smoke", **overrides):
    options = dict(
        model__cell="lru",
        model__dtype="float64",
        training__gradient=gradient,
        training__update_every=T,
        optimizer__name="sgd",
        optimizer__momentum=0.0,
        optimizer__clip_norm=0.0,
        optimizer__learning_rate=0.5,
        optimizer__schedule="constant",
        optimizer__warmup_steps=0,
    )
    return experiment(spec, **(options | overrides))


def two_windows(config):
    """Setup, initial state, the summed gradient of two windows at the
    initial params, and the two sequences read end to end."""
    setup = core.make_setup(config)
    hparams, keys = core.default_hparams(config), core.run_keys(jax.random.key(3))
    state = online_loop.init_state(setup, hparams, keys)
    window = jax.jit(lambda s: online_loop.window_gradient(setup, keys, s))
    g1, sums1, after = window(state)
    g2, sums2, final = window(after)
    assert int(final.position) == 2 * T
    grads = jax.tree_util.tree_map(jnp.add, g1, g2)
    second = final.segment  # the stream's second sequence, read by the second window
    stream = jax.tree_util.tree_map(
        lambda a, b: jnp.concatenate([a, b], axis=1), state.segment, second
    )
    return setup, hparams, state, grads, sums1["weight"] + sums2["weight"], stream


def bptt_grads(setup, hparams, params, batch, weight):
    """∇ Σ w ℓ by ``jax.grad`` of the model's own loss (a weighted mean)."""
    grad = jax.jit(jax.grad(setup.model.loss, argnums=1, has_aux=True))
    grads, _ = grad(hparams, params, batch, jax.random.key(0), 0)
    return jax.tree_util.tree_map(lambda g: g * weight, grads)


def assert_trees_close(got, want, **tolerance):
    for (path, g), w in zip(
        jax.tree_util.tree_leaves_with_path(got), jax.tree_util.tree_leaves(want), strict=True
    ):
        np.testing.assert_allclose(g, w, err_msg=jax.tree_util.keystr(path), **tolerance)


def relative_difference(a, b):
    a, b = np.ravel(a), np.ravel(b)
    return np.linalg.norm(a - b) / np.linalg.norm(b)


@pytest.mark.slow
def test_rtrl_over_two_windows_equals_bptt_over_the_stream(x64):
    setup, hparams, state, grads, weight, stream = two_windows(stream_config())
    assert stream.xs.shape[1] == 2 * T and float(weight) > 0
    want = bptt_grads(setup, hparams, state.params, stream, weight)
    assert_trees_close(grads, want, **EXACT)


def test_one_rtrl_update_over_a_sequence_is_one_bptt_step(x64):
    config = stream_config()
    setup = core.make_setup(config)
    hparams, key = core.default_hparams(config), jax.random.key(3)
    state = online_loop.init_state(setup, hparams, core.run_keys(key))
    online, _ = jax.jit(lambda s: online_loop.train_step(setup, hparams, core.run_keys(key), s))(
        state
    )
    bptt = stream_config("bptt", training__update_every=0)
    bptt_setup = core.make_setup(bptt)
    start = core.TrainState(state.step, state.params, state.opt_state)
    want, _ = core.train_step(bptt_setup, hparams, key, start, state.segment)
    assert_trees_close(online.params, want.params, **EXACT)
    assert (
        relative_difference(
            online.params["rnn"]["layer_0"]["nu_log"], state.params["rnn"]["layer_0"]["nu_log"]
        )
        > 1e-4
    )


def truncated_reference(setup, params, stream, window):
    """∇ Σ w ℓ with the gradient cut every ``window`` steps: ``rj.truncated_unroll``."""
    cell = online_loop.rnn_model.make_cell(setup.online.model)

    def loss(params):
        _, ys = rj.truncated_unroll(
            cell, params["rnn"]["layer_0"], stream.xs, truncation_length=window
        )
        outputs = ys @ params["readout"]["w"] + params["readout"]["b"][None, None]
        log_probs = jax.nn.log_softmax(outputs, axis=-1)
        nll = -jnp.take_along_axis(log_probs, stream.targets[..., None], axis=-1)[..., 0]
        return jnp.sum(nll * stream.weights)

    return jax.grad(loss)(params)


def test_truncated_equals_truncated_unroll_and_not_bptt(x64):
    setup, hparams, state, grads, weight, stream = two_windows(stream_config("truncated"))
    want = truncated_reference(setup, state.params, stream, T)
    assert_trees_close(grads, want, **EXACT)
    bptt = bptt_grads(setup, hparams, state.params, stream, weight)
    b = bptt["rnn"]["layer_0"]["nu_log"]
    assert relative_difference(grads["rnn"]["layer_0"]["nu_log"], b) > 1e-3


def truncated_in_depth(setup, params, batch):
    """Brute force, step by step: L_t with layer 0 unrolled over x_{<t}
    (differentiable) and layer 1's carry from layer 0's outputs held
    constant; ∇ Σ_t L_t."""
    cell = setup.online.cells[0]
    xs, steps = batch.xs, batch.xs.shape[1]

    def loss(params):
        p0, p1, readout = params["rnn"]["layer_0"], params["rnn"]["layer_1"], params["readout"]
        _, ys0_fixed = rj.unroll(cell, jax.lax.stop_gradient(p0), xs)
        total = 0.0
        for t in range(steps):
            c0, _ = (
                rj.unroll(cell, p0, xs[:, :t])
                if t
                else (cell.initial_carry((xs.shape[0],), xs.dtype), None)
            )
            c1, _ = (
                rj.unroll(cell, p1, ys0_fixed[:, :t])
                if t
                else (cell.initial_carry((xs.shape[0],), xs.dtype), None)
            )
            _, y0 = cell.step(p0, c0, cell.project(p0, xs[:, t : t + 1])[:, 0])
            _, y1 = cell.step(p1, c1, cell.project(p1, y0[:, None])[:, 0])
            outputs = y1 @ readout["w"] + readout["b"][None]
            log_probs = jax.nn.log_softmax(outputs, axis=-1)
            nll = -jnp.take_along_axis(log_probs, batch.targets[:, t, None], axis=-1)[:, 0]
            total = total + jnp.sum(nll * batch.weights[:, t])
        return total

    return jax.jit(jax.grad(loss))(params)


def test_two_layers_equal_truncation_in_depth_and_differ_from_bptt(x64):
    config = stream_config(model__num_layers=2, model__hidden_size=4)
    setup = core.make_setup(config)
    hparams, keys = core.default_hparams(config), core.run_keys(jax.random.key(5))
    state = online_loop.init_state(setup, hparams, keys)
    grads, sums, _ = jax.jit(lambda s: online_loop.window_gradient(setup, keys, s))(state)
    want = truncated_in_depth(setup, state.params, state.segment)
    assert_trees_close(grads, want, **EXACT)
    bptt = bptt_grads(setup, hparams, state.params, state.segment, sums["weight"])
    # exact above the lowest layer, approximate in it
    assert_trees_close(grads["rnn"]["layer_1"], bptt["rnn"]["layer_1"], **EXACT)
    assert_trees_close(grads["readout"], bptt["readout"], **EXACT)
    lower, lower_bptt = grads["rnn"]["layer_0"]["nu_log"], bptt["rnn"]["layer_0"]["nu_log"]
    assert relative_difference(lower, lower_bptt) > 1e-3


def embedding_cut(setup, params, batch):
    """Brute force: Σ_t ∇ L_t with the carry h_{t−1} computed from the
    embedding held constant (the cell's params live)."""
    cell = setup.online.cells[0]
    ids, steps = batch.xs, batch.xs.shape[1]

    def loss(params):
        p, readout = params["rnn"]["layer_0"], params["readout"]
        live, fixed = params["embedding"][ids], jax.lax.stop_gradient(params["embedding"])[ids]
        total = 0.0
        for t in range(steps):
            carry = cell.initial_carry((ids.shape[0],), live.dtype)
            if t:
                carry, _ = rj.unroll(cell, p, fixed[:, :t])
            _, y = cell.step(p, carry, cell.project(p, live[:, t]))
            log_probs = jax.nn.log_softmax(y @ readout["w"] + readout["b"][None], axis=-1)
            nll = -jnp.take_along_axis(log_probs, batch.targets[:, t, None], axis=-1)[:, 0]
            total = total + jnp.sum(nll * batch.weights[:, t])
        return total

    return jax.jit(jax.grad(loss))(params)


@pytest.mark.slow
def test_an_embedding_learns_through_the_current_step_only(x64):
    config = stream_config(
        spec="char_lm:smoke",
        training__update_every=6,  # the first 6 steps of a sequence of 16
        data__tokens="words",
        data__max_vocab=50,
        model__embedding_size=5,
    )
    setup = core.make_setup(config)
    hparams, keys = core.default_hparams(config), core.run_keys(jax.random.key(2))
    state = online_loop.init_state(setup, hparams, keys)
    assert state.segment.xs.shape[1] == 16 and "embedding" in state.params
    grads, sums, _ = jax.jit(lambda s: online_loop.window_gradient(setup, keys, s))(state)
    window = jax.tree_util.tree_map(lambda a: a[:, :6], state.segment)
    assert_trees_close(grads, embedding_cut(setup, state.params, window), **EXACT)
    bptt = bptt_grads(setup, hparams, state.params, window, sums["weight"])
    assert_trees_close(grads["rnn"], bptt["rnn"], **EXACT)  # the cell: exact
    assert relative_difference(grads["embedding"], bptt["embedding"]) > 1e-3


# --- runs: resume and sweeps ----------------------------------------------------------

RUN = dict(
    model__cell="lru",
    training__update_every=4,
    training__num_steps=12,
    training__steps_per_call=3,
    training__eval_every=6,
    training__keep_checkpoints=1,
)


def checkpoint_leaves(workdir):
    return jax.tree_util.tree_leaves(restore_run(workdir, step="latest").state)


@pytest.mark.parametrize(
    "gradient, layers", [pytest.param("rtrl", 2, marks=pytest.mark.slow), ("uoro", 1)]
)
def test_a_run_stopped_mid_stream_and_resumed_equals_an_uninterrupted_one(
    gradient, layers, tmp_path
):
    cell = "lru" if gradient == "rtrl" else "elman"
    config = experiment(
        **RUN | dict(training__gradient=gradient, model__num_layers=layers, model__cell=cell)
    )
    full, part = tmp_path / "full", tmp_path / "part"
    train_and_evaluate(config, full, progress=False)
    first = train_and_evaluate(config, part, progress=False, should_stop=lambda step: step == 3)
    assert first["status"] == "interrupted" and first["step"] == 3
    second = train_and_evaluate(config, part, progress=False)
    assert second["status"] == "completed" and second["step"] == 12
    assert (part / "metrics.jsonl").read_text() == (full / "metrics.jsonl").read_text()
    got, want = checkpoint_leaves(part), checkpoint_leaves(full)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w))
    program, one = compile_runs(config, 1), stack_hparams([config])
    state = program.init(one, stack_keys([config.training.seed]))
    assert int(state.train.position[0]) == 0  # the checkpoint holds the stream's position: 12·4
    assert int(restore_run(full, step="latest").state.train.position[0]) == 48


def test_run_i_of_a_vmapped_sweep_equals_the_run_alone():
    rates = [1e-3, 3e-3, 1e-2]
    configs = [
        experiment(**RUN, training__gradient="rtrl", optimizer__learning_rate=lr) for lr in rates
    ]
    hparams, keys = stack_hparams(configs), stack_keys([0, 1, 2])
    program = compile_runs(configs[0], len(configs))
    states, metrics = program.train(hparams, keys)
    alone = jax.jit(core.make_train(configs[0]))  # the rates are traced: one program serves all
    finals = []
    for i, config in enumerate(configs):
        want, want_metrics = alone(core.default_hparams(config), keys[i])
        got = jax.tree_util.tree_map(lambda a, i=i: a[i], states.params)
        assert_trees_close(got, want.params, rtol=2e-5, atol=2e-6)
        assert int(states.position[i]) == int(want.position) == 48
        np.testing.assert_allclose(
            metrics["train"]["loss"][i], want_metrics["train"]["loss"], rtol=2e-5, atol=2e-6
        )
        finals.append(want.params)
    assert not np.allclose(finals[0]["readout"]["w"], finals[2]["readout"]["w"])


# --- errors ---------------------------------------------------------------------------


def build(**overrides):
    config = experiment(**overrides)
    return core.make_setup(config)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            dict(training__gradient="rtrl", training__update_every=4),
            r"'rtrl' has no exact rule for the lstm cell .* use 'snap1' \(biased\) or 'uoro'",
        ),
        (
            dict(training__gradient="rtrl", training__update_every=4, model__cell="mgu"),
            r"'rtrl' has no exact rule for the mgu cell .* it can use 'uoro' \(unbiased, noisy\)$",
        ),
        (
            dict(training__gradient="snap1", training__update_every=4, model__cell="lru"),
            r"'snap1' on the lru cell .* equals 'rtrl'",
        ),
        (
            dict(
                training__gradient="rtrl",
                training__update_every=4,
                model__cell="lru",
                model__dropout=0.1,
                model__num_layers=2,
            ),
            r"config.model.dropout: expected 0.0 with training.gradient='rtrl', got 0.1",
        ),
        (
            dict(
                training__gradient="truncated", training__update_every=4, model__bidirectional=True
            ),
            r"config.model.bidirectional: expected False",
        ),
        (
            dict(
                training__gradient="rtrl",
                training__update_every=4,
                model__cell="lru",
                model__engine__impl="associative",
            ),
            r"config.model.engine: expected the default Engine\(\) with training.gradient='rtrl'"
            r".*impl='associative'",
        ),
    ],
)
def test_options_the_stream_cannot_honour_are_one_line_errors(overrides, message):
    with pytest.raises(ConfigError, match=message) as error:
        build(**overrides)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(training__update_every=4), r"training.update_every: expected 0 with gradient='bptt'"),
        (
            dict(training__gradient="uoro"),
            r"training.update_every: expected stream steps per update",
        ),
        (dict(training__gradient="rtr"), r"training.gradient: expected one of"),
    ],
)
def test_training_section_errors(overrides, message):
    with pytest.raises(ConfigError, match=message) as error:
        experiment(**overrides)
    assert "\n" not in str(error.value)


def test_a_task_without_an_output_at_every_step_is_refused():
    with pytest.raises(
        ConfigError, match=r"config.data.task: expected a causal task with an output at every step"
    ):
        build(
            spec="adding:smoke",
            model__cell="lru",
            training__gradient="rtrl",
            training__update_every=4,
        )


def test_the_command_line_refuses_rtrl_on_an_lstm_in_one_line(tmp_path, capsys):
    argv = [
        "train",
        "--config=copy:smoke",
        "--config.training.gradient=rtrl",
        "--config.training.update_every=4",
        f"--workdir={tmp_path / 'run'}",
    ]
    err = one_line(argv, capsys)
    assert "'rtrl' has no exact rule for the lstm cell" in err and "'snap1'" in err
    assert not (tmp_path / "run").exists()
