"""Training: every config's smoke variant end to end, resume bit-identical,
vmap over hyperparameters, divergence and checkpoint errors."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import DOWNLOADED_CONFIGS, auto_backend_for_plain_cells

pytest.importorskip("ml_collections")
pytest.importorskip("orbax.checkpoint")

from recurrent_jax.train import (  # noqa: E402
    config_files,  # noqa: E402
    core,
    from_config_dict,
    make_train,
)
from recurrent_jax.train.checkpoint import CheckpointError, checkpointer  # noqa: E402
from recurrent_jax.train.loop import TrainingDiverged, train_and_evaluate  # noqa: E402
from recurrent_jax.train.metrics import read_metrics  # noqa: E402
from recurrent_jax.train.runs import compile_runs, stack_hparams, stack_keys  # noqa: E402
from recurrent_jax.train.summary import format_run_summary  # noqa: E402

CONFIGS = sorted(p.stem for p in (Path(__file__).parents[1] / "configs").glob("*.py"))
NEEDS = {"digits": "sklearn", "japanese_vowels": "aeon", "airline": "aeon"}


def experiment(spec="adding:smoke", **overrides):
    config = config_files.load_config(spec)
    config_files.apply_overrides(
        config, [(k.replace("__", "."), str(v)) for k, v in overrides.items()]
    )
    return from_config_dict(config)


def is_png(path: Path) -> bool:
    return path.stat().st_size > 1000 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("name", sorted(set(CONFIGS) - DOWNLOADED_CONFIGS))
def test_smoke_config_trains_end_to_end(name, tmp_path):
    if name in NEEDS:
        pytest.importorskip(NEEDS[name])
    config = experiment(f"{name}:smoke")
    summary = train_and_evaluate(config, tmp_path, progress=False)
    assert summary["status"] == "completed"
    assert summary["step"] == config.training.num_steps
    records = read_metrics(tmp_path)
    splits = {(r["step"], r["split"]) for r in records}
    chunk = config.training.steps_per_call
    for step in range(chunk, config.training.num_steps + 1, chunk):
        assert (step, "train") in splits
    assert (0, "eval") in splits and (config.training.num_steps, "eval") in splits
    assert all(np.isfinite(r["loss"]) for r in records)
    assert is_png(tmp_path / "learning_curves.png")
    if config.model.KIND == "seq2seq":  # its task picture: the attention maps
        assert is_png(tmp_path / "plots" / f"attention_step_{config.training.num_steps:06d}.png")
    else:
        assert is_png(tmp_path / "predictions.png")
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["final_eval"][saved["primary_metric"]] is not None
    try:
        import tensorboardX  # noqa: F401

        assert any((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    except ImportError:
        pass
    relaunch = from_config_dict(json.loads((tmp_path / "config.json").read_text()))
    assert relaunch == config
    if name == "char_lm":
        samples = (tmp_path / "samples.txt").read_text()
        assert saved["samples"] == "samples.txt" and samples.count("--- temperature") == 3
        # each temperature draws its own samples: one shared key made the 0.8
        # and 1.0 texts agree at most positions; independent draws rarely do
        warm, hot = (s.split("---\n", 1)[1] for s in samples.split("--- temperature ")[2:])
        agree = sum(a == b for a, b in zip(warm, hot, strict=False)) / min(len(warm), len(hot))
        assert agree < 0.5, agree


def _checkpoint_state(workdir: Path, config):
    program = compile_runs(config)
    like = jax.eval_shape(program.init, stack_hparams([config]), stack_keys([0]))
    ckpt = checkpointer(workdir / "checkpoints", program.setup.task, 5)
    state = ckpt.restore(ckpt.latest_step(), like)
    ckpt.close()
    return state


def _stop_at(step, how):
    def should_stop(current):
        if current != step:
            return False
        if how == "keyboard":
            raise KeyboardInterrupt
        if how == "sigterm":
            os.kill(os.getpid(), signal.SIGTERM)
            return False
        return True

    return should_stop


# Host-side changes only: shares the compiled stages of adding:smoke.
RESUMABLE = dict(training__eval_every=20, training__keep_checkpoints=1)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("full")
    config = experiment(**RESUMABLE)
    train_and_evaluate(config, workdir, progress=False)
    return workdir, config


@pytest.mark.parametrize("how", ["flag", "keyboard", "sigterm"])
def test_resume_is_bit_identical(uninterrupted, tmp_path, how):
    full_dir, config = uninterrupted
    first = train_and_evaluate(config, tmp_path, progress=False, should_stop=_stop_at(10, how))
    assert first["status"] == "interrupted"
    stopped_at = 20 if how == "sigterm" else 10  # SIGTERM is seen after the next chunk
    assert first["step"] == stopped_at
    second = train_and_evaluate(config, tmp_path, progress=False)
    assert second["status"] == "completed" and second["step"] == 30
    assert (tmp_path / "metrics.jsonl").read_text() == (full_dir / "metrics.jsonl").read_text()
    got, want = _checkpoint_state(tmp_path, config), _checkpoint_state(full_dir, config)
    for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want), strict=True):
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w))
    assert second["best_step"] == json.loads((full_dir / "summary.json").read_text())["best_step"]
    # The summaries label each reported evaluation with its step.
    last_eval = 20 if stopped_at == 20 else 0  # evaluations every 20 steps
    want = f"latest eval mse: {first['final_eval']['mse']:.5g} (step {last_eval})"
    assert want in format_run_summary(first)
    assert "resumed" not in format_run_summary(first)
    text = format_run_summary(second)
    assert f"resumed from step {stopped_at}" in text and "final eval mse:" in text
    assert "(step 30)" in text


def test_completed_run_is_not_retrained(uninterrupted, tmp_path):
    full_dir, config = uninterrupted
    copy = tmp_path / "run"
    shutil.copytree(full_dir, copy)
    summary = train_and_evaluate(config, copy, progress=False)
    assert summary["status"] == "completed"
    assert (copy / "metrics.jsonl").read_text() == (full_dir / "metrics.jsonl").read_text()


def test_workdir_with_other_config_is_refused(uninterrupted):
    full_dir, config = uninterrupted
    other = experiment(**RESUMABLE, model__hidden_size=5)
    with pytest.raises(
        ValueError, match=r"holds a different run \(differs at \['model.hidden_size'\]\)"
    ):
        train_and_evaluate(other, full_dir, progress=False)


def test_a_damaged_only_checkpoint_is_a_clear_error(uninterrupted, tmp_path):
    full_dir, config = uninterrupted
    copy = tmp_path / "run"
    shutil.copytree(full_dir, copy)
    (copy / "summary.json").unlink()  # a crash before the end: there is a run to resume
    for step_dir in (copy / "checkpoints").iterdir():  # every checkpoint: nothing to fall back on
        for path in (step_dir / "default").rglob("*"):
            if path.is_file() and path.parent.name == "d":
                path.write_bytes(b"garbage")
    before = sorted(p.name for p in (copy / "checkpoints").iterdir())
    with pytest.raises(CheckpointError, match=r"could not be restored.*Nothing was deleted"):
        train_and_evaluate(config, copy, progress=False)
    assert sorted(p.name for p in (copy / "checkpoints").iterdir()) == before
    assert not (copy / "checkpoints.corrupt").exists()


@pytest.fixture(scope="module")
def three_checkpoints(tmp_path_factory):
    """A finished run with checkpoints at steps 10, 20 and 30."""
    workdir = tmp_path_factory.mktemp("three")
    config = experiment(training__eval_every=10, training__keep_checkpoints=3)
    train_and_evaluate(config, workdir, progress=False)
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["10", "20", "30"]
    return workdir, config


def _truncate(files):
    for path in files:
        if path.is_file() and path.stat().st_size > 4:
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("part", ["arrays", "metadata"])
def test_a_damaged_latest_checkpoint_is_moved_aside_and_the_run_resumes(
    three_checkpoints, tmp_path, part
):
    full_dir, config = three_checkpoints
    copy = tmp_path / "run"
    shutil.copytree(full_dir, copy)
    # As after a crash mid-run: no summary, the latest checkpoint damaged,
    # the records past the one before it to be written again.
    (copy / "summary.json").unlink()
    latest = copy / "checkpoints" / "30"
    if part == "arrays":
        _truncate(p for p in latest.rglob("*") if p.parent.name == "d")
    else:
        _truncate([latest / "metrics" / "metrics", latest / "_CHECKPOINT_METADATA"])
    records = (copy / "metrics.jsonl").read_text().splitlines(keepends=True)
    (copy / "metrics.jsonl").write_text("".join(records[:-1]) + records[-1][:7])  # cut mid-line
    notices = []
    summary = train_and_evaluate(config, copy, progress=False, log=notices.append)
    assert summary["status"] == "completed" and summary["resumed_from"] == 20
    assert len(notices) == 1 and notices[0].startswith("checkpoint 30 could not be")
    moved = list((copy / "checkpoints.corrupt").iterdir())
    assert [p.name.split("-")[0] for p in moved] == ["30"] and str(moved[0]) in notices[0]
    assert (copy / "metrics.jsonl").read_text() == (full_dir / "metrics.jsonl").read_text()
    got, want = _checkpoint_state(copy, config), _checkpoint_state(full_dir, config)
    for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want), strict=True):
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w))


def test_a_run_stopped_before_its_first_checkpoint_writes_each_record_once(
    three_checkpoints, tmp_path
):
    full_dir, config = three_checkpoints
    copy = tmp_path / "run"
    shutil.copytree(full_dir, copy)
    shutil.rmtree(copy / "checkpoints")  # killed before any checkpoint was saved
    (copy / "summary.json").unlink()
    train_and_evaluate(config, copy, progress=False)
    assert (copy / "metrics.jsonl").read_text() == (full_dir / "metrics.jsonl").read_text()


def test_incompatible_checkpoint_is_a_clear_error(uninterrupted):
    full_dir, config = uninterrupted
    program = compile_runs(config)
    like = jax.eval_shape(program.init, stack_hparams([config]), stack_keys([0]))
    wider = jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape + (2,)), like.train.params)
    like = like._replace(train=like.train._replace(params=wider))
    ckpt = checkpointer(full_dir / "checkpoints", program.setup.task, 5)
    with pytest.raises(CheckpointError):
        ckpt.restore(ckpt.latest_step(), like)


def test_divergence_names_the_step_and_checkpoint(tmp_path):
    config = experiment(optimizer__learning_rate=1e20)  # a traced value: no new compile
    with pytest.raises(TrainingDiverged, match=r"became NaN/Inf at step \d+; no checkpoint"):
        train_and_evaluate(config, tmp_path, progress=False)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "diverged"


def test_static_config_ignores_traced_and_host_values():
    a = experiment(optimizer__learning_rate=0.5, model__init_scale=2.0, training__seed=4)
    assert core.static_config(a) == core.static_config(experiment())
    b = experiment(optimizer__clip_norm=0.0)
    assert core.static_config(b) != core.static_config(experiment())


def _solo_run(config, hparams, key):
    """A run through the host loop's compiled stages (a run axis of 1)."""
    program = compile_runs(config)
    hparams, key = jax.tree_util.tree_map(lambda a: a[None], (hparams, key))
    state = program.init(hparams, key)
    chunks = []
    for _ in range(config.training.num_steps // config.training.steps_per_call):
        state, metrics = program.run_steps(hparams, key, state)
        chunks.append(metrics)
    train = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *chunks)
    evals = program.evaluate(hparams, key, state, program.eval_batch(key[0]))[0]
    one = lambda a: a[0] if a.ndim == 1 else a[:, 0]  # noqa: E731
    return state.train.params, jax.tree_util.tree_map(one, {"train": train, "eval": evals})


