"""Shared plumbing of the studies in ``experiments/``: the command line, running
a config's sweep with ``recurrent_jax.sweep``, reading its run table and
learning curves back, and writing the Markdown report with its plots.

A study script builds ml_collections configs with a ``sweep`` section (as
``configs/adding_sweep.py``), runs them with ``run(config, workdir)`` and
hands ``write_report`` its tables and figures.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shlex
import shutil
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import matplotlib

matplotlib.use("Agg")

REPORTS = Path(__file__).resolve().parent / "reports"
WORKDIRS = Path(os.environ.get("TMPDIR", "/tmp")) / "recurrent_jax_studies"


@dataclass
class Study:
    """A study's command line: ``smoke`` shrinks everything; reports go to
    ``out`` and sweep directories under ``workdir``."""

    name: str
    smoke: bool
    out: Path
    workdir: Path
    command: str
    started: float
    report_only: bool = False
    options: argparse.Namespace | None = None  # the study's own options (``add_options``)


def sweep_section(vmap: dict, grid: dict, seeds, zip_groups=()) -> dict:
    return {"vmap": vmap, "grid": grid, "seeds": seeds, "zip": list(zip_groups), "runs_per_call": 0}


def adding_or_digits(config, task: str, smoke: bool, *, seq_len: int, num_steps: int) -> None:
    """Data, optimizer and training sections of a study on the adding
    problem (``seq_len`` steps) or the digits task, for ``num_steps`` steps
    (the sweeps set the learning rate)."""
    from recurrent_jax.train.config import shrink_to_smoke, warmup_cosine

    warmup_cosine(config, 1e-2, 50)
    config.training.update(num_steps=num_steps, steps_per_call=100, eval_every=100)
    if task == "adding":
        config.data.update(seq_len=seq_len, batch_size=16, eval_size=256)
    else:
        config.data.update(test_fraction=0.2, split_seed=0, batch_size=32)
    if smoke:
        config.data.update(batch_size=8)
        if task == "adding":
            config.data.update(seq_len=10, eval_size=32)
        shrink_to_smoke(config, 20)


def parse_args(
    name: str,
    doc: str,
    argv: Sequence[str] | None = None,
    add_options: Callable[[argparse.ArgumentParser], None] | None = None,
) -> Study:
    """The shared command line; ``add_options(parser)`` adds a study's own
    options, which come back parsed as ``Study.options``."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    if add_options is not None:
        add_options(parser)
    parser.add_argument("--smoke", action="store_true", help="a seconds-long run of the pipeline")
    parser.add_argument("--out", help="report folder (default experiments/reports)")
    parser.add_argument("--workdir", help=f"sweep folders (default {WORKDIRS}/<name>)")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="rewrite the report from the finished sweeps in --workdir, training nothing",
    )
    args = parser.parse_args(argv)
    suffix = "-smoke" if args.smoke else ""
    out = Path(args.out) if args.out else REPORTS
    workdir = Path(args.workdir) if args.workdir else WORKDIRS / f"{name}{suffix}"
    argv = [a for a in (sys.argv[1:] if argv is None else argv) if a != "--report-only"]
    command = shlex.join(["python", f"experiments/{name}.py", *argv])
    from recurrent_jax.sweep import enable_compilation_cache

    enable_compilation_cache()
    started = time.perf_counter()
    return Study(name, args.smoke, out, workdir, command, started, args.report_only, args)


@dataclass
class SweepResult:
    rows: list[dict]  # runs.csv, numbers parsed, + final_train_loss (metrics.jsonl)
    curves: dict[int, list[tuple[int, float]]]  # run_id -> [(step, eval metric)]
    summary: dict
    seconds: float

    def curve(self, run_id: int) -> tuple[list[int], list[float]]:
        """Eval steps and values of one run (empty if it diverged at once)."""
        points = self.curves.get(run_id, [])
        return [s for s, _ in points], [v for _, v in points]


def run(study: Study, config, workdir: Path) -> SweepResult:
    """Runs the sweep of ``config`` afresh in ``workdir`` (removed first), or
    with ``study.report_only`` reads the finished sweep there back."""
    from recurrent_jax.sweep import parse_sweep, run_sweep

    if study.report_only:
        summary = json.loads((workdir / "summary.json").read_text())
        seconds = summary["seconds"]
    else:
        plan = parse_sweep(config.to_dict() if hasattr(config, "to_dict") else config)
        shutil.rmtree(workdir, ignore_errors=True)
        start = time.perf_counter()
        log = lambda line: print(line, flush=True)  # noqa: E731
        summary = run_sweep(plan, workdir, progress=False, log=log)
        seconds = time.perf_counter() - start
    with open(workdir / "runs.csv") as f:
        rows = [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(f)]
    metric = summary["primary_metric"]
    curves = defaultdict(list)
    train_loss = {}  # run_id -> the loss of its last logged training steps
    with open(workdir / "metrics.jsonl") as f:
        for line in f:
            record = json.loads(line)
            if record.get("split") == "eval" and record.get(metric) is not None:
                curves[record["run_id"]].append((record["step"], record[metric]))
            elif record.get("split") == "train":
                train_loss[record["run_id"]] = record.get("loss", float("nan"))
    for row in rows:
        row["final_train_loss"] = train_loss.get(row["run_id"], float("nan"))
    print(f"{config.name}: {len(rows)} runs in {seconds:.0f} s", flush=True)
    return SweepResult(rows, dict(curves), summary, seconds)


