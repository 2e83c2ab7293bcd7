"""A trained run as a value: ``load_run`` reads a run directory back as its
config, task, model and params; ``predict`` on the held-out file gives the
run's own ``eval`` numbers (recomputed from the predictions in NumPy); each
door's module holding the params gives the run's own forward
(``rnn_model.apply``); ``states`` gives the carries of a Python loop over
``cell.step`` and the gates of a float64 NumPy transcription of the LSTM
and GRU equations; the exported function, reloaded in a fresh process
without recurrent_jax, gives ``predict``'s outputs."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("ml_collections")
pytest.importorskip("orbax.checkpoint")

from recurrent_jax.data.arrays import save_arrays  # noqa: E402
from recurrent_jax.data.base import Batch, DataError  # noqa: E402
from recurrent_jax.train import export, from_config_dict, load_run, predict, rnn_model  # noqa: E402
from recurrent_jax.train.config import ConfigError, base_config  # noqa: E402
from recurrent_jax.train.eval_run import evaluate_run  # noqa: E402
from recurrent_jax.train.loop import train_and_evaluate  # noqa: E402


def arrays_data(rng, n: int, tokens: bool = False):
    """(x, y, lengths): the class is whether the last valid step's first
    feature (or token) is large."""
    lengths = rng.integers(2, 11, n)
    if tokens:
        x = rng.integers(0, 7, (n, 10)).astype(np.int32)
        return x, (x[np.arange(n), lengths - 1] > 3).astype(np.int32), lengths
    x = (rng.normal(size=(n, 10, 3)) * 2.0 + 1.0).astype(np.float32)
    return x, (x[np.arange(n), lengths - 1, 0] > 1.0).astype(np.int32), lengths


def train_arrays(folder, rng, **model):
    """A finished run of the arrays task on a file, with a held-out file."""
    tokens = model.get("embedding_size") is not None
    train, held = arrays_data(rng, 160, tokens), arrays_data(rng, 48, tokens)
    config = base_config("arrays", name="mine")
    config.data.update(
        path=str(save_arrays(folder / "train.npz", *train)),
        eval_path=str(save_arrays(folder / "held.npz", *held)),
        batch_size=16,
        eval_size=48,
    )
    config.model.update(hidden_size=8, **model)
    config.training.update(num_steps=40, steps_per_call=20, eval_every=20, fast_compile=True)
    train_and_evaluate(from_config_dict(config), folder / "run", progress=False)
    return folder / "run", held


@pytest.fixture(scope="module")
def lstm_run(tmp_path_factory):
    """Two LSTM layers on standardised float features."""
    folder = tmp_path_factory.mktemp("lstm")
    return train_arrays(folder, np.random.default_rng(0), num_layers=2)


@pytest.fixture(scope="module")
def gru_run(tmp_path_factory):
    """A bidirectional GRU on token ids, mean-pooled, with zoneout."""
    folder = tmp_path_factory.mktemp("gru")
    options = dict(cell="gru", bidirectional=True, embedding_size=4, pooling="mean", zoneout=0.2)
    return train_arrays(folder, np.random.default_rng(1), **options)


def own_forward(run, x, lengths):
    """The run's readout values as its training code computes them."""
    encode = run.task.inputs.encode
    xs = x if encode is None else encode(x, lengths)
    batch = Batch(jnp.asarray(xs), None, None, jnp.asarray(lengths))
    model = run.config.model
    return rnn_model.apply(
        model, run.task, run.params, batch, run.hparams.rates, key=None, deterministic=True
    )


@pytest.mark.parametrize("which", ["lstm_run", pytest.param("gru_run", marks=pytest.mark.slow)])
def test_predicting_on_the_held_out_file_gives_the_runs_eval_numbers(which, request):
    workdir, held = request.getfixturevalue(which)
    report = evaluate_run(workdir)
    run = load_run(workdir)
    assert run.step == report["step"] and run.config == from_config_dict(
        json.loads((workdir / "config.json").read_text())
    )
    x, lengths = predict.read_inputs(run, [str(workdir.parent / "held.npz")])
    got = run.predict(x, lengths)
    y = held[1]
    correct = int(np.sum(got["classes"] == y))
    loss = -np.mean(np.log(got["probabilities"][np.arange(len(y)), y].astype(np.float64)))
    # the same predictions, exactly (eval's accuracy is a float32 mean)
    assert correct == round(report["eval"]["accuracy"] * len(y))
    np.testing.assert_allclose(loss, report["eval"]["loss"], rtol=1e-6)  # float32 sums
    np.testing.assert_array_equal(got["classes"], np.argmax(got["probabilities"], -1))


