"""The outputs of a sweep: run table, plots, best run and ``summary.json``.

- ``runs.csv`` / ``runs.md``: one row per run id with its swept values,
  seed, status, final eval metrics and best eval of the primary metric;
- ``best_run/``: a run directory (marked ``rundir.BEST_RUN``,
  ``config.json`` + checkpoint, and ``best.json``, written last: its run
  id, score and step) holding the best run's state at its best eval, so
  ``recurrent-jax eval --workdir=<sweep>/best_run`` reloads it;
- PNG plots: the primary metric against each swept value (mean ± std over
  seeds), learning curves coloured by each swept value, and heatmaps of
  the mean over seeds for each pair of swept axes.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import defaultdict
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from recurrent_jax import distributed as dist
from recurrent_jax.train import rundir
from recurrent_jax.train.checkpoint import checkpointer, save_tree
from recurrent_jax.train.loop import prepare_workdir
from recurrent_jax.train.metrics import METRICS_FILE, read_metrics
from recurrent_jax.train.plots import _pyplot, save_figure
from recurrent_jax.train.runs import Best, RunsState, setup_of
from recurrent_jax.train.sweep_spec import SweepPlan

TABLE_CSV, TABLE_MD, SUMMARY_FILE = "runs.csv", "runs.md", "summary.json"
BEST_DIR, BEST_FILE, CANDIDATE_FILE = "best_run", "best.json", "state.npz"


# --- the best run ----------------------------------------------------------------


def update_best_run(runs, best: Best, task, directory: Path) -> None:
    """Saves the best of a finished grid point's ``runs`` (``best``: their
    stacked ``runs.Best``, in the same order) to ``directory`` when it
    beats the one saved there. With several processes each saves its
    candidate as ``state.npz`` (see ``train.checkpoint.save_tree``) and
    process 0 keeps the best (``merge_best_runs``)."""
    scores = np.asarray(jax.device_get(best.score), np.float64)
    if not np.isfinite(scores).any():
        return
    i = int(np.nanargmax(np.where(np.isfinite(scores), scores, -np.inf)))
    run, directory = runs[i], Path(directory)
    saved = read_best(directory)
    if saved and (saved["run_id"] == run.run_id or saved["score"] >= scores[i]):
        return
    shutil.rmtree(directory, ignore_errors=True)
    rundir.mark(rundir.make_workdir(directory), rundir.BEST_RUN, name=run.config.name)
    prepare_workdir(run.config, directory)
    train = jax.tree_util.tree_map(lambda a: a[i : i + 1], best.state)  # run axis of 1
    step, score = train.step[0], jnp.full((1,), scores[i], jnp.float32)
    calls = step // run.config.training.steps_per_call if run.config.data.stream else None
    state = RunsState(step, train, Best(train, score), calls)  # a training run's
    if jax.process_count() > 1:
        save_tree(directory / CANDIDATE_FILE, state)
    else:
        save_best(directory, state, float(scores[i]), task)
    record = {"run_id": run.run_id, "score": float(scores[i]), "step": int(step)}
    partial = directory / f"{BEST_FILE}.partial"
    partial.write_text(json.dumps(record) + "\n")
    os.replace(partial, directory / BEST_FILE)  # last, and whole: the best run is complete


def read_best(directory: Path) -> dict | None:
    """The record of the best run saved in ``directory`` (``BEST_FILE``:
    its run id, score and step), or None when there is none or it cannot
    be read (cut short by a crash, or edited): a resumed sweep's grid
    points all offer their best again, so it is rebuilt."""
    try:
        record = json.loads((Path(directory) / BEST_FILE).read_bytes())
    except (OSError, ValueError, RecursionError):
        return None
    fields = {"run_id": int, "score": (int, float), "step": int}
    valid = isinstance(record, dict) and all(
        isinstance(record.get(k), t) and not isinstance(record.get(k), bool)
        for k, t in fields.items()
    )
    return record if valid else None


def save_best(directory: Path, state: RunsState, score: float, task) -> None:
    """The best run's ``state`` (a training run's: a run axis of 1) as the
    checkpoint of the run directory ``directory``."""
    checkpoints = checkpointer(directory / "checkpoints", task, 1, process_local=True)
    checkpoints.save(state, {task.primary_metric: score if task.higher_is_better else -score})
    checkpoints.close()


# --- the table -------------------------------------------------------------------


def primary_metric(plan: SweepPlan) -> tuple[str, bool]:
    """The task's primary metric and whether higher is better (the task of
    the last grid point, built for its program: ``runs.setup_of``)."""
    task = setup_of(plan.points[-1].config).task
    return task.primary_metric, task.higher_is_better


def run_rows(plan: SweepPlan, records: list[dict], runs=None) -> list[dict]:
    """One row per run of ``runs`` (default: all): swept values, status,
    final eval metrics, best eval."""
    primary, higher = primary_metric(plan)
    by_run = defaultdict(list)
    for r in records:
        by_run[r.get("run_id")].append(r)
    num_steps = plan.base.training.num_steps
    rows = []
    for run in plan.runs if runs is None else runs:
        mine = by_run[run.run_id]
        evals = [r for r in mine if r["split"] == "eval"]
        scored = [r for r in evals if r["step"] > 0 and r.get(primary) is not None]
        pick = max if higher else min
        best = pick(scored, key=lambda r: r[primary]) if scored else None
        final = evals[-1] if evals else {}
        diverged = any(r.get("loss") is None for r in mine) or (
            bool(final) and final.get(primary) is None
        )
        done = bool(final) and final["step"] == num_steps
        status = "diverged" if diverged else "completed" if done else "incomplete"
        row = {"run_id": run.run_id, "point": run.point, "seed": run.seed, **run.values}
        row["status"] = status
        for k, v in final.items():
            if k not in ("run_id", "step", "split"):
                row[f"final_{k}"] = v
        row[f"best_{primary}"] = best[primary] if best else None
        row["best_step"] = best["step"] if best else None
        rows.append(row)
    return rows


def best_row(rows: list[dict], primary: str, higher: bool) -> dict | None:
    scored = [r for r in rows if r[f"best_{primary}"] is not None]
    if not scored:
        return None
    sign = 1 if higher else -1
    return max(scored, key=lambda r: (sign * r[f"best_{primary}"], -r["run_id"]))


def write_tables(rows: list[dict], workdir: Path, best_id: int | None) -> None:
    dist.write_run_table(workdir / TABLE_CSV, rows)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [_cell(row.get(c)) for c in columns]
        if row["run_id"] == best_id:
            cells = [f"**{c}**" for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    (workdir / TABLE_MD).write_text("\n".join(lines) + "\n")


def short(value) -> str:
    """A swept value as labels and summaries show it: floats to 4
    significant digits (``0.004642``, not ``0.00464158883361``)."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.5g}"
    return str(value)


