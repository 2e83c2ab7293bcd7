"""Forget-gate bias: an LSTM with forget bias 1 vs 0 on the adding problem.

python experiments/forget_bias.py [--smoke] [--out DIR] [--workdir DIR]

Jozefowicz, Zaremba & Sutskever (2015) found that initialising the LSTM's
forget-gate bias to 1 (rather than 0) closes most of its gap to the best
architectures, above all on tasks with long dependencies. One sweep, one
compile: ``forget_bias`` in {0, 1} × learning rate × seeds, all vmapped, on
the adding problem at T=50 (at T >= 100 the scaled-down LSTM of
long_range_memory.md, bias 1, stayed on the plateau). We compare the final
MSE and the step at which each run leaves the MSE ≈ 1/6 plateau (first eval
below 0.04).
Writes ``experiments/reports/forget_bias.md`` and its plots.
"""

from __future__ import annotations

import sys
from pathlib import Path

import ml_collections

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _study  # noqa: E402

from recurrent_jax.train.config import base_config, shrink_to_smoke, warmup_cosine  # noqa: E402

NAME = "forget_bias"
BASELINE = 1 / 6
SOLVED = 0.04


def get_config(smoke: bool):
    config = base_config("adding", name=NAME)
    config.data.update(seq_len=50, batch_size=16, eval_size=256)
    config.model.update(cell="lstm", hidden_size=32)
    warmup_cosine(config, 1e-2, 50)  # the sweep sets the learning rate
    config.training.update(num_steps=1000, steps_per_call=100, eval_every=100)
    rates, seeds = [1e-2, 3e-2], 6
    if smoke:
        config.data.update(seq_len=10, batch_size=8, eval_size=32)
        config.model.update(hidden_size=8)
        shrink_to_smoke(config, 20)
        rates, seeds = [1e-2], 1
    vmap = {"forget_bias": [0.0, 1.0], "learning_rate": rates}
    config.sweep = ml_collections.ConfigDict(_study.sweep_section(vmap, {}, seeds))
    return config


def escape_steps(result: _study.SweepResult, runs: list[dict]) -> list[int | None]:
    """Per run: the first evaluated step with MSE below ``SOLVED``."""
    return [_study.first_step_below(result.curves.get(r["run_id"], []), SOLVED) for r in runs]


def summarise(result: _study.SweepResult):
    rows = []
    for (bias, lr), runs in sorted(
        _study.group(result.rows, ["forget_bias", "learning_rate"]).items()
    ):
        escapes = escape_steps(result, runs)
        rows.append(
            [
                bias,
                lr,
                _study.median(r["final_mse"] for r in runs),
                " / ".join(_study.fmt(r["final_mse"], 3) for r in runs),
                f"{sum(s is not None for s in escapes)}/{len(runs)}",
                " / ".join(_study.fmt(s) for s in escapes),
            ]
        )
    return rows


def plot(study, result) -> list[str]:
    fig, (ax,) = _study.figure(width=5.5)
    colors = {0.0: "tab:red", 1.0: "tab:blue"}
    styles = ["-", "--", ":"]
    rates = sorted({r["learning_rate"] for r in result.rows})
    seen = set()
    for row in result.rows:
        steps, values = result.curve(row["run_id"])
        bias = row["forget_bias"]
        label = f"forget bias {bias:g}" if bias not in seen else None
        seen.add(bias)
        style = styles[rates.index(row["learning_rate"]) % len(styles)]
        ax.plot(steps, values, style, color=colors.get(bias, "k"), lw=1, label=label)
    ax.axhline(BASELINE, color="gray", ls="--", lw=1)
    ax.set(yscale="log", xlabel="step", ylabel="eval MSE")
    ax.set_title(
        "LSTM, adding problem; line style = learning rate " + ", ".join(f"{r:g}" for r in rates),
        fontsize=8,
    )
    ax.legend(fontsize=8)
    return [_study.save(fig, study, "curves")]


def verdict(result) -> str:
    by_bias = _study.group(result.rows, ["forget_bias"])
    lines, solved = [], {}
    for (bias,), runs in sorted(by_bias.items()):
        escapes = escape_steps(result, runs)
        solved[bias] = sum(s is not None for s in escapes)
        done = [s for s in escapes if s is not None]
        lines.append(
            f"- forget bias {bias:g}: {solved[bias]}/{len(runs)} runs solved; median final MSE "
            f"{_study.fmt(_study.median(r['final_mse'] for r in runs), 3)}; median escape step "
            f"of the solved runs {_study.fmt(_study.median(done)) if done else '–'}."
        )
    one, zero = solved.get(1.0, 0), solved.get(0.0, 0)
    runs = len(by_bias.get((1.0,), []))
    if one - zero >= max(2, runs // 4):
        lines.append(
            f"- Bias 1 solved {one - zero} more of {runs} runs than bias 0, in the direction "
            "Jozefowicz et al. (2015) report."
        )
    elif abs(one - zero) < max(2, runs // 4):
        lines.append(
            f"- Bias 1 and bias 0 solved {one} and {zero} of {runs} runs: no clear difference at "
            "this sample size; the known result is neither confirmed nor contradicted here."
        )
    else:
        lines.append(
            f"- Bias 0 solved {zero - one} more of {runs} runs than bias 1: the known result did "
            "not reproduce at this scale."
        )
    return "\n".join(lines)


def main(argv=None) -> Path:
    study = _study.parse_args(NAME, __doc__, argv)
    config = get_config(study.smoke)
    result = _study.run(study, config, study.workdir / "sweep")
    c = config
    setup = (
        f"Setup: LSTM, 1 layer, hidden size {c.model.hidden_size}, adding problem T="
        f"{c.data.seq_len}, batch {c.data.batch_size}, {c.training.num_steps} Adam steps "
        f"(warmup {c.optimizer.warmup_steps}, cosine decay, clip norm {c.optimizer.clip_norm}); "
        f"{len(result.rows)} runs (forget bias × learning rate × {c.sweep.seeds} seeds) vmapped "
        f"in one compiled program; evaluated every {c.training.eval_every} steps on "
        f"{c.data.eval_size} fresh sequences. Smaller than the paper's setting (2-core CPU)."
    )
    table = _study.md_table(
        [
            "forget bias",
            "learning rate",
            "median final MSE",
            "final MSE per seed",
            "solved",
            f"first step below {SOLVED} per seed",
        ],
        summarise(result),
    )
    files = plot(study, result)
    sections = [
        setup,
        f"## Results\n\nBaseline (predict the mean): {BASELINE:.3f}.\n\n{table}",
        "## Plots\n\n" + "\n".join(f"![{f}]({f})" for f in files),
        "## Reading\n\n" + verdict(result),
    ]
    title = "LSTM forget-gate bias 1 vs 0 (Jozefowicz et al. 2015)"
    return _study.write_report(study, title, __doc__.split("\n\n")[2], sections, [result])


if __name__ == "__main__":
    main()
