"""Parallel-in-time cells: accuracy and wall-clock of minGRU, minLSTM, LRU,
GRU and LSTM.

python experiments/parallel_cells.py [--smoke] [--out DIR] [--workdir DIR]

minGRU and minLSTM (Feng et al. 2024, "Were RNNs all we needed?") and the
LRU (Orvieto et al. 2023) are linear in their carry, so a training step can
run as an associative scan over time (``impl="associative"``) instead of T
sequential steps. The papers report that they train much faster on GPUs and
match or approach the GRU/LSTM. Accuracy: per task (the adding problem at
T=100; sequential 8x8 digits) each cell picks its learning rate from three on
seeds 0–7 and runs at it on seeds 8–39 (sequential scan: the arithmetic is
the same under either impl), each linear cell compared with the GRU
(bootstrap intervals, Mann–Whitney U, Fisher's test of solved runs). Speed:
the time of one training step (forward + backward) of each layer,
sequential scan vs associative scan, on this machine's CPU.
Writes ``experiments/reports/parallel_cells.md`` and its plots.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib.ticker

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _stats  # noqa: E402
import _study  # noqa: E402

import recurrent_jax as rj  # noqa: E402
from recurrent_jax.train.config import base_config  # noqa: E402

NAME = "parallel_cells"
CELLS = ["mingru", "minlstm", "lru", "gru", "lstm"]
BASELINES = {"adding": 1 / 6, "digits": 0.123}


SEEDS = (8, 32)
RATES = {"adding": [1e-2, 3e-2, 1e-1], "digits": [1e-3, 3e-3, 1e-2]}
SOLVED = 0.04  # adding: a run below this MSE has left the plateau


def get_config(task: str, smoke: bool):
    config = base_config(task, name=f"{NAME}_{task}")
    config.model.update(hidden_size=8 if smoke else 32)
    num_steps = 800 if task == "digits" else 1000
    _study.adding_or_digits(config, task, smoke, seq_len=100, num_steps=num_steps)
    return config


def plan(task: str, smoke: bool):
    """(arms, learning rates, (selection seeds, verdict seeds))."""
    if smoke:
        return {"model.cell": ["mingru", "gru"]}, RATES[task][-2:], (2, 2)
    return {"model.cell": CELLS}, RATES[task], SEEDS


def pick(task: str):
    metric, higher = ("mse", False) if task == "adding" else ("accuracy", True)
    solved = SOLVED if task == "adding" else None
    return lambda rows: _study.best_rate(
        rows, f"final_{metric}", higher=higher, solved_below=solved
    )


def step_time(cell: str, impl: str, hidden: int, batch: int, seq_len: int, repeats: int = 5):
    """Median seconds of a jitted forward + backward pass of one layer on
    (batch, seq_len, 1) inputs, compile excluded."""
    layer = rj.layer(rj.cells.REGISTRY[cell](hidden), impl=impl)
    k1, k2 = jax.random.split(jax.random.key(0))
    params = layer.init(k1, 1)
    xs = jax.random.normal(k2, (batch, seq_len, 1))

    def loss(params):
        _, ys = layer.apply(params, xs)
        return jnp.mean(ys**2)

    grad = jax.jit(jax.grad(loss))
    jax.block_until_ready(grad(params))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(grad(params))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def timing_rows(cells, hidden, batch, seq_lens):
    rows = []
    for cell in cells:
        for impl in ("scan", "associative") if rj.cells.linear_in_carry(cell) else ("scan",):
            row = [cell, impl]
            row += [1e3 * step_time(cell, impl, hidden, batch, t) for t in seq_lens]
            rows.append(row)
    return rows


def accuracy_rows(task: str, decided: _study.Decided) -> list[list]:
    metric = decided.verdict.summary["primary_metric"]
    rows = []
    for (cell,), runs in _study.group(decided.verdict.rows, ["model.cell"]).items():
        values = [r[f"final_{metric}"] for r in runs]
        solved = sum(v < SOLVED for v in values) if task == "adding" else None
        rows.append(
            [
                task,
                cell,
                metric,
                decided.chosen[(cell,)],
                len(values),
                _study.median(values),
                "–" if solved is None else f"{solved}/{len(values)}",
            ]
        )
    return rows


def versus_gru(task: str, decided: _study.Decided) -> list[str]:
    metric = decided.verdict.summary["primary_metric"]
    by_cell = {c: rs for (c,), rs in _study.group(decided.verdict.rows, ["model.cell"]).items()}
    gru = [r[f"final_{metric}"] for r in by_cell.get("gru", [])]
    lines = []
    for cell in ("mingru", "minlstm", "lru", "lstm"):
        values = [r[f"final_{metric}"] for r in by_cell.get(cell, [])]
        if len(values) < 6 or len(gru) < 6:
            continue
        diff = _stats.median_difference(values, gru)
        line = f"- {task}, {cell} − GRU, median final {metric}: {diff.describe()}"
        if task == "adding":
            rate = _stats.rate_difference([v < SOLVED for v in values], [v < SOLVED for v in gru])
            line += f"; solved fraction: {rate.describe()}"
        lines.append(line + ".")
    return lines or [f"- {task}: too few verdict runs for a verdict (smoke mode)."]


def plot_curves(study, task, result) -> str:
    """Every verdict run's eval curve, coloured by cell."""
    metric = result.summary["primary_metric"]
    fig, (ax,) = _study.figure(width=4.5)
    seen = set()
    colors = dict(
        zip(CELLS, ["tab:green", "tab:olive", "tab:purple", "tab:orange", "tab:blue"], strict=True)
    )
    for row in result.rows:
        steps, values = result.curve(row["run_id"])
        cell = row["model.cell"]
        label = None if cell in seen else cell
        ax.plot(steps, values, color=colors[cell], lw=0.6, alpha=0.6, label=label)
        seen.add(cell)
    ax.axhline(BASELINES[task], color="gray", ls="--", lw=1)
    ax.set(xlabel="step", ylabel=f"eval {metric}", title=f"{task}: every verdict run")
    if metric == "mse":
        ax.set_yscale("log")
    ax.legend(fontsize=7)
    return _study.save(fig, study, f"curves_{task}")


