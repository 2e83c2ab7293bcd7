"""The streamed, host-fed path (config.data.stream): the stream against brute
force, a streamed run against a hand loop over the same batches, kill and
resume against uninterrupted, every run of a sweep on the same batches."""

import json

import jax
import numpy as np
import pytest

pytest.importorskip("grain")

from recurrent_jax.data import arrays as arrays_task  # noqa: E402
from recurrent_jax.data.base import Batch, Rows  # noqa: E402
from recurrent_jax.data.stream import Stream  # noqa: E402
from recurrent_jax.sweep import parse_sweep, run_sweep  # noqa: E402
from recurrent_jax.train import core  # noqa: E402
from recurrent_jax.train.config import ConfigError, base_config, from_config_dict  # noqa: E402
from recurrent_jax.train.eval_run import evaluate_run  # noqa: E402
from recurrent_jax.train.loop import train_and_evaluate  # noqa: E402
from recurrent_jax.train.metrics import read_metrics  # noqa: E402


def _index_rows(n):
    """Rows whose x is the row's own index, so a batch shows which rows it holds."""
    take = lambda i: Batch(np.asarray(i)[:, None], np.asarray(i) * 10)  # noqa: E731
    return Rows(n, take)


def _calls(stream, n):
    return [np.asarray(stream.next().xs)[..., 0] for _ in range(n)]


def test_every_epoch_is_a_fresh_permutation_by_seed():
    n, batch, steps = 12, 4, 3  # one epoch a call
    stream = Stream(_index_rows(n), batch, steps, seed=5)
    epochs = [c.reshape(-1) for c in _calls(stream, 4)]
    for epoch in epochs:
        assert sorted(epoch.tolist()) == list(range(n))
    assert len({tuple(e) for e in epochs}) == 4  # reshuffled every epoch
    again = [c.reshape(-1) for c in _calls(Stream(_index_rows(n), batch, steps, seed=5), 4)]
    np.testing.assert_array_equal(epochs, again)
    other = [c.reshape(-1) for c in _calls(Stream(_index_rows(n), batch, steps, seed=6), 4)]
    assert not np.array_equal(epochs, other)


def test_batches_span_epochs_and_carry_every_field():
    n, batch, steps = 10, 4, 2
    stream = Stream(_index_rows(n), batch, steps, seed=0, prefetch=3, threads=1)
    first = stream.next()
    assert first.xs.shape == (steps, batch, 1) and first.targets.shape == (steps, batch)
    np.testing.assert_array_equal(np.asarray(first.targets), np.asarray(first.xs)[..., 0] * 10)
    flat = np.concatenate(
        [c.reshape(-1) for c in [np.asarray(first.xs)[..., 0], *_calls(stream, 4)]]
    )
    for start in range(0, 40, n):  # the rows, read in order, are whole epochs
        assert sorted(flat[start : start + n].tolist()) == list(range(n))


def test_seek_continues_as_an_uninterrupted_stream():
    rows = _index_rows(9)
    straight = _calls(Stream(rows, 2, 3, seed=1), 7)
    stream = Stream(rows, 2, 3, seed=1)
    _calls(stream, 2)
    assert stream.calls_read == 2
    resumed = Stream(rows, 2, 3, seed=1)
    resumed.seek(4)
    np.testing.assert_array_equal(_calls(resumed, 3), straight[4:])
    assert resumed.calls_read == 7


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(rows=(3, None)), "rows: expected an rj.data.Rows"),
        (dict(batch_size=0), "batch_size: expected a positive int"),
        (dict(prefetch=0), "prefetch: expected a positive int"),
        (dict(seed=-1), "seed: expected"),
    ],
)
def test_bad_stream_arguments(kwargs, message):
    args = dict(rows=_index_rows(4), batch_size=2, steps_per_call=1) | kwargs
    with pytest.raises((TypeError, ValueError), match=message):
        Stream(**args)


# --- streamed runs ----------------------------------------------------------------------


def _config(path, **data):
    config = base_config("arrays", name="streamed")
    config.data.update(path=str(path), batch_size=8, eval_size=8, stream=True, **data)
    config.model.update(hidden_size=8)
    config.training.update(num_steps=30, steps_per_call=5, eval_every=10, fast_compile=True)
    return config


@pytest.fixture
def data_path(tmp_path, rng):
    x = rng.normal(size=(50, 7, 3)).astype(np.float32)
    y = (x[:, :, 0].sum(1) > 0).astype(np.int32)
    return arrays_task.save_arrays(tmp_path / "data.npz", x, y, rng.integers(2, 8, 50))


def _train_records(workdir):
    return [r for r in read_metrics(workdir / "metrics.jsonl") if r["split"] == "train"]