class Decided(NamedTuple):
    """A learning rate picked per arm on a few seeds, then the arms re-run
    at their rates on fresh seeds: ``selection`` (every rate, seeds
    ``0..k-1``), ``verdict`` (one rate per arm, the next seeds) and
    ``chosen`` (arm key -> rate; an arm key is its values of the arm paths)."""

    selection: SweepResult
    verdict: SweepResult
    chosen: dict[tuple, float]


def arms_by_path(paths: Sequence[str], arms: Sequence[tuple]) -> dict[str, list]:
    """Arms as tuples of values (``[("lstm", 100), ("gru", 400)]``) -> the
    ``{path: one value per arm}`` that ``select_then_decide`` zips."""
    return {path: [arm[i] for arm in arms] for i, path in enumerate(paths)}


def select_then_decide(
    study: Study,
    config,
    arms: dict[str, list],
    rates: Sequence[float],
    pick: Callable[[list[dict]], float],
    seeds: tuple[int, int],
    folder: str = "",
) -> Decided:
    """Two sweeps of ``config``. ``arms`` maps config paths to one value per
    arm (zipped: ``{"model.cell": ["gru", "lstm"], "data.seq_len": [100, 400]}``
    is two arms). The selection sweep vmaps ``rates`` × ``seeds[0]`` seeds
    over every arm; ``pick(rows)`` chooses an arm's rate from its rows; the
    verdict sweep runs each arm at its rate on the next ``seeds[1]`` seeds.
    The verdict never sees a seed the choice saw. The sweeps' folders are
    ``<workdir>/<folder>/selection`` and ``.../verdict``."""
    paths = list(arms)
    selection_seeds, verdict_seeds = seeds
    first = with_sweep(
        config, "selection", {"learning_rate": list(rates)}, arms, range(selection_seeds)
    )
    where = study.workdir / folder
    selection = run(study, first, where / "selection")
    chosen = {key: pick(rows) for key, rows in group(selection.rows, paths).items()}
    keys = list(zip(*arms.values(), strict=True))
    at_rates = {**arms, "optimizer.learning_rate": [chosen[k] for k in keys]}
    fresh = range(selection_seeds, selection_seeds + verdict_seeds)
    second = with_sweep(config, "verdict", {}, at_rates, fresh)
    return Decided(selection, run(study, second, where / "verdict"), chosen)


def selection_table(
    decided: Decided,
    paths: Sequence[str],
    headers: Sequence[str],
    rates: Sequence[float],
    describe: Callable[[list[dict]], str],
) -> str:
    """One row per arm (its values of ``paths``, under ``headers``): what
    ``describe`` says of its selection runs at each rate, and the rate chosen."""
    rows = []
    for key, runs in sorted(group(decided.selection.rows, paths).items()):
        by_rate = group(runs, ["learning_rate"])
        cells = [describe(by_rate.get((lr,), [])) for lr in rates]
        rows.append([*key, *cells, decided.chosen[key]])
    return md_table([*headers, *[f"lr {lr:g}" for lr in rates], "chosen"], rows)


def copy_config(config):
    """An unlocked deep copy of an ml_collections config."""
    import ml_collections

    return ml_collections.ConfigDict(config.to_dict())


def with_sweep(config, stage: str, vmap: dict, zipped: dict[str, list], seeds: range):
    """A copy of ``config`` named ``<name>_<stage>`` whose sweep zips the
    ``zipped`` config paths into one grid axis."""
    import ml_collections

    copy = copy_config(config)
    copy.name = f"{config.name}_{stage}"
    grid: dict = {}
    for path, values in zipped.items():
        *sections, field = path.split(".")
        node = grid
        for section in sections:
            node = node.setdefault(section, {})
        node[field] = list(values)
    groups = [list(zipped)] if len(zipped) > 1 else []
    copy.sweep = ml_collections.ConfigDict(sweep_section(vmap, grid, list(seeds), groups))
    return copy


