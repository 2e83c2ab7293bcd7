"""The sweep's host loop: ``run_sweep(plan, workdir)``.

Grid points run one after another. For each, the stacked state of all its
runs advances by chunks of ``training.steps_per_call`` steps (one call of
the vmapped stage); between calls the loop appends every run's metrics to
``metrics.jsonl`` (records keyed by ``run_id``), evaluates every
``training.eval_every`` steps, checkpoints the stacked state
(``checkpoints/point-<p>/``, orbax) and advances the progress bar. A run
whose loss becomes NaN/Inf is marked diverged; the others go on.

An interrupted sweep (``should_stop``, SIGTERM, Ctrl-C) saves its stacked
state; running it again on the same workdir continues from there and
writes the same files as an uninterrupted sweep.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np
from jax.sharding import Mesh

from recurrent_jax import distributed as dist
from recurrent_jax.sweep import processes, report
from recurrent_jax.sweep.checkpoints import ProcessCheckpointer
from recurrent_jax.sweep.runner import (
    choose_runs_per_call,
    estimate_run_bytes,
    free_device_bytes,
    point_stages,
    stack_hparams,
    stack_keys,
)
from recurrent_jax.sweep.spec import GridPoint, SweepPlan
from recurrent_jax.train import host_loop, rundir
from recurrent_jax.train.checkpoint import Checkpointer, restore_newest
from recurrent_jax.train.config import from_config_dict, rename_keys, to_dict
from recurrent_jax.train.metrics import METRICS_FILE, has_eval, read_metrics

SWEEP_FILE = "sweep.json"


def prepare_sweep_dir(plan: SweepPlan, workdir: Path) -> Path:
    """Creates ``workdir`` with ``sweep.json`` (the base config and sweep
    section: re-launchable with ``--config=<workdir>/sweep.json``); an
    existing sweep there must be the same one (then it is resumed)."""
    workdir = rundir.make_workdir(workdir)
    saved = {**to_dict(plan.base), "sweep": plan.section}
    path = workdir / SWEEP_FILE
    if jax.process_count() > 1:  # process 0 writes it; the others check it
        if jax.process_index() == 0 and not path.exists():
            path.write_text(json.dumps(saved, indent=2) + "\n")
        dist.barrier("recurrent_jax sweep: sweep.json written")
    rundir.save_or_match(path, saved, _read_sweep_file, "sweep")
    return workdir


def _read_sweep_file(saved: dict) -> dict:
    """A saved ``sweep.json`` as this version reads it, less the runs per call."""
    saved = rename_keys(saved)
    return _identity({**to_dict(from_config_dict(saved)), "sweep": saved.get("sweep")})


def run_sweep(
    plan: SweepPlan,
    workdir,
    *,
    progress: bool = True,
    should_stop: Callable[[int], bool] | None = None,
    mesh: Mesh | None = None,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Trains every run of ``plan`` (resuming from ``workdir``), then writes
    the run table, plots and the best run's checkpoint. Returns the summary.

    ``should_stop(step)`` is checked after every call; when true the
    stacked state is saved and the sweep ends with status "interrupted".
    ``mesh`` (``distributed.make_mesh`` over this process's devices): the
    run axis of each grid point is padded and split over its ``runs`` axis,
    each run's batch over ``data``. With several processes
    (``distributed.initialize``) each trains its own block of every grid
    point's runs (``distributed.process_runs``) and writes its own files;
    process 0 merges them (``recurrent_jax.sweep.processes``).
    """
    log = log or (print if progress else lambda line: None)
    start, status, points = time.perf_counter(), host_loop.COMPLETED, []
    with (
        rundir.locked(workdir, log=host_loop.notice) as workdir,
        host_loop.stop_requests(should_stop) as stop_requested,
    ):
        prepare_sweep_dir(plan, workdir)
        for point in plan.points:
            run = _PointRun(plan, point, workdir, mesh, log)
            status = run.loop(progress, stop_requested)
            points.append(run.info())
            if status != host_loop.COMPLETED:
                break
            run.save_best()
        seconds = time.perf_counter() - start
        if jax.process_count() == 1:
            return report.write_report(plan, workdir, status, points, seconds)
        return processes.merge_outputs(plan, workdir, status, points, seconds)


