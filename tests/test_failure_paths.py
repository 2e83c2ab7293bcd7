"""Each path that handles a failure, made to happen: every way out of a
run or a sweep (completed, interrupted, diverged, raised, Ctrl-C, a
refused config, a failed write) releases its lock and the signal
handlers; several damaged checkpoints are all moved aside; a rewrite of
the metrics cut short keeps the old file; a summary that cannot be read
is written again; a damaged lock, config or process checkpoint (a pickle
in it never runs) is one line or moved aside; a SIGTERM that the process
cannot act on (a blocked call, or compiling), or a second one, ends it."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("ml_collections")
pytest.importorskip("orbax.checkpoint")

from recurrent_jax import cli  # noqa: E402
from recurrent_jax.sweep import parse_sweep, run_sweep  # noqa: E402
from recurrent_jax.train import config_files, from_config_dict, rundir  # noqa: E402
from recurrent_jax.train import summary as summary_module  # noqa: E402
from recurrent_jax.train.checkpoint import (  # noqa: E402
    CheckpointError,
    ProcessCheckpointer,
    checkpointer,
    restore_newest,
)
from recurrent_jax.train.config import ConfigError  # noqa: E402
from recurrent_jax.train.loop import RunLoop, TrainingDiverged, train_and_evaluate  # noqa: E402
from recurrent_jax.train.metrics import MetricsWriter  # noqa: E402
from recurrent_jax.train.runs import compile_runs  # noqa: E402

ROOT = Path(__file__).parents[1]


def experiment(**overrides):
    config = config_files.load_config("adding:smoke")
    pairs = [(k.replace("__", "."), str(v)) for k, v in overrides.items()]
    return from_config_dict(config_files.apply_overrides(config, pairs))


THREE = {"training__eval_every": 10, "training__keep_checkpoints": 3}


@pytest.fixture(scope="module")
def three_checkpoints(tmp_path_factory):
    """A finished run with checkpoints at steps 10, 20 and 30."""
    workdir = tmp_path_factory.mktemp("three")
    config = experiment(**THREE)
    train_and_evaluate(config, workdir, progress=False)
    return workdir, config


class Boom(RuntimeError):
    pass


def _raise(error):
    def raises(*args, **kwargs):
        raise error

    return raises


def _same_run_finished(workdir, config):
    train_and_evaluate(config, workdir, progress=False)  # the exit tested: the second run's


# Every way out of ``train_and_evaluate`` once it holds the lock: (config
# overrides, a patch (object, attribute, replacement), a setup of the
# workdir before the run, the exception that ends it or None).
TRAIN_EXITS = {
    "completed": ({}, None, None, None),
    "completed before": ({}, None, _same_run_finished, None),
    "interrupted": ({}, None, None, None),  # should_stop at step 10
    "diverged": ({"optimizer__learning_rate": 1e20}, None, None, TrainingDiverged),
    "raised in a step": ({}, (RunLoop, "run_steps", _raise(Boom("in a step"))), None, Boom),
    "ctrl-c while resuming": (
        {},
        (RunLoop, "__init__", _raise(KeyboardInterrupt())),
        None,
        KeyboardInterrupt,
    ),
    "a different run there": (
        {"training__seed": 1},
        None,
        lambda workdir, config: _same_run_finished(workdir, experiment(**THREE)),
        ConfigError,
    ),
    "disk full writing the summary": (
        {},
        (summary_module, "write_summary", _raise(OSError(28, "No space left on device"))),
        None,
        OSError,
    ),
}


def _released(workdir) -> None:
    """The lock of ``workdir`` is free (a fresh take-over is silent) and the
    signal handlers and wakeup fd are as before the run."""
    assert (workdir / rundir.LOCK_FILE).read_text() == ""  # no holder left in it
    notices = []
    with rundir.locked(workdir, log=notices.append):  # a held flock: WorkdirInUse
        pass
    assert notices == []  # no false "taking over the lock ... no longer running"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    assert signal.set_wakeup_fd(-1) == -1  # no wakeup fd left behind


@pytest.mark.parametrize("exit", list(TRAIN_EXITS))
def test_every_exit_of_a_run_releases_its_lock_and_the_signal_handlers(tmp_path, monkeypatch, exit):
    overrides, patch, setup, raised = TRAIN_EXITS[exit]
    stop = (lambda step: step == 10) if exit == "interrupted" else None
    config = experiment(**THREE, **overrides)
    workdir = tmp_path / "run"
    if setup is not None:
        setup(workdir, config)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with monkeypatch.context() as patching:
        if patch is not None:
            patching.setattr(*patch)
        context = pytest.raises(raised) if raised else contextlib.nullcontext()
        with context:
            summary = train_and_evaluate(config, workdir, progress=False, should_stop=stop)
    if raised is None:
        assert summary["status"] == ("interrupted" if stop else "completed")
    _released(workdir)


@pytest.mark.slow  # a sweep compiles its own stages: 15 s
@pytest.mark.parametrize("exit", ["completed", "interrupted", "raised in a step"])
def test_every_exit_of_a_sweep_releases_its_lock_and_the_signal_handlers(
    tmp_path, monkeypatch, exit
):
    config = config_files.load_config("adding:smoke").to_dict()
    plan = parse_sweep({**config, "sweep": {}})  # one run
    stop = (lambda step: step == 10) if exit == "interrupted" else None
    with monkeypatch.context() as patching:
        if exit == "raised in a step":
            patching.setattr(RunLoop, "run_steps", _raise(Boom("in a step")))
        with pytest.raises(Boom) if exit == "raised in a step" else contextlib.nullcontext():
            summary = run_sweep(plan, tmp_path / "sweep", progress=False, should_stop=stop)
    if exit != "raised in a step":
        assert summary["status"] == exit
    _released(tmp_path / "sweep")


@pytest.mark.parametrize("how", ["completed", "ctrl-c"])
def test_after_a_run_ctrl_c_raises_keyboard_interrupt_again(three_checkpoints, tmp_path, how):
    _, config = three_checkpoints
    stop = (lambda step: step == 10) if how == "ctrl-c" else None

    def ctrl_c_at_10(step):
        if stop is not None and stop(step):
            os.kill(os.getpid(), signal.SIGINT)  # a first Ctrl-C: stop after the call
        return False

    summary = train_and_evaluate(config, tmp_path, progress=False, should_stop=ctrl_c_at_10)
    assert summary["status"] == ("interrupted" if how == "ctrl-c" else "completed")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)  # the handler runs between bytecodes


def damage(step_dir: Path, part: str) -> None:
    """Cuts short the array files of a checkpoint (found when it is
    restored) or its metadata (found when the directory is opened)."""
    if part == "arrays":
        files = [p for p in step_dir.rglob("*") if p.is_file() and p.parent.name == "d"]
    else:
        files = [step_dir / "_CHECKPOINT_METADATA", step_dir / "metrics" / "metrics"]
    for path in files:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize(
    "damaged",
    [
        {10: "arrays", 30: "arrays"},
        {10: "arrays", 20: "arrays"},
        {20: "metadata", 30: "arrays"},
    ],
)
def test_every_damaged_checkpoint_is_moved_aside(three_checkpoints, tmp_path, damaged):
    full_dir, config = three_checkpoints
    copy = tmp_path / "run"
    shutil.copytree(full_dir, copy)
    (copy / "summary.json").unlink()  # as after a crash before the end
    for step, part in damaged.items():
        damage(copy / "checkpoints" / str(step), part)
    notices = []
    summary = train_and_evaluate(config, copy, progress=False, log=notices.append)
    intact = max({10, 20, 30} - set(damaged))
    assert summary["status"] == "completed" and summary["resumed_from"] == intact
    assert sorted(n.split()[1] for n in notices) == sorted(map(str, damaged))
    moved = sorted(p.name.split("-")[0] for p in (copy / "checkpoints.corrupt").iterdir())
    assert moved == sorted(map(str, damaged))
    assert (copy / "metrics.jsonl").read_text() == (full_dir / "metrics.jsonl").read_text()
    program = compile_runs(config)
    like = jax.eval_shape(program.init, *program_inputs(config))
    ckpt = checkpointer(copy / "checkpoints", program.setup.task, 3)
    assert ckpt.steps() == [s for s in (10, 20, 30) if s >= intact]  # the rest saved again
    for step in ckpt.steps():  # none that cannot be restored is left in place
        ckpt.restore(step, like)
    ckpt.close()


def program_inputs(config):
    from recurrent_jax.train import runs

    return runs.stack_hparams([config]), runs.stack_keys([config.training.seed])


def test_a_rewrite_of_the_metrics_cut_short_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "metrics.jsonl"
    writer = MetricsWriter(path)
    for step in (10, 20, 30):
        writer.write(step, "train", {"loss": [1.0 / step]})
    before = path.read_text()
    original = Path.write_text

    def cut_short(self, text, *args, **kwargs):  # the process ends halfway through
        original(self, text[: len(text) // 2], *args, **kwargs)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", cut_short)
    with pytest.raises(OSError):
        writer.truncate_after(10)
    monkeypatch.undo()
    assert path.read_text() == before
    writer.truncate_after(10)
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [10]


@pytest.mark.parametrize("summary_json", [b'{"status": "compl', b'{"status": "completed"}'])
def test_a_summary_that_cannot_be_read_is_written_again(three_checkpoints, tmp_path, summary_json):
    """A completed run whose summary.json was cut short (or edited) is not
    taken for completed: the run resumes at its last step and writes the
    summary of the uninterrupted run again, its records unchanged."""
    full_dir, config = three_checkpoints
    copy = tmp_path / "run"
    shutil.copytree(full_dir, copy)
    (copy / "summary.json").write_bytes(summary_json)
    summary = train_and_evaluate(config, copy, progress=False)
    want = json.loads((full_dir / "summary.json").read_text())
    for key in ("status", "step", "final_eval", "best_eval", "best_step"):
        assert summary[key] == want[key], key
    assert json.loads((copy / "summary.json").read_text()) == summary
    assert (copy / "metrics.jsonl").read_text() == (full_dir / "metrics.jsonl").read_text()


def test_a_lock_file_holding_garbage_is_taken_over_with_a_notice(tmp_path):
    rundir.mark(rundir.make_workdir(tmp_path), rundir.TRAIN, name="x")
    (tmp_path / rundir.LOCK_FILE).write_bytes(b"\x00\xff garbage")
    notices = []
    with rundir.locked(tmp_path, log=notices.append):
        pass
    assert notices == [
        f"{tmp_path}: taking over the lock left by another process, no longer running"
    ]


@pytest.mark.parametrize("config_json", [b'{"name": ', b"[1, 2]", b"\xff\xfe"])
def test_a_damaged_saved_config_is_one_line_and_changes_nothing(
    three_checkpoints, tmp_path, capsys, config_json
):
    full_dir, _ = three_checkpoints
    copy = tmp_path / "run"
    shutil.copytree(full_dir, copy)
    (copy / "config.json").write_bytes(config_json)
    before = {p: p.read_bytes() for p in copy.rglob("*") if p.is_file()}
    for argv in (["train", "--no-progress"], ["train", "--config=adding:smoke"], ["eval"]):
        code = cli.main([*argv, f"--workdir={copy}"])
        err = capsys.readouterr().err.strip()
        assert code == 2 and f"{copy / 'config.json'}:" in err and "\n" not in err, err
    assert {p: p.read_bytes() for p in copy.rglob("*") if p.is_file()} == before


def test_process_checkpoints_that_cannot_be_read_are_moved_aside(tmp_path):
    like = {"w": jnp.zeros((2, 3)), "step": jnp.zeros((), jnp.int32)}
    ckpt = ProcessCheckpointer(tmp_path / "point-0", keep=5)
    for step in (1, 2, 3):
        state = {"w": jnp.full((2, 3), float(step)), "step": jnp.asarray(step, jnp.int32)}
        ckpt.save(_Stateful(state, step))
    (tmp_path / "point-0" / "3.npz").write_bytes(b"PK\x03\x04 cut short")
    (tmp_path / "point-0" / "1.npz").write_bytes(b"")
    with pytest.raises(CheckpointError, match="could not be read"):
        ckpt.restore(3, like)
    notices = []
    step, state = restore_newest(ckpt, like, notices.append)
    assert step == 2 and float(state["w"][0, 0]) == 2.0
    assert ckpt.steps() == [2] and len(notices) == 2
    assert sorted(p.name.split("-")[0] for p in (tmp_path / "point-0.corrupt").iterdir()) == [
        "1.npz",
        "3.npz",
    ]


class _Touch:
    """Unpickling this creates ``marker``: the proof that a reader ran code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_process_checkpoint_holding_a_pickle_never_runs_it(tmp_path):
    """A sweep's process checkpoints are ``.npz`` files in a run directory
    that may come from someone else: an object array there is a damaged
    checkpoint, moved aside, and its payload never runs."""
    like = {"w": jnp.zeros((2, 3)), "step": jnp.zeros((), jnp.int32)}
    ckpt = ProcessCheckpointer(tmp_path / "point-0", keep=5)
    for step in (1, 2):
        state = {"w": jnp.full((2, 3), float(step)), "step": jnp.asarray(step, jnp.int32)}
        ckpt.save(_Stateful(state, step))
    marker = tmp_path / "payload_ran"
    crafted = tmp_path / "point-0" / "2.npz"
    np.savez(crafted, np.array([_Touch(marker), 0], dtype=object), np.asarray(2, np.int32))
    notices = []
    step, state = restore_newest(ckpt, like, notices.append)
    assert not marker.exists(), "a checkpoint ran code"
    assert step == 1 and float(state["w"][0, 0]) == 1.0
    assert len(notices) == 1 and "Object arrays cannot be loaded" in notices[0], notices
    moved = next((tmp_path / "point-0.corrupt").iterdir())
    with np.load(moved, allow_pickle=True) as f:  # the oracle: the crafted file is live
        f["arr_0"]
    assert marker.exists()


