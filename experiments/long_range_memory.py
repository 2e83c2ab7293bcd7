"""Long-range memory: Elman vs LSTM vs GRU vs MGU on the adding problem.

python experiments/long_range_memory.py [--smoke] [--out DIR] [--workdir DIR]

The adding problem (Hochreiter & Schmidhuber 1997; Le et al. 2015) at
T in {50, 100, 200, 400}: one sweep, a static grid of cell × T (one compile
each) times a vmapped learning rate × seed axis. Predicting the mean scores
MSE 1/6 ≈ 0.167; a run counts as solved below MSE 0.04. The known result:
the Elman RNN stays on the plateau at long T where the gated cells learn.
Writes ``experiments/reports/long_range_memory.md`` and its plots.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib.ticker
import ml_collections

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _study  # noqa: E402

from recurrent_jax.train.config import base_config, shrink_to_smoke, warmup_cosine  # noqa: E402

NAME = "long_range_memory"
CELLS = ["elman", "lstm", "gru", "mgu"]
SEQ_LENS = [50, 100, 200, 400]
BASELINE = 1 / 6
SOLVED = 0.04


def get_config(smoke: bool):
    config = base_config("adding", name=NAME)
    config.data.update(batch_size=16, eval_size=256)
    config.model.update(hidden_size=32)
    warmup_cosine(config, 1e-2, 50)  # the sweep sets the learning rate
    config.training.update(num_steps=800, steps_per_call=100, eval_every=100)
    cells, seq_lens, rates, seeds = CELLS, SEQ_LENS, [1e-2, 3e-2], 2
    if smoke:
        config.data.update(batch_size=8, eval_size=32)
        config.model.update(hidden_size=8)
        shrink_to_smoke(config, 20)
        cells, seq_lens, rates, seeds = ["elman", "lstm"], [10], [1e-2], 1
    grid = {"model": {"cell": cells}, "data": {"seq_len": seq_lens}}
    config.sweep = ml_collections.ConfigDict(
        _study.sweep_section({"learning_rate": rates}, grid, seeds)
    )
    return config


def summarise(result: _study.SweepResult):
    """Per (cell, T): median final MSE over seeds at the best learning rate,
    and the runs (all learning rates and seeds) that solved the task."""
    table = {}
    for (cell, seq_len), rows in _study.group(result.rows, ["model.cell", "data.seq_len"]).items():
        medians = _study.medians_by_rate(rows, "final_mse")
        best_lr = min(medians, key=lambda lr: medians[lr] if medians[lr] == medians[lr] else 1e9)
        solved = sum(r["final_mse"] < SOLVED for r in rows)
        table[cell, seq_len] = (medians[best_lr], best_lr, solved, len(rows))
    return table


def plot(study, result, table, cells, seq_lens) -> list[str]:
    fig, (ax,) = _study.figure()
    for cell in cells:
        ax.plot(seq_lens, [table[cell, t][0] for t in seq_lens], "o-", label=cell)
    ax.axhline(BASELINE, color="gray", ls="--", lw=1, label="predict the mean")
    ax.set(xscale="log", yscale="log", xlabel="sequence length T", ylabel="final eval MSE")
    ax.set_xticks(seq_lens, [str(t) for t in seq_lens])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_title("adding problem: median over seeds, best learning rate", fontsize=9)
    ax.legend(fontsize=8)
    files = [_study.save(fig, study, "mse_vs_T")]
    fig, axes = _study.figure(width=2.6, height=2.6, ncols=len(cells))
    longest = max(seq_lens)
    for ax, cell in zip(axes, cells, strict=True):
        for row in result.rows:
            if row["model.cell"] == cell and row["data.seq_len"] == longest:
                steps, values = result.curve(row["run_id"])
                ax.plot(steps, values, lw=1, label=f"lr {row['learning_rate']:g} s{row['seed']}")
        ax.axhline(BASELINE, color="gray", ls="--", lw=1)
        ax.set(yscale="log", title=f"{cell}, T={longest}", xlabel="step")
    axes[0].set_ylabel("eval MSE")
    axes[0].legend(fontsize=6)
    files.append(_study.save(fig, study, f"curves_T{longest}"))
    return files


def main(argv=None) -> Path:
    study = _study.parse_args(NAME, __doc__, argv)
    config = get_config(study.smoke)
    result = _study.run(study, config, study.workdir / "sweep")
    table = summarise(result)
    cells = list(config.sweep.grid.model.cell)
    seq_lens = list(config.sweep.grid.data.seq_len)
    runs_per_cell = len(result.rows) // (len(cells) * len(seq_lens))
    mse = _study.md_table(
        ["cell", *[f"T={t}" for t in seq_lens]],
        [[cell, *[table[cell, t][0] for t in seq_lens]] for cell in cells],
    )
    solved = _study.md_table(
        ["cell", *[f"T={t}" for t in seq_lens]],
        [[cell, *[f"{table[cell, t][2]}/{table[cell, t][3]}" for t in seq_lens]] for cell in cells],
    )
    files = plot(study, result, table, cells, seq_lens)
    c = config
    setup = (
        f"Setup: 1 layer, hidden size {c.model.hidden_size}, batch {c.data.batch_size}, "
        f"{c.training.num_steps} Adam steps (warmup {c.optimizer.warmup_steps}, cosine decay, "
        f"clip norm {c.optimizer.clip_norm}), learning rates {list(c.sweep.vmap.learning_rate)} × "
        f"{c.sweep.seeds} seeds per (cell, T): {runs_per_cell} runs each, {len(result.rows)} in "
        f"all. Evaluated on {c.data.eval_size} fresh sequences. Scaled down from the papers "
        "(which train for 10^4–10^6 steps) to fit a shared 2-core CPU."
    )
    sections = [
        setup,
        "## Final eval MSE (median over seeds, best learning rate)\n\n"
        f"Baseline (predict the mean): {BASELINE:.3f}.\n\n{mse}",
        f"## Runs solved (final MSE < {SOLVED}), all learning rates and seeds\n\n{solved}",
        "## Plots\n\n" + "\n".join(f"![{f}]({f})" for f in files),
        "## Reading\n\n" + verdict(table, cells, seq_lens, config),
    ]
    title = "Long-range memory: Elman vs gated cells on the adding problem"
    return _study.write_report(study, title, __doc__.split("\n\n")[2], sections, [result])


def verdict(table, cells, seq_lens, config) -> str:
    longest = max(seq_lens)
    gated = [c for c in cells if c != "elman"]
    lines = []
    if "elman" in cells:
        fails = [t for t in seq_lens if table["elman", t][2] == 0]
        lines.append(
            f"- Elman solved no run at T in {fails}."
            if fails
            else "- Elman solved at least one run at every T."
        )
        if fails == list(seq_lens):
            lines.append(
                "  - Elman failed even at the shortest T, so this budget shows the gap between "
                "Elman and gated cells but not the T at which Elman stops learning."
            )
    for cell in gated:
        ok = [t for t in seq_lens if table[cell, t][2] > 0]
        lines.append(f"- {cell}: solved at least one run at T in {ok or 'none'}.")
        if not ok or max(ok) < longest:
            lines.append(
                f"  - {cell} did not leave the MSE ≈ 1/6 plateau beyond T={max(ok, default=0)} "
                f"in {config.training.num_steps} steps of batch {config.data.batch_size}. That is "
                "slower learning within this budget, not evidence of a memory limit: the LSTM of "
                "configs/adding.py (hidden 64, batch 64, 1500 steps) leaves the plateau at T=100 "
                "between steps 600 and 900 (experiments/README.md)."
            )
    elman_long = table.get(("elman", longest), (None, None, 0))[2] if "elman" in cells else None
    gated_long = sum(table[c, longest][2] for c in gated)
    reproduced = elman_long == 0 and gated_long > 0
    lines.append(
        f"- At T={longest}: Elman {elman_long} solved runs, gated cells {gated_long}. "
        + (
            "The known result (Elman fails at long T, gated cells succeed) reproduced."
            if reproduced
            else "The known result did not reproduce cleanly at this scale."
        )
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