@pytest.mark.parametrize(
    "which, door",
    [
        ("lstm_run", "as_nn"),
        ("lstm_run", "as_eqx"),
        pytest.param("lstm_run", "as_nnx", marks=pytest.mark.slow),
        *(
            pytest.param("gru_run", d, marks=pytest.mark.slow)
            for d in ("as_nn", "as_nnx", "as_eqx")
        ),
    ],
)
def test_each_doors_module_holding_the_params_is_the_runs_forward(which, door, request):
    pytest.importorskip("equinox")
    workdir, (x, _, lengths) = request.getfixturevalue(which)
    run = load_run(workdir, step="latest")
    want = own_forward(run, x, lengths)
    encode = run.task.inputs.encode
    xs = x if encode is None else encode(x, lengths)
    got = getattr(run, door)()(xs, seq_lengths=lengths)
    # the same stack through the door's module; XLA may fuse differently
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-6, rtol=1e-6)


def loop_carries(cell, params, xs, lengths):
    """Carries after each valid step of a Python loop over ``cell.step``."""
    out = []
    for row, n in zip(np.asarray(xs), lengths, strict=True):
        carry = cell.initial_carry((1,), jnp.float32)
        steps = [None] * xs.shape[1]
        xp = cell.project(params, jnp.asarray(row[None]))
        for t in range(n):
            carry, _ = cell.step(params, carry, xp[:, t])
            steps[t] = carry
        out.append(steps)
    return out


def sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def numpy_lstm_gates(p, x, h_prev):
    """i, f, g, o of PyTorch's LSTM in float64: W_ih x + b_ih + W_hh h + b_hh."""
    p = {k: np.asarray(v, np.float64) for k, v in p.items()}
    pre = x @ p["w_ih"] + p["b_ih"] + h_prev @ p["w_hh"] + p["b_hh"]
    i, f, g, o = np.split(pre, 4, -1)
    return {"input": sigmoid(i), "forget": sigmoid(f), "cell": np.tanh(g), "output": sigmoid(o)}


def numpy_gru_gates(p, x, h_prev):
    """r, z, n of PyTorch's GRU in float64 (reset after W_hh)."""
    p = {k: np.asarray(v, np.float64) for k, v in p.items()}
    xr, xz, xn = np.split(x @ p["w_ih"] + p["b_ih"], 3, -1)
    hr, hz, hn = np.split(h_prev @ p["w_hh"] + p["b_hh"], 3, -1)
    r, z = sigmoid(xr + hr), sigmoid(xz + hz)
    return {"reset": r, "update": z, "candidate": np.tanh(xn + r * hn)}


def test_states_are_the_step_loops_carries_and_the_lstm_equations_gates(lstm_run):
    workdir, (x, _, lengths) = lstm_run
    run = load_run(workdir)
    x, lengths = x[:5], lengths[:5]
    found = run.states(x, lengths)
    cell = rnn_model.make_cell(run.config.model)
    xs = np.asarray(run.task.inputs.encode(x, lengths), np.float64)
    for i in range(2):
        p = run.params["rnn"][f"layer_{i}"]
        loop = loop_carries(cell, p, xs.astype(np.float32), lengths)
        for row, n in enumerate(lengths):
            for t in range(n):
                h_prev = np.zeros(8) if t == 0 else np.asarray(loop[row][t - 1].h[0], np.float64)
                gates = numpy_lstm_gates(p, xs[row, t], h_prev)
                for name, want in gates.items():
                    got = found[f"layer_{i}/gates/{name}"][row, t]
                    np.testing.assert_allclose(got, want, atol=2e-6)  # float32 against float64
                np.testing.assert_allclose(
                    found[f"layer_{i}/h"][row, t], loop[row][t].h[0], atol=1e-6
                )
                np.testing.assert_allclose(
                    found[f"layer_{i}/c"][row, t], loop[row][t].c[0], atol=1e-6
                )
            assert not found[f"layer_{i}/gates/forget"][row, n:].any()  # zero past the length
        xs = np.asarray(found[f"layer_{i}/outputs"], np.float64)
    network = rnn_model.make_network(run.config.model)
    mask = jnp.arange(10)[None] < jnp.asarray(lengths)[:, None]
    _, ys = network.apply(run.params["rnn"], run.task.inputs.encode(x, lengths), mask=mask)
    np.testing.assert_allclose(found["layer_1/outputs"], ys, atol=1e-6)  # the stack's own


