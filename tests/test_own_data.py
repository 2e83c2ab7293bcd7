"""A researcher's own data and code through configs, sweeps and the CLI:
tasks and cells by import path (a module beside the config file), arrays
from .npz / .npy / CSV / Parquet files, token inputs with an embedding and
pooled readouts, and one-line errors for bad files that leave the run
directory untouched."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import ARRAYS_CONFIG

pytest.importorskip("ml_collections")
pytest.importorskip("orbax.checkpoint")

import recurrent_jax as rj  # noqa: E402
from recurrent_jax import cli  # noqa: E402
from recurrent_jax.data import arrays as arrays_task  # noqa: E402
from recurrent_jax.sweep import parse_sweep, run_sweep  # noqa: E402
from recurrent_jax.train import config_files, core, from_config_dict, rnn_model  # noqa: E402
from recurrent_jax.train.loop import train_and_evaluate  # noqa: E402

MY_TASKS = """
import dataclasses
import jax
import recurrent_jax as rj

@dataclasses.dataclass(frozen=True)
class Options:
    seq_len: int = 6

def build(options):
    def sample(key, n):
        xs = jax.random.normal(key, (n, options.seq_len, 2))
        return rj.data.Batch(xs, xs[:, :, :1].sum(1))
    return rj.data.TaskSpec(
        input_size=2, output_size=1, kind="regression", output_mode="last", causal=False,
        sample_train=sample, eval_set=sample, baselines={}, primary_metric="mse",
        higher_is_better=False,
    )

def make_task() -> rj.data.Task:
    return rj.data.Task("first_sum", "sum of the first feature", "many-to-one", Options, build)
"""

MY_CELLS = """
import jax, jax.numpy as jnp
import recurrent_jax as rj

def my_cell(hidden_size, **options) -> rj.Cell:
    def init(key, input_size):
        k1, k2 = jax.random.split(key)
        return {"w_ih": jax.random.normal(k1, (input_size, hidden_size)) * 0.3,
                "w_hh": jax.random.normal(k2, (hidden_size, hidden_size)) * 0.3}
    def step(params, h, x):
        h = jnp.tanh(x @ params["w_ih"] + h @ params["w_hh"])
        return h, h
    return rj.Cell(init=init, step=step, hidden_size=hidden_size, name="my_cell")
"""

CONFIG = """
import ml_collections
from recurrent_jax.train.config import base_config, shrink_to_smoke

def get_config(arg=None):
    config = base_config("my_tasks:make_task", name="own")
    config.model.update(cell="my_cells:my_cell", hidden_size=8)
    shrink_to_smoke(config)
    config.training.update(eval_every=10, keep_checkpoints=3)
    config.sweep = ml_collections.ConfigDict(
        {"vmap": {"learning_rate": [1e-3, 1e-2]}, "grid": {}, "seeds": 2, "zip": [],
         "runs_per_call": 0})
    config.lock()
    return config
"""


@pytest.fixture
def own_code(tmp_path):
    """A config folder holding the researcher's own task and cell modules."""
    folder = tmp_path / "project"
    folder.mkdir()
    for name, text in (("my_tasks", MY_TASKS), ("my_cells", MY_CELLS), ("config", CONFIG)):
        (folder / f"{name}.py").write_text(textwrap.dedent(text))
    return folder