def best_rate(
    rows: list[dict], column: str, *, higher: bool = False, solved_below: float | None = None
) -> float:
    """The learning rate whose runs score best: most runs with ``column``
    below ``solved_below`` (when given), then the best median ``column``
    (diverged runs count as the worst). The rate column is ``learning_rate``."""

    def score(item):
        runs = item[1]
        values = [r[column] for r in runs]
        solved = sum(v < solved_below for v in values) if solved_below is not None else 0
        middle = median(values)
        middle = (-middle if higher else middle) if middle == middle else float("inf")
        return (-solved, middle)

    (rate,), _ = min(group(rows, ["learning_rate"]).items(), key=score)
    return rate


def _number(text: str):
    if text == "":
        return float("nan")  # a diverged run's metrics
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def first_step_below(curve: Iterable[tuple[int, float]], threshold: float) -> int | None:
    """The first evaluated step whose metric is below ``threshold``."""
    return next((step for step, value in curve if value < threshold), None)


def group(rows: list[dict], keys: Sequence[str]) -> dict[tuple, list[dict]]:
    groups = defaultdict(list)
    for row in rows:
        groups[tuple(row[k] for k in keys)].append(row)
    return dict(groups)


def solved_summary(runs: list[dict], curves, solved_below: float) -> dict:
    """One arm's verdict runs: final MSEs, which are below ``solved_below``,
    the solved count with its exact interval, the median final MSE and the
    median first step below the threshold (None when no run got there)."""
    import _stats  # a sibling of this module, as the studies import it

    finals = [r["final_mse"] for r in runs]
    solved = [v < solved_below for v in finals]
    k, n = sum(solved), len(runs)
    steps = [first_step_below(curves.get(r["run_id"], []), solved_below) for r in runs]
    steps = [s for s in steps if s is not None]
    return {
        "finals": finals,
        "solved": solved,
        "k": k,
        "n": n,
        "interval": _stats.rate_interval(k, n),
        "median": median(finals),
        "steps": median(steps) if steps else None,
    }


def median(values: Iterable[float]) -> float:
    values = [v for v in values if v == v]  # drop NaN (diverged runs)
    return statistics.median(values) if values else float("nan")


def fmt(value, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return "nan" if value != value else f"{value:.{digits}g}"
    return str(value)


def md_table(headers: Sequence[str], rows: Iterable[Sequence]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def figure(width: float = 5.0, height: float = 3.2, ncols: int = 1):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(width * ncols, height), squeeze=False)
    return fig, list(axes[0])


def save(fig, study: Study, name: str) -> str:
    """Saves a small PNG (dpi 80) next to the report; returns its file name."""
    import matplotlib.pyplot as plt

    study.out.mkdir(parents=True, exist_ok=True)
    file = f"{study.name}_{name}.png"
    fig.tight_layout()
    fig.savefig(study.out / file, dpi=80)
    plt.close(fig)
    return file


def hardware() -> str:
    import jax

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    device = jax.devices()[0]
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{os.cpu_count()} × {cpu}; JAX {jax.__version__} on {device.platform} "
        f"({device.device_kind}); load average at the end {load} (the machine is shared, "
        "so wall times are pessimistic)"
    )


def write_report(
    study: Study,
    title: str,
    intro: str,
    sections: Sequence[str],
    sweeps: Sequence[SweepResult],
) -> Path:
    """``<out>/<name>.md``: title, command, hardware, time, then ``sections``."""
    seconds = time.perf_counter() - study.started
    if study.report_only:  # the sweeps' own times; the timing benchmarks are re-run
        seconds += sum(s.seconds for s in sweeps)
    sweep_lines = ", ".join(
        f"{s.summary['name']} {s.seconds:.0f} s ({len(s.rows)} runs)" for s in sweeps
    )
    header = [
        f"# {title}",
        "",
        intro.strip(),
        "",
        f"- Command: `{study.command}`" + (" (smoke mode: not a result)" if study.smoke else ""),
        f"- Hardware: {hardware()}",
        f"- Time: {seconds / 60:.1f} min wall in all; sweeps: {sweep_lines}",
        f"- Sweep folders (runs.csv, runs.md, metrics.jsonl, the runner's plots): "
        f"`{study.workdir}`",
        "",
    ]
    study.out.mkdir(parents=True, exist_ok=True)
    path = study.out / f"{study.name}.md"
    path.write_text("\n".join(header + [s.strip() + "\n" for s in sections]))
    print(f"report: {path} ({seconds:.0f} s)", flush=True)
    return path


def throughput(result: SweepResult, config) -> str:
    """The sweep's size and speed: runs, compiled grid points, model-steps/s."""
    runs, steps = len(result.rows), config.training.num_steps
    points = result.summary.get("num_points", 1)
    rate = runs * steps / result.seconds if result.seconds else float("nan")
    return (
        f"{runs} runs, {points} grid point{'s' * (points != 1)} (one compile of each stage per "
        f"point), {rate:,.0f} model-steps/s"
    )
