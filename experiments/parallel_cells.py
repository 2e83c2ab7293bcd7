"""Parallel-in-time cells: accuracy and wall-clock of minGRU, minLSTM, LRU,
GRU and LSTM.

python experiments/parallel_cells.py [--smoke] [--out DIR] [--workdir DIR]

minGRU and minLSTM (Feng et al. 2024, "Were RNNs all we needed?") and the
LRU (Orvieto et al. 2023) are linear in their carry, so a training step can
run as an associative scan over time (``impl="associative"``) instead of T
sequential steps. The papers report that they train much faster on GPUs and
match or approach the GRU/LSTM on long-range tasks. Here: one sweep per task
(the adding problem at long T; sequential 8x8 digits), the cell and its impl
zipped in the grid, learning rate × seeds vmapped; then the time of one
training step (forward + backward) of each layer, sequential scan vs
associative scan, on this machine's CPU.
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
import ml_collections

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _study  # noqa: E402

import recurrent_jax as rj  # noqa: E402
from recurrent_jax.train.config import base_config  # noqa: E402

NAME = "parallel_cells"
CELLS = ["mingru", "minlstm", "lru", "gru", "lstm"]
BASELINES = {"adding": 1 / 6, "digits": 0.123}


def impl_of(cell: str) -> str:
    return "associative" if rj.cells.linear_in_carry(cell) else "auto"


def get_config(task: str, smoke: bool):
    config = base_config(task, name=f"{NAME}_{task}")
    config.model.update(hidden_size=32)
    num_steps = 800 if task == "digits" else 1000
    rates = _study.adding_or_digits(config, task, smoke, seq_len=256, num_steps=num_steps)
    cells, seeds = CELLS, 1
    if smoke:
        config.model.update(hidden_size=8)
        cells = ["mingru", "gru"]
    grid = {"model": {"cell": cells, "engine": {"impl": [impl_of(c) for c in cells]}}}
    zipped = [["model.cell", "model.engine.impl"]]
    config.sweep = ml_collections.ConfigDict(
        _study.sweep_section({"learning_rate": rates}, grid, seeds, zipped)
    )
    return config


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


def accuracy_rows(task, result):
    metric = result.summary["primary_metric"]
    higher = result.summary["higher_is_better"]
    seconds = {p["point"]: p["seconds"] for p in result.summary["points"]}
    rows = []
    for (cell, impl), runs in _study.group(
        result.rows, ["model.cell", "model.engine.impl"]
    ).items():
        medians = _study.medians_by_rate(runs, f"final_{metric}")
        best = (max if higher else min)(medians, key=lambda lr: medians[lr])
        values = [r[f"final_{metric}"] for r in runs]
        rows.append(
            [
                task,
                cell,
                impl,
                metric,
                medians[best],
                best,
                (max if higher else min)(values),
                seconds[runs[0]["point"]],
            ]
        )
    return rows


def plot_curves(study, task, result) -> str:
    metric = result.summary["primary_metric"]
    fig, (ax,) = _study.figure(width=4.5)
    seen = set()
    colors = dict(
        zip(CELLS, ["tab:green", "tab:olive", "tab:purple", "tab:orange", "tab:blue"], strict=True)
    )
    for row in result.rows:
        steps, values = result.curve(row["run_id"])
        cell = row["model.cell"]
        ax.plot(steps, values, color=colors[cell], lw=1, label=None if cell in seen else cell)
        seen.add(cell)
    ax.axhline(BASELINES[task], color="gray", ls="--", lw=1)
    ax.set(xlabel="step", ylabel=f"eval {metric}", title=f"{task}: every lr and seed")
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
    results, rows, files = [], [], []
    for task in ["adding"] if study.smoke else BASELINES:
        config = get_config(task, study.smoke)
        result = _study.run(study, config, study.workdir / task)
        results.append(result)
        rows += accuracy_rows(task, result)
        files.append(plot_curves(study, task, result))
    cells = list(results[0].summary["swept"]["model.cell"])
    hidden, batch = (8, 4) if study.smoke else (32, 16)
    seq_lens = [16] if study.smoke else [64, 256, 1024, 4096]
    timings = timing_rows(cells, hidden, batch, seq_lens)
    files.append(plot_timing(study, timings, seq_lens))
    accuracy = _study.md_table(
        [
            "task",
            "cell",
            "impl",
            "metric",
            "median final (best lr)",
            "best lr",
            "best run",
            "sweep point s (compile + train)",
        ],
        rows,
    )
    timing = _study.md_table(["cell", "impl", *[f"T={t} ms" for t in seq_lens]], timings)
    setup = (
        f"Setup: one layer, hidden size {get_config('adding', study.smoke).model.hidden_size}, "
        "Adam with warmup and cosine decay, clip norm 1. "
        + "; ".join(
            f"{r.summary['task']}: {r.summary['num_runs']} runs (learning rates "
            f"{r.summary['swept']['learning_rate']} × seeds {r.summary['seeds']})"
            for r in results
        )
        + ". Linear cells train with impl='associative', GRU/LSTM with the sequential scan "
        "('auto'). Scaled down (adding T=256, 1000 steps, batch 16; digits 800 steps, batch 32) "
        "to fit a shared 2-core CPU; the minGRU paper stacks several layers, here one."
    )
    sections = [
        setup,
        f"## Accuracy\n\nBaselines: adding MSE {BASELINES['adding']:.3f} (predict the mean); "
        f"digits accuracy {BASELINES['digits']} (majority class).\n\n{accuracy}",
        f"## Training-step time, CPU\n\nOne layer, hidden {hidden}, batch {batch}, input 1; "
        f"median of 5 jitted forward + backward passes, compile excluded.\n\n{timing}",
        "## Plots\n\n" + "\n".join(f"![{f}]({f})" for f in files),
        "## Reading\n\n" + verdict(rows, timings, seq_lens),
    ]
    title = "Parallel-in-time cells: minGRU, minLSTM, LRU vs GRU, LSTM"
    return _study.write_report(study, title, __doc__.split("\n\n")[2], sections, results)


def verdict(rows, timings, seq_lens) -> str:
    lines = []
    for task in sorted({r[0] for r in rows}):
        got = [r for r in rows if r[0] == task]
        got.sort(key=lambda r: r[4], reverse=task != "adding")
        lines.append(
            f"- {task} ({got[0][3]}), best to worst: "
            + ", ".join(f"{r[1]} {_study.fmt(r[4], 3)}" for r in got)
            + "."
        )
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
    return "\n".join(lines)


if __name__ == "__main__":
    main()
