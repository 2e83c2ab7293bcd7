"""``recurrent-jax eval`` and ``decode``'s restore: a saved run's checkpoint
back into its compiled program."""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import jax

from recurrent_jax.train import core
from recurrent_jax.train.checkpoint import CheckpointError, checkpointer
from recurrent_jax.train.config import ConfigError, ExperimentConfig
from recurrent_jax.train.loop import load_run_config
from recurrent_jax.train.runs import Program, RunsState, compile_runs


class SavedRun(NamedTuple):
    """A run directory's checkpoint at ``step`` in its one-run program."""

    config: ExperimentConfig
    program: Program
    hparams: core.HParams
    key: jax.Array
    step: int
    state: RunsState


def restore_run(
    workdir: Path, step: str | int = "best", *, trust_code: bool = False, command: str = "eval"
) -> SavedRun:
    """The checkpoint ``step`` ("best", "latest" or a number) of the run in
    ``workdir``, a directory ``command`` reads; the code its config names
    outside the package is imported only with ``trust_code``
    (``loop.load_run_config``)."""
    config = load_run_config(workdir, trust_code=trust_code, command=command)
    return restore_run_config(workdir, config, step)


def restore_run_config(workdir: Path, config: ExperimentConfig, step: str | int) -> SavedRun:
    """The checkpoint ``step`` of the run of ``config`` in ``workdir``."""
    program = compile_runs(config)
    hparams, key = core.default_hparams(config), jax.random.key(config.training.seed)
    keep = config.training.keep_checkpoints
    checkpoints = checkpointer(Path(workdir) / "checkpoints", program.setup.task, keep)
    try:
        chosen = choose_step(checkpoints, step)
        state = checkpoints.restore(chosen, jax.eval_shape(program.init, hparams, key))
    finally:
        checkpoints.close()
    return SavedRun(config, program, hparams, key, chosen, state)


def evaluate_run(workdir: Path, step: str | int = "best", *, trust_code: bool = False) -> dict:
    """Evaluates the checkpoint ``step`` ("best", "latest" or a number) of
    the run in ``workdir`` on its held-out data; writes ``eval.json``.
    ``trust_code``: see ``restore_run``."""
    workdir = Path(workdir)
    run = restore_run(workdir, step, trust_code=trust_code)
    batch = run.program.eval_batch(run.key)
    metrics, _, _ = run.program.evaluate(run.hparams, run.key, run.state, batch)
    report = {
        "workdir": str(workdir),
        "step": run.step,
        "eval": {k: float(v) for k, v in jax.device_get(metrics).items()},
        "baselines": run.program.setup.task.baselines,
    }
    (workdir / "eval.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def choose_step(checkpoints, step) -> int:
    """The saved step that ``--step`` names: "best", "latest" or a number."""
    steps = checkpoints.steps()
    if not steps:
        raise CheckpointError(f"{checkpoints.directory}: no checkpoints to evaluate")
    if step == "best":
        return checkpoints.best_step() or checkpoints.latest_step()
    if step == "latest":
        return checkpoints.latest_step()
    try:
        step = int(step)
    except ValueError:
        raise ConfigError(f"--step: expected best, latest or a number, got {step!r}") from None
    if step not in steps:
        raise CheckpointError(f"--step: no checkpoint at step {step}; saved steps: {steps}")
    return step
