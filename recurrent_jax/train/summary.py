"""The end of a run: plots, ``summary.json`` and the printed summary."""

from __future__ import annotations

import json

import jax
import numpy as np

from recurrent_jax.train import plots
from recurrent_jax.train.metrics import read_metrics
from recurrent_jax.train.stages import RunEnd

SUMMARY_FILE = "summary.json"


def write_summary(run, status: str) -> dict:
    """Writes plots and ``summary.json`` for a ``loop._Run``; returns the summary."""
    config, task, workdir = run.config, run.stages.task, run.workdir
    records = read_metrics(workdir)
    evals = [r for r in records if r["split"] == "eval"]
    best_step = run.checkpoints.best_step()
    best = next((r for r in evals if r["step"] == best_step), None)
    steps_done = run.step - run.start_step
    plots_written, samples = _outputs(run, records)
    summary = {
        "name": config.name,
        "task": config.data.task,
        "status": status,
        "message": run.message,
        "step": run.step,
        "num_steps": config.training.num_steps,
        "resumed_from": run.start_step or None,
        "final_eval": _strip(evals[-1]) if evals else None,
        "best_step": best_step,
        "best_eval": _strip(best) if best else None,
        "primary_metric": task.primary_metric,
        "baselines": task.baselines,
        "num_params": int(sum(np.size(x) for x in jax.tree_util.tree_leaves(run.state.params))),
        "seconds": round(run.seconds, 2),
        "steps_per_second": round(steps_done / run.seconds, 2) if run.seconds else None,
        "device": str(jax.devices()[0].device_kind),
        "workdir": str(workdir),
        "plots": plots_written,
        "samples": samples,
    }
    (workdir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _outputs(run, records) -> tuple[list[str], str | None]:
    """The learning curves and the model family's final outputs."""
    task, workdir, title = run.stages.task, run.workdir, run.config.name
    curves = plots.plot_learning_curves(
        records, workdir / plots.CURVES_FILE, title, task.baselines, task.primary_metric
    )
    batch, outputs = jax.device_get((run.eval_data, run.eval_outputs))
    end = RunEnd(workdir, title, run.step, run.state.params, batch, outputs, run.message != "")
    family_plots, samples = run.model.write_final(end)
    return [curves.name] * (curves is not None) + family_plots, samples


def _strip(record: dict) -> dict:
    return {k: v for k, v in record.items() if k != "split"}


def format_summary(summary: dict) -> str:
    """A few human-readable lines."""
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
