"""Sweeps: the spec's syntax and errors, run i of a sweep against the solo
run, one compile per grid point, chunking, resume, and the command end to end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("ml_collections")
pytest.importorskip("orbax.checkpoint")

from recurrent_jax import cli  # noqa: E402
from recurrent_jax.sweep import (  # noqa: E402
    CompileCounter,
    enable_compilation_cache,
    parse_axis,
    parse_sweep,
    run_sweep,
)
from recurrent_jax.train import (  # noqa: E402
    config_files,
    core,
    rnn_model,
)
from recurrent_jax.train.checkpoint import Checkpointer  # noqa: E402
from recurrent_jax.train.config import (
    ConfigError,  # noqa: E402
    from_config_dict,  # noqa: E402
)
from recurrent_jax.train.loop import train_and_evaluate  # noqa: E402
from recurrent_jax.train.memory import choose_runs_per_call, estimate  # noqa: E402
from recurrent_jax.train.metrics import read_metrics  # noqa: E402
from recurrent_jax.train.runs import compile_runs, stack_hparams, stack_keys  # noqa: E402
from recurrent_jax.train.sweep_spec import apply_sweep_overrides  # noqa: E402


def sweep_config(sweep: dict, spec="adding:smoke", **overrides) -> dict:
    config = config_files.load_config(spec)
    config_files.apply_overrides(
        config, [(k.replace("__", "."), str(v)) for k, v in overrides.items()]
    )
    return {**config.to_dict(), "sweep": sweep}


def plan_of(sweep: dict, **overrides):
    return parse_sweep(sweep_config(sweep, **overrides))


# --- the spec --------------------------------------------------------------------


def test_axes_lists_log_linear_range():
    assert parse_axis("a", [3, 1.5, "x"]) == [3, 1.5, "x"]
    assert parse_axis("a", {"log": [1e-4, 1e-1], "num": 4}) == [1e-4, 1e-3, 1e-2, 1e-1]
    assert parse_axis("a", {"linear": [0.0, 0.3], "num": 4}) == [0.0, 0.1, 0.2, 0.3]
    assert parse_axis("a", {"range": [16, 64, 16]}) == [16, 32, 48]
    assert parse_axis("a", {"range": [3]}) == [0, 1, 2]
    assert parse_axis("a", {"range": [0.0, 0.3, 0.1]}) == [0.0, 0.1, 0.2]


@pytest.mark.parametrize(
    "axis, match",
    [
        ([], "at least one value"),
        (0.1, "expected a list"),
        ({"log": [0.0, 1.0], "num": 3}, "positive bounds"),
        ({"log": [1e-3, 1.0]}, "'num': n >= 1"),
        ({"linear": [0, 1], "num": 2, "step": 1}, "expected a list"),
        ({"range": [1, 2, 3, 4]}, r"\[start, stop, step\]"),
    ],
)
def test_axis_errors_name_the_key(axis, match):
    with pytest.raises(ConfigError, match=rf"config.sweep.vmap.learning_rate.*{match}"):
        plan_of({"vmap": {"learning_rate": axis}})


def test_crossed_and_zipped_axes_and_seeds():
    plan = plan_of(
        {
            "vmap": {"learning_rate": [1e-3, 1e-2], "clip_norm": [0.5, 1.0], "zoneout": [0.0, 0.1]},
            "zip": [["optimizer.learning_rate", "clip_norm"]],
            "seeds": [7, 9],
        }
    )
    assert plan.vmap == ("learning_rate", "clip_norm", "zoneout")
    assert len(plan.runs) == 2 * 2 * 2 and len(plan.points) == 1
    pairs = {(r.values["learning_rate"], r.values["clip_norm"]) for r in plan.runs}
    assert pairs == {(1e-3, 0.5), (1e-2, 1.0)}  # zipped, not crossed
    assert [r.seed for r in plan.runs[:2]] == [7, 9]  # seeds innermost
    assert [r.run_id for r in plan.runs] == list(range(8))
    run = plan.runs[3]
    assert run.config.optimizer.learning_rate == run.values["learning_rate"]
    assert run.config.model.zoneout == run.values["zoneout"]
    assert run.config.training.seed == run.seed
    # the compiled config turns zoneout on for every run of the point
    assert plan.points[0].config.model.zoneout == 0.1


def test_a_traced_hyperparameter_in_the_grid_zips_by_its_path():
    # one compiled point per (cell, learning rate) pair: a learning rate per arm
    plan = plan_of(
        {
            "grid": {
                "model": {"cell": ["lstm", "gru"]},
                "optimizer": {"learning_rate": [0.1, 0.01]},
            },
            "zip": [["model.cell", "optimizer.learning_rate"]],
            "seeds": [3, 4],
        }
    )
    assert plan.grid == ("model.cell", "optimizer.learning_rate") and len(plan.points) == 2
    pairs = {(r.config.model.cell, r.config.optimizer.learning_rate) for r in plan.runs}
    assert pairs == {("lstm", 0.1), ("gru", 0.01)}
    assert len(plan.runs) == 4


def test_grid_points_group_runs():
    plan = plan_of(
        {
            "grid": {"model": {"hidden_size": [4, 8], "cell": ["lstm", "gru"]}},
            "vmap": {"optimizer": {"learning_rate": {"log": [1e-3, 1e-2], "num": 2}}},
            "seeds": 2,
        },
        training__seed=5,
    )
    assert plan.grid == ("model.hidden_size", "model.cell")
    assert len(plan.points) == 4 and all(len(p.runs) == 4 for p in plan.points)
    for point in plan.points:
        assert point.config.model.hidden_size == point.grid["model.hidden_size"]
        assert {r.seed for r in point.runs} == {5, 6}
        assert all(r.config.model.cell == point.grid["model.cell"] for r in point.runs)


@pytest.mark.parametrize(
    "sweep, match",
    [
        (
            {"vmap": {"hidden_size": [4, 8]}},
            r"vmap.hidden_size: config.model.hidden_size is static",
        ),
        ({"vmap": {"model.cell": ["gru"]}}, r"is static .* put it in sweep.grid"),
        ({"vmap": {"optimizer.name": ["sgd"]}}, r"put it in sweep.grid: \{'optimizer'"),
        ({"vmap": {"lr": [0.1]}}, r"vmap.lr: unknown hyperparameter 'lr'; vmappable: \["),
        ({"grid": {"model": {"hiden_size": [4]}}}, r"grid.model.hiden_size: unknown key"),
        ({"grid": {"modle": {"hidden_size": [4]}}}, r"grid.modle: unknown section"),
        ({"grid": {"training": {"seed": [1, 2]}}}, r"use sweep.seeds"),
        ({"seeds": 0}, r"sweep.seeds: expected a count >= 1"),
        ({"seeds": [1, 1]}, r"sweep.seeds: expected distinct seeds"),
        ({"vmaps": {}}, r"config.sweep: unknown key\(s\) \['vmaps'\]"),
        ({"runs_per_call": -1}, r"sweep.runs_per_call: expected an int >= 0"),
        (
            {
                "vmap": {"learning_rate": [1, 2], "zoneout": [0.0]},
                "zip": [["learning_rate", "zoneout"]],
            },
            r"zip\[0\]: zipped axes need equal lengths",
        ),
        (
            {"vmap": {"learning_rate": [1, 2]}, "zip": [["learning_rate", "b1"]]},
            r"'b1' is not swept",
        ),
        ({"vmap": {"clip_norm": [0.0, 1.0]}}, r"vmap.clip_norm: 0 turns it off"),
        (
            {"vmap": {"weight_decay": [0.0, 1e-4]}},
            r"run 1 .*optimizer.weight_decay: expected 0 with adam",
        ),
        ({"vmap": {"zoneout": [0.5, 1.5]}}, r"run 1 .*config.model.zoneout: expected a rate"),
    ],
)
def test_spec_errors_name_the_key(sweep, match):
    with pytest.raises(ConfigError, match=match):
        plan_of(sweep)


def test_no_sweep_section_is_one_run():
    config = sweep_config({})
    del config["sweep"]
    plan = parse_sweep(config)
    assert len(plan.runs) == 1 and plan.runs[0].config == plan.base


def test_sweep_overrides_on_the_command_line():
    config = config_files.load_config("adding_sweep:smoke").to_dict()
    apply_sweep_overrides(
        config,
        [
            ("sweep.vmap.zoneout", "[0.0, 0.1]"),
            ("sweep.grid.model.hidden_size", "[4, 6]"),
            ("sweep.seeds", "[3, 4, 5]"),
            ("sweep.vmap.learning_rate", "{'log': [1e-3, 1e-1], 'num': 3}"),
        ],
    )
    plan = parse_sweep(config)
    assert plan.axes["zoneout"] == [0.0, 0.1] and plan.axes["model.hidden_size"] == [4, 6]
    assert plan.axes["learning_rate"] == [1e-3, 1e-2, 1e-1] and plan.seeds == (3, 4, 5)
    assert len(plan.runs) == 2 * 2 * 3 * 2 * 3


# --- hyperparameters -------------------------------------------------------------


def test_vmapping_a_hyperparameter_of_another_model_kind_is_an_error():
    with pytest.raises(ConfigError, match="config.model.sampling_prob: applies to model.kind"):
        plan_of({"vmap": {"sampling_prob": [0.0, 0.5]}})


def test_sgd_momentum_vmapped_equals_solo_runs():
    """``momentum``, one row of the hyperparameter table: a vmapped SGD
    momentum against make_train of each run alone."""
    plan = plan_of({"vmap": {"momentum": [0.0, 0.9]}}, optimizer__name="sgd")
    point = plan.points[0]
    hparams = stack_hparams([r.config for r in point.runs], plan.vmap)
    np.testing.assert_array_equal(hparams.momentum, np.float32([0.0, 0.9]))
    assert core.default_hparams(plan.base).momentum is None  # compiled in unless swept
    keys = stack_keys([r.seed for r in point.runs])
    states, _ = compile_runs(point.config, len(point.runs)).train(hparams, keys)
    finals = []
    for i, run in enumerate(point.runs):
        want, _ = jax.jit(core.make_train(run.config))(core.default_hparams(run.config), keys[i])
        got = jax.tree_util.tree_map(lambda a, i=i: a[i], states.params)
        chex.assert_trees_all_close(got, want.params, rtol=2e-5, atol=2e-6)
        finals.append(want.params)
    assert not np.allclose(finals[0]["readout"]["w"], finals[1]["readout"]["w"])


def test_new_hparams_default_to_the_config():
    plan = plan_of({"vmap": {"b1": [0.8, 0.9], "forget_bias": [0.0, 2.0]}})
    solo = core.default_hparams(plan.base)
    assert solo.b1 is None and solo.b2 is None and solo.eps is None  # compiled in
    assert float(solo.forget_bias) == 1.0
    assert solo.sampling_prob is None  # a seq2seq model's: an RNN model has none
    hparams = stack_hparams([r.config for r in plan.runs], plan.vmap)
    np.testing.assert_array_equal(hparams.b1, np.float32([0.8, 0.8, 0.9, 0.9]))
    np.testing.assert_array_equal(hparams.forget_bias, np.float32([0.0, 2.0, 0.0, 2.0]))
    assert hparams.b2 is None


def test_forget_bias_shifts_only_the_lstm_forget_gate():
    config = plan_of({}).base
    task = core.build_task(config)
    key = jax.random.key(0)
    base = core.default_hparams(config)
    same = core.init_state(core.make_setup(config, task), base, key).params
    # the oracle: the LSTM constructor's own default forget bias (a Python 1.0)
    library_default = base._replace(forget_bias=1.0)
    plain = rnn_model.init(config.model, task, library_default, core.run_keys(key).init)
    for a, b in zip(jax.tree_util.tree_leaves(same), jax.tree_util.tree_leaves(plain), strict=True):
        np.testing.assert_array_equal(a, b)  # the default: bit-identical
    shifted = core.init_state(
        core.make_setup(config, task), base._replace(forget_bias=jnp.float32(3.0)), key
    )
    hidden = config.model.hidden_size
    delta = shifted.params["rnn"]["layer_0"]["b_ih"] - plain["rnn"]["layer_0"]["b_ih"]
    np.testing.assert_allclose(delta[hidden : 2 * hidden], 2.0, rtol=1e-6)
    np.testing.assert_array_equal(np.delete(np.asarray(delta), np.s_[hidden : 2 * hidden]), 0.0)
    np.testing.assert_array_equal(
        shifted.params["rnn"]["layer_0"]["b_hh"], plain["rnn"]["layer_0"]["b_hh"]
    )


def test_forget_bias_reaches_a_seq2seq_models_encoder_and_decoder():
    config = from_config_dict(config_files.load_config("seq2seq_addition:smoke"))
    task, key = core.build_task(config), jax.random.key(0)
    base = core.default_hparams(config)
    plain = core.init_state(core.make_setup(config, task), base, key).params
    shifted = core.init_state(
        core.make_setup(config, task), base._replace(forget_bias=jnp.float32(-1.0)), key
    )
    hidden = config.model.hidden_size
    changed = []
    for (path, a), b in zip(
        jax.tree_util.tree_leaves_with_path(shifted.params),
        jax.tree_util.tree_leaves(plain),
        strict=True,
    ):
        delta = np.asarray(a) - np.asarray(b)
        if delta.any():
            changed.append(jax.tree_util.keystr(path))
            np.testing.assert_allclose(delta[hidden : 2 * hidden], -2.0, rtol=1e-6)
            np.testing.assert_array_equal(np.delete(delta, np.s_[hidden : 2 * hidden]), 0.0)
    assert changed == [
        "['decoder']['cells']['layer_0']['b_ih']",
        "['encoder']['layer_0']['backward']['b_ih']",
        "['encoder']['layer_0']['forward']['b_ih']",
    ]


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"model.cell": "gru", "model.forget_bias": 0.0}, "config.model.forget_bias: expected"),
        ({"model.sampling_prob": 0.5}, r"config.model: unknown key\(s\) \['sampling_prob'\]"),
    ],
)
def test_a_hyperparameter_of_another_model_is_an_error(overrides, message):
    config = config_files.load_config("adding:smoke")
    with pytest.raises(ConfigError, match=message):
        config_files.apply_overrides(config, [(k, str(v)) for k, v in overrides.items()])
        from_config_dict(config)


def test_runs_per_call_from_memory():
    config = plan_of({}).base
    need = estimate(core.make_setup(config), core.default_hparams(config))
    per_run = need.state + need.step  # what a sweep sizes its calls by
    assert 10_000 < per_run < 10_000_000
    assert choose_runs_per_call(64, per_run, 2**40) == 64
    assert choose_runs_per_call(64, 1000, 16_000) == 8  # half of the free memory
    assert choose_runs_per_call(64, 10**9, 1000) == 1


def test_compilation_cache_is_turned_on(tmp_path):
    previous = jax.config.jax_compilation_cache_dir
    try:
        jax.config.update("jax_compilation_cache_dir", None)
        assert enable_compilation_cache(tmp_path / "cache") == tmp_path / "cache"
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / "cache")
    finally:
        from jax.experimental.compilation_cache import compilation_cache

        jax.config.update("jax_compilation_cache_dir", previous)
        compilation_cache.reset_cache()


# --- run i equals the solo run; one compile per grid point -------------------------

# Dropout compiled in, so masks and data order both matter.
DROPOUT = dict(model__input_dropout=0.1, model__recurrent_dropout=0.1)
LR_SEEDS = {"vmap": {"learning_rate": [3e-3, 3e-2]}, "seeds": [0, 1]}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("sweep")
    plan = plan_of(LR_SEEDS, **DROPOUT)
    with CompileCounter() as compiles:
        summary = run_sweep(plan, workdir, progress=False)
    return plan, workdir, summary, compiles


def test_sweep_compiles_each_stage_once(uninterrupted):
    plan, _, summary, compiles = uninterrupted
    assert summary["status"] == "completed" and summary["num_runs"] == 4
    for stage in ("runs_init", "runs_steps", "runs_evaluate"):
        assert compiles.count(stage) == 1, compiles.names


def _by_step(records, run_id=None):
    return {
        (r["step"], r["split"]): {
            k: v for k, v in r.items() if k not in ("run_id", "step", "split")
        }
        for r in records
        if run_id is None or r["run_id"] == run_id
    }


def test_run_i_equals_the_solo_run(uninterrupted, tmp_path):
    """The sweep contract: run i of a vmapped grid point writes the records
    of the solo run of its config, every metric of every step and eval to
    fp32 tolerance. Both go through the one ``RunLoop``: what differs is the
    vmap over runs alone."""
    plan, workdir, _, _ = uninterrupted
    records = read_metrics(workdir)
    for run in (plan.runs[1], plan.runs[2]):  # different learning rates and seeds
        solo_dir = tmp_path / f"solo-{run.run_id}"
        train_and_evaluate(run.config, solo_dir, progress=False)
        want, got = _by_step(read_metrics(solo_dir)), _by_step(records, run.run_id)
        assert got.keys() == want.keys()
        for step in want:
            for name, value in want[step].items():
                np.testing.assert_allclose(got[step][name], value, rtol=2e-5, atol=1e-6)
    # different learning rates and seeds did differ
    finals = [r for r in records if r["step"] == 30 and r["split"] == "eval"]
    assert len({r["mse"] for r in finals}) == 4


def test_summaries_and_legends_show_values_in_a_short_form(uninterrupted):
    from recurrent_jax.sweep.report import format_sweep_summary, short

    _, _, summary, _ = uninterrupted
    long = float(np.geomspace(1e-3, 1e-1, 4)[1])  # 0.00464158883361...
    best = dict(summary["best"], learning_rate=long)
    text = format_sweep_summary(dict(summary, best=best))
    assert "learning_rate=0.004642" in text and repr(long) not in text
    assert [short(v) for v in (long, 3, "lstm", 1e-5)] == ["0.004642", "3", "lstm", "1e-05"]


def test_best_run_is_a_run_directory(uninterrupted, capsys):
    plan, workdir, summary, _ = uninterrupted
    best = summary["best"]
    saved = json.loads((workdir / "best_run" / "best.json").read_text())
    assert saved["run_id"] == best["run_id"] and saved["step"] == best["best_step"]
    assert cli.main(["eval", f"--workdir={workdir / 'best_run'}"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["step"] == best["best_step"]
    assert report["eval"]["mse"] == pytest.approx(best["best_mse"], rel=1e-5)


@pytest.mark.parametrize("how", ["flag", "keyboard"])
def test_resume_equals_uninterrupted(uninterrupted, tmp_path, how):
    plan, full_dir, _, _ = uninterrupted

    def stop(step):
        if step == 10 and how == "keyboard":
            raise KeyboardInterrupt
        return step == 10

    first = run_sweep(plan, tmp_path, progress=False, should_stop=stop)
    assert first["status"] == "interrupted"
    assert {r["step"] for r in read_metrics(tmp_path)} == {0, 10}
    second = run_sweep(plan, tmp_path, progress=False)
    assert second["status"] == "completed"
    for name in ("metrics.jsonl", "runs.csv", "runs.md"):
        assert (tmp_path / name).read_text() == (full_dir / name).read_text(), name
    got, want = _latest_state(tmp_path), _latest_state(full_dir)
    for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want), strict=True):
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w))


def test_a_damaged_latest_checkpoint_is_moved_aside_and_the_sweep_resumes(uninterrupted, tmp_path):
    plan, full_dir, _, _ = uninterrupted
    copy = tmp_path / "sweep"
    shutil.copytree(full_dir, copy)
    (copy / "summary.json").unlink()  # a crash before the end: there is a sweep to resume
    points = copy / "checkpoints" / "point-0"
    latest = max(int(p.name) for p in points.iterdir())
    for path in (points / str(latest)).rglob("*"):
        if path.is_file() and path.parent.name == "d":
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    summary = run_sweep(plan, copy, progress=False)
    assert summary["status"] == "completed"
    assert summary["points"][0]["resumed_from"] < latest
    moved = list((copy / "checkpoints" / "point-0.corrupt").iterdir())
    assert [p.name.split("-")[0] for p in moved] == [str(latest)]
    for name in ("metrics.jsonl", "runs.csv", "runs.md"):
        assert (copy / name).read_text() == (full_dir / name).read_text(), name


@pytest.mark.parametrize("best_json", [b'{"run_id": 3, "sco', b'{"score": "high"}'])
def test_a_best_record_that_cannot_be_read_is_rebuilt_on_resume(uninterrupted, tmp_path, best_json):
    """``best_run/best.json`` cut short by a crash (or edited): on resume
    every grid point offers its best again, so the best run comes back as
    the uninterrupted sweep's."""
    plan, full_dir, _, _ = uninterrupted
    copy = tmp_path / "sweep"
    shutil.copytree(full_dir, copy)
    (copy / "summary.json").unlink()  # a crash before the end: there is a sweep to resume
    (copy / "best_run" / "best.json").write_bytes(best_json)
    summary = run_sweep(plan, copy, progress=False)
    assert summary["status"] == "completed"
    for name in ("best_run/best.json", "runs.csv", "metrics.jsonl"):
        assert (copy / name).read_text() == (full_dir / name).read_text(), name
    assert summary["best"] == json.loads((full_dir / "summary.json").read_text())["best"]
    steps = lambda d: sorted(p.name for p in (d / "best_run" / "checkpoints").iterdir())  # noqa: E731
    assert steps(copy) == steps(full_dir)