def test_vmap_over_learning_rates_equals_solo_runs():
    """Run i of ``vmap(train)`` equals a solo run of the host loop's stages."""
    config = experiment()
    base = core.default_hparams(config)
    rates = jnp.array([1e-3, 3e-2], jnp.float32)
    axes = core.HParams(*(0 if f == "learning_rate" else None for f in core.HParams._fields))
    key = jax.random.key(3)
    train = jax.vmap(make_train(config), in_axes=(axes, None))
    jit = jax.jit(train, compiler_options=core.compiler_options(config))
    states, metrics = jit(base._replace(learning_rate=rates), key)
    for i, rate in enumerate(rates):
        want = _solo_run(config, base._replace(learning_rate=rate), key)
        got = jax.tree_util.tree_map(lambda a, i=i: a[i], (states.params, metrics))
        want = (jax.tree_util.tree_map(lambda a: a[0], want[0]), want[1])
        for g, w in zip(
            jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want), strict=True
        ):
            np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=2e-5, atol=1e-6)
    assert not np.allclose(states.params["readout"]["w"][0], states.params["readout"]["w"][1])


def test_greedy_generation_equals_argmax_of_the_full_sequence(tmp_path):
    """Step-by-step generation (carry passed between calls) against one
    teacher-forced pass over the generated text."""
    from recurrent_jax.data.base import one_hot
    from recurrent_jax.train import generate
    from recurrent_jax.train.rnn_model import make_network

    config = experiment("char_lm:smoke")
    setup = core.make_setup(config)
    vocab = setup.task.output_size
    hparams = core.default_hparams(config)
    params = core.init_state(setup, hparams, jax.random.PRNGKey(3)).params
    ids = generate.generate(config.model, params, 2, jax.random.PRNGKey(0), 12, vocab, 0.0)
    inputs = jnp.asarray([2, *np.asarray(ids)[:-1]])
    network = make_network(config.model)
    _, ys = network.apply(params["rnn"], one_hot(inputs, vocab)[None], deterministic=True)
    logits = ys[0] @ params["readout"]["w"] + params["readout"]["b"][None]
    np.testing.assert_array_equal(np.asarray(ids), np.argmax(np.asarray(logits), -1))