def test_own_task_and_cell_by_import_path_train_resume_and_sweep(own_code, tmp_path):
    raw = config_files.load_config(str(own_code / "config.py"))  # its folder is importable
    config = from_config_dict(raw)
    cell = config.model.cell_constructor()(8)
    full = train_and_evaluate(config, tmp_path / "full", progress=False)
    assert full["status"] == "completed" and full["task"] == "my_tasks:make_task"
    # the researcher's cell, its params exactly as its own init makes them
    params = core.init_state(
        core.make_setup(config), core.default_hparams(config), jax.random.key(0)
    )
    want = jax.eval_shape(lambda: cell.init(jax.random.PRNGKey(0), 2))
    assert jax.tree_util.tree_map(
        jnp.shape, params.params["rnn"]["layer_0"]
    ) == jax.tree_util.tree_map(lambda a: a.shape, want)
    # checkpoints: interrupted at step 10, resumed, as uninterrupted
    resumed = tmp_path / "resumed"
    train_and_evaluate(config, resumed, progress=False, should_stop=lambda step: step == 10)
    train_and_evaluate(config, resumed, progress=False)
    assert (resumed / "metrics.jsonl").read_text() == (
        tmp_path / "full" / "metrics.jsonl"
    ).read_text()
    # and a vmapped sweep of learning rates and seeds
    summary = run_sweep(parse_sweep(raw), tmp_path / "sweep", progress=False)
    assert summary["status"] == "completed" and summary["counts"]["completed"] == 4


def test_registered_task_trains_from_a_python_config(tmp_path):
    task = rj.data.get_task("adding")
    mine = rj.data.register_task(task._replace(name="my_adding"))
    assert rj.data.get_task("my_adding") is mine
    config = config_files.load_config("adding:smoke")
    with config.unlocked():
        config.data.task = "my_adding"
    assert train_and_evaluate(from_config_dict(config), tmp_path, progress=False)["status"] == (
        "completed"
    )
    with pytest.raises(ValueError, match="task.name: expected a name of no built-in task"):
        rj.data.register_task(task)


