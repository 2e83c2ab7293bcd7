"""The sweep's host loop: ``run_sweep(plan, workdir)``.

Grid points run one after another, each as one compiled program of all its
runs (``train.runs.compile_runs``) driven by the same ``train.loop.RunLoop``
as a solo run: records keyed by ``run_id`` in ``metrics.jsonl``,
checkpoints of the stacked state in ``checkpoints/point-<p>/``, and a run
whose loss becomes NaN/Inf marked diverged while the others go on.

An interrupted sweep (``should_stop``, SIGTERM, Ctrl-C) saves its stacked
state; running it again on the same workdir continues from there and
writes the same files as an uninterrupted sweep.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import jax
from jax.sharding import Mesh

from recurrent_jax import distributed as dist
from recurrent_jax.sweep import processes, report
from recurrent_jax.train import core, host_loop, memory, references, rundir, runs
from recurrent_jax.train.checkpoint import ProcessCheckpointer, checkpointer
from recurrent_jax.train.config import from_config_dict, to_dict
from recurrent_jax.train.loop import RunLoop
from recurrent_jax.train.metrics import METRICS_FILE, MetricsWriter
from recurrent_jax.train.summary import finished_summary
from recurrent_jax.train.sweep_spec import GridPoint, SweepPlan, point_checkpoints

SWEEP_FILE = "sweep.json"


def prepare_sweep_dir(plan: SweepPlan, workdir: Path) -> Path:
    """Saves ``sweep.json`` in ``workdir`` (a sweep directory: the base
    config and sweep section, re-launchable with
    ``--config=<workdir>/sweep.json``, and the files of the code it names);
    an existing sweep there must be the same one (then it is resumed)."""
    saved = references.with_imports({**to_dict(plan.base), "sweep": plan.section})
    path = workdir / SWEEP_FILE
    if jax.process_count() > 1:  # process 0 writes it; the others check it
        if jax.process_index() == 0 and not path.exists():
            path.write_text(json.dumps(saved, indent=2) + "\n")
        dist.barrier("recurrent_jax sweep: sweep.json written")
    rundir.save_or_match(path, saved, _read_sweep_file, "sweep")
    return workdir


def _read_sweep_file(saved: dict) -> dict:
    """A saved ``sweep.json`` as this version reads it, less the runs per
    call (which does not change the sweep)."""
    sweep = {k: v for k, v in (saved.get("sweep") or {}).items() if k != "runs_per_call"}
    return {**to_dict(from_config_dict(saved)), "sweep": sweep}


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

    Before any file is written: a ``workdir`` that is not a sweep's (or a
    new or empty folder) or lies inside the data, and a grid point whose
    model does not fit the device (``memory.check_fits``), are a
    ``ConfigError``. A sweep that had completed is left as it is and its
    saved summary returned.
    """
    log = log or (print if progress else lambda line: None)
    start, status, points = time.perf_counter(), host_loop.COMPLETED, []
    rundir.check(workdir, "sweep")
    folders, sizes = {}, {}
    for point in plan.points:  # data, model sizes, folders: checked before the workdir is touched
        setup = runs.setup_of(point.config)  # built once: the point's program reuses it
        sizes[point.index] = memory.check_fits(setup, core.default_hparams(point.config))
        folders |= references.data_folders(point.config.data)
    claimed = rundir.claim(
        workdir, rundir.SWEEP, name=plan.base.name, data_folders=folders, log=host_loop.notice
    )
    with claimed as workdir, host_loop.stop_requests(should_stop) as stop_requested:
        prepare_sweep_dir(plan, workdir)
        finished = finished_summary(workdir, None)
        if finished is not None:
            log(f"{workdir}: the sweep completed before; nothing to do")
            return finished
        for point in plan.points:
            need = sizes[point.index]
            status, info = _run_point(
                plan, point, workdir, mesh, progress, stop_requested, log, need.state + need.step
            )
            points.append(info)
            if status != host_loop.COMPLETED:
                break
        seconds = time.perf_counter() - start
        if jax.process_count() == 1:
            return report.write_report(plan, workdir, status, points, seconds)
        return processes.merge_outputs(plan, workdir, status, points, seconds)