def _train_params(config):
    train = jax.jit(make_train(config), compiler_options=core.compiler_options(config))
    state, metrics = train(core.default_hparams(config), jax.random.key(0))
    assert np.all(np.isfinite(np.asarray(metrics["train"]["loss"])))
    return state.params


@pytest.mark.parametrize("cell", ["mingru", "minlstm", "lru", "rglru", "s4d", "s5", "linoss"])
def test_parallel_cell_trains_from_a_config(cell):
    _train_params(experiment(model__cell=cell, model__engine__impl="associative"))


# Each state-space cell on each long-range task and sequential digits; the
# default run keeps one task per cell.
STATE_SPACE_RUNS = [
    (cell, config)
    if (cell, config) in {("s4d", "copy"), ("s5", "digits"), ("linoss", "adding")}
    else pytest.param(cell, config, marks=pytest.mark.slow)
    for cell in ("s4d", "s5", "linoss")
    for config in ("adding", "copy", "digits")
]


@pytest.mark.parametrize("cell, config", STATE_SPACE_RUNS)
def test_state_space_cells_train_from_the_configs(cell, config, tmp_path):
    """``model.cell`` set to a state-space cell trains the config's smoke
    variant end to end (the model builder, readout and evaluation take it)."""
    if config in NEEDS:
        pytest.importorskip(NEEDS[config])
    run = experiment(f"{config}:smoke", model__cell=cell)
    summary = train_and_evaluate(run, tmp_path, progress=False)
    assert summary["status"] == "completed" and summary["step"] == run.training.num_steps
    assert all(np.isfinite(r["loss"]) for r in read_metrics(tmp_path))