def _latest_state(workdir: Path):
    ckpt = Checkpointer(
        workdir / "checkpoints" / "point-0", keep=2, primary_metric="mse", higher_is_better=False
    )
    step = ckpt.latest_step()
    restored = ckpt.manager.restore(step)
    ckpt.close()
    return restored


def test_a_workdir_holding_another_sweep_is_refused(uninterrupted):
    _, full_dir, _, _ = uninterrupted
    other = plan_of({**LR_SEEDS, "seeds": [0, 2]}, **DROPOUT)
    with pytest.raises(ValueError, match="holds a different sweep"):
        run_sweep(other, full_dir, progress=False)


@pytest.mark.slow
def test_whole_runs_equal_solo_train_with_chunks_and_new_hparams():
    """``Program.train`` of N runs (vmap, and lax.map over chunks of 3) against
    ``make_train`` alone, sweeping hyperparameters added for sweeps."""
    plan = plan_of(
        {"vmap": {"forget_bias": [0.0, 2.0], "b1": [0.8, 0.9], "zoneout": [0.0, 0.2]}},
        model__input_dropout=0.1,
    )
    point = plan.points[0]
    hparams = stack_hparams([r.config for r in point.runs], plan.vmap)
    keys = stack_keys([r.seed + r.run_id for r in point.runs])
    n = len(point.runs)
    states, metrics = compile_runs(point.config, n).train(hparams, keys)
    chunked, _ = compile_runs(point.config, n, runs_per_call=3).train(hparams, keys)
    # two runs differing in every swept value (each solo config compiles anew)
    for i, run in ((0, point.runs[0]), (7, point.runs[7])):
        train = jax.jit(core.make_train(run.config))
        want = train(core.default_hparams(run.config, plan.vmap), keys[i])
        got = jax.tree_util.tree_map(lambda a, i=i: a[i], (states, metrics))
        for g, w in zip(
            jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want), strict=True
        ):
            np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-6)
    for g, w in zip(
        jax.tree_util.tree_leaves(chunked), jax.tree_util.tree_leaves(states), strict=True
    ):
        np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-6)


