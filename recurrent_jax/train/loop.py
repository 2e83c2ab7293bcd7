"""The host loop: ``train_and_evaluate(config, workdir)``.

Between jitted chunks of ``training.steps_per_call`` steps it writes
metrics, evaluates, checkpoints, checks for NaN/Inf and advances the
progress bar. A run directory holds ``config.json`` (re-launchable:
``recurrent-jax train --config=<workdir>/config.json``), ``metrics.jsonl``,
``checkpoints/``, PNG plots and ``summary.json``.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np

from recurrent_jax.train import core, host_loop, rundir
from recurrent_jax.train.checkpoint import Checkpointer, restore_newest
from recurrent_jax.train.config import ExperimentConfig, from_config_dict, to_dict
from recurrent_jax.train.metrics import MetricsWriter, has_eval, read_metrics

CONFIG_FILE = rundir.CONFIG_FILE


class TrainingDiverged(FloatingPointError):
    """The loss or an eval metric became NaN or Inf."""


class Compiled(NamedTuple):
    """The jitted stages of one config (cached, so runs in one process reuse them)."""

    task: object
    init: Callable  # (hparams, key) -> (state, eval batch)
    run_steps: Callable  # (hparams, state, key) -> (state, per-step metrics)
    evaluate: Callable  # (hparams, params, batch) -> (metrics, outputs)


def _init(config, task, hparams, key):
    return core.init_state(config, task, hparams, key), core.eval_batch(config, task, key)


def compile_stages(config: ExperimentConfig) -> Compiled:
    """The jitted stages; configs that differ only in traced or host-side
    values (``core.static_config``) share them."""
    return _compile_static(core.static_config(config))


@functools.cache
def _compile_static(config: ExperimentConfig) -> Compiled:
    task = core.build_task(config)
    jit = functools.partial(jax.jit, compiler_options=core.compiler_options(config))
    return Compiled(
        task,
        jit(functools.partial(_init, config, task)),
        jit(functools.partial(core.run_steps, config, task)),
        jit(functools.partial(core.evaluate_with_outputs, config, task)),
    )


def prepare_workdir(config: ExperimentConfig, workdir: Path) -> Path:
    """Creates ``workdir`` and saves the resolved config; an existing run
    there must have the same config (then it is resumed)."""
    workdir = rundir.make_workdir(workdir)
    resolved = to_dict(config)
    read = lambda saved: to_dict(from_config_dict(saved))  # as this version reads it  # noqa: E731
    rundir.save_or_match(workdir / CONFIG_FILE, resolved, read, "run")
    return workdir


def load_run_config(workdir: Path) -> ExperimentConfig:
    path = Path(workdir) / CONFIG_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: no saved config; is {workdir} a run directory?")
    return from_config_dict(json.loads(path.read_text()))


def train_and_evaluate(
    config: ExperimentConfig,
    workdir,
    *,
    progress: bool = True,
    should_stop: Callable[[int], bool] | None = None,
    log: Callable[[str], None] = host_loop.notice,
) -> dict:
    """Trains (resuming from the newest intact checkpoint in ``workdir``),
    evaluates and writes the run directory. Returns the summary.

    ``should_stop(step)`` is checked after every call (as SIGTERM and a
    first Ctrl-C are): when true the state is saved and the run ends with
    status "interrupted". ``workdir`` is locked while the run writes it
    (``rundir.locked``). ``log`` gets the one-line notices (a lock taken
    over, a damaged checkpoint moved aside, an interrupt); default stderr.
    Raises ``TrainingDiverged`` on NaN/Inf, after saving the summary.
    """
    with (
        rundir.locked(workdir, log=log) as workdir,
        host_loop.stop_requests(should_stop, log) as stop_requested,
    ):
        prepare_workdir(config, workdir)
        stages = compile_stages(config)
        checkpoints = Checkpointer(
            workdir / "checkpoints",
            keep=config.training.keep_checkpoints,
            primary_metric=stages.task.primary_metric,
            higher_is_better=stages.task.higher_is_better,
            log=log,
        )
        writer = MetricsWriter(workdir)
        try:
            run = _Run(config, stages, checkpoints, writer, workdir, log)
            status, run.seconds = host_loop.drive(
                run, config.training, show_progress=progress, stop_requested=stop_requested
            )
            summary = run.finish(status)
        finally:
            writer.close()
            checkpoints.close()
    if status == host_loop.DIVERGED:
        raise TrainingDiverged(summary["message"])
    return summary


class _Run:
    """The mutable host-side state of one run (the device state is ``self.state``)."""

    def __init__(self, config, stages, checkpoints, writer, workdir, log):
        self.config, self.stages = config, stages
        self.hparams = core.default_hparams(config)
        self.key = jax.random.key(config.training.seed)
        self.checkpoints, self.writer, self.workdir = checkpoints, writer, workdir
        self.model = core.make_model(config, stages.task)  # its host-side hooks
        self.state, self.eval_data = stages.init(self.hparams, self.key)
        self.eval_outputs = None
        self.message, self.seconds = "", 0.0
        latest, self.state = restore_newest(checkpoints, self.state, log)
        self.start_step = latest or 0
        # Records past the restored step (or of a run stopped before its
        # first checkpoint) are written again, once, by the steps to come.
        writer.truncate_after(self.start_step)

    @property
    def step(self) -> int:
        return int(self.state.step)

    def evaluated(self, step: int) -> bool:
        return has_eval(self.writer.path, step)

    def run_steps(self) -> dict | None:
        new_state, metrics = self.stages.run_steps(self.hparams, self.state, self.key)
        metrics = jax.device_get(metrics)
        if not self.call_finite(metrics):
            return None
        self.state = new_state
        return self.log_train(metrics)

    def save(self) -> None:
        self.checkpoints.save(self.state)

    def log_train(self, metrics: dict) -> dict:
        means = {k: float(np.mean(v)) for k, v in metrics.items()}
        means["learning_rate"] = float(metrics["learning_rate"][-1])
        self.writer.write(self.step, "train", means)
        return means

    def evaluate(self) -> dict | None:
        metrics, self.eval_outputs = self.stages.evaluate(
            self.hparams, self.state.params, self.eval_data
        )
        metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
        self.writer.write(self.step, "eval", metrics)
        if not all(math.isfinite(v) for v in metrics.values()):
            self.message = self._diverged_message(self.step, "eval metrics")
            return None
        batch, outputs = jax.device_get((self.eval_data, self.eval_outputs))
        self.model.write_eval(self.workdir, self.step, batch, outputs)
        if self.step > 0:
            self.checkpoints.save(self.state, metrics)
        return metrics

    def call_finite(self, metrics: dict) -> bool:
        losses = np.asarray(metrics["loss"])
        bad = np.flatnonzero(~np.isfinite(losses))
        if bad.size == 0:
            return True
        self.writer.write(
            self.step + len(losses), "train", {k: np.mean(v) for k, v in metrics.items()}
        )
        self.message = self._diverged_message(self.step + int(bad[0]) + 1, "the training loss")
        return False

    def _diverged_message(self, step: int, what: str) -> str:
        last = self.checkpoints.latest_step()
        where = (
            f"last good checkpoint: step {last} in {self.checkpoints.directory}"
            if last is not None
            else "no checkpoint was saved before it"
        )
        return (
            f"training diverged: {what} became NaN/Inf at step {step}; {where}. "
            "Try a lower optimizer.learning_rate or optimizer.clip_norm > 0."
        )

    def finish(self, status: str) -> dict:
        from recurrent_jax.train.summary import write_summary

        return write_summary(self, status)


__all__ = ["TrainingDiverged", "load_run_config", "read_metrics", "train_and_evaluate"]
