"""PNG plots of a run: learning curves and a task picture."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recurrent_jax.data.base import REGRESSION

CURVES_FILE = "learning_curves.png"
TASK_FILE = "predictions.png"
MATRIX_CLASSES = 128  # the most classes drawn as a confusion matrix (it grows as C²)
TOP_CONFUSIONS = 20  # past that, the most frequent (true, predicted) mistakes


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def save_figure(plt, fig, path: Path, *, tight: bool = True) -> Path:
    """Writes ``fig`` to ``path`` at 80 dpi (laid out tight first, unless it
    has a layout of its own) and closes it; returns ``path``."""
    if tight:
        fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def plot_learning_curves(
    records: list[dict], path: Path, title: str, baselines: dict | None = None, metric=None
) -> Path | None:
    """Loss and the other metrics of each split against the step, at most
    three panels a row; a metric equal to the loss at every record (a
    regression task's mse) shares the loss panel. ``baselines`` ({name:
    value} of the primary ``metric``) are drawn as dashed lines on its panel."""
    plt = _pyplot()
    if plt is None or not records:
        return None
    names = _panels(records)
    columns = min(3, len(names))
    rows = -(-len(names) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3.2 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
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
        aliases = [m for m in _same_as(records, name) if m != name]
        ax.set_title(" = ".join([name, *aliases]))
        if metric in (name, *aliases):
            for i, (label, value) in enumerate((baselines or {}).items()):
                ax.axhline(value, color=f"C{i + 2}", ls="--", lw=1, label=f"baseline: {label}")
        ax.set_xlabel("step")
        if name in ("loss", "mse", "grad_norm") and all(
            r.get(name) is None or r[name] > 0 for r in records
        ):
            _log_axis(ax)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
    for ax in axes.flat[len(names) :]:
        ax.set_visible(False)
    fig.suptitle(title)
    return save_figure(plt, fig, path)


def _log_axis(ax) -> None:
    """A log y axis with labels that never overlap: one per decade, or at 1,
    2 and 5 when the data span less than a decade (matplotlib's default then
    labels every minor tick, and they overlap)."""
    from matplotlib import ticker

    ax.set_yscale("log")
    low, high = ax.get_ylim()
    if high / low < 10:
        ax.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    ax.yaxis.set_minor_formatter(ticker.NullFormatter())


def _same_as(records, name) -> list[str]:
    """The metrics equal to ``name`` at every record where it is present."""
    present = [r for r in records if r.get(name) is not None]
    keys = sorted({k for r in present for k in r} - {"step", "split"})
    return [k for k in keys if all(r.get(k) == r[name] for r in present)]


def _panels(records) -> list[str]:
    """One panel per distinct metric: "loss" first, then the others by name."""
    names = sorted({k for r in records for k in r} - {"step", "split"})
    names.sort(key=lambda n: n != "loss")
    shown = []
    for name in names:
        if not any(name in _same_as(records, s) for s in shown):
            shown.append(name)
    return shown


def plot_predictions(
    kind: str, outputs, targets, weights, path: Path, title: str, class_names=None
) -> Path | None:
    """Regression: predictions against targets. Classification: the
    confusion matrix of the scored outputs (a colorbar counts them; axes
    ticked at the class ids, or by ``class_names`` where given, e.g. a
    language model's characters); past ``MATRIX_CLASSES`` classes (a word
    model's vocabulary) the ``TOP_CONFUSIONS`` most frequent mistakes
    instead, in memory that grows with the outputs, not with C²."""
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
        if num_classes <= MATRIX_CLASSES:
            _confusion_matrix(fig, ax, true, pred, num_classes, class_names)
        else:
            _top_confusions(ax, true, pred, num_classes, class_names)
    ax.set_title(title)
    return save_figure(plt, fig, path)


def _confusion_matrix(fig, ax, true, pred, num_classes: int, class_names) -> None:
    from matplotlib.ticker import MaxNLocator

    confusion = np.zeros((num_classes, num_classes))
    np.add.at(confusion, (true, pred), 1)
    image = ax.imshow(confusion, cmap="Blues")
    fig.colorbar(image, ax=ax, label="count")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if class_names is not None:
        ticks = np.arange(num_classes)
        labels = [_label(name) for name in class_names]
        ax.set_xticks(ticks, labels, fontsize=5)
        ax.set_yticks(ticks, labels, fontsize=5)
    else:  # class ids: ticks at integers, never at 0.5
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))


def _top_confusions(ax, true, pred, num_classes: int, class_names) -> None:
    """A bar per (true, predicted) pair among the ``TOP_CONFUSIONS`` most
    frequent mistakes, counted from the pairs seen (never a C x C array)."""
    wrong = true != pred
    pairs = true[wrong].astype(np.int64) * num_classes + pred[wrong]
    codes, counts = np.unique(pairs, return_counts=True)
    order = np.lexsort((codes, -counts))[:TOP_CONFUSIONS][::-1]  # most frequent on top
    name = (lambda i: _label(class_names[i])) if class_names is not None else str
    labels = [f"{name(c // num_classes)} → {name(c % num_classes)}" for c in codes[order]]
    ax.barh(np.arange(len(order)), counts[order])
    ax.set_yticks(np.arange(len(order)), labels, fontsize=6)
    ax.set_xlabel(f"count (of {true.size} scored, {int(wrong.sum())} wrong)")
    ax.set_ylabel(f"true → predicted (top {TOP_CONFUSIONS} of {num_classes} classes)")


def _label(name: str) -> str:
    return repr(name)[1:-1] or " "  # "\n", not a newline


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
    return save_figure(plt, fig, path)


def plot_frames(outputs, targets, path: Path, title: str, examples: int = 2) -> Path | None:
    """Next-frame prediction: for a few sequences, the true frames (a row)
    above the predicted ones, step by step; outputs and targets (B, T, H, W, 1)."""
    plt = _pyplot()
    if plt is None:
        return None
    outputs, targets = np.asarray(outputs)[..., 0], np.asarray(targets)[..., 0]
    examples = min(examples, outputs.shape[0])
    steps = outputs.shape[1]
    size = (1.1 * steps + 1.2, 2.3 * examples + 0.6)
    fig, axes = plt.subplots(2 * examples, steps, figsize=size, squeeze=False, layout="constrained")
    vmax = float(max(targets[:examples].max(), 1e-6))
    for e in range(examples):
        for row, (frames, label) in enumerate(((targets, "truth"), (outputs, "predicted"))):
            for t in range(steps):
                ax = axes[2 * e + row, t]
                image = ax.imshow(frames[e, t], cmap="gray", vmin=0.0, vmax=vmax)
                ax.set_xticks([])
                ax.set_yticks([])
                if t == 0:
                    ax.set_ylabel(f"{label} {e}", fontsize=8)
                if e == 0 and row == 0:
                    ax.set_title(f"t+{t + 1}", fontsize=8)
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.6, label="intensity")
    fig.suptitle(title)
    return save_figure(plt, fig, path, tight=False)  # laid out by "constrained"
