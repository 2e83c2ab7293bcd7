"""Forget-gate bias: an LSTM with forget bias 1 vs 0 on the adding problem.

python experiments/forget_bias.py [--smoke] [--out DIR] [--workdir DIR]

Jozefowicz, Zaremba & Sutskever (2015) found that initialising the LSTM's
forget-gate bias to 1 (rather than 0) closes most of its gap to the best
architectures, above all on tasks with long dependencies. Here: the adding
problem at T=50 and T=100, four arms (forget bias × T). Each arm gets its
own learning rate, picked from {0.01, 0.03, 0.1} on seeds 0–7 (most runs
solved, then the lowest median final MSE; one vmapped sweep); the verdict
is drawn on seeds 8–103 at that rate (a second sweep): the fraction of runs
that leave the MSE ≈ 1/6 plateau (final MSE below 0.04) with an exact
interval and its difference between the biases (bootstrap interval,
Fisher's exact test), the step at which a run first solves the task (bias 1
is said to speed the escape from the plateau; unsolved runs count as never)
and the final MSEs (median differences with bootstrap intervals,
Mann–Whitney U). Writes ``experiments/reports/forget_bias.md`` and its plot.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _stats  # noqa: E402
import _study  # noqa: E402

from recurrent_jax.train.config import base_config, shrink_to_smoke, warmup_cosine  # noqa: E402

NAME = "forget_bias"
BASELINE = 1 / 6
SOLVED = 0.04
ARMS = [(0.0, 50), (1.0, 50), (0.0, 100), (1.0, 100)]
RATES = [1e-2, 3e-2, 1e-1]
# (seeds that pick each arm's rate, seeds that decide): 96 deciding seeds per
# arm, as a difference of 0.125 in solved fraction needs about 60 to show
SEEDS = (8, 96)
PATHS = ["model.forget_bias", "data.seq_len"]


def get_config(smoke: bool):
    config = base_config("adding", name=NAME)
    config.data.update(batch_size=16, eval_size=256)
    config.model.update(cell="lstm", hidden_size=32)
    warmup_cosine(config, 1e-2, 50)  # the sweeps set the learning rate
    config.training.update(num_steps=1500, steps_per_call=100, eval_every=100)
    if smoke:
        config.data.update(batch_size=8, eval_size=32)
        config.model.update(hidden_size=8)
        shrink_to_smoke(config, 20)
    return config


def plan(smoke: bool):
    """(arms, learning rates, (selection seeds, verdict seeds))."""
    if smoke:
        return [(0.0, 10), (1.0, 10)], [1e-2, 3e-2], (2, 2)
    return ARMS, RATES, SEEDS


def pick(rows: list[dict]) -> float:
    return _study.best_rate(rows, "final_mse", solved_below=SOLVED)


def solved(runs: list[dict]) -> list[bool]:
    return [r["final_mse"] < SOLVED for r in runs]


def first_solved(result: _study.SweepResult, runs: list[dict], never: int) -> list[float]:
    """Each run's first evaluated step below SOLVED; ``never`` (a step past
    the budget, so ranks and medians stay defined) when it does not get there."""
    steps = [_study.first_step_below(result.curves.get(r["run_id"], []), SOLVED) for r in runs]
    return [float(never if s is None else s) for s in steps]


def never_step(config) -> int:
    return config.training.num_steps + config.training.eval_every


def describe(runs: list[dict]) -> str:
    """Selection runs at one rate: solved count, median final MSE."""
    median = _study.fmt(_study.median(r["final_mse"] for r in runs), 2)
    return f"{sum(solved(runs))}/{len(runs)} solved, MSE {median}"


def verdict_table(decided: _study.Decided, never: int) -> str:
    rows = []
    for (bias, seq_len), runs in sorted(_study.group(decided.verdict.rows, PATHS).items()):
        k, n = sum(solved(runs)), len(runs)
        low, high = _stats.rate_interval(k, n)
        steps = first_solved(decided.verdict, runs, never)
        rows.append(
            [
                bias,
                seq_len,
                decided.chosen[bias, seq_len],
                f"{k}/{n}",
                f"{low:.2f}–{high:.2f}",
                _study.median(r["final_mse"] for r in runs),
                "never" if np.median(steps) == never else _study.fmt(float(np.median(steps))),
            ]
        )
    headers = ["forget bias", "T", "learning rate", "solved", "95 % CI (exact)"]
    return _study.md_table([*headers, "median final MSE", "median first solved step"], rows)


def verdict(decided: _study.Decided, never: int) -> str:
    arms = _study.group(decided.verdict.rows, PATHS)
    lines = []
    for seq_len in sorted({t for _, t in arms}):
        one, zero = arms.get((1.0, seq_len), []), arms.get((0.0, seq_len), [])
        if len(one) < 6 or len(zero) < 6:
            lines.append(f"- T={seq_len}: too few verdict runs for a verdict (smoke mode).")
            continue
        lines += verdict_at(decided.verdict, seq_len, one, zero, never)
    lines.append(
        "- What would change it: longer dependencies (T of several hundred, where the LSTM "
        "itself needs far more steps than fit here), other tasks (the paper's gains were on "
        "language and music modelling), or more seeds (the line above says how many)."
    )
    return "\n".join(lines)


def verdict_at(result, seq_len: int, one: list[dict], zero: list[dict], never: int) -> list[str]:
    rate = _stats.rate_difference(solved(one), solved(zero))
    mse = _stats.median_difference([r["final_mse"] for r in one], [r["final_mse"] for r in zero])
    speed = _stats.median_difference(
        first_solved(result, one, never), first_solved(result, zero, never)
    )
    better = _stats.superiority([r["final_mse"] for r in one], [r["final_mse"] for r in zero])
    lines = [
        f"- T={seq_len}, solved fraction, bias 1 − bias 0: {rate.describe()}.",
        f"- T={seq_len}, first solved step (unsolved: {never}), bias 1 − bias 0: "
        f"{speed.describe()}.",
        f"- T={seq_len}, median final MSE, bias 1 − bias 0: {mse.describe()}; a bias-1 run ends "
        f"below a bias-0 run with probability {better:.2f} (0.5: no difference).",
    ]
    outcomes = {"solved fraction": rate, "first solved step": speed, "final MSE": mse}
    decided = {name: c for name, c in outcomes.items() if c.decisive}
    if decided:
        name, c = next(iter(decided.items()))
        good = c.effect > 0 if c is rate else c.effect < 0
        agree = "as Jozefowicz et al. (2015) report" if good else "against the paper"
        lines.append(
            f"- T={seq_len} verdict: forget bias 1 trains {'better' if good else 'worse'} than "
            f"0, {agree} (the {name}: its interval excludes 0 and its test is below 0.05)."
        )
    else:
        needed = _runs_to_detect(rate.effect, sum(solved(zero)) / len(zero))
        lines.append(
            f"- T={seq_len} verdict: no difference detectable at this scale; no outcome has "
            "both an interval that excludes 0 and a test below 0.05. "
            + (
                f"Detecting the observed difference in solved fraction ({rate.effect:+.2f}) with "
                f"80 % power would take about {needed} runs per arm."
                if needed
                else "The observed difference in solved fraction is 0."
            )
        )
    return lines


def _runs_to_detect(difference: float, base: float) -> int | None:
    """Runs per arm for a two-sided 5 % two-proportion test to detect
    ``difference`` with 80 % power (normal approximation)."""
    if difference == 0:
        return None
    p1, p2 = min(max(base + difference, 0.01), 0.99), min(max(base, 0.01), 0.99)
    return int(round((1.96 + 0.84) ** 2 * (p1 * (1 - p1) + p2 * (1 - p2)) / difference**2))


def plot(study, decided: _study.Decided) -> list[str]:
    arms = _study.group(decided.verdict.rows, PATHS)
    lengths = sorted({t for _, t in arms})
    fig, axes = _study.figure(width=4.0, ncols=len(lengths))
    colors = {0.0: "tab:red", 1.0: "tab:blue"}
    for ax, seq_len in zip(axes, lengths, strict=True):
        for bias in (0.0, 1.0):
            for i, row in enumerate(arms.get((bias, seq_len), [])):
                lr = decided.chosen[bias, seq_len]
                label = f"bias {bias:g} (lr {lr:g})" if i == 0 else None
                steps, values = decided.verdict.curve(row["run_id"])
                ax.plot(steps, values, color=colors[bias], lw=0.6, alpha=0.5, label=label)
        ax.axhline(BASELINE, color="gray", ls="--", lw=1)
        ax.axhline(SOLVED, color="gray", ls=":", lw=1)
        ax.set(yscale="log", xlabel="step", title=f"T={seq_len}: every verdict run")
        ax.legend(fontsize=7)
    axes[0].set_ylabel("eval MSE")
    return [_study.save(fig, study, "curves")]


def main(argv=None) -> Path:
    study = _study.parse_args(NAME, __doc__, argv)
    config = get_config(study.smoke)
    arms, rates, seeds = plan(study.smoke)
    values = _study.arms_by_path(PATHS, arms)
    decided = _study.select_then_decide(study, config, values, rates, pick, seeds)
    c = config
    setup = (
        f"Setup: LSTM, 1 layer, hidden size {c.model.hidden_size}, batch {c.data.batch_size}, "
        f"{c.training.num_steps} Adam steps (warmup {c.optimizer.warmup_steps}, cosine decay, "
        f"clip norm {c.optimizer.clip_norm}); evaluated every {c.training.eval_every} steps on "
        f"{c.data.eval_size} fresh sequences; a run is solved when its final MSE is below "
        f"{SOLVED} (the mean predictor scores {BASELINE:.3f}). Selection: "
        f"{_study.throughput(decided.selection, c)}; verdict: "
        f"{_study.throughput(decided.verdict, c)}."
    )
    files = plot(study, decided)
    sections = [
        setup,
        f"## Learning rate per arm (seeds 0–{seeds[0] - 1})\n\n"
        + _study.selection_table(decided, PATHS, ["forget bias", "T"], rates, describe),
        f"## Verdict runs (seeds {seeds[0]}–{sum(seeds) - 1}, each arm at its rate)\n\n"
        + verdict_table(decided, never_step(c)),
        "## Plots\n\n" + "\n".join(f"![{f}]({f})" for f in files),
        "## Verdict\n\n" + verdict(decided, never_step(c)),
    ]
    title = "LSTM forget-gate bias 1 vs 0 (Jozefowicz et al. 2015)"
    results = [decided.selection, decided.verdict]
    return _study.write_report(study, title, __doc__.split("\n\n")[2], sections, results)


if __name__ == "__main__":
    main()