# --- the command -------------------------------------------------------------------


def test_sweep_command_end_to_end(tmp_path, capsys):
    """A 2-axis (learning rate × forget bias) × 2 seeds sweep."""
    workdir = tmp_path / "sweep"
    args = [
        "sweep",
        "--config=adding_sweep:smoke",
        f"--workdir={workdir}",
        "--no-progress",
        "--compilation-cache=none",
    ]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "8 runs, 8 per vmapped call" in out and "completed; 8 runs" in out
    rows = (workdir / "runs.csv").read_text().splitlines()
    assert rows[0].startswith("run_id,point,seed,forget_bias,learning_rate,status,")
    assert len(rows) == 9 and "best_mse" in rows[0]
    assert (workdir / "runs.md").read_text().count("\n") == 10
    records = read_metrics(workdir)
    assert {r["run_id"] for r in records} == set(range(8))
    assert len([r for r in records if r["split"] == "eval"]) == 8 * 4
    for name in (
        "final_mse_vs_learning_rate.png",
        "final_mse_vs_forget_bias.png",
        "curves_by_learning_rate.png",
        "curves_by_forget_bias.png",
        "heatmap_forget_bias_learning_rate.png",
    ):
        path = workdir / name
        assert path.stat().st_size > 1000 and path.read_bytes()[:4] == b"\x89PNG", name
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["counts"]["completed"] == 8
    # --workdir alone finds it complete; a runs-per-call override is not a new sweep
    assert (
        cli.main(["sweep", f"--workdir={workdir}", "--no-progress", "--sweep.runs_per_call=8"]) == 0
    )
    assert len(read_metrics(workdir)) == len(records)


def test_sweep_command_errors_exit_2(capsys):
    code = cli.main(["sweep", "--config=adding:smoke", "--config.sweep.vmap.hidden_size=[4,8]"])
    assert code == 2
    assert "put it in sweep.grid" in capsys.readouterr().err
    assert cli.main(["sweep"]) == 2