def test_a_streamed_run_trains_on_the_streams_batches_in_order(data_path, tmp_path):
    """Oracle: a Python loop of core.train_step over a fresh Stream's batches."""
    config = from_config_dict(_config(data_path, shuffle_seed=3))
    train_and_evaluate(config, tmp_path / "run", progress=False)
    setup = core.make_setup(config)
    hparams, key = core.default_hparams(config), jax.random.key(config.training.seed)
    state = core.init_state(setup, hparams, key)
    stream = Stream(setup.task.train_rows, 8, 5, seed=3)
    step = jax.jit(lambda s, b: core.train_step(setup, hparams, core.run_keys(key).train, s, b))
    records = _train_records(tmp_path / "run")
    for record in records:
        batches, losses = stream.next(), []
        for i in range(5):
            state, metrics = step(state, jax.tree_util.tree_map(lambda a, i=i: a[i], batches))
            losses.append(float(metrics["loss"]))
        np.testing.assert_allclose(record["loss"], np.mean(losses), rtol=2e-5)
    assert [r["step"] for r in records] == [5, 10, 15, 20, 25, 30]


def test_a_streamed_run_killed_and_resumed_equals_an_uninterrupted_one(data_path, tmp_path):
    config = from_config_dict(_config(data_path))
    full = tmp_path / "full"
    train_and_evaluate(config, full, progress=False)
    resumed = tmp_path / "resumed"
    stopped = train_and_evaluate(config, resumed, progress=False, should_stop=lambda s: s == 15)
    assert stopped["status"] == "interrupted"
    summary = train_and_evaluate(config, resumed, progress=False)
    assert summary["status"] == "completed"
    assert (resumed / "metrics.jsonl").read_text() == (full / "metrics.jsonl").read_text()


def test_every_run_of_a_streamed_sweep_reads_the_same_batches(data_path, tmp_path):
    raw = _config(data_path).to_dict() | {"sweep": {"vmap": {"learning_rate": [1e-3, 3e-2]}}}
    summary = run_sweep(parse_sweep(raw), tmp_path / "sweep", progress=False)
    assert summary["status"] == "completed"
    swept = read_metrics(tmp_path / "sweep" / "metrics.jsonl")
    for run_id, lr in enumerate([1e-3, 3e-2]):
        solo = tmp_path / f"solo-{run_id}"
        config = _config(data_path)
        config.optimizer.learning_rate = lr
        train_and_evaluate(from_config_dict(config), solo, progress=False)
        mine = [r for r in swept if r["run_id"] == run_id and r["split"] == "train"]
        want = _train_records(solo)
        assert len(mine) == len(want) == 6
        for a, b in zip(mine, want, strict=True):
            np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-4)
    best = json.loads((tmp_path / "sweep" / "best_run" / "best.json").read_text())
    assert best["run_id"] in (0, 1)
    saved = evaluate_run(tmp_path / "sweep" / "best_run")  # its checkpoint holds the stream's place
    assert saved["step"] > 0 and 0.0 <= saved["eval"]["accuracy"] <= 1.0


def test_stream_needs_a_task_with_rows_on_the_host(tmp_path):
    config = base_config("adding")
    config.data.stream = True
    with pytest.raises(ConfigError, match="config.data.stream: task 'adding' has no rows"):
        train_and_evaluate(from_config_dict(config), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_make_train_refuses_a_streamed_config(data_path):
    config = from_config_dict(_config(data_path))
    with pytest.raises(ConfigError, match="config.data.stream: make_train runs whole runs"):
        core.make_train(config)


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("stream", "yes", "config.data.stream: expected bool"),
        ("prefetch", 0, "config.data.prefetch: expected a positive int"),
        ("shuffle_seed", -1, "config.data.shuffle_seed: expected"),
    ],
)
def test_bad_stream_options(data_path, key, value, message):
    config = _config(data_path).to_dict()
    config["data"][key] = value
    with pytest.raises(ConfigError, match=message):
        from_config_dict(config)


@pytest.mark.parametrize("tokens", ["chars", "words"])
def test_streamed_text_rows_are_windows_of_the_training_ids(tokens):
    """Oracle: the training split's ids, sliced by hand at each start."""
    from recurrent_jax.data import text
    from recurrent_jax.data import tokens as tokenizers

    options = text.TextOptions(tokens=tokens, seq_len=12)
    spec = text.build_text(options)
    if tokens == "chars":
        ids = text.load_text("", 12, options.valid_fraction)[0]
    else:
        whole = text.read_text(str(text.DEFAULT_TEXT))
        train = whole[: len(whole) - int(len(whole) * options.valid_fraction)]
        ids = tokenizers.make_tokenizer("words", [train], options.max_vocab).encode(train)
    ids = np.asarray(ids)
    starts = np.array([0, 5, spec.train_rows.count - 1])
    host = spec.train_rows.take(starts)
    xs = np.argmax(host.xs, -1) if tokens == "chars" else host.xs
    assert spec.train_rows.count == len(ids) - 12
    for row, s in enumerate(starts):
        np.testing.assert_array_equal(xs[row], ids[s : s + 12])
        np.testing.assert_array_equal(host.targets[row], ids[s + 1 : s + 13])


@pytest.mark.parametrize("key, value", [("shuffle_seed", 3), ("prefetch", 4)])
def test_stream_options_without_a_stream_are_refused(data_path, key, value):
    config = _config(data_path).to_dict()
    config["data"] |= {"stream": False, key: value}
    with pytest.raises(ConfigError, match=f"config.data.{key}: expected its default unless"):
        from_config_dict(config)