def plot_timing(study, rows, seq_lens) -> str:
    fig, (ax,) = _study.figure(width=4.5)
    for row in rows:
        ax.plot(seq_lens, row[2:], "o-" if row[1] == "scan" else "s--", label=f"{row[0]} {row[1]}")
    ax.set(xscale="log", yscale="log", xlabel="T", ylabel="ms per training step (1 layer)")
    ax.set_xticks(seq_lens, [str(t) for t in seq_lens])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_title(f"CPU ({jax.devices()[0].device_kind}), forward + backward", fontsize=8)
    ax.legend(fontsize=6)
    return _study.save(fig, study, "step_time")


def main(argv=None) -> Path:
    study = _study.parse_args(NAME, __doc__, argv)
    results, rows, files, selections, comparisons = [], [], [], [], []
    for task in ["adding"] if study.smoke else BASELINES:
        config = get_config(task, study.smoke)
        arms, rates, seeds = plan(task, study.smoke)
        decided = _study.select_then_decide(study, config, arms, rates, pick(task), seeds, task)
        results += [decided.selection, decided.verdict]
        metric = decided.verdict.summary["primary_metric"]
        describe = lambda runs, m=metric: _study.fmt(  # noqa: E731
            _study.median(r[f"final_{m}"] for r in runs), 3
        )
        selections.append(
            _study.selection_table(decided, ["model.cell"], [f"{task}: cell"], rates, describe)
        )
        rows += accuracy_rows(task, decided)
        comparisons += versus_gru(task, decided)
        comparisons.append(
            f"- {task} sweeps: selection {_study.throughput(decided.selection, config)}; "
            f"verdict {_study.throughput(decided.verdict, config)}."
        )
        files.append(plot_curves(study, task, decided.verdict))
    cells = list(arms["model.cell"])
    hidden, batch = (8, 4) if study.smoke else (32, 16)
    seq_lens = [16] if study.smoke else [64, 256, 1024, 4096]
    timings = timing_rows(cells, hidden, batch, seq_lens)
    files.append(plot_timing(study, timings, seq_lens))
    accuracy = _study.md_table(
        ["task", "cell", "metric", "lr", "verdict runs", "median final", "solved"], rows
    )
    timing = _study.md_table(["cell", "impl", *[f"T={t} ms" for t in seq_lens]], timings)
    setup = (
        f"Setup: one layer, hidden size {config.model.hidden_size}, Adam with warmup and cosine "
        "decay, clip norm 1; adding T=100, 1000 steps, batch 16; digits 800 steps, batch 32; "
        "learning rates " + ", ".join(f"{t} {r}" for t, r in RATES.items()) + ". Scaled to a "
        "shared 2-core CPU; the minGRU paper stacks several layers, here one."
    )
    sections = [
        setup,
        f"## Learning rate per cell (seeds 0–{seeds[0] - 1}: median final metric)\n\n"
        + "\n\n".join(selections),
        f"## Accuracy (seeds {seeds[0]}–{sum(seeds) - 1})\n\nBaselines: adding MSE "
        f"{BASELINES['adding']:.3f} (predict the mean); digits accuracy {BASELINES['digits']} "
        f"(majority class).\n\n{accuracy}",
        f"## Training-step time, CPU\n\nOne layer, hidden {hidden}, batch {batch}, input 1; "
        f"median of 5 jitted forward + backward passes, compile excluded.\n\n{timing}",
        "## Plots\n\n" + "\n".join(f"![{f}]({f})" for f in files),
        "## Verdict\n\n" + "\n".join(comparisons) + "\n" + verdict(timings, seq_lens),
    ]
    title = "Parallel-in-time cells: minGRU, minLSTM, LRU vs GRU, LSTM"
    return _study.write_report(study, title, __doc__.split("\n\n")[2], sections, results)


def verdict(timings, seq_lens) -> str:
    lines = []
    by = {(r[0], r[1]): r[2:] for r in timings}
    longest = seq_lens[-1]
    for cell in ("mingru", "minlstm", "lru"):
        if (cell, "associative") in by and ("gru", "scan") in by:
            vs_gru = by["gru", "scan"][-1] / by[cell, "associative"][-1]
            own = by[cell, "scan"][-1] / by[cell, "associative"][-1]
            lines.append(
                f"- T={longest}, time ratios (> 1: the associative {cell} is faster): GRU scan / "
                f"{cell} associative {vs_gru:.2g}; {cell} scan / {cell} associative {own:.2g}."
            )
    slower = [
        c
        for c in ("mingru", "minlstm", "lru")
        if (c, "associative") in by and by[c, "associative"][-1] > by[c, "scan"][-1]
    ]
    if slower:
        lines.append(
            f"- On this CPU the associative scan was slower than the same cell's sequential scan "
            f"at T={longest} for {', '.join(slower)}, probably because it does more work (a "
            "log-depth tree of affine compositions, and a second scan in the backward pass) "
            "that 2 cores cannot run in parallel. The papers' speedups are GPU numbers; no GPU "
            "run here."
        )
    lines.append(
        "- What could change these verdicts: stacked layers (the minGRU paper's setting) for "
        "the digits gap of minGRU and minLSTM, a longer budget or the LRU's own "
        "initialisation ranges for its adding plateau, and a GPU for the speed comparison."
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