# --- plots -----------------------------------------------------------------------


def _file_name(name: str) -> str:
    return name.replace(".", "_")


def _is_numeric(values) -> bool:
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def _log_scale(values) -> bool:
    return _is_numeric(values) and min(values) > 0 and max(values) / min(values) >= 10


def plot_metric_vs_values(plan, rows, metric, workdir: Path) -> list[Path]:
    """For each swept axis: the final ``metric`` against its values, mean ±
    std over seeds, one line per combination of the other axes (averaged
    over them when there are more than 6)."""
    plt = _pyplot()
    written = []
    for name in plan.swept if plt else ():
        values = plan.axes[name]
        others = [n for n in plan.swept if n != name]
        combos = list(dict.fromkeys(tuple(r[n] for n in others) for r in rows))
        if len(combos) > 6:
            others, combos = [], [()]
        fig, ax = plt.subplots(figsize=(5, 3.6))
        xs = values if _is_numeric(values) else list(range(len(values)))
        for combo in combos:
            mean, std = [], []
            for v in values:
                ys = [
                    r[metric]
                    for r in rows
                    if r[name] == v
                    and tuple(r[n] for n in others) == combo
                    and r.get(metric) is not None
                ]
                mean.append(np.mean(ys) if ys else np.nan)
                std.append(np.std(ys) if ys else np.nan)
            label = ", ".join(f"{n}={short(c)}" for n, c in zip(others, combo, strict=True))
            label = label or None
            ax.errorbar(xs, mean, yerr=std, marker="o", capsize=3, label=label)
        if not _is_numeric(values):
            ax.set_xticks(xs, [short(v) for v in values])
        elif _log_scale(values):
            ax.set_xscale("log")
        ax.set_xlabel(name)
        ax.set_ylabel(f"{metric} (mean ± std over seeds)")
        if any(c for c in combos):
            ax.legend(fontsize=7)
        written.append(save_figure(plt, fig, workdir / f"{metric}_vs_{_file_name(name)}.png"))
    return written