def _run_point(
    plan, point: GridPoint, workdir: Path, mesh, progress, stop_requested, log, bytes_per_run
):
    """Trains this process's runs of ``point`` (``bytes_per_run`` in a
    training step); returns (status, info)."""
    own = processes.own_runs(point)
    info = {"point": point.index, "grid": point.grid, "runs": len(own)}
    if jax.process_count() > 1:
        info["process"] = jax.process_index()
    if not own:  # more processes than runs
        log(_describe(plan, point, own, None, 0, bytes_per_run))
        return host_loop.COMPLETED, info | {"runs_per_call": 0, "step": 0, "seconds": 0.0}
    program = runs.compile_runs(
        point.config,
        len(own),
        runs_per_call=_runs_per_call(plan, len(own), bytes_per_run, mesh),
        mesh=mesh,
    )
    directory = dist.process_path(point_checkpoints(workdir, point.index))
    keep = plan.base.training.keep_checkpoints
    task = program.setup.task
    if jax.process_count() > 1:  # orbax writes global arrays only: each process its own
        checkpoints = ProcessCheckpointer(directory, keep=keep)
    else:
        checkpoints = checkpointer(directory, task, keep, log=host_loop.notice)
    writer = MetricsWriter(dist.process_path(workdir / METRICS_FILE))
    try:
        loop = RunLoop(
            program,
            runs.stack_hparams([r.config for r in own], plan.vmap),
            runs.stack_keys([r.seed for r in own]),
            checkpoints=checkpoints,
            writer=writer,
            run_ids=[r.run_id for r in own],
            stop_on_divergence=False,
            stream=program.open_stream(point.config.data),  # every run reads the same batches
        )
        log(_describe(plan, point, own, program, loop.start_step, bytes_per_run))
        status, seconds = host_loop.drive(
            loop, plan.base.training, show_progress=progress, stop_requested=stop_requested
        )
        if status == host_loop.COMPLETED:
            directory = dist.process_path(workdir / report.BEST_DIR)
            report.update_best_run(own, loop.program.unpad(loop.state.best), task, directory)
    finally:
        checkpoints.close()
    info |= {
        "resumed_from": loop.start_step or None,
        "runs_per_call": program.runs_per_call,
        "bytes_per_run": bytes_per_run,
        "step": loop.step,
        "seconds": round(seconds, 2),
    }
    return status, info | _sharding_info(program, loop.state)


def _runs_per_call(plan: SweepPlan, num_runs: int, bytes_per_run: int, mesh) -> int:
    """``sweep.runs_per_call``, else as many as fit in memory; a multiple of
    the devices the runs are split over."""
    total = dist.padded_runs(num_runs, mesh) if mesh else num_runs
    shards = mesh.shape[dist.RUNS] if mesh else 1
    chunk = plan.runs_per_call or memory.choose_runs_per_call(
        total, bytes_per_run, shards * memory.free_device_bytes()
    )
    return min(total, max(shards, chunk // shards * shards))


def _describe(plan, point, own, program, start_step, bytes_per_run) -> str:
    grid = ", ".join(f"{k}={report.short(v)}" for k, v in point.grid.items())
    line = (
        f"grid point {point.index + 1}/{len(plan.points)}"
        f"{' (' + grid + ')' if grid else ''}: {len(own)} runs"
    )
    if jax.process_count() > 1:
        ids = f"{own[0].run_id}..{own[-1].run_id}" if own else "none"
        line += f" (process {jax.process_index()}: run ids {ids})"
    if program is None:
        return line
    if start_step:
        line += f", resumed from step {start_step}"
    mesh = program.mesh
    if mesh is not None:
        size, data = mesh.shape[dist.RUNS], mesh.shape[dist.DATA]
        line += (
            f", padded to {program.total} over a {size} x {data} (runs x data) mesh "
            f"of {mesh.devices.size} {mesh.devices.flat[0].platform} devices"
        )
    return line + (
        f", {program.runs_per_call} per vmapped call (about {bytes_per_run / 2**20:.2f} MiB "
        f"per run; set sweep.runs_per_call to override)"
    )


def _sharding_info(program: runs.Program, state) -> dict:
    if program.mesh is None:
        return {}
    leaf = jax.tree_util.tree_leaves(state.train)[0]
    return {
        "mesh": dict(program.mesh.shape),
        "padded_runs": program.total,
        "state_sharding": [str(axis) for axis in leaf.sharding.spec],
        "state_devices": len(leaf.sharding.device_set),
    }
