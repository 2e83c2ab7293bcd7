"""Run plots: one panel per distinct metric in rows of at most three, the
task's baselines on the primary metric's panel, colorbars on matrices, and
no matplotlib warnings."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from recurrent_jax.data.base import CLASSIFICATION  # noqa: E402
from recurrent_jax.train import plots  # noqa: E402
from recurrent_jax.train.seq2seq_outputs import plot_attention  # noqa: E402


def records(names, steps=(0, 10, 20)):
    out = []
    for split in ("train", "eval"):
        for step in steps:
            values = {name: 1.0 / (1 + step + i) for i, name in enumerate(names)}
            out.append({"step": step, "split": split, **values})
    return out


def test_a_metric_equal_to_the_loss_shares_its_panel():
    rows = records(["loss", "accuracy"])
    for row in rows:
        row["mse"] = row["loss"]
    assert plots._panels(rows) == ["loss", "accuracy"]
    assert plots._same_as(rows, "loss") == ["loss", "mse"]


def image_size(path):
    import matplotlib.image

    height, width = matplotlib.image.imread(path).shape[:2]
    return width, height


def test_many_metrics_wrap_into_rows_without_warnings(tmp_path):
    names = ["loss", "accuracy", "token_accuracy", "sequence_accuracy", "grad_norm", "bleu"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an empty legend or a layout problem fails
        path = plots.plot_learning_curves(
            records(names), tmp_path / "c.png", "t", {"chance": 0.5}, "accuracy"
        )
    width, height = image_size(path)
    assert width / height < 2.5  # two rows of three, not a six-panel strip


def test_baselines_are_drawn_on_the_primary_metric(tmp_path, monkeypatch):
    import matplotlib.axes

    drawn = []
    original = matplotlib.axes.Axes.axhline

    def spy(ax, y, *args, **kwargs):
        drawn.append((ax.get_title(), y, kwargs.get("label")))
        return original(ax, y, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "axhline", spy)
    rows = records(["loss", "mse"])
    for row in rows:
        row["mse"] = row["loss"]
    plots.plot_learning_curves(rows, tmp_path / "c.png", "t", {"mean": 0.17}, "mse")
    assert drawn == [("loss = mse", 0.17, "baseline: mean")]


def test_confusion_matrix_and_attention_have_colorbars(tmp_path, monkeypatch):
    import matplotlib.figure

    bars = []
    original = matplotlib.figure.Figure.colorbar
    monkeypatch.setattr(
        matplotlib.figure.Figure,
        "colorbar",
        lambda fig, *a, **k: bars.append(k.get("label")) or original(fig, *a, **k),
    )
    rng = np.random.default_rng(0)
    outputs, targets = rng.normal(size=(20, 3)), rng.integers(0, 3, 20)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plots.plot_predictions(
            CLASSIFICATION, outputs, targets, None, tmp_path / "p.png", "t", ["a", "\n", "c"]
        )
        example = (rng.uniform(size=(3, 4)), list("abcd"), ["x", "y", "</s>"])
        plot_attention([example, example], tmp_path / "a.png", "t")
    assert bars == ["count", "attention weight"]


def drawn_axes(monkeypatch):
    """The axes of the figures saved while inside (they are closed after)."""
    import matplotlib.figure

    axes = []
    original = matplotlib.figure.Figure.savefig
    monkeypatch.setattr(
        matplotlib.figure.Figure,
        "savefig",
        lambda fig, *a, **k: axes.extend(fig.axes) or original(fig, *a, **k),
    )
    return axes


def test_confusion_matrix_ticks_are_class_ids(tmp_path, monkeypatch):
    axes = drawn_axes(monkeypatch)
    rng = np.random.default_rng(0)
    outputs, targets = rng.normal(size=(40, 4)), rng.integers(0, 4, 40)
    plots.plot_predictions(CLASSIFICATION, outputs, targets, None, tmp_path / "p.png", "t")
    matrix = axes[0]
    for ticks in (matrix.get_xticks(), matrix.get_yticks()):
        inside = [t for t in ticks if -0.5 <= t <= 3.5]
        assert inside and all(float(t).is_integer() for t in inside), ticks


def test_many_classes_draw_the_most_frequent_confusions(tmp_path, monkeypatch):
    """Past ``MATRIX_CLASSES``: no C x C matrix (it grows as C²), but a bar
    per (true, predicted) pair, counted against a Python loop."""
    axes = drawn_axes(monkeypatch)
    classes = plots.MATRIX_CLASSES + 1
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 5, 200)
    predicted = np.where(rng.uniform(size=200) < 0.5, targets, rng.integers(0, classes, 200))
    outputs = np.zeros((200, classes), np.float32)
    outputs[np.arange(200), predicted] = 1.0
    names = [f"w{i}" for i in range(classes)]
    plots.plot_predictions(CLASSIFICATION, outputs, targets, None, tmp_path / "p.png", "t", names)
    counts = {}
    for t, p in zip(targets, predicted, strict=True):
        if t != p:
            counts[t, p] = counts.get((t, p), 0) + 1
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))  # ties: by (true, predicted)
    top = {f"w{t} → w{p}": n for (t, p), n in ranked[: plots.TOP_CONFUSIONS]}
    bars = axes[0]
    assert not bars.images  # no matrix
    labels = [label.get_text() for label in bars.get_yticklabels()]
    widths = [patch.get_width() for patch in bars.patches]
    assert dict(zip(labels, widths, strict=True)) == top
    assert widths == sorted(widths)  # the most frequent on top