SLOW = pytest.mark.slow


@pytest.mark.parametrize(
    "spec, overrides",
    [
        ("adding:smoke", dict(model__cell="s6")),  # auto: the selective scan
        ("adding:smoke", dict(model__cell="s6", model__engine__impl="scan")),
        pytest.param(
            "copy:smoke", dict(model__cell="s6", model__engine__impl="chunked"), marks=SLOW
        ),
        pytest.param("digits:smoke", dict(model__cell="s6"), marks=SLOW),
        ("adding:smoke", dict(model__cell="mamba", model__engine__impl="associative")),
        ("copy:smoke", dict(model__cell="mamba", model__num_layers=2, model__residual=True)),
        pytest.param("digits:smoke", dict(model__cell="mamba"), marks=SLOW),
    ],
    ids=str,
)
def test_selective_ssm_trains_from_a_config(spec, overrides):
    """``model.cell`` "s6" (stacked cells) and "mamba" (stacked blocks)
    train on the long-range tasks and sequential digits, on any backend."""
    if spec.startswith("digits"):
        pytest.importorskip("sklearn")
    before = _init_params(experiment(spec, **overrides))
    after = jax.tree_util.tree_leaves(_train_params(experiment(spec, **overrides)))
    moved = [
        np.abs(np.asarray(a) - np.asarray(b)).max() for a, b in zip(after, before, strict=True)
    ]
    assert min(moved) > 0  # every parameter was trained