@pytest.mark.slow
def test_states_of_a_bidirectional_gru_read_the_backward_direction_in_reverse(gru_run):
    workdir, (x, _, lengths) = gru_run
    run = load_run(workdir)
    x, lengths = x[:4], lengths[:4]
    found = run.states(x, lengths)
    cell = rnn_model.make_cell(run.config.model)
    embedded = np.asarray(run.params["embedding"])[x]
    p = run.params["rnn"]["layer_0"]["backward"]
    zoneout = float(run.hparams.zoneout)
    for row, n in enumerate(lengths):
        for t in range(n):
            h_prev = (
                np.zeros(8) if t == n - 1 else np.asarray(found["layer_0/backward/h"][row, t + 1])
            )
            gates = numpy_gru_gates(p, embedded[row, t].astype(np.float64), h_prev)
            for name, want in gates.items():
                np.testing.assert_allclose(
                    found[f"layer_0/backward/gates/{name}"][row, t], want, atol=2e-6
                )
            # evaluation: zoneout's expectation p·old + (1 − p)·new of one step
            xp = cell.project(p, jnp.asarray(embedded[row, t][None]))
            new, _ = cell.step(p, jnp.asarray(h_prev[None], jnp.float32), xp)
            want_h = zoneout * h_prev + (1 - zoneout) * np.asarray(new[0])
            np.testing.assert_allclose(found["layer_0/backward/h"][row, t], want_h, atol=1e-6)


def test_the_exported_function_reloads_without_recurrent_jax(lstm_run, tmp_path):
    workdir, (x, _, lengths) = lstm_run
    run = load_run(workdir)
    path = run.export(tmp_path / "model.jax")
    np.savez(tmp_path / "inputs.npz", x=x[:7], lengths=lengths[:7].astype(np.int32))
    script = textwrap.dedent(
        f"""
        import sys
        import jax, numpy as np
        exported = jax.export.deserialize(open({str(path)!r}, "rb").read())
        inputs = np.load({str(tmp_path / "inputs.npz")!r})
        out = exported.call(inputs["x"], inputs["lengths"])
        wide = exported.call(np.concatenate([inputs["x"]] * 2, 1), inputs["lengths"])
        np.savez({str(tmp_path / "out.npz")!r}, **out, wide=wide["probabilities"])
        assert not any(name.startswith("recurrent_jax") for name in sys.modules)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    out = np.load(tmp_path / "out.npz")
    want = run.predict(x[:7], lengths[:7])
    np.testing.assert_array_equal(out["classes"], want["classes"])
    np.testing.assert_allclose(out["probabilities"], want["probabilities"], atol=1e-6)
    # symbolic length: padding past each length changes nothing
    np.testing.assert_allclose(out["wide"], want["probabilities"], atol=1e-6)


def test_the_export_lowers_for_gpus_too(lstm_run, tmp_path):
    """Without a GPU: the file holds a CUDA lowering beside the CPU one (no
    custom call of the package's own kernels in either)."""
    run = load_run(lstm_run[0])
    path = run.export(tmp_path / "both.jax", platforms=("cpu", "cuda"))
    exported = export.load(path)
    assert exported.platforms == ("cpu", "cuda")
    assert "custom_call @recurrent_jax" not in exported.mlir_module()


def test_bad_inputs_are_one_line_errors(lstm_run):
    run = load_run(lstm_run[0])
    x = lstm_run[1][0]
    with pytest.raises(DataError, match=r"expected float features \(N, T, 3\)") as error:
        run.predict(x[..., :2])
    assert "\n" not in str(error.value)
    with pytest.raises(DataError, match="lengths: expected values in"):
        run.predict(x, np.full(len(x), 11))
    with pytest.raises(DataError, match="NaN or Inf"):
        run.predict(np.where(np.arange(10)[None, :, None] == 0, np.nan, x))
    with pytest.raises(ConfigError, match="prompt: expected a language model's run"):
        run.sample("abc")


@pytest.mark.slow
def test_token_ids_past_the_vocabulary_are_a_one_line_error(gru_run):
    tokens = load_run(gru_run[0])
    with pytest.raises(DataError, match=r"token ids < 7 \(the run's vocabulary\), got 9"):
        tokens.predict(np.full((2, 5), 9, np.int32))


def test_load_run_refuses_what_it_cannot_read(lstm_run, tmp_path):
    with pytest.raises(ConfigError, match="does not exist, so it is not a run directory"):
        load_run(tmp_path / "nothing")
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="has no run.json"):
        load_run(tmp_path / "files")
    with pytest.raises(ConfigError, match="--run: expected none"):
        load_run(lstm_run[0], run=3)
    with pytest.raises(Exception, match="no checkpoint at step 7"):
        load_run(lstm_run[0], step=7)
