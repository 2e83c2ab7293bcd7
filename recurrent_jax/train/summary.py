"""The end of a run: plots, ``summary.json`` and the printed summary."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np

from recurrent_jax.train import plots
from recurrent_jax.train.metrics import read_metrics
from recurrent_jax.train.stages import RunEnd

SUMMARY_FILE = "summary.json"


def write_summary(
    config,
    setup,
    end: RunEnd,
    *,
    status: str,
    message: str,
    start_step: int,
    seconds: float,
    best_step: int | None,
) -> dict:
    """Writes the plots and ``summary.json`` of a finished run (``end``,
    its ``core.Setup``); returns the summary."""
    task, workdir = setup.task, end.workdir
    records = read_metrics(workdir)
    evals = [r for r in records if r["split"] == "eval"]
    best = next((r for r in evals if r["step"] == best_step), None)
    curves = plots.plot_learning_curves(
        records, workdir / plots.CURVES_FILE, end.title, task.baselines, task.primary_metric
    )
    family_plots, samples = setup.model.write_final(end)
    summary = {
        "name": config.name,
        "task": config.data.task,
        "status": status,
        "message": message,
        "step": end.step,
        "num_steps": config.training.num_steps,
        "resumed_from": start_step or None,
        "final_eval": _strip(evals[-1]) if evals else None,
        "best_step": best_step,
        "best_eval": _strip(best) if best else None,
        "primary_metric": task.primary_metric,
        "baselines": task.baselines,
        "num_params": int(sum(np.size(x) for x in jax.tree_util.tree_leaves(end.params))),
        "seconds": round(seconds, 2),
        "steps_per_second": round((end.step - start_step) / seconds, 2) if seconds else None,
        "device": str(jax.devices()[0].device_kind),
        "workdir": str(workdir),
        "plots": [curves.name] * (curves is not None) + family_plots,
        "samples": samples,
    }
    (workdir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def finished_summary(workdir, num_steps: int | None) -> dict | None:
    """The saved summary of a run (or sweep: ``num_steps`` None) in
    ``workdir`` that completed all its ``num_steps``, or None (no summary,
    another status, or unreadable)."""
    path = Path(workdir) / SUMMARY_FILE
    try:
        summary = json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(summary, dict):
        return None
    steps = num_steps is None or summary.get("step") == num_steps
    done = summary.get("status") == "completed" and steps
    return summary if done else None


def _strip(record: dict) -> dict:
    return {k: v for k, v in record.items() if k != "split"}


def format_run_summary(summary: dict) -> str:
    """A few human-readable lines of a run's summary."""
    lines = [
        f"{summary['name']} ({summary['task']}): {summary['status']} at step "
        f"{summary['step']}/{summary['num_steps']}"
    ]
    if summary["message"]:
        lines.append(summary["message"])
    if summary.get("resumed_from"):
        lines.append(f"  resumed from step {summary['resumed_from']}")
    metric, last = summary["primary_metric"], summary["final_eval"]
    if last:
        # "final" only for the evaluation that ended a completed run: an
        # interrupted run's last evaluation may be the one at step 0.
        label = "final" if summary["status"] == "completed" else "latest"
        lines.append(f"  {label} eval {metric}: {last.get(metric):.5g} (step {last['step']})")
    if summary["best_eval"]:
        lines.append(
            f"  best eval {metric}: {summary['best_eval'].get(metric):.5g} "
            f"(step {summary['best_step']})"
        )
    for name, value in summary["baselines"].items():
        lines.append(f"  baseline {name}: {value:.5g}")
    if summary["steps_per_second"]:
        lines.append(
            f"  {summary['num_params']} params, {summary['seconds']:.1f}s, "
            f"{summary['steps_per_second']:.1f} steps/s on {summary['device']}"
        )
    lines.append(f"  run directory: {summary['workdir']}")
    if summary["status"] == "interrupted":
        lines.append(f"  resume with: recurrent-jax train --workdir={summary['workdir']}")
    return "\n".join(lines)