class _PointRun:
    """The host-side state of this process's runs of one grid point (the
    device state is ``self.state``: stacked, padded to the mesh)."""

    def __init__(self, plan: SweepPlan, point: GridPoint, workdir: Path, mesh, log):
        self.plan, self.point, self.workdir, self.mesh, self.log = plan, point, workdir, mesh, log
        self.runs = processes.own_runs(point)
        self.run_ids = [r.run_id for r in self.runs]
        self.metrics_path = dist.process_path(workdir / METRICS_FILE)
        self.start_step, self.seconds, self.state = 0, 0.0, None
        self.bytes_per_run = estimate_run_bytes(point.config)
        if not self.runs:  # more processes than runs
            self.runs_per_call, self.total = 0, 0
            return
        self.total = dist.padded_runs(len(self.runs), mesh) if mesh else len(self.runs)
        shards = mesh.shape[dist.RUNS] if mesh else 1
        chunk = plan.runs_per_call or choose_runs_per_call(
            self.total, self.bytes_per_run, shards * free_device_bytes()
        )
        self.runs_per_call = min(self.total, max(shards, chunk // shards * shards))
        self.stages = point_stages(point.config, self.total, self.runs_per_call, mesh)
        hparams = stack_hparams([r.config for r in self.runs], plan.vmap)
        keys = stack_keys([r.seed for r in self.runs])
        self.hparams, self.keys = self.place(hparams), self.place(keys)
        task = self.stages.task
        directory = dist.process_path(workdir / "checkpoints" / f"point-{point.index}")
        keep = plan.base.training.keep_checkpoints
        if jax.process_count() > 1:
            self.checkpoints = ProcessCheckpointer(directory, keep=keep)
        else:
            self.checkpoints = Checkpointer(
                directory,
                keep=keep,
                primary_metric=task.primary_metric,
                higher_is_better=task.higher_is_better,
                log=host_loop.notice,
            )
        try:
            self.restore()
        except BaseException:
            self.checkpoints.close()
            raise

    def restore(self) -> None:
        """The stacked state of the newest intact checkpoint (saved without
        the padding: resumable on any number of devices), else a fresh one."""
        fresh = jax.eval_shape(self.stages.init, self.hparams, self.keys)
        latest, restored = restore_newest(self.checkpoints, self.unpadded(fresh), host_loop.notice)
        if latest is None:
            self.state = self.stages.init(self.hparams, self.keys)
        else:
            self.state = restored._replace(
                train=self.place(restored.train), best=self.place(restored.best)
            )
        self.start_step = latest or 0
        # Records past it (or of a point stopped before its first checkpoint)
        # are written again, once, by the steps to come.
        truncate_metrics(self.metrics_path, set(self.run_ids), self.start_step)

    def place(self, tree):
        """Pads the run axis to the mesh and splits it over ``runs``."""
        if self.mesh is None:
            return tree
        return dist.shard_runs(dist.pad_runs(tree, self.total), self.mesh)

    def unpadded(self, state):
        """``state`` (or its ``jax.eval_shape``) without the padded runs."""
        n = len(self.runs)

        def strip(a):
            if isinstance(a, jax.ShapeDtypeStruct):
                return jax.ShapeDtypeStruct((n, *a.shape[1:]), a.dtype)
            return a if a.shape[0] == n else a[:n]

        tree_map = jax.tree_util.tree_map
        return state._replace(train=tree_map(strip, state.train), best=tree_map(strip, state.best))

    def save(self, metrics: dict | None = None) -> None:
        self.checkpoints.save(self.unpadded(self.state), metrics)

    def save_best(self) -> None:
        """This process's best run so far (``best_run/``, per process with several)."""
        if self.runs:
            directory = dist.process_path(self.workdir / report.BEST_DIR)
            task = self.stages.task
            report.update_best_run(self.runs, self.unpadded(self.state), task, directory)

    @property
    def step(self) -> int:
        return int(self.state.step) if self.runs else 0

    def describe(self) -> str:
        grid = ", ".join(f"{k}={v}" for k, v in self.point.grid.items())
        line = (
            f"grid point {self.point.index + 1}/{len(self.plan.points)}"
            f"{' (' + grid + ')' if grid else ''}: {len(self.run_ids)} runs"
        )
        if jax.process_count() > 1:
            ids = f"{self.run_ids[0]}..{self.run_ids[-1]}" if self.runs else "none"
            line += f" (process {jax.process_index()}: run ids {ids})"
        if not self.runs:
            return line
        if self.start_step:
            line += f", resumed from step {self.start_step}"
        if self.mesh is not None:
            runs, data = self.mesh.shape[dist.RUNS], self.mesh.shape[dist.DATA]
            line += (
                f", padded to {self.total} over a {runs} x {data} (runs x data) mesh "
                f"of {self.mesh.devices.size} {self.mesh.devices.flat[0].platform} devices"
            )
        return line + (
            f", {self.runs_per_call} per vmapped call (about {self.bytes_per_run / 2**20:.2f} MiB "
            f"per run; set sweep.runs_per_call to override)"
        )

    def loop(self, show_progress: bool, stop_requested) -> str:
        """Trains this process's runs of the point (``host_loop.drive``)."""
        self.log(self.describe())
        if not self.runs:
            return host_loop.COMPLETED
        try:
            status, self.seconds = host_loop.drive(
                self,
                self.plan.base.training,
                show_progress=show_progress,
                stop_requested=stop_requested,
            )
        finally:
            self.checkpoints.close()
        return status

    def evaluated(self, step: int) -> bool:
        return has_eval(self.metrics_path, step, set(self.run_ids))

    def run_steps(self) -> dict:
        """One call; a run that diverges is marked in its metrics, the others go on."""
        self.state, metrics = self.stages.run_steps(self.hparams, self.state, self.keys)
        return self.log_train(jax.device_get(metrics))

    def log_train(self, metrics: dict) -> dict:
        """Per run: the call's mean of each metric (the learning rate: its last value)."""
        n = len(self.runs)
        means = {k: np.mean(np.asarray(v[:n], np.float64), axis=1) for k, v in metrics.items()}
        means["learning_rate"] = np.asarray(metrics["learning_rate"])[:n, -1]
        self.write("train", means)
        losses = means["loss"][np.isfinite(means["loss"])]
        return {"loss": float(np.median(losses)) if losses.size else math.nan}

    def evaluate(self) -> dict:
        metrics, self.state = self.stages.evaluate(self.hparams, self.state, self.keys)
        n = len(self.runs)
        metrics = {k: np.asarray(v[:n], np.float64) for k, v in jax.device_get(metrics).items()}
        self.write("eval", metrics)
        name = self.stages.task.primary_metric
        values = metrics[name][np.isfinite(metrics[name])]
        pick = np.max if self.stages.task.higher_is_better else np.min
        best = float(pick(values)) if values.size else math.nan
        if self.step > 0:  # scored by its best run
            self.save({name: best})
        if not values.size:
            return {f"{name} (all runs diverged)": math.nan}
        return {f"median {name}": float(np.median(values)), f"best {name}": float(best)}

    def write(self, split: str, metrics: dict) -> None:
        lines = []
        for i, run_id in enumerate(self.run_ids):
            record = {"run_id": run_id, "step": self.step, "split": split}
            record |= {k: _number(v[i]) for k, v in metrics.items()}
            lines.append(json.dumps(record) + "\n")
        with self.metrics_path.open("a") as f:
            f.writelines(lines)

    def info(self) -> dict:
        info = {
            "point": self.point.index,
            "resumed_from": self.start_step or None,
            "grid": self.point.grid,
            "runs": len(self.run_ids),
            "runs_per_call": self.runs_per_call,
            "bytes_per_run": self.bytes_per_run,
            "step": self.step,
            "seconds": round(self.seconds, 2),
        }
        if jax.process_count() > 1:
            info["process"] = jax.process_index()
        if self.mesh is not None and self.runs:
            leaf = jax.tree_util.tree_leaves(self.state.train)[0]
            info["mesh"] = dict(self.mesh.shape)
            info["padded_runs"] = self.total
            info["state_sharding"] = [str(axis) for axis in leaf.sharding.spec]
            info["state_devices"] = len(leaf.sharding.device_set)
        return info


def truncate_metrics(path: Path, run_ids: set, step: int) -> None:
    """Drops the records of ``run_ids`` past ``step`` from the metrics file
    ``path`` (written after the checkpoint a resumed point restarts from)."""
    path = Path(path)
    if not path.exists():
        return
    kept = [r for r in read_metrics(path) if r.get("run_id") not in run_ids or r["step"] <= step]
    path.write_text("".join(json.dumps(r) + "\n" for r in kept))


def _identity(saved: dict) -> dict:
    """What makes a sweep the same sweep: all but the runs per call."""
    return {**saved, "sweep": {k: v for k, v in saved["sweep"].items() if k != "runs_per_call"}}


def _number(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None  # JSON has no NaN
