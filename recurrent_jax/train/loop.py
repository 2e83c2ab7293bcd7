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
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np

from recurrent_jax.data.options import ConfigError
from recurrent_jax.train import core, host_loop
from recurrent_jax.train.checkpoint import Checkpointer
from recurrent_jax.train.config import ExperimentConfig, from_config_dict, to_dict
from recurrent_jax.train.metrics import MetricsWriter, has_eval, read_metrics

CONFIG_FILE = "config.json"


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


def make_workdir(workdir) -> Path:
    """Creates the run or sweep directory ``workdir`` (and its parents); a
    path that is a file or cannot be created is a ConfigError naming it."""
    workdir = Path(workdir)
    if workdir.exists() and not workdir.is_dir():
        raise ConfigError(f"--workdir: expected a directory, got the file {str(workdir)!r}")
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        # A file of its own: processes of one job probe the same directory.
        with tempfile.NamedTemporaryFile(dir=workdir, prefix=".recurrent_jax_write_test"):
            pass
    except OSError as error:
        reason = error.strerror or str(error)
        raise ConfigError(f"--workdir: cannot write to {str(workdir)!r}: {reason}") from None
    return workdir


def prepare_workdir(config: ExperimentConfig, workdir: Path) -> Path:
    """Creates ``workdir`` and saves the resolved config; an existing run
    there must have the same config (then it is resumed)."""
    workdir = make_workdir(workdir)
    resolved = to_dict(config)
    read = lambda saved: to_dict(from_config_dict(saved))  # as this version reads it  # noqa: E731
    save_or_match(workdir / CONFIG_FILE, resolved, read, "run")
    return workdir


def save_or_match(path: Path, resolved: dict, read: Callable[[dict], dict], what: str) -> None:
    """Writes ``resolved`` to the JSON file ``path``, or, when the file is
    there, checks that ``read(its contents)`` equals ``read(resolved)`` (a
    ValueError naming the keys that differ: then it is another ``what``)."""
    if not path.exists():
        path.write_text(json.dumps(resolved, indent=2) + "\n")
        return
    saved, wanted = read(json.loads(path.read_text())), read(json.loads(json.dumps(resolved)))
    if saved != wanted:
        diff = sorted(_diff(saved, wanted))
        raise ValueError(
            f"{path.parent} holds a different {what} (differs at {diff}); pass a fresh "
            f"--workdir, or omit --config to resume the saved {what}"
        )


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
) -> dict:
    """Trains (resuming from the latest checkpoint in ``workdir``), evaluates
    and writes the run directory. Returns the summary.

    ``should_stop(step)`` is checked after every call (as SIGTERM is): when
    true the state is saved and the run ends with status "interrupted".
    Raises ``TrainingDiverged`` on NaN/Inf, after saving the summary.
    """
    workdir = prepare_workdir(config, workdir)
    stages = compile_stages(config)
    hparams = core.default_hparams(config)
    key = jax.random.key(config.training.seed)
    checkpoints = Checkpointer(
        workdir / "checkpoints",
        keep=config.training.keep_checkpoints,
        primary_metric=stages.task.primary_metric,
        higher_is_better=stages.task.higher_is_better,
    )
    writer = MetricsWriter(workdir)
    run = _Run(config, stages, hparams, key, checkpoints, writer, workdir)
    try:
        with host_loop.stop_requests(should_stop) as stop_requested:
            status, run.seconds = host_loop.drive(
                run, config.training, show_progress=progress, stop_requested=stop_requested
            )
    finally:
        writer.close()
    summary = run.finish(status)
    checkpoints.close()
    if status == host_loop.DIVERGED:
        raise TrainingDiverged(summary["message"])
    return summary


class _Run:
    """The mutable host-side state of one run (the device state is ``self.state``)."""

    def __init__(self, config, stages, hparams, key, checkpoints, writer, workdir):
        self.config, self.stages, self.hparams, self.key = config, stages, hparams, key
        self.checkpoints, self.writer, self.workdir = checkpoints, writer, workdir
        self.model = core.make_model(config, stages.task)  # its host-side hooks
        self.state, self.eval_data = stages.init(hparams, key)
        self.eval_outputs = None
        self.start_step, self.message, self.seconds = 0, "", 0.0
        latest = checkpoints.latest_step()
        if latest is not None:
            self.state = checkpoints.restore(latest, self.state)
            writer.truncate_after(latest)
            self.start_step = latest

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


def _diff(a, b, prefix=""):
    keys = set(a) | set(b) if isinstance(a, dict) and isinstance(b, dict) else None
    if keys is None:
        return [prefix] if a != b else []
    out = []
    for k in keys:
        out += _diff(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else k)
    return out


__all__ = ["TrainingDiverged", "load_run_config", "read_metrics", "train_and_evaluate"]
