"""Forget-gate bias: an LSTM with forget bias 1 vs 0 on the adding problem.

python experiments/forget_bias.py [--smoke] [--out DIR] [--workdir DIR]

Jozefowicz, Zaremba & Sutskever (2015) found that initialising the LSTM's
forget-gate bias to 1 (rather than 0) closes most of its gap to the best
architectures, above all on tasks with long dependencies. One sweep, one
compile: ``forget_bias`` in {0, 1} × learning rate × 40 seeds, all vmapped,
on the adding problem. Each arm gets its own learning rate, picked on seeds
0–7 (most runs solved, then the lowest median final MSE); the verdict is
drawn on the other 32 seeds at that rate: the fraction of runs that leave
the MSE ≈ 1/6 plateau (final MSE below 0.04) with an exact interval, its
difference between the arms (bootstrap interval, Fisher's exact test), and
the final MSEs (median difference with a bootstrap interval, Mann–Whitney
U). Writes ``experiments/reports/forget_bias.md`` and its plots.
"""

from __future__ import annotations

import sys
from pathlib import Path

import ml_collections

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _stats  # noqa: E402
import _study  # noqa: E402

from recurrent_jax.train.config import base_config, shrink_to_smoke, warmup_cosine  # noqa: E402

NAME = "forget_bias"
BASELINE = 1 / 6
SOLVED = 0.04
SELECTION_SEEDS = 8  # seeds 0..7 pick each arm's learning rate
VERDICT_SEEDS = 32  # the others decide


def get_config(smoke: bool):
    config = base_config("adding", name=NAME)
    config.data.update(seq_len=50, batch_size=16, eval_size=256)
    config.model.update(cell="lstm", hidden_size=32)
    warmup_cosine(config, 1e-2, 50)  # the sweep sets the learning rate
    config.training.update(num_steps=1000, steps_per_call=100, eval_every=100)
    rates, seeds = [3e-3, 1e-2, 3e-2], SELECTION_SEEDS + VERDICT_SEEDS
    if smoke:
        config.data.update(seq_len=10, batch_size=8, eval_size=32)
        config.model.update(hidden_size=8)
        shrink_to_smoke(config, 20)
        rates, seeds = [1e-2, 3e-2], 4
    vmap = {"forget_bias": [0.0, 1.0], "learning_rate": rates}
    config.sweep = ml_collections.ConfigDict(_study.sweep_section(vmap, {}, seeds))
    return config


def split(runs: list[dict], selection: int) -> tuple[list[dict], list[dict]]:
    """(selection runs, verdict runs) by seed."""
    return [r for r in runs if r["seed"] < selection], [r for r in runs if r["seed"] >= selection]


def solved(runs: list[dict]) -> list[bool]:
    return [r["final_mse"] < SOLVED for r in runs]


def choose_rates(result: _study.SweepResult, selection: int) -> dict[float, float]:
    """Per forget bias: the learning rate whose selection seeds solve most,
    ties broken by the lower median final MSE."""
    chosen = {}
    for (bias,), runs in _study.group(result.rows, ["forget_bias"]).items():
        by_rate = _study.group(split(runs, selection)[0], ["learning_rate"])
        score = lambda item: (-sum(solved(item[1])), _study.median(r["final_mse"] for r in item[1]))  # noqa: E731
        (rate,), _ = min(by_rate.items(), key=score)
        chosen[bias] = rate
    return chosen


def selection_table(result, selection: int) -> str:
    rows = []
    for (bias, lr), runs in sorted(
        _study.group(result.rows, ["forget_bias", "learning_rate"]).items()
    ):
        picked = split(runs, selection)[0]
        rows.append(
            [
                bias,
                lr,
                f"{sum(solved(picked))}/{len(picked)}",
                _study.median(r["final_mse"] for r in picked),
            ]
        )
    return _study.md_table(
        ["forget bias", "learning rate", "solved (selection seeds)", "median final MSE"], rows
    )


def arms(result, chosen: dict, selection: int) -> dict[float, list[dict]]:
    """Per forget bias: its verdict runs at its chosen learning rate."""
    return {
        bias: split(
            [r for r in result.rows if r["forget_bias"] == bias and r["learning_rate"] == lr],
            selection,
        )[1]
        for bias, lr in sorted(chosen.items())
    }


def verdict_table(arm_runs: dict, chosen: dict) -> str:
    rows = []
    for bias, runs in arm_runs.items():
        k, n = sum(solved(runs)), len(runs)
        low, high = _stats.rate_interval(k, n)
        escape = [_study.fmt(r["final_mse"], 2) for r in runs[:8]]
        rows.append(
            [
                bias,
                chosen[bias],
                f"{k}/{n}",
                f"{low:.2f}–{high:.2f}",
                _study.median(r["final_mse"] for r in runs),
                " / ".join(escape) + (" …" if n > 8 else ""),
            ]
        )
    return _study.md_table(
        [
            "forget bias",
            "learning rate",
            "solved",
            "95 % CI (exact)",
            "median final MSE",
            "final MSE, first 8 runs",
        ],
        rows,
    )