class _Stateful(dict):
    """A tree with a ``step``, as ``ProcessCheckpointer.save`` takes."""

    def __init__(self, tree, step):
        super().__init__(tree)
        self.step = step


jax.tree_util.register_pytree_node(
    _Stateful, lambda s: ((dict(s),), s.step), lambda step, children: children[0]
)


@pytest.mark.parametrize("step, message", [("7", "no checkpoint at step 7"), ("x", "--step")])
def test_eval_of_a_step_that_is_not_saved_is_one_line(three_checkpoints, capsys, step, message):
    full_dir, _ = three_checkpoints
    code = cli.main(["eval", f"--workdir={full_dir}", f"--step={step}"])
    err = capsys.readouterr().err.strip()
    assert code in (1, 2) and message in err and "\n" not in err, err


BLOCKED = textwrap.dedent(
    """
    import sys
    import jax, jax.numpy as jnp
    from recurrent_jax.train import host_loop

    host_loop.BLOCKED_SECONDS = float(sys.argv[1])
    if sys.argv[2] == "compiling":  # XLA takes minutes over 2000 unrolled steps
        body = lambda i, c: jnp.tanh(c @ c + i)
        slow = jax.jit(lambda x: jax.lax.fori_loop(0, 2000, body, x, unroll=2000))
        lowered = slow.lower(jnp.ones((4, 4)))
        block = lambda: lowered.compile()
    else:  # a call that never returns
        inner = lambda i, c: c * 1.0000001 + 1e-9
        outer = lambda i, c: jax.lax.fori_loop(0, 1 << 30, inner, c)
        forever = jax.jit(lambda x: jax.lax.fori_loop(0, 1 << 30, outer, x))
        compiled = forever.lower(jnp.ones(())).compile()
        block = lambda: compiled(jnp.ones(())).block_until_ready()
    with host_loop.stop_requests(None) as stop_requested:
        stop_requested(0)
        print("blocked", flush=True)
        block()
    print("returned", flush=True)
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("blocked_in", ["a call", "compiling"])
@pytest.mark.parametrize("signals, grace", [(1, 2.0), (2, 120.0)])
def test_a_sigterm_ends_a_process_blocked_in_a_call_or_compiling(signals, grace, blocked_in):
    process = subprocess.Popen(
        [sys.executable, "-c", BLOCKED, str(grace), blocked_in],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert process.stdout.readline().strip() == "blocked"
        start = time.monotonic()
        for _ in range(signals):
            process.send_signal(signal.SIGTERM)
            time.sleep(0.2)
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()  # a process the SIGTERM did not end is not left running
    elapsed = time.monotonic() - start
    assert process.returncode == 128 + signal.SIGTERM and out == "", (out, err)
    why = "a second SIGTERM" if signals == 2 else "no stop within 2s of the SIGTERM (blocked)"
    assert err.strip() == f"terminated: {why}; the checkpoints saved so far are kept"
    assert elapsed < (5 if signals == 2 else grace + 10)


def test_running_out_of_device_memory_is_one_line(monkeypatch, tmp_path, capsys):
    """XLA's RESOURCE_EXHAUSTED, when a run needs more than its estimate."""
    from recurrent_jax.train import loop

    def exhausted(*args, **kwargs):
        raise jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 8 bytes.")

    monkeypatch.setattr(loop, "train_and_evaluate", exhausted)
    code = cli.main(["train", "--config=adding:smoke", f"--workdir={tmp_path / 'run'}"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "\n" not in err, err
    assert err.startswith("recurrent-jax: error: out of device memory (RESOURCE_EXHAUSTED: Out")


def test_reads_abandoned_after_a_failed_restore_do_not_warn():
    """Once a restore failed, the reads orbax never started are collected
    unawaited; Python's "coroutine ... was never awaited" warning for them
    is dropped in that process (a child, so the filter stays there), so the
    damaged checkpoint's error stays the one line on stderr."""
    import subprocess
    import sys

    script = (
        "import gc\n"
        "from recurrent_jax.train import checkpoint\n"
        "async def read(): pass\n"
        "read()\n"  # collected unawaited: warns
        "gc.collect()\n"
        "checkpoint._ignore_abandoned_reads()\n"
        "read()\n"  # dropped
        "gc.collect()\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("was never awaited") == 1, done.stderr