def plot_curves_by_value(plan, records, metric, workdir: Path) -> list[Path]:
    """For each swept axis: every run's eval ``metric`` and train loss
    against the step, coloured by the run's value on that axis."""
    plt = _pyplot()
    if plt is None:
        return []
    import matplotlib.colors as mcolors

    curves = defaultdict(lambda: {"eval": [], "train": []})
    for r in records:
        key = "eval" if r["split"] == "eval" else "train"
        value = r.get(metric if key == "eval" else "loss")
        if value is not None:
            curves[r["run_id"]][key].append((r["step"], value))
    written = []
    for name in plan.swept:
        values = plan.axes[name]
        if _is_numeric(values) and len(set(values)) > 1:
            lo, hi = min(values), max(values)
            norm = (mcolors.LogNorm if _log_scale(values) else mcolors.Normalize)(lo, hi)
            color = lambda v, norm=norm: plt.cm.viridis(norm(v))
        else:
            color = lambda v, values=values: plt.cm.tab10(values.index(v) % 10)
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
        for run in plan.runs:
            for ax, key in zip(axes, ("eval", "train"), strict=True):
                pts = curves[run.run_id][key]
                if pts:
                    ax.plot(*zip(*pts, strict=True), color=color(run.values[name]), lw=1, alpha=0.8)
        for ax, title in zip(axes, (f"eval {metric}", "train loss"), strict=True):
            ax.set_xlabel("step")
            ax.set_title(title)
            if all(
                y > 0 for c in curves.values() for _, y in c["eval" if "eval" in title else "train"]
            ):
                ax.set_yscale("log")
        handles = [
            plt.Line2D([], [], color=color(v), label=f"{name}={short(v)}")
            for v in (values if len(values) <= 8 else [values[0], values[-1]])
        ]
        axes[1].legend(handles=handles, fontsize=7)
        written.append(save_figure(plt, fig, workdir / f"curves_by_{_file_name(name)}.png"))
    return written


def plot_heatmaps(plan, rows, metric, workdir: Path) -> list[Path]:
    """For each pair of swept axes (of the first three): the final ``metric``
    averaged over seeds and the other axes."""
    plt = _pyplot()
    names = plan.swept[:3]
    written = []
    for a, b in [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]] if plt else ():
        xs, ys = plan.axes[a], plan.axes[b]
        grid = np.full((len(ys), len(xs)), np.nan)
        for j, y in enumerate(ys):
            for i, x in enumerate(xs):
                vals = [
                    r[metric] for r in rows if r[a] == x and r[b] == y and r.get(metric) is not None
                ]
                grid[j, i] = np.mean(vals) if vals else np.nan
        fig, ax = plt.subplots(figsize=(1.2 * len(xs) + 2.5, 0.8 * len(ys) + 2))
        image = ax.imshow(grid, cmap="viridis", aspect="auto", origin="lower")
        for (j, i), v in np.ndenumerate(grid):
            if np.isfinite(v):
                bright = image.norm(v) > 0.6
                ax.text(
                    i, j, f"{v:.3g}", ha="center", va="center", fontsize=8, color="kw"[not bright]
                )
        ax.set_xticks(range(len(xs)), [short(v) for v in xs])
        ax.set_yticks(range(len(ys)), [short(v) for v in ys])
        ax.set_xlabel(a)
        ax.set_ylabel(b)
        fig.colorbar(image, ax=ax, label=f"{metric} (mean over seeds)")
        written.append(
            save_figure(plt, fig, workdir / f"heatmap_{_file_name(a)}_{_file_name(b)}.png")
        )
    return written


