"""One layout for every run: a training run, a mesh run, run i of a sweep
and a sweep's ``best_run/`` are read by eval, decode, predict, ``load_run``
and a resume, each checked against what the training itself recorded
(``metrics.jsonl``, the run table); the task and model of a sweep's grid
point are built once, and the program cache stays within its bound."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

pytest.importorskip("ml_collections")
pytest.importorskip("orbax.checkpoint")

from recurrent_jax import cli  # noqa: E402
from recurrent_jax.sweep import parse_sweep, run_sweep  # noqa: E402
from recurrent_jax.train import config_files, core, load_run, runs  # noqa: E402
from recurrent_jax.train.checkpoint import checkpointer  # noqa: E402
from recurrent_jax.train.config import ConfigError, from_config_dict  # noqa: E402
from recurrent_jax.train.eval_run import restore_run  # noqa: E402
from recurrent_jax.train.loop import train_and_evaluate  # noqa: E402
from recurrent_jax.train.metrics import read_metrics  # noqa: E402

ADDING = [("training.num_steps", "20")]
SEQ2SEQ = [("training.num_steps", "20"), ("data.eval_size", "16")]
SWEEP = {"vmap": {"learning_rate": [3e-3, 3e-2]}, "grid": {"model": {"hidden_size": [4, 8]}}}


def config_dict(spec: str, overrides):
    config = config_files.load_config(spec)
    config_files.apply_overrides(config, overrides)
    return config.to_dict()


def train_run(spec, overrides, workdir):
    train_and_evaluate(from_config_dict(config_dict(spec, overrides)), workdir, progress=False)
    return workdir


def sweep_run(spec, overrides, workdir, section):
    plan = parse_sweep({**config_dict(spec, overrides), "sweep": section})
    run_sweep(plan, workdir, progress=False)
    return workdir


@pytest.fixture(scope="module")
def adding(tmp_path_factory):
    """A training run, a sweep of 2 grid points x 2 runs and a mesh run (a
    child process with 2 fake devices, its batch split over them)."""
    root = tmp_path_factory.mktemp("adding")
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    env["JAX_PLATFORMS"] = "cpu"
    command = [sys.executable, "-m", "recurrent_jax.cli", "train", "--no-progress"]
    command += ["--config=adding:smoke", f"--workdir={root / 'mesh'}", "--mesh.data=2"]
    command += [f"--config.{k}={v}" for k, v in ADDING]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return {
        "train": train_run("adding:smoke", ADDING, root / "train"),
        "sweep": sweep_run("adding:smoke", ADDING, root / "sweep", SWEEP),
        "mesh": root / "mesh",
    }


def where(runs_of, kind: str):
    """(workdir, run) of a kind of run: run 2 of the sweep, or its best."""
    if kind == "sweep run 2":
        return runs_of["sweep"], 2
    if kind == "best_run":
        return runs_of["sweep"] / "best_run", None
    return runs_of[kind], None


def recorded_best(runs_of, kind: str) -> tuple[int, float]:
    """(step, value) of the primary metric at the run's best eval, as the
    training recorded it (its metrics file, or the sweep's run table)."""
    workdir, run = where(runs_of, kind)
    if kind in ("sweep run 2", "best_run"):
        table = list(csv.DictReader((runs_of["sweep"] / "runs.csv").open()))
        if kind == "best_run":
            run = json.loads((workdir / "best.json").read_text())["run_id"]
        row = next(r for r in table if int(r["run_id"]) == run)
        return int(row["best_step"]), float(row["best_mse"])
    evals = [r for r in read_metrics(workdir / "metrics.jsonl") if r["split"] == "eval"]
    best = min((r for r in evals if r["step"] > 0), key=lambda r: r["mse"])
    return best["step"], best["mse"]


KINDS = ["train", "mesh", "sweep run 2", "best_run"]


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_eval_reads_every_kind_of_run(adding, kind, capsys):
    workdir, run = where(adding, kind)
    argv = ["eval", f"--workdir={workdir}"] + ([f"--run={run}"] if run is not None else [])
    assert cli.main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    step, mse = recorded_best(adding, kind)
    assert report["step"] == step
    np.testing.assert_allclose(report["eval"]["mse"], mse, rtol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_load_run_predicts_what_the_run_scored(adding, kind):
    """The held-out MSE of ``load_run(...).predict`` (NumPy) is the one the
    training recorded at the run's best eval."""
    workdir, run = where(adding, kind)
    loaded = load_run(workdir, run)
    step, mse = recorded_best(adding, kind)
    assert loaded.step == step
    setup = runs.setup_of(loaded.config)
    batch = core.eval_batch(setup, jax.random.key(loaded.config.training.seed))
    predicted = np.asarray(loaded.predict(np.asarray(batch.xs))["values"], np.float64)
    got = np.mean((predicted.reshape(-1) - np.asarray(batch.targets).reshape(-1)) ** 2)
    np.testing.assert_allclose(got, mse, rtol=1e-5)


@pytest.mark.slow
def test_best_run_is_its_run_of_the_sweep(adding):
    best = json.loads((adding["sweep"] / "best_run" / "best.json").read_text())
    copied, original = (
        load_run(adding["sweep"] / "best_run"),
        load_run(adding["sweep"], best["run_id"]),
    )
    for a, b in zip(jax.tree.leaves(copied.params), jax.tree.leaves(original.params), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_a_sweep_needs_a_run_id_and_a_training_run_has_one(adding):
    with pytest.raises(ConfigError, match=r"--run: expected a run id 0\.\.3 of the sweep"):
        load_run(adding["sweep"])
    with pytest.raises(ConfigError, match=r"--run: expected a run id 0\.\.3 of the sweep"):
        load_run(adding["sweep"], 4)
    with pytest.raises(ConfigError, match="--run: expected none"):
        load_run(adding["train"], 1)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["train", "mesh"])
def test_resume_reads_every_kind(adding, kind, tmp_path):
    """A run stopped at step 10 and resumed on one device (the mesh run's
    checkpoints too) ends at the recorded final eval of the same run."""
    config = load_run(adding[kind]).config
    copy = tmp_path / "copy"
    stopped = train_and_evaluate(config, copy, progress=False, should_stop=lambda s: s >= 10)
    assert stopped["status"] == "interrupted"
    # the stopped run's checkpoint replaced by the recorded run's, at step 10
    shutil.rmtree(copy / "checkpoints" / "10")
    shutil.copytree(adding[kind] / "checkpoints" / "10", copy / "checkpoints" / "10")
    summary = train_and_evaluate(config, copy, progress=False)
    assert summary["status"] == "completed" and summary["resumed_from"] == 10
    final = [r for r in read_metrics(adding[kind] / "metrics.jsonl") if r["split"] == "eval"][-1]
    got = [r for r in read_metrics(copy / "metrics.jsonl") if r["split"] == "eval"][-1]
    rtol = 0 if kind == "train" else 1e-4  # the mesh run reduced its batch in two halves
    np.testing.assert_allclose(got["mse"], final["mse"], rtol=rtol)


@pytest.mark.slow
def test_a_checkpoint_without_the_run_axis_is_read_and_resumed(adding, tmp_path):
    """A training run saved by the earlier layout (one run, no run axis) at
    step 10: read as it was saved, and resumed to the recorded run's end."""
    old = tmp_path / "old"
    skip = shutil.ignore_patterns("checkpoints", "summary.json")
    shutil.copytree(adding["train"], old, ignore=skip)
    saved = restore_run(adding["train"], step=10)
    state = saved.state._replace(
        train=runs.first(saved.state.train), best=runs.first(saved.state.best)
    )
    ckpt = checkpointer(old / "checkpoints", saved.program.setup.task, 3)
    ckpt.save(state, {"mse": -float(saved.state.best.score[0])})
    ckpt.close()
    again = restore_run(old, step="latest")
    assert again.step == saved.step == 10
    for a, b in zip(jax.tree.leaves(again.state), jax.tree.leaves(saved.state), strict=True):
        np.testing.assert_array_equal(a, b)
    summary = train_and_evaluate(saved.config, old, progress=False)
    assert summary["resumed_from"] == 10
    recorded = (adding["train"] / "metrics.jsonl").read_text()
    assert (old / "metrics.jsonl").read_text() == recorded


@pytest.fixture(scope="module")
def seq2seq(tmp_path_factory):
    root = tmp_path_factory.mktemp("seq2seq")
    section = {"vmap": {"learning_rate": [3e-3, 1e-2]}, "grid": {}}
    return {
        "train": train_run("seq2seq_reversal:smoke", SEQ2SEQ, root / "train"),
        "sweep": sweep_run("seq2seq_reversal:smoke", SEQ2SEQ, root / "sweep", section),
    }


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["train", "sweep run 1", "best_run"])
def test_decode_reads_every_kind_of_seq2seq_run(seq2seq, kind, capsys):
    """Greedy decoding's exact match on the held-out set is the eval's."""
    workdir, run = {
        "train": (seq2seq["train"], None),
        "sweep run 1": (seq2seq["sweep"], 1),
        "best_run": (seq2seq["sweep"] / "best_run", None),
    }[kind]
    chosen = [f"--workdir={workdir}"] + ([f"--run={run}"] if run is not None else [])
    assert cli.main(["eval", *chosen]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert cli.main(["decode", *chosen, "--num-samples=1"]) == 0
    out = capsys.readouterr().out
    decoded = json.loads(out[out.index("\n{") + 1 :])
    assert decoded["step"] == evaluated["step"]
    assert decoded["exact_match"] == pytest.approx(evaluated["eval"]["exact_match"], abs=1e-6)
    assert cli.main(["predict", *chosen, "--source=abc"]) == 0
    assert "abc" in capsys.readouterr().out


# --- built once ----------------------------------------------------------------------


def test_a_sweep_builds_each_grid_points_task_and_model_once(tmp_path, monkeypatch):
    built = {"task": 0, "model": 0}

    def counting(name, original):
        def wrapper(*args, **kwargs):
            built[name] += 1
            return original(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(core, "build_task", counting("task", core.build_task))
    monkeypatch.setattr(core, "make_model", counting("model", core.make_model))
    runs._setup.cache_clear()
    runs._compile.cache_clear()
    section = {"vmap": {}, "grid": {"model": {"hidden_size": [3, 5, 7]}}}
    workdir = sweep_run("adding:smoke", [("training.num_steps", "10")], tmp_path / "s", section)
    assert len(json.loads((workdir / "summary.json").read_text())["points"]) == 3
    assert built == {"task": 3, "model": 3}


def test_the_program_cache_holds_at_most_its_bound():
    base = config_dict("adding:smoke", [])
    for hidden in range(2, 3 + 2 * runs.CACHED_PROGRAMS):
        base["model"]["hidden_size"] = hidden
        runs.compile_runs(from_config_dict(base), 2)
        assert runs._compile.cache_info().currsize <= runs.CACHED_PROGRAMS
        assert runs._setup.cache_info().currsize <= runs.CACHED_PROGRAMS
    assert runs._compile.cache_info().currsize == runs.CACHED_PROGRAMS


def test_the_reader_of_runs_does_not_import_the_sweep_layer():
    """``restore_run`` reads a sweep's run i through ``train.sweep_spec``: the
    train layer never imports the sweep layer above it."""
    code = (
        "import sys, recurrent_jax.train, recurrent_jax.train.eval_run; "
        "print(sorted(m for m in sys.modules if m.startswith('recurrent_jax.sweep')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
