"""PNG plots of a run: learning curves and a task picture."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recurrent_jax.data.base import REGRESSION

CURVES_FILE = "learning_curves.png"
TASK_FILE = "predictions.png"


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def plot_learning_curves(records: list[dict], path: Path, title: str) -> Path | None:
    """Loss and the other metrics of each split against the step."""
    plt = _pyplot()
    if plt is None or not records:
        return None
    names = sorted({k for r in records for k in r} - {"step", "split"})
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.2), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        for split in ("train", "eval"):
            pts = [
                (r["step"], r[name])
                for r in records
                if r["split"] == split and r.get(name) is not None
            ]
            if pts:
                ax.plot(
                    *zip(*pts, strict=True), label=split, marker="." if split == "eval" else None
                )
        ax.set_xlabel("step")
        ax.set_title(name)
        if name in ("loss", "mse", "grad_norm") and all(
            r.get(name) is None or r[name] > 0 for r in records
        ):
            ax.set_yscale("log")
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def plot_predictions(kind: str, outputs, targets, weights, path: Path, title: str) -> Path | None:
    """Regression: predictions against targets. Classification: the
    confusion matrix of the scored outputs."""
    plt = _pyplot()
    if plt is None:
        return None
    outputs, targets = np.asarray(outputs), np.asarray(targets)
    scored = np.ones(targets.shape[: outputs.ndim - 1], bool)
    if weights is not None:
        scored = np.asarray(weights) > 0
    if kind == REGRESSION and outputs.ndim == 3 and outputs.shape[0] == 1:
        return _plot_forecast(plt, outputs[0, :, 0], targets[0, :, 0], scored[0], path, title)
    fig, ax = plt.subplots(figsize=(4.2, 4))
    if kind == REGRESSION:
        pred, true = outputs[scored].ravel(), targets[scored].ravel()
        ax.scatter(true, pred, s=4, alpha=0.5)
        lo, hi = float(min(true.min(), pred.min())), float(max(true.max(), pred.max()))
        ax.plot([lo, hi], [lo, hi], color="grey", lw=1)
        ax.set_xlabel("target")
        ax.set_ylabel("prediction")
    else:
        num_classes = outputs.shape[-1]
        pred, true = outputs.argmax(-1)[scored], targets[scored]
        confusion = np.zeros((num_classes, num_classes))
        np.add.at(confusion, (true, pred), 1)
        ax.imshow(confusion, cmap="Blues")
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _plot_forecast(plt, predicted, truth, scored, path: Path, title: str) -> Path:
    """One sequence: truth and one-step-ahead predictions over time."""
    fig, ax = plt.subplots(figsize=(7, 3.2))
    steps = np.arange(len(truth))
    ax.plot(steps, truth, color="black", lw=1, label="truth")
    ax.plot(steps, predicted, color="tab:blue", lw=1, label="prediction")
    if scored.any():
        ax.axvspan(
            steps[scored].min(), steps[scored].max(), color="grey", alpha=0.15, label="scored"
        )
    ax.set_xlabel("step")
    ax.legend()
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