def verdict(arm_runs: dict) -> str:
    one, zero = arm_runs.get(1.0, []), arm_runs.get(0.0, [])
    if not one or not zero:
        return "- One arm has no verdict runs (smoke mode): no verdict."
    rate = _stats.rate_difference(solved(one), solved(zero))
    mse = _stats.median_difference([r["final_mse"] for r in one], [r["final_mse"] for r in zero])
    better = _stats.superiority([r["final_mse"] for r in one], [r["final_mse"] for r in zero])
    lines = [
        f"- Solved fraction, bias 1 − bias 0: {rate.describe()}.",
        f"- Median final MSE, bias 1 − bias 0: {mse.describe()}; a bias-1 run ends below a "
        f"bias-0 run with probability {better:.2f} (0.5: no difference).",
    ]
    if rate.excludes_zero or mse.excludes_zero:
        direction = (
            "better" if (rate.effect > 0 if rate.excludes_zero else mse.effect < 0) else "worse"
        )
        agree = (
            "as Jozefowicz et al. (2015) report" if direction == "better" else "against the paper"
        )
        lines.append(
            f"- Verdict: forget bias 1 trains {direction} than 0 here, {agree}; the interval "
            "excludes no difference."
        )
    else:
        needed = _runs_to_detect(rate.effect, sum(solved(zero)) / len(zero))
        lines.append(
            "- Verdict: no difference detectable at this scale — both intervals include 0. "
            + (
                f"Detecting the observed difference in solved fraction ({rate.effect:+.2f}) with "
                f"80 % power would take about {needed} runs per arm."
                if needed
                else "The observed difference is 0."
            )
        )
    lines.append(
        "- What would change it: a longer task (T ≥ 100, where the paper's effect is "
        "largest), fewer steps (bias 1 mainly speeds the escape from the plateau), or more seeds."
    )
    return "\n".join(lines)


def _runs_to_detect(difference: float, base: float) -> int | None:
    """Runs per arm for a two-sided 5 % two-proportion test to detect
    ``difference`` with 80 % power (normal approximation)."""
    if difference == 0:
        return None
    p1, p2 = min(max(base + difference, 0.01), 0.99), min(max(base, 0.01), 0.99)
    return int(round((1.96 + 0.84) ** 2 * (p1 * (1 - p1) + p2 * (1 - p2)) / difference**2))


def plot(study, result, chosen: dict) -> list[str]:
    fig, (ax,) = _study.figure(width=5.5)
    colors = {0.0: "tab:red", 1.0: "tab:blue"}
    seen = set()
    for row in result.rows:
        if chosen.get(row["forget_bias"]) != row["learning_rate"]:
            continue
        steps, values = result.curve(row["run_id"])
        bias = row["forget_bias"]
        label = f"forget bias {bias:g} (lr {chosen[bias]:g})" if bias not in seen else None
        seen.add(bias)
        ax.plot(steps, values, color=colors.get(bias, "k"), lw=0.6, alpha=0.5, label=label)
    ax.axhline(BASELINE, color="gray", ls="--", lw=1)
    ax.axhline(SOLVED, color="gray", ls=":", lw=1)
    ax.set(yscale="log", xlabel="step", ylabel="eval MSE")
    ax.set_title("LSTM, adding problem: every run at its arm's learning rate", fontsize=8)
    ax.legend(fontsize=8)
    return [_study.save(fig, study, "curves")]


def main(argv=None) -> Path:
    study = _study.parse_args(NAME, __doc__, argv)
    config = get_config(study.smoke)
    result = _study.run(study, config, study.workdir / "sweep")
    selection = 2 if study.smoke else SELECTION_SEEDS
    chosen = choose_rates(result, selection)
    arm_runs = arms(result, chosen, selection)
    c = config
    setup = (
        f"Setup: LSTM, 1 layer, hidden size {c.model.hidden_size}, adding problem T="
        f"{c.data.seq_len}, batch {c.data.batch_size}, {c.training.num_steps} Adam steps "
        f"(warmup {c.optimizer.warmup_steps}, cosine decay, clip norm {c.optimizer.clip_norm}); "
        f"{len(result.rows)} runs (forget bias × learning rate × {c.sweep.seeds} seeds) vmapped "
        f"in one compiled program ({_study.throughput(result, c)}); evaluated every "
        f"{c.training.eval_every} steps on {c.data.eval_size} fresh sequences; a run is solved "
        f"when its final MSE is below {SOLVED} (the mean predictor scores {BASELINE:.3f})."
    )
    files = plot(study, result, chosen)
    sections = [
        setup,
        "## Learning rate per arm (seeds 0–"
        f"{selection - 1})\n\n{selection_table(result, selection)}\n\nChosen: "
        + ", ".join(f"bias {b:g} → {lr:g}" for b, lr in sorted(chosen.items())),
        f"## Verdict runs (the other seeds)\n\n{verdict_table(arm_runs, chosen)}",
        "## Plots\n\n" + "\n".join(f"![{f}]({f})" for f in files),
        "## Verdict\n\n" + verdict(arm_runs),
    ]
    title = "LSTM forget-gate bias 1 vs 0 (Jozefowicz et al. 2015)"
    return _study.write_report(study, title, __doc__.split("\n\n")[2], sections, [result])


if __name__ == "__main__":
    main()
