"""A sweep in several processes: own runs, own files, one merged report.

Each process (``distributed.initialize``) trains its own block of every
grid point's runs (``own_runs``) on its local devices and writes its own
``metrics``, run table, checkpoints and best run
(``distributed.process_path``: ``*.process-<i>-of-<n>.*``) in the shared
workdir; ``merge_outputs`` then has process 0 merge them into the files a
single process writes, between two barriers.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax

from recurrent_jax import distributed as dist
from recurrent_jax.sweep import report
from recurrent_jax.train import runs
from recurrent_jax.train.checkpoint import load_tree
from recurrent_jax.train.metrics import METRICS_FILE, read_metrics
from recurrent_jax.train.sweep_spec import GridPoint, SweepPlan


def merge_outputs(plan: SweepPlan, workdir: Path, status: str, points: list, seconds: float):
    """Every process writes its run table (``runs.process-<i>-of-<n>.jsonl``)
    and status; after a barrier process 0 merges the tables
    (``distributed.merge_run_tables``), the metrics files and the best runs,
    then writes the report; after a second barrier every process returns
    the merged summary. ``workdir`` must be shared by the processes."""
    own = {r.run_id for point in plan.points for r in own_runs(point)}
    records = read_metrics(dist.process_path(workdir / METRICS_FILE))
    rows = report.run_rows(plan, records, [r for r in plan.runs if r.run_id in own])
    dist.write_run_table(dist.process_path(workdir / PROCESS_TABLE), rows)
    state = {"status": status, "points": points}
    dist.process_path(workdir / PROCESS_STATUS).write_text(json.dumps(state, default=str) + "\n")
    dist.barrier("recurrent_jax sweep: tables written")
    summary, failure = workdir / report.SUMMARY_FILE, None
    if jax.process_index() == 0:
        summary.unlink(missing_ok=True)
        try:
            _merge(plan, workdir, points, seconds)
        except Exception as e:  # reach the barrier: the others must not wait forever
            failure = e
    dist.barrier("recurrent_jax sweep: report written")
    if failure is not None:
        raise failure
    if not summary.exists():
        raise RuntimeError(f"process 0 did not write {summary}: see its log")
    return json.loads(summary.read_text())


def _merge(plan: SweepPlan, workdir: Path, points: list, seconds: float) -> None:
    states = [json.loads(p.read_text()) for p in dist.process_paths(workdir / PROCESS_STATUS)]
    merge_metrics(plan, dist.process_paths(workdir / METRICS_FILE), workdir / METRICS_FILE)
    rows = dist.merge_run_tables(dist.process_paths(workdir / PROCESS_TABLE))
    missing = sorted({r.run_id for r in plan.runs} - {int(row["run_id"]) for row in rows})
    if missing:
        raise RuntimeError(f"the processes' run tables lack run ids {missing[:10]}")
    merge_best_runs(plan, workdir, dist.process_paths(workdir / report.BEST_DIR))
    status = "completed" if all(s["status"] == "completed" for s in states) else "interrupted"
    merged_points = [p for s in states for p in s["points"]]
    report.write_report(plan, workdir, status, merged_points, seconds, rows)


PROCESS_TABLE, PROCESS_STATUS = "runs.jsonl", "status.json"


def own_runs(point: GridPoint) -> list:
    """This process's runs of ``point``: a contiguous block (all with one process)."""
    return [point.runs[i] for i in dist.process_runs(len(point.runs))]


def merge_metrics(plan: SweepPlan, paths, out_path: Path) -> None:
    """One ``metrics.jsonl`` from the processes' files, in the order one
    process writes it: by grid point, step, train before eval, run id."""
    point_of = {r.run_id: r.point for r in plan.runs}
    records = [r for path in paths if Path(path).exists() for r in read_metrics(path)]
    records.sort(
        key=lambda r: (point_of[r["run_id"]], r["step"], r["split"] != "train", r["run_id"])
    )
    Path(out_path).write_text("".join(json.dumps(r) + "\n" for r in records))


def merge_best_runs(plan: SweepPlan, workdir: Path, directories) -> None:
    """Keeps the best of ``best_run/`` and the processes' candidates
    (``directories``) as ``best_run/`` (ties: the lowest run id), its
    checkpoint written from the candidate's ``state.npz``; removes the
    candidates."""
    target = Path(workdir) / report.BEST_DIR
    found = [(d, report.read_best(d)) for d in [target, *map(Path, directories)]]
    candidates = [d for d, record in found if record is not None]
    if candidates:
        records = [record for _, record in found if record is not None]
        rank = lambda j: (records[j]["score"], -records[j]["run_id"])
        winner = max(range(len(candidates)), key=rank)
        if candidates[winner] != target:
            shutil.rmtree(target, ignore_errors=True)
            shutil.move(candidates[winner], target)
            record = records[winner]
            run = next(r for r in plan.runs if r.run_id == record["run_id"])
            program = runs.compile_runs(run.config, 1)
            hparams, keys = runs.stack_hparams([run.config]), runs.stack_keys([0])
            like = jax.eval_shape(program.init, hparams, keys)
            best = load_tree(target / report.CANDIDATE_FILE, like)
            report.save_best(target, best, record["score"], program.setup.task)
            (target / report.CANDIDATE_FILE).unlink()
    for d in directories:
        shutil.rmtree(d, ignore_errors=True)