# --- the summary -----------------------------------------------------------------


def write_report(
    plan: SweepPlan, workdir: Path, status: str, points: list, seconds: float, rows=None
):
    """Writes the tables, plots and ``summary.json``; returns the summary.
    ``rows``: the run table (default: built from ``metrics.jsonl``)."""
    primary, higher = primary_metric(plan)
    records = read_metrics(Path(workdir) / METRICS_FILE)
    rows = run_rows(plan, records) if rows is None else rows
    best = best_row(rows, primary, higher)
    write_tables(rows, workdir, best["run_id"] if best else None)
    final = f"final_{primary}"
    plots = []
    if status == "completed":
        plots += plot_metric_vs_values(plan, rows, final, workdir)
        plots += plot_curves_by_value(plan, records, primary, workdir)
        plots += plot_heatmaps(plan, rows, final, workdir)
    saved_best = read_best(Path(workdir) / BEST_DIR)
    summary = {
        "name": plan.base.name,
        "task": plan.base.data.task,
        "status": status,
        "num_runs": len(plan.runs),
        "num_points": len(plan.points),
        "swept": {n: plan.axes[n] for n in plan.swept},
        "seeds": list(plan.seeds),
        "primary_metric": primary,
        "higher_is_better": higher,
        "best": best,
        "best_run_dir": str(Path(workdir) / BEST_DIR) if saved_best else None,
        "counts": {s: sum(r["status"] == s for r in rows) for s in ("completed", "diverged")},
        "points": points,
        "seconds": round(seconds, 2),
        "device": str(jax.devices()[0].device_kind),
        "devices": jax.device_count(),
        "processes": jax.process_count(),
        "workdir": str(workdir),
        "tables": [TABLE_CSV, TABLE_MD],
        "plots": [p.name for p in plots if p is not None],
    }
    (Path(workdir) / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return summary


def format_sweep_summary(summary: dict) -> str:
    """The few lines a finished sweep prints: status, best run, where to look."""
    metric = summary["primary_metric"]
    lines = [
        f"{summary['name']} sweep ({summary['task']}): {summary['status']}; "
        f"{summary['num_runs']} runs in {summary['num_points']} grid point(s), "
        f"{summary['counts']['diverged']} diverged, {summary['seconds']:.1f}s "
        f"on {summary['device']}"
    ]
    for p in summary["points"]:
        where = f" (process {p['process']})" if "process" in p else ""
        if "mesh" in p:
            mesh = " x ".join(f"{n}={k}" for n, k in p["mesh"].items())
            where += f", sharded over {p['state_devices']} devices (mesh {mesh})"
        resumed = f" (resumed from step {p['resumed_from']})" if p.get("resumed_from") else ""
        lines.append(
            f"  point {p['point']}{where}: {p['runs']} runs, {p['runs_per_call']} per call, "
            f"step {p['step']}{resumed}, {p['seconds']:.1f}s"
        )
    best = summary["best"]
    if best:
        swept = ", ".join(f"{n}={short(best[n])}" for n in summary["swept"])
        lines.append(
            f"  best: run {best['run_id']} ({swept}, seed {best['seed']}): "
            f"{metric} {best[f'best_{metric}']:.5g} at step {best['best_step']}"
        )
    if summary["best_run_dir"]:
        lines.append(f"  best run: recurrent-jax eval --workdir={summary['best_run_dir']}")
    lines.append(f"  run table: {summary['workdir']}/{TABLE_MD}")
    if summary["status"] == "interrupted":
        lines.append(f"  resume with: recurrent-jax sweep --workdir={summary['workdir']}")
    return "\n".join(lines)


__all__ = ["format_sweep_summary", "run_rows", "update_best_run", "write_report"]
