"""``recurrent-jax eval``: reload a run's checkpoint and report its metrics."""

from __future__ import annotations

import json
from pathlib import Path

import jax

from recurrent_jax.train import core
from recurrent_jax.train.checkpoint import Checkpointer, CheckpointError
from recurrent_jax.train.loop import compile_stages, load_run_config


def evaluate_run(workdir: Path, step: str | int = "best") -> dict:
    """Evaluates the checkpoint ``step`` ("best", "latest" or a number) of
    the run in ``workdir`` on its held-out data; writes ``eval.json``."""
    workdir = Path(workdir)
    config = load_run_config(workdir)
    stages = compile_stages(config)
    task, hparams = stages.task, core.default_hparams(config)
    key = jax.random.key(config.training.seed)
    checkpoints = Checkpointer(
        workdir / "checkpoints",
        keep=config.training.keep_checkpoints,
        primary_metric=task.primary_metric,
        higher_is_better=task.higher_is_better,
    )
    chosen = _choose_step(checkpoints, step)
    like, batch = stages.init(hparams, key)
    state = checkpoints.restore(chosen, like)
    metrics, _ = stages.evaluate(hparams, state.params, batch)
    report = {
        "workdir": str(workdir),
        "step": chosen,
        "eval": {k: float(v) for k, v in jax.device_get(metrics).items()},
        "baselines": task.baselines,
    }
    (workdir / "eval.json").write_text(json.dumps(report, indent=2) + "\n")
    checkpoints.close()
    return report


def _choose_step(checkpoints: Checkpointer, step) -> int:
    steps = list(checkpoints.manager.all_steps())
    if not steps:
        raise CheckpointError(f"{checkpoints.directory}: no checkpoints to evaluate")
    if step == "best":
        return checkpoints.best_step() or checkpoints.latest_step()
    if step == "latest":
        return checkpoints.latest_step()
    try:
        step = int(step)
    except ValueError:
        raise ValueError(f"--step: expected best, latest or a number, got {step!r}") from None
    if step not in steps:
        raise CheckpointError(f"--step: no checkpoint at step {step}; saved steps: {steps}")
    return step
