"""GRU vs LSTM on the same budget: matched parameter count, same steps.

python experiments/gru_vs_lstm.py [--smoke] [--out DIR] [--workdir DIR]

Chung, Gulcehre, Cho & Bengio (2014) compared the GRU and the LSTM with
about the same number of parameters and found them comparable, each ahead on
some tasks, both well ahead of the Elman RNN. Here the GRU's hidden size is
chosen so that its recurrent layer has as many parameters as the LSTM's
(within 2 %), on three tasks: the adding problem (T=100, MSE), sequential
8x8 digits (64 steps, accuracy) and copy memory (10 symbols, delay 50,
recall accuracy). Per task and cell the learning rate is picked from three
on seeds 0–7 (one vmapped sweep per task); the verdict runs each cell at its
rate on seeds 8–39 (a second sweep) and compares them with bootstrap
intervals, Mann–Whitney U and, on the adding problem, Fisher's test of
solved runs. Writes ``experiments/reports/gru_vs_lstm.md`` and its plots.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NamedTuple

import jax

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _stats  # noqa: E402
import _study  # noqa: E402

import recurrent_jax as rj  # noqa: E402
from recurrent_jax.train.config import base_config, shrink_to_smoke, warmup_cosine  # noqa: E402

NAME = "gru_vs_lstm"
SEEDS = (8, 32)  # (seeds that pick each cell's rate, seeds that decide)
PATHS = ["model.cell", "model.hidden_size"]
SOLVED = 0.04  # adding: a run below this MSE has left the plateau


class Task(NamedTuple):
    data: dict  # the data section
    rates: list[float]
    num_steps: int
    baseline: float  # of the primary metric: the mean, majority class, a guess
    input_size: int


TASKS = {
    "adding": Task(
        dict(seq_len=100, batch_size=16, eval_size=256), [1e-2, 3e-2, 1e-1], 1500, 1 / 6, 2
    ),
    "digits": Task(
        dict(test_fraction=0.2, split_seed=0, batch_size=32), [1e-3, 3e-3, 1e-2], 1000, 0.123, 1
    ),
    "copy": Task(
        dict(num_symbols=8, length=10, delay=50, batch_size=16, eval_size=500),
        [1e-3, 3e-3, 1e-2],
        1000,
        1 / 8,
        10,
    ),
}


def num_params(cell: str, hidden_size: int, input_size: int) -> int:
    layer = rj.layer(rj.cells.REGISTRY[cell](hidden_size))
    shapes = jax.eval_shape(lambda key: layer.init(key, input_size), jax.random.key(0))
    return sum(x.size for x in jax.tree_util.tree_leaves(shapes))


def matched_hidden_size(cell: str, target: int, input_size: int) -> int:
    """The hidden size whose layer's parameter count is closest to ``target``,
    searched near the root of ``gates · H · (H + D + 2) = target``."""
    gates = num_params(cell, 1, input_size) // (input_size + 3)
    b = input_size + 2
    guess = round((-b + (b * b + 4 * target / gates) ** 0.5) / 2)
    sizes = range(max(1, guess - 2), guess + 3)
    return min(sizes, key=lambda h: abs(num_params(cell, h, input_size) - target))


def get_config(task: str, smoke: bool):
    spec = TASKS[task]
    config = base_config(task, name=f"{NAME}_{task}")
    config.data.update(spec.data)
    config.model.update(cell="lstm", hidden_size=32)
    warmup_cosine(config, 1e-2, 50)  # the sweeps set the learning rate
    config.training.update(num_steps=spec.num_steps, steps_per_call=100, eval_every=100)
    if smoke:
        config.data.update(batch_size=8)
        config.data.update({"adding": dict(seq_len=10, eval_size=32)}.get(task, {}))
        config.model.update(hidden_size=8)
        shrink_to_smoke(config, 20)
    return config


def plan(task: str, smoke: bool):
    """(arms: {path: values}, rates, seeds): the LSTM and the GRU whose layer
    has about as many parameters."""
    spec = TASKS[task]
    lstm_size, rates, seeds = (8, spec.rates[-2:], (2, 2)) if smoke else (32, spec.rates, SEEDS)
    target = num_params("lstm", lstm_size, spec.input_size)
    sizes = [lstm_size, matched_hidden_size("gru", target, spec.input_size)]
    return {"model.cell": ["lstm", "gru"], "model.hidden_size": sizes}, rates, seeds


def picker(task: str, metric: str, higher: bool):
    solved = SOLVED if task == "adding" else None
    return lambda rows: _study.best_rate(
        rows, f"final_{metric}", higher=higher, solved_below=solved
    )


def describe_with(metric: str):
    def describe(runs: list[dict]) -> str:
        return _study.fmt(_study.median(r[f"final_{metric}"] for r in runs), 3)

    return describe


def task_rows(task: str, decided: _study.Decided, metric: str) -> list[list]:
    rows = []
    for (cell, size), runs in _study.group(decided.verdict.rows, PATHS).items():
        finals = [r[f"final_{metric}"] for r in runs]
        solved = sum(v < SOLVED for v in finals) if task == "adding" else None
        rows.append(
            [
                task,
                cell,
                size,
                num_params(cell, size, TASKS[task].input_size),
                decided.chosen[cell, size],
                len(finals),
                _study.median(finals),
                "–" if solved is None else f"{solved}/{len(finals)}",
            ]
        )
    return rows


def plot(study, task: str, decided: _study.Decided) -> str:
    result = decided.verdict
    metric = result.summary["primary_metric"]
    fig, (ax,) = _study.figure(width=4.5)
    colors = {"lstm": "tab:blue", "gru": "tab:orange"}
    seen = set()
    for row in result.rows:
        steps, values = result.curve(row["run_id"])
        cell = row["model.cell"]
        label = f"{cell} ({row['model.hidden_size']})" if cell not in seen else None
        seen.add(cell)
        ax.plot(steps, values, color=colors[cell], lw=0.6, alpha=0.6, label=label)
    ax.axhline(TASKS[task].baseline, color="gray", ls="--", lw=1)
    ax.set(xlabel="step", ylabel=f"eval {metric}", title=f"{task}: every verdict run")
    if metric == "mse":
        ax.set_yscale("log")
    ax.legend(fontsize=8)
    return _study.save(fig, study, task)


def verdict(task: str, decided: _study.Decided, metric: str) -> tuple[str, str | None]:
    """The verdict lines of one task and the cell ahead there (None: no
    difference, or too few runs)."""
    by_cell = {cell: runs for (cell, _), runs in _study.group(decided.verdict.rows, PATHS).items()}
    gru, lstm = by_cell.get("gru", []), by_cell.get("lstm", [])
    if len(gru) < 6 or len(lstm) < 6:
        return f"- {task}: too few verdict runs for a verdict (smoke mode).", None
    a, b = [r[f"final_{metric}"] for r in gru], [r[f"final_{metric}"] for r in lstm]
    higher = metric != "mse"
    diff = _stats.median_difference(a, b)
    lines = [f"- {task}, median final {metric}, GRU − LSTM: {diff.describe()}."]
    significant = [diff.decisive]
    if metric == "mse":
        rate = _stats.rate_difference([v < SOLVED for v in a], [v < SOLVED for v in b])
        lines.append(f"- {task}, solved fraction (MSE < {SOLVED}), GRU − LSTM: {rate.describe()}.")
        significant.append(rate.decisive)
        better_gru = rate.effect > 0 if rate.decisive else diff.effect < 0
    else:
        better_gru = diff.effect > 0
    superior = _stats.superiority(b, a) if higher else _stats.superiority(a, b)
    lines.append(
        f"- {task}: a GRU run ends better than an LSTM run with probability {superior:.2f}."
    )
    ahead = ("GRU" if better_gru else "LSTM") if any(significant) else None
    if ahead:
        lines.append(f"- {task} verdict: the {ahead} is ahead here.")
    else:
        lines.append(f"- {task} verdict: no difference detectable with {len(a)} runs per cell.")
    return "\n".join(lines), ahead


def overall(ahead: dict[str, str | None]) -> str:
    by_cell = {cell: [t for t, a in ahead.items() if a == cell] for cell in ("GRU", "LSTM", None)}
    split = by_cell["GRU"] and by_cell["LSTM"]
    return (
        f"- Overall: the GRU is ahead on {by_cell['GRU'] or 'no task'}, the LSTM on "
        f"{by_cell['LSTM'] or 'no task'}, no difference on {by_cell[None] or 'no task'}. "
        + (
            "Each is ahead somewhere, as Chung et al. (2014) found: neither cell is better "
            "in general at matched size and budget. What could change a task's verdict: a "
            "larger budget where a cell stays at its baseline (the GRU on copy), other sizes, "
            "stacked layers."
            if split
            else "Chung et al. (2014) found each ahead on some tasks; here one cell leads "
            "wherever there is a difference."
        )
    )


def main(argv=None) -> Path:
    study = _study.parse_args(NAME, __doc__, argv)
    results, rows, files, verdicts, selections = [], [], [], [], []
    ahead: dict[str, str | None] = {}
    for task in ["adding"] if study.smoke else TASKS:
        config = get_config(task, study.smoke)
        arms, rates, seeds = plan(task, study.smoke)
        metric = "mse" if task == "adding" else "accuracy"
        pick = picker(task, metric, higher=metric != "mse")
        decided = _study.select_then_decide(study, config, arms, rates, pick, seeds, task)
        results += [decided.selection, decided.verdict]
        headers = [f"{task}: cell", "hidden"]
        selections.append(
            _study.selection_table(decided, PATHS, headers, rates, describe_with(metric))
        )
        rows += task_rows(task, decided, metric)
        files.append(plot(study, task, decided))
        text, ahead[task] = verdict(task, decided, metric)
        verdicts.append(text)
        verdicts.append(
            f"- {task} sweeps: selection {_study.throughput(decided.selection, config)}; "
            f"verdict {_study.throughput(decided.verdict, config)}."
        )
    table = _study.md_table(
        [
            "task",
            "cell",
            "hidden",
            "layer params",
            "lr",
            "verdict runs",
            "median final",
            "solved",
        ],
        rows,
    )
    setup = (
        "Setup: one layer; Adam with warmup and cosine decay, clip norm 1. "
        + "; ".join(
            f"{task}: batch {t.data['batch_size']}, {t.num_steps} steps, rates {t.rates}"
            for task, t in TASKS.items()
        )
        + " (scaled to a shared 2-core CPU). 'layer params' counts the recurrent layer (the "
        "readouts differ by a few weights)."
    )
    sections = [
        setup,
        f"## Learning rate per cell (seeds 0–{seeds[0] - 1}: median final metric)\n\n"
        + "\n\n".join(selections),
        f"## Verdict runs (seeds {seeds[0]}–{sum(seeds) - 1})\n\n{table}",
        "## Plots\n\n" + "\n".join(f"![{f}]({f})" for f in files),
        "## Verdict\n\n" + "\n".join(verdicts) + "\n" + overall(ahead),
    ]
    title = "GRU vs LSTM on the same budget (Chung et al. 2014)"
    return _study.write_report(study, title, __doc__.split("\n\n")[2], sections, results)


if __name__ == "__main__":
    main()
