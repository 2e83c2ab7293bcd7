"""Time-series classification: GRU and LSTM against published UCR results.

python experiments/ucr_benchmark.py [--smoke] [--out DIR] [--workdir DIR]

Three UCR datasets that aeon ships (GunPoint, ItalyPowerDemand, ArrowHead),
on their official train/test splits. The published numbers: the UCR
archive's test error of the 1-nearest-neighbour classifier with Euclidean
distance and with full-window DTW (Dau et al. 2019), which this script
recomputes by brute force (a check that our data and split are the
archive's), and the accuracies that aeon ships for four current
classifiers (InceptionTime, HIVE-COTE 2, WEASEL 2.0, FreshPRINCE; resample
0 is the official split, the mean is over 30 resamples). Ours: a 1-layer
GRU and LSTM, each one's learning rate picked per dataset on seeds 0–7 by
the final *training* loss (the test split chooses nothing), then 32 fresh
seeds at that rate. The verdict: each cell's median test accuracy with a
distribution-free interval, against each published number (sign test), and
GRU against LSTM (bootstrap interval, Mann–Whitney U).
Writes ``experiments/reports/ucr_benchmark.md`` and its plot.
"""

from __future__ import annotations

import csv
import importlib.resources
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _stats  # noqa: E402
import _study  # noqa: E402

from recurrent_jax.train.config import base_config, shrink_to_smoke, warmup_cosine  # noqa: E402

NAME = "ucr_benchmark"
DATASETS = ["GunPoint", "ItalyPowerDemand", "ArrowHead"]
CELLS = ["gru", "lstm"]
RATES = [1e-3, 3e-3, 1e-2]
SEEDS = (8, 32)
PATHS = ["data.dataset", "model.cell"]
# Test error on the official split, UCR archive (Dau et al. 2019, its table
# of 1-NN baselines): Euclidean distance, and DTW with a full warping window.
ARCHIVE_ERROR = {
    "GunPoint": {"1-NN ED": 0.087, "1-NN DTW": 0.093},
    "ItalyPowerDemand": {"1-NN ED": 0.045, "1-NN DTW": 0.050},
    "ArrowHead": {"1-NN ED": 0.200, "1-NN DTW": 0.297},
}
SHIPPED = ["InceptionTime", "HC2", "WEASEL-2.0", "FreshPRINCE"]
STYLES = ["--", ":", "-.", (0, (1, 3)), (0, (5, 5)), (0, (3, 1, 1, 1))]  # one per reference
COLORS = ["tab:gray", "tab:brown", "tab:blue", "tab:green", "tab:purple", "tab:red"]


def get_config(smoke: bool):
    config = base_config("ucr", name=NAME)
    config.data.update(dataset=DATASETS[0], batch_size=16)
    config.model.update(cell="gru", hidden_size=32)
    warmup_cosine(config, 3e-3, 50, name="adamw", weight_decay=1e-4)  # the sweeps set the rate
    config.training.update(num_steps=500, steps_per_call=100, eval_every=100)
    if smoke:
        config.model.update(hidden_size=8)
        shrink_to_smoke(config, 20)
    return config


def plan(smoke: bool):
    """(datasets, learning rates, (selection seeds, verdict seeds))."""
    return (["ItalyPowerDemand"], [3e-3, 1e-2], (2, 2)) if smoke else (DATASETS, RATES, SEEDS)


def pick(rows: list[dict]) -> float:
    return _study.best_rate(rows, "final_train_loss")


# --- the published and recomputed baselines -----------------------------------------


def series(dataset: str):
    """(train xs (N, T), labels, test xs, labels): the archive's values, unscaled."""
    from recurrent_jax.data.ucr import load_ucr

    (x_tr, _, y_tr), (x_te, _, y_te), _ = load_ucr(dataset)
    return x_tr[..., 0], y_tr, x_te[..., 0], y_te


