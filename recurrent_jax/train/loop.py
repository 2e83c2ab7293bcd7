"""The host side of N >= 1 runs, and ``train_and_evaluate(config, workdir)``.

``RunLoop`` holds the runs of one compiled ``runs.Program`` between its
calls (``host_loop.drive`` advances it): it restores the newest intact
checkpoint, appends each call's metrics to ``metrics.jsonl`` (one record
per run and step; a sweep's carry its ``run_id``), evaluates, checkpoints
and decides what divergence does: a training run stops
(``TrainingDiverged``), a sweep marks the run and goes on. A training run
is a sweep of one: the same program, state and checkpoints, a run axis of 1.

A run directory holds ``run.json`` (what owns it: ``rundir``),
``config.json`` (re-launchable: ``recurrent-jax train
--config=<workdir>/config.json``), ``metrics.jsonl``, ``checkpoints/``,
PNG plots and ``summary.json``; docs/guides/run-directories.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np
from jax.sharding import Mesh

from recurrent_jax.train import core, host_loop, memory, references, rundir
from recurrent_jax.train.checkpoint import checkpointer, restore_newest
from recurrent_jax.train.config import ExperimentConfig, from_config_dict, to_dict
from recurrent_jax.train.metrics import MetricsWriter, has_eval
from recurrent_jax.train.runs import Program, compile_runs, first, stack_hparams, stack_keys
from recurrent_jax.train.stages import RunEnd


class TrainingDiverged(FloatingPointError):
    """The loss or an eval metric became NaN or Inf."""


class RunLoop:
    """N >= 1 runs of ``program`` on the host, between the calls that
    ``host_loop.drive`` makes: ``step``, ``evaluated(step)`` (already in
    the metrics file), ``run_steps()`` and ``evaluate()`` (what the progress
    bar shows, or None on divergence) and ``save()``.

    Attributes:
      program, hparams, keys: the compiled stages and each run's inputs
        (placed on the program's mesh).
      run_ids: the runs' ids in records, or None for one run (records
        without ``run_id``).
      state: the ``runs.RunsState`` on device; ``start_step`` where it
        started (restored or 0).
      eval_batch, eval_outputs: the first run's held-out batch and latest
        outputs (host copies), when ``write_eval`` is given; else None.
      message: why the runs stopped, when they diverged.
      stream: a streamed run's ``data.stream.Stream`` (``Program.open_stream``),
        sought to the restored state's calls; None on the in-memory path.
    """

    def __init__(
        self,
        program: Program,
        hparams,
        keys,
        *,
        checkpoints,
        writer: MetricsWriter,
        run_ids: list[int] | None = None,
        stop_on_divergence: bool = True,
        write_eval: Callable | None = None,
        stream=None,
        log: Callable[[str], None] = host_loop.notice,
    ):
        if (stream is None) == program.setup.streamed:
            raise ValueError(
                "stream: a streamed program needs its Stream (Program.open_stream), "
                f"and only it does; got {type(stream).__name__} for streamed="
                f"{program.setup.streamed}"
            )
        self.program, self.run_ids, self.stream = program, run_ids, stream
        self.hparams, self.keys = program.place(hparams), program.place(keys)
        self.checkpoints, self.writer, self.write_eval = checkpoints, writer, write_eval
        self.stop_on_divergence = stop_on_divergence
        self.message, self.eval_outputs = "", None
        one = program.eval_batch(first(self.keys)) if write_eval else None
        self.eval_batch = jax.device_get(one)
        fresh = jax.eval_shape(program.init, self.hparams, self.keys)
        latest, restored = restore_newest(checkpoints, self._unpadded(fresh), log)
        if latest is None:
            self.state = program.init(self.hparams, self.keys)
        else:  # saved without the padding: resumable on any number of devices
            self.state = restored.on_runs(program.place)
        self.start_step = latest or 0
        if stream is not None:
            stream.seek(self.state.data)
        # Records past it (or of runs stopped before their first checkpoint)
        # are written again, once, by the steps to come.
        writer.truncate_after(self.start_step, run_ids)

    @property
    def step(self) -> int:
        return int(self.state.step)

    def evaluated(self, step: int) -> bool:
        return has_eval(self.writer.path, step, self.run_ids)

    def run_steps(self) -> dict | None:
        batches = None if self.stream is None else self.stream.next()
        new_state, metrics = self.program.run_steps(self.hparams, self.keys, self.state, batches)
        metrics = self.program.unpad(jax.device_get(metrics))
        losses = np.asarray(metrics["loss"])
        means = {k: np.mean(np.asarray(v, np.float64), axis=-1) for k, v in metrics.items()}
        means["learning_rate"] = np.asarray(metrics["learning_rate"])[..., -1]
        step = self.step + self.program.setup.steps_per_call
        self.writer.write(step, "train", means, self.run_ids)
        if self.stop_on_divergence and not np.isfinite(losses).all():
            bad = int(np.flatnonzero(~np.isfinite(losses.reshape(-1, losses.shape[-1])).any(0))[0])
            self.message = self._diverged_message(self.step + bad + 1, "the training loss")
            return None  # the state (and the stream read back in it) stay at the last good call
        self.state = new_state
        finite = means["loss"][np.isfinite(means["loss"])]
        return {"loss": float(np.median(finite)) if finite.size else math.nan}

    def evaluate(self) -> dict | None:
        metrics, outputs, self.state = self.program.evaluate(
            self.hparams, self.keys, self.state, self.eval_batch
        )
        metrics = {k: np.asarray(v, np.float64) for k, v in self.program.unpad(metrics).items()}
        self.writer.write(self.step, "eval", metrics, self.run_ids)
        task = self.program.setup.task
        name = task.primary_metric
        values = metrics[name][np.isfinite(metrics[name])]
        if self.stop_on_divergence and not all(np.isfinite(v).all() for v in metrics.values()):
            self.message = self._diverged_message(self.step, "eval metrics")
            return None
        if self.eval_batch is not None:
            self.eval_outputs = first(jax.device_get(outputs))
            if self.write_eval is not None:
                self.write_eval(self.step, self.eval_batch, self.eval_outputs)
        best = float((np.max if task.higher_is_better else np.min)(values)) if values.size else None
        if self.step > 0 and best is not None:  # scored by the best run
            self.checkpoints.save(self._unpadded(self.state), {name: best})
        if not values.size:
            return {f"{name} (all runs diverged)": math.nan}
        if self.run_ids is None:
            return {k: float(v[0]) for k, v in metrics.items()}
        return {f"median {name}": float(np.median(values)), f"best {name}": best}

    def save(self) -> None:
        self.checkpoints.save(self._unpadded(self.state))

    def _unpadded(self, state):
        return state.on_runs(self.program.unpad)

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


# --- a training run ------------------------------------------------------------------


def prepare_workdir(config: ExperimentConfig, workdir: Path) -> Path:
    """Saves the resolved config in ``workdir`` (a run directory), with the
    file of each module it names (``references.with_imports``); an
    existing run there must have the same config (then it is resumed)."""
    saved = references.with_imports(to_dict(config))
    read = lambda saved: to_dict(from_config_dict(saved))  # as this version reads it  # noqa: E731
    rundir.save_or_match(workdir / rundir.CONFIG_FILE, saved, read, "run")
    return workdir


def train_and_evaluate(
    config: ExperimentConfig,
    workdir,
    *,
    progress: bool = True,
    should_stop: Callable[[int], bool] | None = None,
    log: Callable[[str], None] = host_loop.notice,
    mesh: Mesh | None = None,
) -> dict:
    """Trains (resuming from the newest intact checkpoint in ``workdir``),
    evaluates and writes the run directory. Returns the summary.

    The run is ``runs.compile_runs(config, 1, mesh=mesh)``: with a ``mesh``
    (``distributed.make_mesh``, a ``runs`` axis of 1) its batch is split over
    the ``data`` axis; its checkpoints are the same.

    ``should_stop(step)`` is checked after every call (as SIGTERM and a
    first Ctrl-C are): when true the state is saved and the run ends with
    status "interrupted". ``workdir`` is locked while the run writes it
    (``rundir.locked``). ``log`` gets the one-line notices (a lock taken
    over, a damaged checkpoint moved aside, an interrupt); default stderr.
    Raises ``TrainingDiverged`` on NaN/Inf, after saving the summary. A
    ``workdir`` of another kind, a folder that is not a run directory, or
    a model too large for the device (``memory.check_fits``) is a
    ``ConfigError`` before any file is written; a run that had completed
    is left as it is and its saved summary returned.
    """
    from recurrent_jax.train.summary import finished_summary, write_summary

    rundir.check(workdir, "train")
    program = compile_runs(config, 1, mesh=mesh)  # the data is read before the workdir is touched
    memory.check_fits(program.setup, core.default_hparams(config))
    model = program.setup.model
    with (
        rundir.claim(
            workdir,
            rundir.TRAIN,
            name=config.name,
            data_folders=references.data_folders(config.data),
            log=log,
        ) as workdir,
        host_loop.stop_requests(should_stop, log) as stop_requested,
    ):
        prepare_workdir(config, workdir)
        finished = finished_summary(workdir, config.training.num_steps)
        if finished is not None:
            log(f"{workdir}: the run completed before; nothing to do")
            return finished
        keep = config.training.keep_checkpoints
        checkpoints = checkpointer(workdir / "checkpoints", program.setup.task, keep, log=log)
        writer = MetricsWriter.for_run(workdir)
        try:
            run = RunLoop(
                program,
                stack_hparams([config]),
                stack_keys([config.training.seed]),
                checkpoints=checkpoints,
                writer=writer,
                write_eval=lambda step, batch, outputs: model.write_eval(
                    workdir, step, batch, outputs
                ),
                stream=program.open_stream(config.data),
                log=log,
            )
            status, seconds = host_loop.drive(
                run, config.training, show_progress=progress, stop_requested=stop_requested
            )
            end = RunEnd(
                workdir,
                config.name,
                run.step,
                first(jax.device_get(run.state.train.params)),
                run.eval_batch,
                run.eval_outputs,
                status == host_loop.DIVERGED,
            )
            summary = write_summary(
                config,
                program.setup,
                end,
                status=status,
                message=run.message,
                start_step=run.start_step,
                seconds=seconds,
                best_step=checkpoints.best_step(),
            )
        finally:
            writer.close()
            checkpoints.close()
    if status == host_loop.DIVERGED:
        raise TrainingDiverged(summary["message"])
    return summary


__all__ = ["RunLoop", "TrainingDiverged", "train_and_evaluate"]