def _init_params(config):
    setup = core.make_setup(config)
    state = core.init_state(setup, core.default_hparams(config), jax.random.key(0))
    return jax.tree_util.tree_leaves(state.params)


def test_parallel_impls_train_like_the_sequential_scan():
    """minGRU trained with ``impl="chunked"`` ends at the parameters of
    ``impl="scan"``."""
    want = _train_params(experiment(model__cell="mingru", model__engine__impl="scan"))
    got = _train_params(experiment(model__cell="mingru", model__engine__impl="chunked"))
    for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want), strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-4, atol=1e-5)


def test_config_engine_reaches_the_network():
    """``model.engine`` set by a command-line override reaches the compiled
    training step: ``remat`` bounds its activation memory (T = 1024, √T-long
    segments: expect ≈ 16× less temp memory; asserted at least 4×), and the
    chosen backend is the one named in the step's profile scopes."""

    def lowered(**overrides):
        config = experiment(
            data__seq_len=1024, data__batch_size=4, model__hidden_size=32, **overrides
        )
        setup = core.make_setup(config)
        hparams = core.default_hparams(config)
        state = core.init_state(setup, hparams, jax.random.PRNGKey(0))
        step = lambda s: core.train_step(setup, hparams, jax.random.PRNGKey(1), s)
        return jax.jit(step).lower(state)

    def temp_bytes(lowered):
        return lowered.compile().memory_analysis().temp_size_in_bytes

    plain, segmented = lowered(), lowered(model__engine__remat=32)
    assert temp_bytes(segmented) * 4 < temp_bytes(plain)
    scan = lowered(model__engine__impl="scan").as_text(debug_info=True)
    assert "recurrent_jax.scan" in scan and "recurrent_jax.fused" not in scan
    assert f"recurrent_jax.{auto_backend_for_plain_cells()}" in plain.as_text(debug_info=True)


def test_processes_probing_one_workdir_do_not_trip_each_other(tmp_path):
    # Every process of a multi-process sweep checks that the shared workdir is
    # writable at the same moment; a shared probe file let one delete
    # another's. Threads here stand in for the processes.
    from concurrent.futures import ThreadPoolExecutor

    from recurrent_jax.train.rundir import make_workdir

    workdir = tmp_path / "shared"
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: make_workdir(workdir), range(400)))
    assert results == [workdir] * 400
    assert list(workdir.iterdir()) == []  # no probe left behind