@pytest.mark.parametrize(
    "task, message",
    [
        ("no_such_task", "config.data.task: expected a task of"),
        ("no_such_module:make", "config.data.task: cannot import 'no_such_module'"),
        ("json:no_such_name", "config.data.task: module 'json' has no 'no_such_name'"),
        ("json:dumps", "config.data.task: expected 'json:dumps' to be an rj.data.Task or a"),
    ],
)
def test_bad_task_names_are_one_line_errors(task, message, tmp_path, capsys):
    code = cli.main(
        [
            "train",
            "--config=adding:smoke",
            f"--config.data.task={task}",
            f"--workdir={tmp_path / 'run'}",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and "\n" not in err, err
    assert not (tmp_path / "run").exists()


def test_bad_cell_import_path_is_a_one_line_error(tmp_path, capsys):
    code = cli.main(
        [
            "train",
            "--config=adding:smoke",
            "--config.model.cell=nowhere:cell",
            f"--workdir={tmp_path / 'run'}",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and "config.model.cell: cannot import 'nowhere'" in err, err


# --- arrays from files ----------------------------------------------------------------


def _data(rng, n=40, t=7, d=3):
    x = rng.standard_normal((n, t, d)).astype(np.float32) * 3 + 5
    lengths = rng.integers(2, t + 1, n)
    y = (x[:, 0, 0] > 5).astype(np.int64)
    return x, y, lengths


def _build(**options):
    return rj.data.get_task("arrays").build(arrays_task.ArraysOptions(**options))


def test_arrays_task_splits_normalises_by_the_training_split_and_infers_the_task(tmp_path, rng):
    x, y, lengths = _data(rng)
    path = arrays_task.save_arrays(tmp_path / "d.npz", x, y, lengths)
    spec = _build(path=str(path), valid_fraction=0.25, split_seed=3)
    assert (spec.kind, spec.output_mode, spec.input_size, spec.output_size) == (
        "classification",
        "last",
        3,
        2,
    )
    order = np.random.default_rng(3).permutation(40)
    train_rows, held = np.sort(order[10:]), np.sort(order[:10])
    valid = np.arange(7)[None] < lengths[train_rows][:, None]
    mean, std = x[train_rows][valid].mean(0), x[train_rows][valid].std(0)
    held_out = spec.eval_set(jax.random.key(0), 0)
    read = (np.arange(7)[None] < lengths[held][:, None])[..., None]  # padding is set to 0
    want = np.where(read, (x[held] - mean) / std, 0.0)
    np.testing.assert_allclose(held_out.xs, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(held_out.targets, y[held])
    np.testing.assert_array_equal(held_out.seq_lengths, lengths[held])
    batch = spec.sample_train(jax.random.key(1), 5)
    assert batch.xs.shape == (5, 7, 3) and batch.seq_lengths.shape == (5,)


@pytest.mark.parametrize("layout", ["npy folder", "eval_path", "per-step regression", "tokens"])
def test_arrays_task_layouts(layout, tmp_path, rng):
    x, y, lengths = _data(rng)
    if layout == "npy folder":
        folder = tmp_path / "arrays"
        folder.mkdir()
        np.save(folder / "x.npy", x)
        np.save(folder / "y.npy", y)
        spec = _build(path=str(folder), normalize=False)
        assert spec.input_size == 3 and spec.info["train_rows"] == 32
    elif layout == "eval_path":
        arrays_task.save_arrays(tmp_path / "train.npz", x, y, lengths)
        arrays_task.save_arrays(tmp_path / "test.npz", x[:4], y[:4])
        spec = _build(path=str(tmp_path / "train.npz"), eval_path=str(tmp_path / "test.npz"))
        assert spec.eval_set(None, 0).xs.shape == (4, 7, 3) and spec.info["train_rows"] == 40
    elif layout == "per-step regression":
        target = x[..., :2].cumsum(1)
        spec = _build(path=str(arrays_task.save_arrays(tmp_path / "r.npz", x, target, lengths)))
        assert (spec.kind, spec.output_mode, spec.output_size) == ("regression", "sequence", 2)
        batch = spec.eval_set(None, 0)
        np.testing.assert_array_equal(
            batch.weights, np.arange(7)[None] < batch.seq_lengths[:, None]
        )
    else:
        ids = rng.integers(0, 50, (40, 7))
        spec = _build(path=str(arrays_task.save_arrays(tmp_path / "t.npz", ids, y)), vocab_size=64)
        assert spec.input_vocab == 64 and spec.eval_set(None, 0).xs.dtype == jnp.int32


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_long_tables_become_padded_series(suffix, tmp_path, rng):
    pa = pytest.importorskip("pyarrow")
    rows = []
    for series, length in enumerate([3, 5, 2, 4, 6, 3]):
        for t in range(length):
            rows.append((series, t, float(series * 10 + t), float(t), series % 2))
    rng.shuffle(rows)  # the loader orders by id, then time
    table = pa.table(
        {name: [r[i] for r in rows] for i, name in enumerate(["id", "time", "a", "b", "label"])}
    )
    path = tmp_path / f"series{suffix}"
    if suffix == ".csv":
        import pyarrow.csv

        pyarrow.csv.write_csv(table, path)
    else:
        import pyarrow.parquet

        pyarrow.parquet.write_table(table, path)
    data = rj.data.files.read_arrays(
        path, arrays_task.ArraysOptions(target_column="label").columns()
    )
    np.testing.assert_array_equal(data.lengths, [3, 5, 2, 4, 6, 3])
    np.testing.assert_array_equal(data.y, [0, 1, 0, 1, 0, 1])
    np.testing.assert_array_equal(data.x[1, :5, 0], [10, 11, 12, 13, 14])
    assert data.x.shape == (6, 6, 2) and data.x[2, 2:].sum() == 0


# --- one-line errors, nothing written -----------------------------------------------------


def arrays_config(folder: Path) -> Path:
    path = folder / "mine.py"
    path.write_text(ARRAYS_CONFIG)
    return path


def _bad(name, tmp_path, rng):
    x, y, lengths = _data(rng)
    arrays = {"x": x, "y": y, "lengths": lengths}
    expected = {
        "missing file": (None, "no such file or folder"),
        "missing key": ({"x": x}, "expected the keys x and y"),
        "rows differ": ({"x": x, "y": y[:-1]}, "y: expected 40 rows"),
        "ragged": (
            {"x": np.array([np.ones((2, 3)), np.ones((3, 3))], dtype=object), "y": y[:2]},
            "ragged",
        ),
        "lengths out of range": (
            {**arrays, "lengths": lengths + 7},
            "lengths: expected values in [0, 7]",
        ),
        "float labels": ({"x": x, "y": y.astype(np.float32)}, "class ids must be integers"),
        "negative labels": ({"x": x, "y": y - 1}, "expected class ids >= 0"),
        "nan features": (
            {**arrays, "x": np.where(x > 7, np.nan, x)},
            "expected finite numbers, got NaN",
        ),
        "token id past the vocabulary": (
            {"x": rng.integers(0, 100, (40, 7)), "y": y},
            "< data.vocab_size=50",
        ),
    }[name]
    path = tmp_path / "bad.npz"
    if expected[0] is not None:
        np.savez(path, **expected[0])
    return path, expected[1]


@pytest.mark.parametrize(
    "name",
    [
        "missing file",
        "missing key",
        "rows differ",
        "ragged",
        "lengths out of range",
        "float labels",
        "negative labels",
        "nan features",
        "token id past the vocabulary",
    ],
)
def test_bad_files_are_one_line_errors_and_write_nothing(name, tmp_path, rng, capsys):
    path, message = _bad(name, tmp_path, rng)
    workdir = tmp_path / "run"
    args = [
        "train",
        f"--config={arrays_config(tmp_path)}",
        f"--config.data.path={path}",
        f"--workdir={workdir}",
    ]
    if "vocabulary" in name:
        args += ["--config.data.vocab_size=50", "--config.model.embedding_size=4"]
    code = cli.main(args)
    err = capsys.readouterr().err.strip()
    assert code in (1, 2) and err.startswith("recurrent-jax: error:") and "\n" not in err, err
    assert message in err and str(path.name) in err, err
    assert not workdir.exists()


# --- token inputs and pooled readouts ----------------------------------------------------


def test_the_seed_model_has_the_keras_parameter_count(tmp_path):
    config = from_config_dict(config_files.load_config("seed_text_classifier:smoke"))
    summary = train_and_evaluate(config, tmp_path, progress=False)
    assert summary["num_params"] == 164_106
    os.environ.setdefault("KERAS_BACKEND", "jax")
    keras = pytest.importorskip("keras")
    with jax.numpy_rank_promotion("allow"):  # keras's own ops broadcast implicitly
        model = keras.Sequential(
            [
                keras.Input((None,), dtype="int32"),
                keras.layers.Embedding(1000, 64),
                keras.layers.LSTM(128),
                keras.layers.Dense(10),
            ]
        )
    assert model.count_params() == summary["num_params"]


@pytest.mark.parametrize("pooling", ["mean", "max"])
def test_pooled_readouts_pool_the_valid_steps(pooling, tmp_path, rng):
    ids = rng.integers(0, 30, (12, 6))
    lengths = rng.integers(1, 7, 12)
    path = arrays_task.save_arrays(tmp_path / "t.npz", ids, rng.integers(0, 3, 12), lengths)
    raw = config_files.load_config(f"{arrays_config(tmp_path)}:{path}")
    with raw.unlocked():
        raw.model.update(embedding_size=5, pooling=pooling, hidden_size=4)
    config = from_config_dict(raw)
    task = core.build_task(config)
    hparams = core.default_hparams(config)
    params = rnn_model.init(config.model, task, hparams, jax.random.key(0))
    batch = task.eval_set(None, 0)
    got = rnn_model.apply(
        config.model, task, params, batch, hparams.rates, key=None, deterministic=True
    )
    network = rnn_model.make_network(config.model)
    _, ys = network.apply(
        params["rnn"],
        params["embedding"][batch.xs],
        deterministic=True,
        seq_lengths=batch.seq_lengths,
    )
    ys, n = np.asarray(ys), np.asarray(batch.seq_lengths)
    pooled = np.stack(
        [
            (ys[i, : n[i]].mean(0) if pooling == "mean" else ys[i, : n[i]].max(0))
            for i in range(len(n))
        ]
    )
    want = pooled @ np.asarray(params["readout"]["w"]) + np.asarray(params["readout"]["b"])
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)