def euclidean(test: np.ndarray, train: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances (n_test, n_train)."""
    return ((test[:, None, :] - train[None, :, :]) ** 2).sum(-1)


def dtw(test: np.ndarray, train: np.ndarray) -> np.ndarray:
    """Full-window DTW distances (n_test, n_train), squared point costs,
    D[i, j] = c(i, j) + min(D[i-1, j-1], D[i-1, j], D[i, j-1]); the
    recursion runs over (i, j) for all pairs at once."""
    a = np.repeat(test, len(train), 0)
    b = np.tile(train, (len(test), 1))
    previous = np.full((len(a), b.shape[1] + 1), np.inf)
    previous[:, 0] = 0.0
    for i in range(a.shape[1]):
        cost = (a[:, i : i + 1] - b) ** 2
        current = np.full_like(previous, np.inf)
        diagonal_or_up = np.minimum(previous[:, :-1], previous[:, 1:])
        for j in range(b.shape[1]):
            current[:, j + 1] = cost[:, j] + np.minimum(diagonal_or_up[:, j], current[:, j])
        previous = current
    return previous[:, -1].reshape(len(test), len(train))


def nearest_neighbour_accuracy(dataset: str, distance) -> float:
    x_tr, y_tr, x_te, y_te = series(dataset)
    return float((y_tr[distance(x_te, x_tr).argmin(1)] == y_te).mean())


def shipped_accuracies(dataset: str) -> dict[str, tuple[float, float]]:
    """{classifier: (resample 0, mean of the resamples)} from aeon's files;
    empty where this aeon version does not ship them."""
    folder = importlib.resources.files("aeon") / "testing/example_results_files"
    folder = folder / "classification/accuracy"
    out = {}
    for name in SHIPPED:
        path = folder / f"{name}_accuracy.csv"
        if not path.is_file():
            continue
        with path.open() as f:
            for row in csv.reader(f):
                if row and row[0] == dataset:
                    values = [float(v) for v in row[1:] if v]
                    out[name] = (values[0], float(np.mean(values)))
    return out


def baselines(datasets) -> dict[str, dict]:
    """Per dataset: published and recomputed reference accuracies."""
    out = {}
    for dataset in datasets:
        published = {k: 1 - v for k, v in ARCHIVE_ERROR[dataset].items()}
        ours = {
            "1-NN ED": nearest_neighbour_accuracy(dataset, euclidean),
            "1-NN DTW": nearest_neighbour_accuracy(dataset, dtw),
        }
        out[dataset] = {"archive": published, "ours": ours, "shipped": shipped_accuracies(dataset)}
    return out


def baseline_table(refs: dict) -> str:
    rows = []
    for dataset, r in refs.items():
        shipped = [r["shipped"].get(n) for n in SHIPPED]
        rows.append(
            [
                dataset,
                *[f"{r['archive'][k]:.3f} / {r['ours'][k]:.3f}" for k in ("1-NN ED", "1-NN DTW")],
                *["–" if s is None else f"{s[0]:.3f} ({s[1]:.3f})" for s in shipped],
            ]
        )
    headers = ["dataset", "1-NN ED: archive / ours", "1-NN DTW: archive / ours"]
    return _study.md_table(headers + [f"{n}: split 0 (mean of 30)" for n in SHIPPED], rows)


# --- our runs against them --------------------------------------------------------------


def references(r: dict) -> dict[str, float]:
    """The numbers each arm is tested against: the archive's, then resample 0
    of the shipped classifiers."""
    return {**r["archive"], **{name: s[0] for name, s in r["shipped"].items()}}


def arm_rows(decided: _study.Decided, refs: dict) -> list[list]:
    rows = []
    for (dataset, cell), runs in sorted(_study.group(decided.verdict.rows, PATHS).items()):
        accuracy = [r["final_accuracy"] for r in runs]
        ed = _stats.median_versus(accuracy, refs[dataset]["archive"]["1-NN ED"])
        k = _stats.median_rank(len(accuracy))
        ordered = sorted(accuracy)
        rows.append(
            [
                dataset,
                cell,
                decided.chosen[dataset, cell],
                len(runs),
                f"{np.median(accuracy):.3f} ({ordered[k - 1]:.3f}–{ordered[len(runs) - k]:.3f})",
                f"{ed.effect:+.3f} (sign test p = {ed.p_value:.2g})",
                f"{min(accuracy):.3f}–{max(accuracy):.3f}",
            ]
        )
    return rows


def verdict(decided: _study.Decided, refs: dict) -> str:
    lines = []
    arms = _study.group(decided.verdict.rows, PATHS)
    for dataset in refs:
        accuracy = {c: [r["final_accuracy"] for r in arms.get((dataset, c), [])] for c in CELLS}
        for cell, values in accuracy.items():
            if len(values) < 6:
                lines.append(f"- {dataset}, {cell}: {len(values)} runs, too few for a verdict.")
                continue
            parts = []
            for name, value in references(refs[dataset]).items():
                c = _stats.median_versus(values, value)
                side = "above" if c.effect > 0 else "below"
                word = side if c.decisive else "indistinguishable from"
                parts.append(f"{word} {name} ({value:.3f}; {c.effect:+.3f}, p = {c.p_value:.2g})")
            lines.append(
                f"- {dataset}, {cell} (median {np.median(values):.3f}): " + "; ".join(parts)
            )
        if all(len(v) >= 6 for v in accuracy.values()):
            diff = _stats.median_difference(accuracy["gru"], accuracy["lstm"])
            lines.append(f"- {dataset}, median test accuracy, GRU − LSTM: {diff.describe()}.")
        lines += underfit(dataset, arms)
    return "\n".join(lines)


UNDERFIT = 0.1  # a median final training loss above this: the training split is not fitted


def underfit(dataset: str, arms: dict) -> list[str]:
    """A line for each cell that did not fit its training split: its verdict
    then measures the budget, not what the model can learn."""
    lines = []
    for cell in CELLS:
        loss = _study.median(r["final_train_loss"] for r in arms.get((dataset, cell), []))
        if loss > UNDERFIT:
            lines.append(
                f"- {dataset}, {cell}: median final training loss {loss:.3f}; it has not fitted "
                "its training split in this budget, so its test accuracy says more about the "
                "budget than about the cell. More steps would change it."
            )
    return lines


def plot(study, decided: _study.Decided, refs: dict) -> list[str]:
    fig, axes = _study.figure(width=3.2, height=3.0, ncols=len(refs))
    arms = _study.group(decided.verdict.rows, PATHS)
    for ax, (dataset, r) in zip(axes, refs.items(), strict=True):
        data = [[row["final_accuracy"] for row in arms.get((dataset, c), [])] for c in CELLS]
        ax.boxplot(data, tick_labels=CELLS)
        for (name, value), style, color in zip(references(r).items(), STYLES, COLORS, strict=False):
            ax.axhline(value, ls=style, lw=1, color=color, label=name)
        ax.set(title=dataset, ylabel="test accuracy (verdict runs)")
    axes[-1].legend(fontsize=6, loc="lower right")
    return [_study.save(fig, study, "accuracy")]


def main(argv=None) -> Path:
    study = _study.parse_args(NAME, __doc__, argv)
    config = get_config(study.smoke)
    datasets, rates, seeds = plan(study.smoke)
    refs = baselines(datasets)
    arms = [(d, c) for d in datasets for c in CELLS]
    values = _study.arms_by_path(PATHS, arms)
    decided = _study.select_then_decide(study, config, values, rates, pick, seeds)
    c = config
    setup = (
        f"Setup: 1 layer, hidden size {c.model.hidden_size}, read out at the last step; batch "
        f"{c.data.batch_size} drawn from the training split, {c.training.num_steps} AdamW steps "
        f"(weight decay {c.optimizer.weight_decay}, warmup {c.optimizer.warmup_steps}, cosine "
        f"decay, clip norm {c.optimizer.clip_norm}); inputs standardised with the training "
        f"split's statistics; learning rates {rates}. Selection: "
        f"{_study.throughput(decided.selection, c)}; verdict: "
        f"{_study.throughput(decided.verdict, c)}."
    )
    selection = _study.selection_table(decided, PATHS, ["dataset", "cell"], rates, describe)
    results = _study.md_table(
        [
            "dataset",
            "cell",
            "lr",
            "runs",
            "median test accuracy (≥ 95 % interval)",
            "median − 1-NN ED (archive)",
            "range",
        ],
        arm_rows(decided, refs),
    )
    files = plot(study, decided, refs)
    sections = [
        setup,
        "## Published baselines (test accuracy, official split)\n\n"
        "Archive: the UCR archive's 1-NN error, as accuracy; ours: the same classifier "
        "recomputed here by brute force. The shipped columns are the accuracy files aeon "
        "ships (`aeon/testing/example_results_files`).\n\n" + baseline_table(refs),
        f"## Learning rate per arm (seeds 0–{seeds[0] - 1}, chosen by training loss)\n\n"
        + selection,
        f"## Verdict runs (seeds {seeds[0]}–{sum(seeds) - 1})\n\n{results}",
        "## Plots\n\n" + "\n".join(f"![{f}]({f})" for f in files),
        "## Verdict\n\n" + verdict(decided, refs),
    ]
    title = "GRU and LSTM against published UCR results"
    sweeps = [decided.selection, decided.verdict]
    return _study.write_report(study, title, __doc__.split("\n\n")[2], sections, sweeps)


def describe(runs: list[dict]) -> str:
    """Selection runs at one rate: median training loss (which chooses) and
    median test accuracy (which does not)."""
    loss = _study.median(r["final_train_loss"] for r in runs)
    accuracy = _study.median(r["final_accuracy"] for r in runs)
    return f"train loss {_study.fmt(loss, 3)}, test acc {_study.fmt(accuracy, 3)}"


if __name__ == "__main__":
    main()
